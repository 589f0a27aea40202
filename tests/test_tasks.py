"""The task registry: splits, cached files, dataset readers (on fake files in the real formats), scoring."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import tarfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from agentarch.tasks import builtin, downloads
from agentarch.tasks.builtin import TASKS, make_mqar
from agentarch.tasks.preparation import INPUT_FILES, LABEL_FILES, PreparedTask, channel_stats, prepare
from agentarch.tasks.registry import get_task
from agentarch.tasks.scoring import score
from agentarch.tasks.task import IGNORE_INDEX, TaskError

FILE_TASKS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn")
TABULAR_TASKS = ("nb201-cifar10", "nb201-cifar100", "nb201-imagenet16")


def load_inputs(prepared: PreparedTask) -> dict[str, np.ndarray]:
    return {f[:-4]: np.load(prepared.inputs_dir / f) for f in INPUT_FILES if f.endswith(".npy")}


# -- registry -----------------------------------------------------------------------------------


def test_registry_is_consistent():
    assert set(TASKS) == {
        "digits",
        "mqar",
        "stdlib-bytes",
        "digits-sr2",
        "digits-denoise",
        "sbm-nodes",
        "sbm-graphs",
        *FILE_TASKS,
        *TABULAR_TASKS,
    }
    for name, task in TASKS.items():
        assert task.name == name and get_task(name) is task
        assert len(task.in_shape) == (1 if task.kind in ("token", "lm", "graph", "graphs") else 3)
        assert task.metric == {"token": "query_accuracy", "lm": "bits_per_byte", "dense": "psnr"}.get(
            task.kind, "accuracy"
        )
        assert (task.kind == "tabular") == (name in TABULAR_TASKS)
        assert task.needs_data_dir == (name in FILE_TASKS)
        assert task.description and "\n" not in task.description
        assert task.epochs > 0 and task.batch_size > 0 and task.lr > 0 and task.max_params > 0
    digits = get_task("digits")
    assert (
        digits.in_shape,
        digits.num_classes,
        digits.epochs,
        digits.batch_size,
        digits.lr,
        digits.weight_decay,
        digits.max_params,
    ) == ((1, 8, 8), 10, 30, 64, 3e-3, 0.01, 1_000_000)


def test_a_tabular_task_has_no_data_to_prepare(tmp_path):
    with pytest.raises(TaskError, match="agentarch baseline --space nb201 --task nb201-cifar10"):
        prepare(get_task("nb201-cifar10"), tmp_path)


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(
        TaskError,
        match="known tasks: digits, mqar, stdlib-bytes, digits-sr2, digits-denoise, sbm-nodes, sbm-graphs, mnist",
    ):
        get_task("imagenet")


def test_prepare_refuses_unregistered_task_and_bad_seed(tmp_path):
    fake = dataclasses.replace(get_task("digits"), name="nope")
    with pytest.raises(TaskError, match="known tasks"):
        prepare(fake, tmp_path)
    with pytest.raises(TaskError, match="split seed"):
        prepare(get_task("digits"), tmp_path, split_seed=-1)


# -- digits -------------------------------------------------------------------------------------


def test_digits_split_is_a_stratified_partition(digits):
    from sklearn.datasets import load_digits

    data = load_inputs(digits)
    val_y, test_y = digits.labels("val"), digits.labels("test")
    assert data["train_x"].dtype == np.uint8 and data["train_x"].shape == (1077, 1, 8, 8)
    assert data["val_x"].shape == (360, 1, 8, 8) and data["test_x"].shape == (360, 1, 8, 8)
    assert data["train_y"].dtype == val_y.dtype == test_y.dtype == np.int64
    assert (len(data["train_y"]), len(val_y), len(test_y)) == (1077, 360, 360)

    # The three splits together are exactly the dataset (as a multiset of (image, label)), so disjoint.
    full = load_digits()
    whole = Counter(img.astype(np.uint8).tobytes() + bytes([t]) for img, t in zip(full.images, full.target))
    parts = Counter()
    for x, y in ((data["train_x"], data["train_y"]), (data["val_x"], val_y), (data["test_x"], test_y)):
        parts.update(img.tobytes() + bytes([int(t)]) for img, t in zip(x, y))
    assert parts == whole

    overall = np.bincount(full.target, minlength=10) / len(full.target)
    for y in (data["train_y"], val_y, test_y):
        share = np.bincount(y, minlength=10) / len(y)
        assert np.abs(share - overall).max() < 0.01  # stratified: every class in proportion


def test_digits_split_is_reproducible_per_seed_and_differs_across_seeds(tmp_path, digits):
    again = prepare(get_task("digits"), tmp_path / "a", split_seed=0)
    other = prepare(get_task("digits"), tmp_path / "b", split_seed=1)
    assert again.inputs_dir.parent.name == "digits-split0" and other.inputs_dir.parent.name == "digits-split1"
    first, second, third = load_inputs(digits), load_inputs(again), load_inputs(other)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    np.testing.assert_array_equal(digits.labels("test"), again.labels("test"))
    assert not np.array_equal(first["train_x"], third["train_x"])
    assert not np.array_equal(digits.labels("val"), other.labels("val"))


def test_meta_json_carries_normalization_stats_of_the_train_split(digits):
    meta = json.loads((digits.inputs_dir / "meta.json").read_text())
    train = np.load(digits.inputs_dir / "train_x.npy").astype(np.float64) / 16
    assert meta["kind"] == "image" and meta["scale"] == 16 and meta["num_classes"] == 10
    assert meta["in_shape"] == [1, 8, 8]
    assert meta["mean"] == pytest.approx([train.mean()], rel=1e-9)
    assert meta["std"] == pytest.approx([train.std()], rel=1e-9)


def test_channel_stats_are_per_channel_and_chunk_independent():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 3, 4, 4), dtype=np.uint8)
    x[:, 2] = 7  # a constant channel must not yield std 0
    mean, std = channel_stats(x, 255.0, chunk=7)
    want = x.astype(np.float64) / 255
    assert mean == pytest.approx(want.mean(axis=(0, 2, 3)).tolist())
    assert std[:2] == pytest.approx(want.std(axis=(0, 2, 3))[:2].tolist())
    assert std[2] == 1.0


def test_held_out_labels_never_reach_the_inputs_dir(digits, mqar):
    for prepared in (digits, mqar):
        assert sorted(os.listdir(prepared.inputs_dir)) == sorted(INPUT_FILES)
        assert sorted(os.listdir(prepared.labels_dir)) == sorted(LABEL_FILES)
        assert prepared.inputs_dir.parent == prepared.labels_dir.parent
    with pytest.raises(TaskError, match="'val' or 'test'"):
        digits.labels("train")  # type: ignore[arg-type]


# -- mqar ---------------------------------------------------------------------------------------


def test_make_mqar_invariants():
    n, seq_len, vocab, pairs = 300, 64, 64, 8
    x, y = make_mqar(n, seq_len, vocab, pairs, np.random.default_rng(0))
    assert x.shape == y.shape == (n, seq_len) and x.dtype == y.dtype == np.int64
    keys, values = x[:, 0 : 2 * pairs : 2], x[:, 1 : 2 * pairs : 2]
    assert ((keys >= 1) & (keys < vocab // 2)).all()
    assert ((values >= vocab // 2) & (values < vocab)).all()
    query_starts = set()
    for row in range(n):
        assert len(set(keys[row])) == pairs  # keys unique within a sequence
        binding = dict(zip(keys[row], values[row]))
        region_x, region_y = x[row, 2 * pairs :], y[row, 2 * pairs :]
        queried = np.flatnonzero(region_x)
        assert sorted(region_x[queried]) == sorted(keys[row])  # each key queried exactly once
        assert (region_x[region_x != 0] < vocab // 2).all()
        # labels exactly at the query positions, each the value bound to that key; -100 elsewhere
        assert np.array_equal(np.flatnonzero(region_y != IGNORE_INDEX), queried)
        assert all(region_y[p] == binding[region_x[p]] for p in queried)
        assert (y[row, : 2 * pairs] == IGNORE_INDEX).all()
        query_starts.add(tuple(region_x[queried]))
    assert len(query_starts) > n // 2  # query order is random, not the order of the pairs

    again = make_mqar(n, seq_len, vocab, pairs, np.random.default_rng(0))
    other = make_mqar(n, seq_len, vocab, pairs, np.random.default_rng(1))
    assert np.array_equal(x, again[0]) and np.array_equal(y, again[1])
    assert not np.array_equal(x, other[0])


def test_make_mqar_rejects_impossible_settings():
    rng = np.random.default_rng(0)
    with pytest.raises(TaskError, match="vocabulary"):
        make_mqar(4, 64, 16, 8, rng)  # only 7 keys in [1, 8)
    with pytest.raises(TaskError, match="too short"):
        make_mqar(4, 20, 64, 8, rng)


def test_mqar_prepared_splits(mqar, tmp_path):
    data = load_inputs(mqar)
    meta = json.loads((mqar.inputs_dir / "meta.json").read_text())
    assert meta == {"kind": "token", "in_shape": [64], "num_classes": 64}
    assert data["train_x"].shape == data["train_y"].shape == (4000, 64)
    assert data["val_x"].shape == mqar.labels("val").shape == (500, 64)
    assert data["test_x"].shape == mqar.labels("test").shape == (500, 64)
    assert data["train_x"].dtype == data["val_x"].dtype == mqar.labels("test").dtype == np.int64
    assert (np.count_nonzero(mqar.labels("val") != IGNORE_INDEX, axis=1) == 8).all()
    # separate streams per split: no split is a copy of another's start
    assert not np.array_equal(data["val_x"], data["test_x"])
    assert not np.array_equal(data["train_x"][:500], data["val_x"])
    again = prepare(get_task("mqar"), tmp_path, split_seed=0)
    assert np.array_equal(np.load(again.inputs_dir / "val_x.npy"), data["val_x"])
    other = prepare(get_task("mqar"), tmp_path, split_seed=1)
    assert not np.array_equal(np.load(other.inputs_dir / "val_x.npy"), data["val_x"])


# -- file-based datasets, on tiny fakes in the real on-disk formats ------------------------------

N_TRAIN, N_TEST = 20, 10


def fake_images(n: int, shape: tuple[int, ...], offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose every pixel differs and whose first pixel is their id; label = id % 10."""
    ids = np.arange(offset, offset + n)
    size = int(np.prod(shape))
    x = ((ids[:, None] * 7 + np.arange(size)[None, :]) % 256).astype(np.uint8).reshape(n, *shape)
    x.reshape(n, -1)[:, 0] = ids
    return x, (ids % 10).astype(np.int64)


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def cifar_pickle(x: np.ndarray, labels: np.ndarray, label_key: bytes, py2_module_names: bool) -> bytes:
    entry = {
        b"batch_label": b"fake",
        label_key: [int(v) for v in labels],
        b"data": x.reshape(len(x), -1),
        b"filenames": [b"f%d.png" % i for i in range(len(x))],
    }
    raw = pickle.dumps(entry, protocol=2)
    # Files pickled by old numpy name numpy.core.multiarray; the reader must accept both spellings.
    return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if py2_module_names else raw


def write_fake_dataset(name: str, root: Path, gz: bool = False) -> tuple[np.ndarray, ...]:
    """Write a fake `name` dataset under root; return its (train_x, train_y, test_x, test_y), images (N, C, H, W)."""
    shape = (1, 28, 28) if name in ("mnist", "fashion-mnist") else (3, 32, 32)
    train_x, train_y = fake_images(N_TRAIN, shape, 0)
    test_x, test_y = fake_images(N_TEST, shape, 100)
    if name in ("mnist", "fashion-mnist"):
        raw = root / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"
        for prefix, x, y in (("train", train_x, train_y), ("t10k", test_x, test_y)):
            write_idx(raw / f"{prefix}-images-idx3-ubyte", x[:, 0], gz)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, gz)
    elif name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i in range(5):  # five training batches of four images each
            part = slice(4 * i, 4 * i + 4)
            (folder / f"data_batch_{i + 1}").write_bytes(cifar_pickle(train_x[part], train_y[part], b"labels", True))
        (folder / "test_batch").write_bytes(cifar_pickle(test_x, test_y, b"labels", True))
    elif name == "cifar100":
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        train_y, test_y = train_y * 9 + 3, test_y * 9 + 3  # labels up to 84, past the first ten
        (folder / "train").write_bytes(cifar_pickle(train_x, train_y, b"fine_labels", False))
        (folder / "test").write_bytes(cifar_pickle(test_x, test_y, b"fine_labels", False))
    elif name == "svhn":
        from scipy.io import savemat

        root.mkdir(parents=True, exist_ok=True)
        for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            stored_y = np.where(y == 0, 10, y).astype(np.uint8)[:, None]  # SVHN labels the digit 0 as 10
            savemat(root / f"{split}_32x32.mat", {"X": np.transpose(x, (2, 3, 1, 0)), "y": stored_y})
    return train_x, train_y, test_x, test_y


@pytest.mark.parametrize(
    "name,gz",
    [
        ("mnist", False),
        ("mnist", True),
        ("fashion-mnist", True),
        ("cifar10", False),
        ("cifar100", False),
        ("svhn", False),
    ],
)
def test_file_dataset_is_read_from_its_real_format(tmp_path, name, gz):
    task = get_task(name)
    train_x, train_y, test_x, test_y = write_fake_dataset(name, tmp_path / "data", gz)
    prepared = prepare(task, tmp_path / "cache", data_dir=tmp_path / "data")
    data = load_inputs(prepared)
    val_y = prepared.labels("val")

    assert data["train_x"].dtype == data["test_x"].dtype == np.uint8
    assert data["train_x"].shape == (18, *task.in_shape) and data["val_x"].shape == (2, *task.in_shape)
    assert data["test_x"].shape == (N_TEST, *task.in_shape)
    assert data["train_y"].dtype == val_y.dtype == np.int64
    # the official test set, in order, with every pixel where it belongs (svhn: transposed, 10 -> 0)
    np.testing.assert_array_equal(data["test_x"], test_x)
    np.testing.assert_array_equal(prepared.labels("test"), test_y)
    # train + val: the official training set, each image still next to its own label
    got_x = np.concatenate([data["train_x"], data["val_x"]])
    got_y = np.concatenate([data["train_y"], val_y])
    order = np.argsort(got_x.reshape(len(got_x), -1)[:, 0])
    np.testing.assert_array_equal(got_x[order], train_x)
    np.testing.assert_array_equal(got_y[order], train_y)
    if name == "svhn":
        assert 0 in got_y and 10 not in got_y

    meta = json.loads((prepared.inputs_dir / "meta.json").read_text())
    assert meta["scale"] == 255 and meta["num_classes"] == task.num_classes
    assert len(meta["mean"]) == len(meta["std"]) == task.in_shape[0]
    assert meta["mean"] == pytest.approx(channel_stats(data["train_x"], 255.0)[0])


@pytest.mark.parametrize("name", FILE_TASKS)
def test_missing_dataset_files_name_the_paths_and_the_flags(tmp_path, name):
    with pytest.raises(TaskError, match="--data-dir") as err:
        prepare(get_task(name), tmp_path / "cache", data_dir=tmp_path / "empty")
    message = str(err.value)
    assert "--download" in message and str(tmp_path / "empty") in message
    assert {
        "mnist": "MNIST/raw/train-images-idx3-ubyte",
        "fashion-mnist": "FashionMNIST/raw/t10k-labels-idx1-ubyte",
        "cifar10": "cifar-10-batches-py/data_batch_5",
        "cifar100": "cifar-100-python/test",
        "svhn": "train_32x32.mat",
    }[name] in message
    with pytest.raises(TaskError, match="pass --data-dir DIR"):
        prepare(get_task(name), tmp_path / "cache")
    assert not (tmp_path / "cache" / f"{name}-split0").exists()


def test_one_missing_file_is_reported_alone(tmp_path):
    write_fake_dataset("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(TaskError) as err:
        prepare(get_task("cifar10"), tmp_path / "cache", data_dir=tmp_path)
    assert "data_batch_3" in str(err.value) and "data_batch_2" not in str(err.value)


def test_corrupt_files_are_clear_errors(tmp_path):
    write_fake_dataset("mnist", tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(TaskError, match="header says"):
        prepare(get_task("mnist"), tmp_path / "cache", data_dir=tmp_path)


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_fake_dataset("cifar100", tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(TaskError, match="refusing to load"):
        prepare(get_task("cifar100"), tmp_path / "cache", data_dir=tmp_path)


class FakeURLs:
    """Stands in for urllib's urlopen: serves bytes by URL, records what was asked for."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.asked = files, []

    def __call__(self, request, timeout=None):
        self.asked.append(request.full_url)
        if request.full_url not in self.files:
            raise OSError(f"no route to {request.full_url}")
        return io.BytesIO(self.files[request.full_url])


def test_download_unpacks_into_torchvision_layout(tmp_path, monkeypatch):
    """The whole download path except the network: mirrors, md5 check, gunzip, untar."""
    write_fake_dataset("mnist", tmp_path / "src", gz=True)
    write_fake_dataset("cifar10", tmp_path / "src")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    tarball = buffer.getvalue()
    raw = tmp_path / "src" / "MNIST" / "raw"
    files = {"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz": tarball}
    files.update({f"http://yann.lecun.com/exdb/mnist/{p.name}": p.read_bytes() for p in raw.iterdir()})
    fake = FakeURLs(files)
    monkeypatch.setattr("urllib.request.urlopen", fake)
    sources = dict(downloads.FILE_SOURCES)
    sources["cifar10"] = dataclasses.replace(
        sources["cifar10"],
        fetches=(dataclasses.replace(sources["cifar10"].fetches[0], md5=hashlib.md5(tarball).hexdigest()),),
    )
    sources["mnist"] = dataclasses.replace(
        sources["mnist"],
        fetches=tuple(
            dataclasses.replace(f, md5=hashlib.md5(files[f.urls[1]]).hexdigest()) for f in sources["mnist"].fetches
        ),
    )
    monkeypatch.setattr(downloads, "FILE_SOURCES", sources)

    data = tmp_path / "data"
    mnist = prepare(get_task("mnist"), tmp_path / "cache", data_dir=data, download=True)
    assert np.load(mnist.inputs_dir / "train_x.npy").shape == (18, 1, 28, 28)
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert (data / "MNIST" / "raw" / name).is_file() and (data / "MNIST" / "raw" / f"{name}.gz").is_file()
    assert any("ossci" in url for url in fake.asked)  # the first mirror failed, the second served
    assert not list(data.rglob("*.part-*"))

    cifar = prepare(get_task("cifar10"), tmp_path / "cache", data_dir=data, download=True)
    assert np.load(cifar.inputs_dir / "test_x.npy").shape == (N_TEST, 3, 32, 32)
    assert (data / "cifar-10-python.tar.gz").is_file() and (data / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_download_with_wrong_checksum_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "urllib.request.urlopen",
        FakeURLs({"http://ufldl.stanford.edu/housenumbers/train_32x32.mat": b"not the real file"}),
    )
    with pytest.raises(TaskError, match="md5") as err:
        prepare(get_task("svhn"), tmp_path / "cache", data_dir=tmp_path / "data", download=True)
    assert "train_32x32.mat" in str(err.value)
    assert not list((tmp_path / "data").iterdir())


# -- scoring ------------------------------------------------------------------------------------


def test_score_image_accuracy_and_nan_counts_as_wrong():
    task = get_task("digits")
    labels = np.array([0, 1, 2, 3])
    logits = np.eye(10, dtype=np.float32)[[0, 1, 5, 3]]
    assert score(task, logits, labels) == 0.75
    logits[0, 5] = np.nan  # argmax lands on the first NaN: a wrong class here...
    logits[1, 1] = np.nan  # ...and the right one here, which must not count either
    assert score(task, logits, labels) == 0.25


def test_score_token_counts_only_labelled_positions():
    task = get_task("mqar")
    labels = np.full((2, 64), IGNORE_INDEX)
    labels[0, 20], labels[0, 30], labels[1, 40] = 40, 41, 42
    logits = np.zeros((2, 64, 64), dtype=np.float32)
    logits[:, :, 7] = 1.0  # class 7 everywhere: wrong at every labelled position...
    logits[0, 20, 40] = logits[1, 40, 42] = 5.0  # ...except these two
    assert score(task, logits, labels) == pytest.approx(2 / 3)
    logits[1, 40, 42] = np.nan  # argmax lands on the (first) NaN, here the right class: still wrong
    assert score(task, logits, labels) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "task_name,outputs_shape,labels_shape",
    [
        ("digits", (4, 9), (4,)),  # wrong number of classes
        ("digits", (5, 10), (4,)),  # wrong number of rows
        ("digits", (4, 1, 10), (4,)),  # token-shaped logits on an image task
        ("digits", (4, 10), (4, 1)),  # labels with an extra axis
        ("mqar", (2, 64), (2, 64)),  # per-position ids instead of logits
        ("mqar", (2, 63, 64), (2, 64)),  # wrong sequence length
        ("mqar", (64, 64), (64,)),  # image-shaped
    ],
)
def test_score_shape_mismatch_is_an_error(task_name, outputs_shape, labels_shape):
    task = get_task(task_name)
    labels = np.zeros(labels_shape, dtype=np.int64)
    with pytest.raises(TaskError, match="shape"):
        score(task, np.zeros(outputs_shape, dtype=np.float32), labels)


def test_score_rejects_bad_dtypes_out_of_range_labels_and_nothing_to_score():
    digits, mqar = get_task("digits"), get_task("mqar")
    with pytest.raises(TaskError, match="dtype"):
        score(digits, np.zeros((2, 10), dtype=object), np.zeros(2, dtype=np.int64))
    with pytest.raises(TaskError, match="integers"):
        score(digits, np.zeros((2, 10)), np.zeros(2))
    with pytest.raises(TaskError, match="span"):
        score(digits, np.zeros((2, 10)), np.array([0, 10]))
    with pytest.raises(TaskError, match="no labelled positions"):
        score(mqar, np.zeros((1, 64, 64)), np.full((1, 64), IGNORE_INDEX))
    with pytest.raises(TaskError, match="no labelled examples"):
        score(digits, np.zeros((0, 10)), np.zeros(0, dtype=np.int64))


def test_score_on_prepared_labels(digits):
    labels = digits.labels("val")
    perfect = np.eye(10, dtype=np.float32)[labels]
    assert score(get_task("digits"), perfect, labels) == 1.0


# -- the cache: reuse and atomic, concurrent-safe writes -----------------------------------------


def mtimes(prepared: PreparedTask) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for d in (prepared.inputs_dir, prepared.labels_dir) for p in d.iterdir()}


def test_prepare_reuses_a_complete_cache(tmp_path, monkeypatch):
    first = prepare(get_task("digits"), tmp_path)
    assert (tmp_path / "digits-split0").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700
    before = mtimes(first)

    def must_not_build(*args):
        raise AssertionError("prepare rebuilt a cached split")

    monkeypatch.setitem(builtin.BUILDERS, "digits", must_not_build)
    second = prepare(get_task("digits"), tmp_path)
    assert second == first and mtimes(second) == before


def test_failed_prepare_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        prepare(get_task("digits"), tmp_path)
    assert os.listdir(tmp_path) == []


def test_losing_a_race_keeps_the_winners_copy(tmp_path, monkeypatch):
    """Another process finishes between our check and our rename: ours is discarded, theirs kept."""
    real_build = builtin.BUILDERS["digits"]
    calls = []

    def build_while_another_process_finishes(*args):
        calls.append(1)
        if len(calls) == 1:
            winner = prepare(get_task("digits"), tmp_path)  # the "other process", done first
            calls.append(mtimes(winner))
        return real_build(*args)

    monkeypatch.setitem(builtin.BUILDERS, "digits", build_while_another_process_finishes)
    prepared = prepare(get_task("digits"), tmp_path)
    assert mtimes(prepared) == calls[2]  # the winner's files, untouched
    assert os.listdir(tmp_path) == ["digits-split0"]  # no temporary folder left


def test_concurrent_prepares_agree(tmp_path):
    results: list[PreparedTask] = []
    errors: list[BaseException] = []

    def work():
        try:
            results.append(prepare(get_task("mqar"), tmp_path, split_seed=3))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4 and len(set(results)) == 1
    assert os.listdir(tmp_path) == ["mqar-split3"]
    assert sorted(os.listdir(results[0].inputs_dir)) == sorted(INPUT_FILES)


def test_incomplete_leftover_is_replaced(tmp_path):
    leftover = tmp_path / "digits-split0" / "inputs"
    leftover.mkdir(parents=True)
    (leftover / "train_x.npy").write_bytes(b"half a file")
    prepared = prepare(get_task("digits"), tmp_path)
    assert np.load(prepared.inputs_dir / "train_x.npy").shape == (1077, 1, 8, 8)
    assert os.listdir(tmp_path) == ["digits-split0"]
