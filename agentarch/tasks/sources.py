"""Readers for a task file's data: NumPy, image folders, CSV and Parquet tables, saved Hugging Face
datasets and text corpora, each turned into the stored formats that `prepare` writes.

A reader returns a `Dataset`: every row's inputs (already in the stored dtype and shape) with the
labels apart, and the split the source itself gives, if any. `split` (agentarch.tasks.splits) then cuts
it into train, validation and test, given or by seeded fractions. Labels never join the inputs: a table's
target column is never a feature, and an image's class is its folder, not its pixels.

Every error is a `TaskError` naming the file and, where there is one, the column, row or split,
because a user's data is wrong in ways the code cannot guess and the message is all they get. The
heavier readers (Pillow, pyarrow, datasets) are imported inside the functions that need them, so
importing this module (on every command that names a task file) costs nothing.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agentarch.tasks.npzfiles import load_npz
from agentarch.tasks.splits import MIN_SPLIT, SPLIT_NAMES, Dataset
from agentarch.tasks.task import BYTE_VOCAB, TaskError

MAX_IMAGE_PIXELS = 2**26
"""The most pixels one task image may have (67 million: an 8192x8192 photograph), checked from its header before it
is decoded: more is a decompression bomb (a PNG of a few bytes that Pillow would decode to gigabytes; Pillow only
warns below twice its own 89-million limit) or far more than a task needs."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def class_ids(values: Sequence[object], where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map class labels to ids in sorted order (numbers by value, anything else by its text)."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        row = next(i for i, v in enumerate(values) if v is None or (isinstance(v, float) and math.isnan(v)))
        raise TaskError(f"{where}: row {row + 1} has no label")
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values)
    names = sorted(set(values), key=(lambda v: float(v)) if numeric else str)  # type: ignore[arg-type]
    index = {v: i for i, v in enumerate(names)}
    if len(names) < 2:
        raise TaskError(f"{where}: the labels hold {len(names)} class(es); classification needs at least 2")
    shown = (_number_text(float(n)) if numeric else str(n) for n in names)  # type: ignore[arg-type]
    return np.array([index[v] for v in values], dtype=np.int64), tuple(shown)


def _number_text(value: float) -> str:
    """A numeric class label as people write it: 3, not 3.0."""
    return str(int(value)) if value.is_integer() else str(value)


# -- NumPy ----------------------------------------------------------------------------------------


def read_npz(path: Path, kind: str, regression: bool) -> Dataset:
    """Arrays per split (train_x, train_y, val_x, ...) or one x/y pair that is split by seed."""
    arrays = load_npz(path)
    if all(f"{s}_{p}" in arrays for s in SPLIT_NAMES for p in "xy"):
        xs = [arrays[f"{s}_x"] for s in SPLIT_NAMES]
        ys = [arrays[f"{s}_y"] for s in SPLIT_NAMES]
        names = [f"{s}_x" for s in SPLIT_NAMES]
    elif "x" in arrays and "y" in arrays:
        xs, ys, names = [arrays["x"]], [arrays["y"]], ["x"]
    else:
        raise TaskError(
            f"{path}: holds {', '.join(sorted(arrays)) or 'no arrays'}; expected train_x, train_y, val_x, val_y, "
            "test_x, test_y (the split given) or x and y (split by seed)"
        )
    for x, y, name in zip(xs, ys, names):
        if len(x) != len(y):
            raise TaskError(f"{path}: {name} has {len(x)} rows but its labels {len(y)}")
        if x.shape[1:] != xs[0].shape[1:]:
            raise TaskError(f"{path}: {name} rows are {x.shape[1:]} but {names[0]} rows are {xs[0].shape[1:]}")
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    given = np.repeat(np.arange(3), [len(a) for a in xs]) if len(xs) == 3 else None
    x = _stored_inputs(x, kind, f"{path} ({'/'.join(names)})")
    where = str(path)
    if kind == "lm":
        return _lm_dataset(
            path, arrays, x, given, keys=["bytes"] if names == ["x"] else [f"{s}_bytes" for s in SPLIT_NAMES]
        )
    if kind == "token":
        if y.shape != x.shape or not np.issubdtype(y.dtype, np.integer):
            raise TaskError(f"{path}: token labels must be integers shaped like the inputs {x.shape}, got {y.shape}")
        return Dataset(x, y.astype(np.int64), given, None, where, vocab_size=int(max(x.max(), y.max())) + 1)
    if regression:
        return Dataset(x, _targets(y, where), given, None, where)
    if y.ndim != 1:
        raise TaskError(f"{path}: class labels must be one per row (N,), got {y.shape}")
    labels, classes = class_ids(y.tolist(), where)
    ids = kind == "sequence" and np.issubdtype(x.dtype, np.integer)
    return Dataset(x, labels, given, classes, where, vocab_size=int(x.max()) + 1 if ids else None)


def _lm_dataset(
    path: Path, arrays: dict[str, np.ndarray], x: np.ndarray, given: np.ndarray | None, keys: list[str]
) -> Dataset:
    """Language modelling on byte ids, or on a tokenizer's ids with the bytes each id stands for (`keys`)."""
    if not any(key in arrays for key in keys):
        if x.max() >= BYTE_VOCAB:
            raise TaskError(
                f"{path}: ids reach {x.max()}, beyond bytes (256); for a tokenizer's ids add {', '.join(keys)}: "
                "the bytes of text each id stands for, shaped like the ids, so the score is bits per byte"
            )
        return Dataset(x, x.copy(), given, None, str(path), vocab_size=BYTE_VOCAB)
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise TaskError(f"{path}: has {', '.join(k for k in keys if k in arrays)} but not {', '.join(missing)}")
    counts = np.concatenate([arrays[key] for key in keys])
    if counts.shape != x.shape or not np.issubdtype(counts.dtype, np.integer) or counts.min() < 0:
        raise TaskError(
            f"{path}: {', '.join(keys)} must be integers >= 0 shaped like the ids {x.shape}, got {counts.dtype} "
            f"{counts.shape}"
        )
    return Dataset(
        x, x.copy(), given, None, str(path), vocab_size=int(x.max()) + 1, byte_counts=counts.astype(np.int64)
    )


def _stored_inputs(x: np.ndarray, kind: str, where: str) -> np.ndarray:
    """Inputs in the dtype and rank each kind is stored in, or an error that says what was found."""
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)) or x.dtype == np.bool_:
        raise TaskError(f"{where}: inputs must be numbers, got dtype {x.dtype}")
    if kind == "image":
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.dtype != np.uint8:
            raise TaskError(f"{where}: images must be uint8 (N, C, H, W) or (N, H, W), got {x.dtype} {x.shape}")
        return x
    if kind in ("token", "lm") or (kind == "sequence" and np.issubdtype(x.dtype, np.integer)):
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
            raise TaskError(f"{where}: id sequences must be integers (N, L), got {x.dtype} {x.shape}")
        if x.min() < 0:
            raise TaskError(f"{where}: ids must be >= 0, found {x.min()} in row {int(np.argmin(x.min(axis=1)))}")
        return x.astype(np.int64)
    want = 3 if kind == "sequence" else 2
    if x.ndim != want:
        layout = "(N, L, F) floats or (N, L) ids" if kind == "sequence" else "(N, F)"
        raise TaskError(f"{where}: {kind} inputs must be {layout}, got {x.shape}")
    x = x.astype(np.float32)
    _no_nan(x, where)
    return x


def _no_nan(x: np.ndarray, where: str, columns: Sequence[str] | None = None, first_row: int = 0) -> None:
    bad = ~np.isfinite(x.reshape(len(x), -1))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        what = f"column {columns[col]!r}" if columns is not None else "inputs"
        raise TaskError(f"{where}: {what} holds NaN or infinity at row {row + first_row}; fill or drop it")


def _targets(y: np.ndarray, where: str) -> np.ndarray:
    """Regression targets as float32 (N, targets)."""
    y = np.asarray(y)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise TaskError(f"{where}: regression targets must be numbers (N,) or (N, targets), got {y.dtype} {y.shape}")
    y = y.astype(np.float32)
    bad = ~np.isfinite(y)
    if bad.any():
        raise TaskError(f"{where}: target holds NaN or infinity at row {int(np.argwhere(bad)[0][0])}")
    return y


# -- images ---------------------------------------------------------------------------------------


def read_image_folder(root: Path, size: tuple[int, int, int] | None) -> Dataset:
    """Class sub-folders of images, optionally under train/val/test folders; resized to `size` (C, H, W).

    Without a declared size every image must have the size and mode of the first one.
    """
    if not root.is_dir():
        raise TaskError(f"image folder {root} does not exist")
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = {d: SPLIT_ALIASES[d.lower()] for d in subdirs if d.lower() in SPLIT_ALIASES}
    if split_dirs:
        missing = [s for s in SPLIT_NAMES if s not in split_dirs.values()]
        if missing or len(split_dirs) != len(subdirs):
            raise TaskError(
                f"{root}: split folders must be exactly train, val (or validation) and test, found {', '.join(subdirs)}"
            )
        folders = {s: root / d for d, s in split_dirs.items()}
    else:
        folders = {"all": root}
    files: list[tuple[Path, str, int]] = []  # (file, class, split)
    for split_name, folder in folders.items():
        classes = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        if not classes:
            raise TaskError(f"{folder}: no class sub-folders (expected {folder}/<class>/<image>.png)")
        for cls in classes:
            found = [f for f in sorted(cls.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
            index = SPLIT_NAMES.index(split_name) if split_name != "all" else -1
            files += [(f, cls.name, index) for f in found]
    if not files:
        raise TaskError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    x = decode_images([f for f, _, _ in files], size, root)
    y, classes = class_ids([c for _, c, _ in files], str(root))
    given = np.array([s for _, _, s in files]) if split_dirs else None
    return Dataset(x, y, given, classes, str(root))


def decode_images(images: Iterable[Any], size: tuple[int, int, int] | None, where: Path | str) -> np.ndarray:
    """Decode files (or PIL images) into uint8 (N, C, H, W): converted to L or RGB, resized to the declared size."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:  # pragma: no cover - Pillow comes with matplotlib
        raise TaskError("image sources need Pillow: pip install pillow") from err
    out: list[np.ndarray] = []
    first: tuple[str, tuple[int, int], str] | None = None
    for i, item in enumerate(images):
        label = str(item) if isinstance(item, Path) else f"{where} row {i}"
        try:
            image = Image.open(item) if isinstance(item, Path) else item
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                image.close()
                raise TaskError(
                    f"image {label} is {width}x{height}, more than {MAX_IMAGE_PIXELS:,} pixels; scale it down (or "
                    "remove it: a tiny file of that size is a decompression bomb)"
                )
            image.load()
        except Image.DecompressionBombError as err:
            raise TaskError(f"image {label}: {err} Scale it down, or remove it if it is a bomb") from None
        except (OSError, UnidentifiedImageError) as err:
            raise TaskError(f"cannot read image {label}: {err}") from err
        if size is None:
            mode = "L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            if first is None:
                first = (label, image.size, mode)
            elif (image.size, mode) != first[1:]:
                raise TaskError(
                    f"{label} is {image.size[0]}x{image.size[1]} {mode} but {first[0]} is "
                    f"{first[1][0]}x{first[1][1]} {first[2]}; declare [input] channels, height and width to resize"
                )
        else:
            mode = "L" if size[0] == 1 else "RGB"
        image = image.convert(mode)
        if size is not None and image.size != (size[2], size[1]):
            image = image.resize((size[2], size[1]), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        out.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return np.stack(out)


# -- tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """Columns of a CSV or Parquet file (or a dataset), with how to name a row in a message."""

    columns: dict[str, list[Any]]
    where: str
    header_lines: int  # a CSV row i is on line i + 2; a Parquet row i is row i + 1

    def row(self, i: int) -> str:
        return f"line {i + self.header_lines + 1}" if self.header_lines else f"row {i + 1}"

    def column(self, name: str, role: str) -> list[Any]:
        if name not in self.columns:
            raise TaskError(f"{self.where}: no {role} column {name!r}; its columns are {', '.join(self.columns)}")
        return self.columns[name]


def read_csv(path: Path) -> Table:
    """A CSV with a header row; values stay text until the table is encoded."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise TaskError(f"cannot read {path}: {err}") from err
    except UnicodeDecodeError as err:
        raise TaskError(f"{path}: not UTF-8 text ({_utf8_where(path.read_bytes(), err)})") from err
    rows = list(csv.reader(text.splitlines()))
    if not rows or not any(rows[0]):
        raise TaskError(f"{path}: empty, or no header row")
    header = rows[0]
    if len(set(header)) != len(header):
        raise TaskError(f"{path}: the header repeats a column name: {', '.join(header)}")
    body = [r for r in rows[1:] if r]
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise TaskError(f"{path}: line {i + 2} has {len(r)} fields but the header has {len(header)}")
    return Table({name: [r[c] for r in body] for c, name in enumerate(header)}, str(path), 1)


def read_parquet(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise TaskError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from err
    try:
        return Table(pq.read_table(path).to_pydict(), str(path), 0)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise TaskError(f"cannot read {path}: {err}") from err


def _number(value: Any) -> float | None:
    """A cell as a number, or None when it is not one (NaN stays a float: it is caught as missing later)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    text = str(value).strip()
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def _categorical_block(values: list[Any], categories: list[str], encoding: str) -> np.ndarray:
    """One categorical column: an ordinal code (-1 when unseen in train) or one-hot columns (all 0 when unseen)."""
    code = {c: i for i, c in enumerate(categories)}
    ids = np.array([code.get(str(v), -1) for v in values])
    if encoding == "ordinal":
        return ids[:, None].astype(np.float32)
    block = np.zeros((len(ids), len(categories)), dtype=np.float32)
    seen = np.flatnonzero(ids >= 0)
    block[seen, ids[seen]] = 1.0
    return block


def _numeric_block(table: Table, name: str) -> np.ndarray:
    """One numeric column as float32 (N, 1); a missing or non-numeric value names its row."""
    column = table.columns[name]
    values = [_number(v) for v in column]
    for i, v in enumerate(values):
        if v is None:
            raise TaskError(
                f"{table.where}: column {name!r} {table.row(i)} holds {column[i]!r}, not a number; "
                "list the column under categorical, or fix the value"
            )
        if not math.isfinite(v):
            raise TaskError(f"{table.where}: column {name!r} {table.row(i)} is empty or NaN; fill or drop the row")
    return np.array(values, dtype=np.float32)[:, None]


def _is_numeric(values: list[Any]) -> bool:
    return all(_number(v) is not None for v in values if v is not None and str(v).strip() != "")


def encode_table(
    tables: Sequence[Table],
    target: list[str],
    features: list[str] | None,
    categorical: list[str] | None,
    encoding: Literal["onehot", "ordinal"],
    regression: bool,
) -> Dataset:
    """Features as float32 (N, F) and the target apart; one table, or one per given split.

    Categorical columns (given, or every column that is not all numbers) are one-hot or ordinal
    encoded with categories in sorted order, learned on the train table (an unseen category in
    validation or test is all zeros, or -1). A missing or non-numeric value in a numeric feature is
    an error that names the column and the row.
    """
    first = tables[0]
    for name in target:
        first.column(name, "target")
    if features is None:
        features = [c for c in first.columns if c not in target]
    for name in features:
        if name in target:
            raise TaskError(f"{first.where}: column {name!r} is both a feature and the target")
        first.column(name, "feature")
    if not features:
        raise TaskError(f"{first.where}: no feature columns besides the target {', '.join(target)}")
    for table in tables[1:]:
        for name in (*features, *target):
            table.column(name, "target" if name in target else "feature")
    if categorical is None:
        categorical = [c for c in features if not _is_numeric(first.columns[c])]
    for name in categorical:
        if name not in features:
            raise TaskError(f"{first.where}: categorical column {name!r} is not among the features")
    blocks: list[list[np.ndarray]] = []  # per feature, one block per table
    for name in features:
        if name in categorical:
            categories = sorted({str(v) for v in first.columns[name]})  # learned on the train table
            blocks.append([_categorical_block(t.columns[name], categories, encoding) for t in tables])
        else:
            blocks.append([_numeric_block(t, name) for t in tables])
    x_parts = [np.concatenate([b[t] for b in blocks], axis=1) for t in range(len(tables))]
    x = np.concatenate(x_parts)
    given = np.repeat(np.arange(3), [len(p) for p in x_parts]) if len(tables) == 3 else None
    where = first.where if len(tables) == 1 else f"{first.where} (and its val/test files)"
    if regression:
        ys = []
        for table in tables:
            cols = []
            for name in target:
                vals = [_number(v) for v in table.columns[name]]
                for i, v in enumerate(vals):
                    if v is None or not math.isfinite(v):
                        raise TaskError(
                            f"{table.where}: target {name!r} {table.row(i)} holds {table.columns[name][i]!r}, "
                            "not a number (a regression target must be one)"
                        )
                cols.append(vals)
            ys.append(np.array(cols, dtype=np.float32).T.reshape(-1, len(target)))
        return Dataset(x, np.concatenate(ys), given, None, where)
    if len(target) != 1:
        raise TaskError(f"{first.where}: a classification has one target column, got {', '.join(target)}")
    raw = [v for table in tables for v in table.columns[target[0]]]
    if _is_numeric(raw):
        raw = [_number(v) if v is not None and str(v).strip() != "" else None for v in raw]
    labels, classes = class_ids(raw, f"{where} target {target[0]!r}")
    return Dataset(x, labels, given, classes, where)


# -- text -----------------------------------------------------------------------------------------


def _utf8_where(data: bytes, err: UnicodeDecodeError) -> str:
    line = data.count(b"\n", 0, err.start) + 1
    return f"line {line}, byte {err.start}: {data[err.start : err.start + 4]!r}"


def read_text_bytes(path: Path) -> np.ndarray:
    """A UTF-8 file's bytes as ids in [0, 256); invalid UTF-8 is an error naming the line."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TaskError(f"cannot read {path}: {err}") from err
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TaskError(f"{path}: not UTF-8 text ({_utf8_where(data, err)})") from err
    return np.frombuffer(data, dtype=np.uint8).astype(np.int64)


def lm_windows(ids: np.ndarray, seq_len: int, where: str) -> np.ndarray:
    """Non-overlapping windows of `seq_len` ids (the tail that does not fill one is dropped)."""
    count = len(ids) // seq_len
    if count < MIN_SPLIT:
        raise TaskError(
            f"{where}: {len(ids)} bytes make {count} sequence(s) of {seq_len}; need at least {MIN_SPLIT} "
            "(add text or lower [input] seq_len)"
        )
    return ids[: count * seq_len].reshape(count, seq_len)


def read_corpus(files: Sequence[Path], seq_len: int) -> Dataset:
    """Language modelling on bytes: one file split by seed, or train, val and test files.

    The labels are the inputs themselves: the trainer shifts them to score each next byte.
    """
    windows = [lm_windows(read_text_bytes(f), seq_len, str(f)) for f in files]
    x = np.concatenate(windows)
    given = np.repeat(np.arange(3), [len(w) for w in windows]) if len(files) == 3 else None
    return Dataset(x, x.copy(), given, None, str(files[0].parent if len(files) == 3 else files[0]), BYTE_VOCAB)


def encode_texts(texts: Sequence[Any], seq_len: int, where: str, row: Any) -> np.ndarray:
    """Texts as byte ids (N, seq_len) int64: UTF-8, truncated, padded with 0."""
    out = np.zeros((len(texts), seq_len), dtype=np.int64)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            if isinstance(text, bytes):
                try:
                    text = text.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise TaskError(f"{where} {row(i)}: text is not UTF-8 ({err})") from err
            else:
                raise TaskError(f"{where} {row(i)}: expected text, got {text!r}")
        data = text.encode("utf-8")[:seq_len]
        out[i, : len(data)] = np.frombuffer(data, dtype=np.uint8)
    return out


def text_classes(
    tables: Sequence[Table], text: str, target: str, seq_len: int
) -> Dataset:  # sequence classification from a table with a text column
    """Sequence classification: a text column as byte ids (vocab 256), a label column as class ids."""
    xs = [encode_texts(t.column(text, "text"), seq_len, t.where, t.row) for t in tables]
    raw = [v for t in tables for v in t.column(target, "target")]
    labels, classes = class_ids(raw, f"{tables[0].where} target {target!r}")
    given = np.repeat(np.arange(3), [len(x) for x in xs]) if len(tables) == 3 else None
    return Dataset(np.concatenate(xs), labels, given, classes, tables[0].where, BYTE_VOCAB)


# -- Hugging Face datasets (saved with save_to_disk) -----------------------------------------------


def read_hf(
    path: Path,
    kind: str,
    columns: dict[str, Any],
    size: tuple[int, int, int] | None,
    seq_len: int | None,
    regression: bool,
) -> Dataset:
    """A dataset (or a DatasetDict with train, validation and test) saved with `save_to_disk`.

    `columns` names the image, text or feature columns and the target; ClassLabel targets keep
    their names in their own order.
    """
    try:
        import datasets
    except ImportError as err:
        raise TaskError(f"{path}: Hugging Face sources need the datasets package: pip install datasets") from err
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as err:
        raise TaskError(f"cannot load the saved dataset {path}: {err}") from err
    if isinstance(loaded, datasets.DatasetDict):
        by_split = {SPLIT_ALIASES.get(k.lower()): v for k, v in loaded.items()}
        missing = [s for s in SPLIT_NAMES if s not in by_split]
        if missing:
            raise TaskError(
                f"{path}: the saved DatasetDict has splits {', '.join(loaded)}; it needs train, validation and test "
                "(or save one Dataset and set [splits] fractions)"
            )
        parts = [by_split[s] for s in SPLIT_NAMES]
    else:
        parts = [loaded]
    target = columns["target"]
    tables = [
        Table({c: p[c] for c in p.column_names}, f"{path}" + (f" [{s}]" if len(parts) == 3 else ""), 0)
        for p, s in zip(parts, SPLIT_NAMES)
    ]
    for t in tables:
        for name in target:
            t.column(name, "target")
    if kind == "image":
        image_col = columns.get("image") or "image"
        xs = [decode_images(t.column(image_col, "image"), size, t.where) for t in tables]
        if size is None and len({x.shape[1:] for x in xs}) > 1:
            raise TaskError(f"{path}: the splits' images differ in size; declare [input] channels, height and width")
        x = np.concatenate(xs)
        labels, classes = _hf_labels(parts[0], tables, target[0])
        given = np.repeat(np.arange(3), [len(p) for p in xs]) if len(parts) == 3 else None
        return Dataset(x, labels, given, classes, str(path))
    if columns.get("text"):
        if seq_len is None:
            raise TaskError(f"{path}: a text column needs [input] seq_len")
        xs = [encode_texts(t.column(columns["text"], "text"), seq_len, t.where, t.row) for t in tables]
        labels, classes = _hf_labels(parts[0], tables, target[0])
        given = np.repeat(np.arange(3), [len(p) for p in xs]) if len(parts) == 3 else None
        return Dataset(np.concatenate(xs), labels, given, classes, str(path), BYTE_VOCAB)
    data = encode_table(
        tables, target, columns.get("features"), columns.get("categorical"), columns["encoding"], regression
    )
    if not regression:
        labels, classes = _hf_labels(parts[0], tables, target[0])
        return Dataset(data.x, labels, data.given, classes, str(path))
    return data


def _hf_labels(part: Any, tables: Sequence[Table], target: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """ClassLabel targets keep their ids and names; anything else is mapped in sorted order."""
    import datasets

    feature = part.features[target]
    values = [v for t in tables for v in t.columns[target]]
    if isinstance(feature, datasets.ClassLabel):
        labels = np.asarray(values, dtype=np.int64)
        if labels.min() < 0:
            raise TaskError(f"{tables[0].where}: target {target!r} has unlabelled rows (-1)")
        return labels, tuple(feature.names)
    return class_ids(values, f"{tables[0].where} target {target!r}")
