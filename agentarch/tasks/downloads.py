"""The official image datasets (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100, SVHN): read from files in
torchvision's on-disk layout, and downloaded into it with the same files and checksums torchvision uses.

Its own module because it is the only part of the room that reads binary dataset formats (IDX, pickled CIFAR
batches, MATLAB files) or touches the network. The heavier reader (scipy, for SVHN) is imported inside the
reader that needs it.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from agentarch.tasks.splits import split_indices
from agentarch.tasks.task import SplitData, Task, TaskError

# -- file-based image datasets (torchvision's on-disk layout) ------------------------------------

_VAL_FRACTION = 0.1

_Arrays4 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_x, train_y, test_x, test_y


@dataclass(frozen=True)
class _Fetch:
    """One official file: where it lands under the data dir, where to get it, and how to unpack it."""

    dest: str
    urls: tuple[str, ...]
    md5: str | None
    unpack: Literal["none", "gunzip", "untar"] = "none"


@dataclass(frozen=True)
class _FileSource:
    """A dataset read from files: what must exist (each entry lists acceptable alternatives), how to
    fetch it, and how to read it."""

    required: tuple[tuple[str, ...], ...]
    fetches: tuple[_Fetch, ...]
    read: Callable[[Path], _Arrays4]


def _idx_source(folder: str, mirrors: tuple[str, ...], md5s: dict[str, str]) -> _FileSource:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return _FileSource(
        required=tuple((f"{folder}/raw/{n}", f"{folder}/raw/{n}.gz") for n in names),
        fetches=tuple(
            _Fetch(f"{folder}/raw/{n}.gz", tuple(m + n + ".gz" for m in mirrors), md5s[n], "gunzip") for n in names
        ),
        read=lambda data_dir: _read_idx_dataset(data_dir / folder / "raw"),
    )


def _first_existing(data_dir: Path, alternatives: tuple[str, ...]) -> Path:
    for alt in alternatives:
        if (data_dir / alt).is_file():
            return data_dir / alt
    raise TaskError(f"none of {', '.join(str(data_dir / a) for a in alternatives)} exists")


def _read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (the MNIST format: big-endian header, then raw unsigned bytes)."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise TaskError(f"cannot read {path}: {err}") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise TaskError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise TaskError(f"{path} is truncated (header cut short)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    payload = np.frombuffer(data, dtype=np.uint8, offset=header)
    if payload.size != math.prod(dims):
        raise TaskError(f"{path}: the header says {dims} ({math.prod(dims)} bytes) but it holds {payload.size} bytes")
    return payload.reshape(dims)


def _read_idx_dataset(raw: Path) -> _Arrays4:
    def pair(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        images = _read_idx(_first_existing(raw, (f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz")))
        labels = _read_idx(_first_existing(raw, (f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte.gz")))
        if images.ndim != 3 or labels.ndim != 1:
            raise TaskError(
                f"{raw}: {prefix} images are {images.shape} and labels {labels.shape}; expected (N, H, W) and (N,)"
            )
        return images[:, None, :, :], labels.astype(np.int64)

    return (*pair("train"), *pair("t10k"))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file cannot run code on the host."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file: a pickled dict with b"data" (N, 3072) uint8 and a list of labels."""
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="bytes").load()
        data, labels = entry[b"data"], entry[label_key]
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError) as err:
        raise TaskError(f"cannot read CIFAR batch {path}: {type(err).__name__}: {err}") from err
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise TaskError(f"{path}: data {data.shape} with {len(labels)} labels; expected (N, 3072) and N labels")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _read_cifar(folder: Path, train_files: tuple[str, ...], test_file: str, label_key: bytes) -> _Arrays4:
    parts = [_read_cifar_batch(folder / name, label_key) for name in train_files]
    test_x, test_y = _read_cifar_batch(folder / test_file, label_key)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), test_x, test_y


def _read_svhn(data_dir: Path) -> _Arrays4:
    """SVHN .mat files: X is (32, 32, 3, N), y is (N, 1) with the digit 0 labelled 10."""
    from scipy.io import loadmat

    out: list[np.ndarray] = []
    for split in ("train", "test"):
        path = data_dir / f"{split}_32x32.mat"
        try:
            mat = loadmat(path)
            x, y = mat["X"], mat["y"]
        except (OSError, ValueError, KeyError) as err:
            raise TaskError(f"cannot read {path}: {type(err).__name__}: {err}") from err
        y = np.asarray(y).reshape(-1).astype(np.int64)
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
            raise TaskError(f"{path}: X is {x.shape} with {len(y)} labels; expected (32, 32, 3, N) and N labels")
        y[y == 10] = 0
        out += [np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)).astype(np.uint8)), y]
    return out[0], out[1], out[2], out[3]


_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))

FILE_SOURCES: dict[str, _FileSource] = {
    "mnist": _idx_source(
        "MNIST",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": _idx_source(
        "FashionMNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": _FileSource(
        required=tuple((f"cifar-10-batches-py/{n}",) for n in (*_CIFAR10_TRAIN, "test_batch")),
        fetches=(
            _Fetch(
                "cifar-10-python.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                "c58f30108f718f92721af3b95e74349a",
                "untar",
            ),
        ),
        read=lambda d: _read_cifar(d / "cifar-10-batches-py", _CIFAR10_TRAIN, "test_batch", b"labels"),
    ),
    "cifar100": _FileSource(
        required=(("cifar-100-python/train",), ("cifar-100-python/test",)),
        fetches=(
            _Fetch(
                "cifar-100-python.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                "eb9058c3a382ffc7106e4002c42a8d85",
                "untar",
            ),
        ),
        read=lambda d: _read_cifar(d / "cifar-100-python", ("train",), "test", b"fine_labels"),
    ),
    "svhn": _FileSource(
        required=(("train_32x32.mat",), ("test_32x32.mat",)),
        fetches=(
            _Fetch(
                "train_32x32.mat",
                ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
                "e26dedcc434d2e4c54c9b2d4a06d8373",
            ),
            _Fetch(
                "test_32x32.mat",
                ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
                "eb5a983be6a315427106f1b164d9cef3",
            ),
        ),
        read=_read_svhn,
    ),
}


def _missing(source: _FileSource, data_dir: Path) -> list[str]:
    """The required files absent from `data_dir`, each written as its first accepted path."""
    return [
        str(data_dir / alts[0]) + (" (or .gz)" if len(alts) > 1 else "")
        for alts in source.required
        if not any((data_dir / a).is_file() for a in alts)
    ]


def build_from_files(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> SplitData:
    """Read the official train and test sets, then hold out a seeded 10% of train as validation."""
    source = FILE_SOURCES[task.name]
    if data_dir is None:
        layout = ", ".join(alts[0] for alts in source.required)
        raise TaskError(
            f"task {task.name!r} reads its dataset from files: pass --data-dir DIR, a folder in torchvision's "
            f"layout holding {layout}"
            + (" (--download fetches them into DIR)" if download else "; add --download to fetch them into DIR")
        )
    missing = _missing(source, data_dir)
    if missing and download:
        _download(source, data_dir)
        missing = _missing(source, data_dir)
    if missing:
        raise TaskError(
            f"task {task.name!r}: dataset files not found under {data_dir}:\n  "
            + "\n  ".join(missing)
            + "\npass --data-dir DIR pointing at the folder that holds them (torchvision's layout), "
            "or add --download to fetch them there"
        )
    train_x, train_y, test_x, test_y = source.read(data_dir)
    keep, val = split_indices(train_y, _VAL_FRACTION, split_seed)
    return SplitData(train_x[keep], train_y[keep], train_x[val], train_y[val], test_x, test_y)


# -- downloading (the same files and checksums torchvision uses) ---------------------------------


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(urls: tuple[str, ...], dest: Path, md5: str | None) -> None:
    """Download to a temporary name beside `dest`, check the md5, then rename; try each mirror in turn."""
    import http.client
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    problems = []
    for url in urls:
        part = dest.with_name(f"{dest.name}.part-{os.getpid()}")
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "agentarch"})
            digest = hashlib.md5(usedforsecurity=False)
            with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
            if md5 is not None and digest.hexdigest() != md5:
                problems.append(f"{url}: md5 {digest.hexdigest()} differs from the expected {md5}")
                continue
            os.replace(part, dest)
            return
        except (OSError, http.client.HTTPException, ValueError) as err:  # URLError is an OSError
            problems.append(f"{url}: {err}")
        finally:
            part.unlink(missing_ok=True)
    raise TaskError(
        f"could not download {dest.name}:\n  "
        + "\n  ".join(problems)
        + f"\nfetch it by hand to {dest} and run again without --download"
    )


def _gunzip(src: Path, dest: Path) -> None:
    part = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    try:
        with gzip.open(src, "rb") as fin, open(part, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(part, dest)
    except (OSError, EOFError) as err:
        raise TaskError(f"cannot unpack {src}: {err}") from err
    finally:
        part.unlink(missing_ok=True)


def _untar(src: Path, into: Path) -> None:
    """Extract a .tar.gz, refusing members that would land outside `into` or are not plain files/dirs."""
    import tarfile

    try:
        with tarfile.open(src, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, filter="data")
            else:  # Python without extraction filters: check the members ourselves
                root = into.resolve()
                for member in tar.getmembers():
                    where = (into / member.name).resolve()
                    if not (member.isfile() or member.isdir()) or root not in (where, *where.parents):
                        raise TaskError(f"{src}: refusing to extract {member.name!r}")
                tar.extractall(into)
    except (OSError, tarfile.TarError) as err:
        raise TaskError(f"cannot unpack {src}: {err}") from err


def _download(source: _FileSource, data_dir: Path) -> None:
    """Fetch and unpack what is missing, into exactly the layout torchvision would leave."""
    for fetch in source.fetches:
        dest = data_dir / fetch.dest
        if fetch.unpack == "gunzip" and (dest.is_file() or dest.with_suffix("").is_file()):
            continue  # the reader takes the .gz or the unpacked file alike
        if fetch.unpack == "none" and dest.is_file():
            continue
        if not (dest.is_file() and (fetch.md5 is None or _md5(dest) == fetch.md5)):
            _fetch(fetch.urls, dest, fetch.md5)
        if fetch.unpack == "gunzip":
            _gunzip(dest, dest.with_suffix(""))
        elif fetch.unpack == "untar":
            _untar(dest, data_dir)
