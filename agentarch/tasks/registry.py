"""The task registry: what each task is, how its data is prepared, and how outputs are scored.

A task's data is prepared once per split seed into two sibling folders (see docs/architecture.md,
"Data contracts"):

    <cache>/<task>-split<seed>/inputs/   train_x.npy train_y.npy val_x.npy test_x.npy meta.json
    <cache>/<task>-split<seed>/labels/   val_y.npy test_y.npy

Only `inputs/` is shown to the sandbox, so a candidate can train on the training labels but never
see the validation or test labels; the host scores its outputs with `score`.

This module must stay light (the orchestrator imports it on every command), so it never imports
torch, and the heavier readers (scikit-learn, scipy) are imported inside the loaders that need them.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import pickle
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from agentarch.errors import AgentarchError

IGNORE_INDEX = -100
"""Label value at token positions that are not scored (the PyTorch cross-entropy convention)."""

BYTE_VOCAB = 256
"""The vocabulary of byte-level language modelling: an id is one byte."""

INPUT_FILES = ("train_x.npy", "train_y.npy", "val_x.npy", "test_x.npy", "meta.json")
LABEL_FILES = ("val_y.npy", "test_y.npy")


class TaskError(AgentarchError, ValueError):
    """A task cannot be used as asked; the message says what to fix."""


Kind = Literal["image", "token", "sequence", "table", "lm", "tabular"]
"""What goes into a candidate and what comes out (B = batch, L = sequence length):

- image: float (B, C, H, W) -> logits (B, num_classes)
- token: ids (B, L) -> logits (B, L, num_classes), one label per position (IGNORE_INDEX = not scored)
- sequence: ids (B, L) (with `vocab_size`) or floats (B, L, F) -> logits (B, num_classes), one label per sequence
- table: floats (B, F) -> logits (B, num_classes), or (B, num_classes) values for a regression metric
- lm: ids (B, L) (bytes, or a tokenizer's ids) -> logits (B, L, vocab = num_classes) predicting the next id; the
  trainer shifts, not the candidate
- tabular: answered from a benchmark table (NAS-Bench-201), never trained here
"""


@dataclass(frozen=True)
class Metric:
    """How a task's outputs are scored on held-out labels, and which way is better."""

    name: str
    direction: Literal["max", "min"]
    regression: bool = False  # scored on predicted values, not on argmax classes


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "max"),
        Metric("query_accuracy", "max"),
        Metric("balanced_accuracy", "max"),
        Metric("macro_f1", "max"),
        Metric("mse", "min", regression=True),
        Metric("mae", "min", regression=True),
        Metric("r2", "max", regression=True),
        Metric("bits_per_byte", "min"),
    )
}


@dataclass(frozen=True)
class Task:
    """What a candidate is trained on and judged by, with the default training budget."""

    name: str
    kind: Kind
    in_shape: tuple[int, ...]  # (C, H, W) image; (L,) token, lm and id sequences; (L, F) float sequences; (F,) table
    num_classes: int  # classes; the vocabulary for token and lm tasks; the number of targets for a regression
    metric: str  # a key of METRICS
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    max_params: int
    needs_data_dir: bool
    description: str  # one paragraph, shown to the proposer
    vocab_size: int | None = None  # id sequences of a sequence task: ids are in [0, vocab_size)
    build: Callable[[Task, Path | None, bool, int], _Splits] | None = None  # a task file's or entry point's loader
    fingerprint: str = ""  # what the prepared cache depends on besides the split seed (a task file's data)

    @property
    def direction(self) -> Literal["max", "min"]:
        """Which way the task's metric is better: every ranking (leaderboards, parents, REA, TPE, halving) asks."""
        return METRICS[self.metric].direction


_IMAGE_INPUT = (
    "Inputs arrive as float tensors (B, C, H, W) normalized per channel to zero mean and unit variance; "
    "the network returns logits (B, num_classes)."
)


def _held_out_task(
    name: str,
    in_shape: tuple[int, int, int],
    num_classes: int,
    *,
    epochs: int,
    weight_decay: float,
    max_params: int,
    train: str,
    val: str,
    test: str,
    what: str,
    note: str,
) -> Task:
    """A torchvision-format image task: a seeded 90/10 split of the official training set, official test set."""
    return Task(
        name=name,
        kind="image",
        in_shape=in_shape,
        num_classes=num_classes,
        metric="accuracy",
        epochs=epochs,
        batch_size=128,
        lr=1e-3,
        weight_decay=weight_decay,
        max_params=max_params,
        needs_data_dir=True,
        description=(
            f"{what}, {train} training and {val} validation images (a seeded 90/10 split of the official "
            f"training set) and the official {test} test images. {note} {_IMAGE_INPUT}"
        ),
    )


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name="digits",
            kind="image",
            in_shape=(1, 8, 8),
            num_classes=10,
            metric="accuracy",
            epochs=30,
            batch_size=64,
            lr=3e-3,
            weight_decay=0.01,
            max_params=1_000_000,
            needs_data_dir=False,
            description=(
                "Handwritten digit classification on scikit-learn's bundled 8x8 grayscale images "
                "(1,797 images, 10 classes, split 60/20/20 into train/validation/test). The images are tiny "
                "and few, so small convolutional or MLP models train in seconds and overfitting is the main "
                f"risk. {_IMAGE_INPUT}"
            ),
        ),
        Task(
            name="mqar",
            kind="token",
            in_shape=(64,),
            num_classes=64,
            metric="query_accuracy",
            epochs=20,
            batch_size=64,
            lr=1e-3,
            weight_decay=0.1,
            max_params=1_000_000,
            needs_data_dir=False,
            description=(
                "Multi-query associative recall (Zoology, Arora et al. 2023), a probe of in-context recall. "
                "Each sequence of 64 token ids (vocabulary 64, id 0 is padding) starts with 8 key-value "
                "pairs k1 v1 ... k8 v8 (keys from [1, 32), values from [32, 64)); the rest is padding in which "
                "each key appears again once, at a random position. At each such query position the model must "
                "output the value that was paired with that key earlier in the sequence; only query positions "
                "are scored. The network receives long ids (B, 64) and returns logits (B, 64, 64). Recall "
                "needs content-based lookup across the sequence (attention or a comparable mechanism); "
                "purely local mixing cannot solve it."
            ),
        ),
        Task(
            name="stdlib-bytes",
            kind="lm",
            in_shape=(128,),
            num_classes=256,
            metric="bits_per_byte",
            epochs=1,
            batch_size=32,
            lr=3e-3,
            weight_decay=0.1,
            max_params=1_000_000,
            needs_data_dir=False,
            fingerprint="py{}.{}.{}".format(*sys.version_info[:3]),  # patch releases may edit a file
            description=(
                "Byte-level language modelling on Python source code: the standard library's own source files "
                "of the running Python, cut into sequences of 128 bytes (UTF-8 bytes, vocabulary 256). Whole "
                "files are held out: about 400 KB of training text from 15 modules, validation and test "
                "text from other modules, so the data is the same on every machine with the same Python "
                "version and needs no download. The network receives long ids (B, 128) and returns logits "
                "(B, 128, 256), where position t predicts byte t + 1 from bytes 0..t only: it must be causal "
                "(the trainer shifts the targets, and a network that looks ahead is refused). Scored by bits "
                "per byte on the validation files (lower is better); a uniform guess is 8, and Python source "
                "rewards models that capture indentation, keywords and identifiers repeated within a file."
            ),
        ),
        _held_out_task(
            "mnist",
            (1, 28, 28),
            10,
            epochs=10,
            weight_decay=0.01,
            max_params=2_000_000,
            train="54,000",
            val="6,000",
            test="10,000",
            what="MNIST handwritten digits: 28x28 grayscale, 10 classes",
            note="Strong models reach above 99% accuracy.",
        ),
        _held_out_task(
            "fashion-mnist",
            (1, 28, 28),
            10,
            epochs=10,
            weight_decay=0.01,
            max_params=2_000_000,
            train="54,000",
            val="6,000",
            test="10,000",
            what="Fashion-MNIST: 28x28 grayscale photos of clothing in 10 classes (shirt, sneaker, bag, ...)",
            note="Harder than MNIST: some classes (shirt, T-shirt, pullover, coat) differ only in fine shape.",
        ),
        _held_out_task(
            "cifar10",
            (3, 32, 32),
            10,
            epochs=30,
            weight_decay=0.05,
            max_params=5_000_000,
            train="45,000",
            val="5,000",
            test="10,000",
            what="CIFAR-10: 32x32 colour photos of 10 object classes (airplane, cat, ship, ...)",
            note="Natural images with varied backgrounds; convolutional inductive biases and normalization matter.",
        ),
        _held_out_task(
            "cifar100",
            (3, 32, 32),
            100,
            epochs=30,
            weight_decay=0.05,
            max_params=5_000_000,
            train="45,000",
            val="5,000",
            test="10,000",
            what="CIFAR-100: the CIFAR images with 100 fine-grained classes (500 training images per class)",
            note="Few examples per class, so capacity has to be balanced against overfitting.",
        ),
        _held_out_task(
            "svhn",
            (3, 32, 32),
            10,
            epochs=15,
            weight_decay=0.05,
            max_params=5_000_000,
            train="about 66,000",
            val="7,300",
            test="26,032",
            what=(
                "SVHN: 32x32 colour crops of house numbers from Street View, labelled with the digit in the "
                "centre (10 classes)"
            ),
            note="Neighbouring digits often intrude at the edges of the crop.",
        ),
        *(
            Task(
                name=f"nb201-{dataset}",
                kind="tabular",
                in_shape=in_shape,
                num_classes=classes,
                metric="accuracy",
                epochs=200,
                batch_size=256,
                lr=0.1,
                weight_decay=5e-4,
                max_params=2_000_000,
                needs_data_dir=False,
                description=(
                    f"NAS-Bench-201 on {label}, answered from the published table: one query returns the cell's "
                    "validation accuracy (the search signal); the cell a search picks is scored by its test "
                    "accuracy after 200 epochs, averaged over the benchmark's seeds. Only cells of the nb201 "
                    "search space can be queried."
                ),
            )
            for dataset, label, in_shape, classes in (
                ("cifar10", "CIFAR-10", (3, 32, 32), 10),
                ("cifar100", "CIFAR-100", (3, 32, 32), 100),
                ("imagenet16", "ImageNet16-120 (16x16 downsampled ImageNet, 120 classes)", (3, 16, 16), 120),
            )
        ),
    )
}


def get_task(name: str) -> Task:
    """The built-in task called `name`, a task file (a path ending in .toml), or a task an installed
    package publishes under the `agentarch.tasks.registry` entry points; the error lists the known ones."""
    if name in TASKS:
        return TASKS[name]
    from agentarch.tasks import taskfiles  # it imports this module, and only task files need it

    found = taskfiles.resolve(name)
    if found is None:
        raise TaskError(
            f"unknown task {name!r}; known tasks: {', '.join([*TASKS, *taskfiles.entry_point_names()])}, "
            "or the path of a task file (.toml)"
        )
    return found


# -- prepared data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedTask:
    """Where one task's prepared data lies: inputs for the sandbox, labels for the host only."""

    task: Task
    inputs_dir: Path
    labels_dir: Path

    def labels(self, split: Literal["val", "test"]) -> np.ndarray:
        """The held-out labels of `split`: int64 classes (token tasks carry IGNORE_INDEX where nothing is
        scored), float32 regression targets, or an lm task's ids (its inputs, which the host scores against)."""
        if split not in ("val", "test"):
            raise TaskError(f"no held-out labels for split {split!r}; use 'val' or 'test'")
        return np.load(self.labels_dir / f"{split}_y.npy", allow_pickle=False)

    def byte_counts(self, split: Literal["val", "test"]) -> np.ndarray | None:
        """How many bytes of text each held-out id of an lm task over a tokenizer's ids stands for (N, L), host
        only; None for byte-level tasks, whose ids are bytes."""
        path = self.labels_dir / f"{split}_bytes.npy"
        return np.load(path, allow_pickle=False) if path.is_file() else None


class _Splits(NamedTuple):
    """A task's data in the stored formats, before it is written.

    `val_bytes` and `test_bytes` are for language modelling over a tokenizer's ids: the bytes of text
    each id stands for, (N, L) int64, which turn the likelihood into bits per byte (host only).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    val_bytes: np.ndarray | None = None
    test_bytes: np.ndarray | None = None


def prepare(
    task: Task, cache_dir: Path, data_dir: Path | None = None, download: bool = False, split_seed: int = 0
) -> PreparedTask:
    """Write the task's split for `split_seed` into the cache once, and return where it is.

    A complete earlier copy is reused untouched. A new copy is written into a temporary folder
    beside the target and renamed into place in one step, so a reader never sees half a copy and
    two processes preparing at once both end up with the same complete copy (the second rename
    loses, and its copy is thrown away).
    """
    if task.kind == "tabular":
        raise TaskError(
            f"{task.name} is answered from the NAS-Bench-201 table and has no data to train on; "
            f"search it with `agentarch baseline --space nb201 --task {task.name}`"
        )
    builder = task.build or _BUILDERS.get(task.name)
    if builder is None:
        raise TaskError(f"no data loader for task {task.name!r}; known tasks: {', '.join(_BUILDERS)}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or not 0 <= split_seed < 2**32:
        raise TaskError(f"split seed must be an integer in [0, 2**32), got {split_seed!r}")
    split_seed = int(split_seed)
    target = Path(cache_dir) / f"{task.name}{'-' + task.fingerprint if task.fingerprint else ''}-split{split_seed}"
    prepared = PreparedTask(task, target / "inputs", target / "labels")
    if _is_complete(target):
        with contextlib.suppress(OSError):  # caches made before labels were host-only get the mode too
            os.chmod(prepared.labels_dir, 0o700)
        return prepared
    splits = builder(task, None if data_dir is None else Path(data_dir), download, split_seed)
    _check_splits(task, splits)
    _write_atomically(target, task, splits)
    return prepared


def _is_complete(target: Path) -> bool:
    return all((target / "inputs" / f).is_file() for f in INPUT_FILES) and all(
        (target / "labels" / f).is_file() for f in LABEL_FILES
    )


def _write_atomically(target: Path, task: Task, splits: _Splits) -> None:
    """Write into a temporary sibling folder, then rename it to `target` (atomic on one file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the finished folder should look like any other
        inputs, labels = tmp / "inputs", tmp / "labels"
        inputs.mkdir()
        labels.mkdir(mode=0o700)  # the host's: the candidate uid cannot read them (Landlock keeps capless root out)
        for name, array in (
            ("train_x", splits.train_x),
            ("train_y", splits.train_y),
            ("val_x", splits.val_x),
            ("test_x", splits.test_x),
        ):
            np.save(inputs / f"{name}.npy", array, allow_pickle=False)
        for name, array in (("val_y", splits.val_y), ("test_y", splits.test_y)):
            np.save(labels / f"{name}.npy", array, allow_pickle=False)
        for name, array in (("val_bytes", splits.val_bytes), ("test_bytes", splits.test_bytes)):
            if array is not None:
                np.save(labels / f"{name}.npy", array, allow_pickle=False)
        (inputs / "meta.json").write_text(json.dumps(_meta(task, splits), indent=2) + "\n")
        _rename_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there if something failed or we lost a race


def _rename_into_place(tmp: Path, target: Path) -> None:
    """Move the finished `tmp` to `target`, unless a complete copy got there first."""
    problem: OSError | None = None
    for _ in range(2):
        try:
            os.rename(tmp, target)  # replaces an empty folder; fails on a non-empty one
            return
        except OSError as err:
            problem = err
            if _is_complete(target):
                return  # another process finished first; its copy is as good as ours
            if not target.exists():
                continue
            # An incomplete leftover (not written by prepare, which only renames whole copies):
            # move it aside and try once more.
            stale = target.with_name(f".{target.name}.stale-{os.getpid()}-{os.urandom(4).hex()}")
            try:
                os.rename(target, stale)
            except FileNotFoundError:
                pass
            else:
                shutil.rmtree(stale, ignore_errors=True)
    if not _is_complete(target):
        raise TaskError(
            f"could not put prepared data at {target} ({problem}); check that the cache folder is "
            "writable, or remove that folder, and try again"
        )


def _meta(task: Task, splits: _Splits) -> dict[str, object]:
    """What the runner needs to turn stored inputs into network inputs, computed here on the host.

    Images get per-channel statistics; float sequences and tables get per-feature mean and std over
    the training split (so the runner normalizes every split with training statistics only); id
    sequences name their vocabulary; a regression carries the training targets' mean and std, by
    which the trainer standardizes its targets and un-standardizes its predictions.
    """
    meta: dict[str, object] = {"kind": task.kind, "in_shape": list(task.in_shape), "num_classes": task.num_classes}
    if task.kind == "image":
        scale = _IMAGE_SCALE.get(task.name, 255.0)
        mean, std = channel_stats(splits.train_x, scale)
        meta.update(scale=scale, mean=mean, std=std)
    elif _float_inputs(task):
        meta.update(zip(("mean", "std"), _feature_stats(splits.train_x)))
    elif task.kind == "sequence":
        meta["vocab_size"] = task.vocab_size
    if METRICS[task.metric].regression:
        meta["regression"] = True
        meta.update(zip(("target_mean", "target_std"), _feature_stats(splits.train_y)))
    return meta


def _float_inputs(task: Task) -> bool:
    """Whether the task's inputs are float features (tables, float series) rather than images or ids."""
    return task.kind == "table" or (task.kind == "sequence" and task.vocab_size is None)


def _feature_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and std of each feature (the last axis) over every other axis, in float64; a constant feature gets std 1."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std[std < 1e-12] = 1.0
    return [float(m) for m in mean], [float(s) for s in std]


def channel_stats(x: np.ndarray, scale: float, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of `x / scale` for uint8 images (N, C, H, W).

    Computed in chunks (two passes, float64) so a CIFAR-sized training set never needs a float copy
    of the whole array. A constant channel gets std 1.0, so normalizing never divides by zero.
    """
    axes = (0, *range(2, x.ndim))
    count = x.shape[0] * math.prod(x.shape[2:])
    total = np.zeros(x.shape[1])
    for start in range(0, x.shape[0], chunk):
        total += (x[start : start + chunk].astype(np.float64) / scale).sum(axis=axes)
    mean = total / count
    squares = np.zeros(x.shape[1])
    shape = (1, -1) + (1,) * (x.ndim - 2)
    for start in range(0, x.shape[0], chunk):
        centred = x[start : start + chunk].astype(np.float64) / scale - mean.reshape(shape)
        squares += (centred**2).sum(axis=axes)
    std = np.sqrt(squares / count)
    std[std < 1e-6] = 1.0
    return [float(m) for m in mean], [float(s) for s in std]


def _check_splits(task: Task, splits: _Splits) -> None:
    """Refuse to cache data that breaks the contract (a bad file would otherwise surface as odd scores).

    Stored formats per kind: images uint8 (N, C, H, W); token, lm and id-sequence inputs int64 ids;
    float sequences and tables float32 features, all finite. Class labels are int64, (N, L) per
    position for token tasks (IGNORE_INDEX where not scored) and (N,) otherwise; regression targets
    are finite float32 (N, num_classes); an lm task's labels are its inputs (the next-id targets), and
    over a tokenizer's ids its held-out splits carry the bytes each id stands for.
    """
    check_metric(task)
    if task.kind == "sequence" and (task.vocab_size is None) != (len(task.in_shape) == 2):
        raise TaskError(
            f"{task.name}: a sequence task has in_shape (L,) with a vocab_size (ids) or (L, F) without one "
            f"(float series); got in_shape {task.in_shape} and vocab_size {task.vocab_size}"
        )
    regression = METRICS[task.metric].regression
    for split in ("train", "val", "test"):
        x, y = getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y")
        if len(x) == 0 or len(x) != len(y):
            raise TaskError(f"{task.name}: {split} split has {len(x)} inputs and {len(y)} labels")
        n = len(x)
        want_x = (n, *task.in_shape)
        want_dtype = np.uint8 if task.kind == "image" else np.float32 if _float_inputs(task) else np.int64
        if x.dtype != want_dtype or x.shape != want_x:
            raise TaskError(
                f"{task.name}: {split} inputs are {x.dtype} {x.shape}; expected {np.dtype(want_dtype)} {want_x}"
            )
        if want_dtype == np.float32 and not np.isfinite(x).all():
            raise TaskError(f"{task.name}: {split} inputs hold NaN or Inf (first at index {_first_bad(x)})")
        if want_dtype == np.int64:
            vocab = task.vocab_size if task.kind == "sequence" else task.num_classes
            if x.min() < 0 or x.max() >= vocab:
                raise TaskError(f"{task.name}: {split} ids span [{x.min()}, {x.max()}]; expected [0, {vocab})")
        if regression:
            want_y, y_dtype = (n, task.num_classes), np.float32
        else:
            want_y, y_dtype = ((n, *task.in_shape) if task.kind in ("token", "lm") else (n,)), np.int64
        if y.dtype != y_dtype or y.shape != want_y:
            raise TaskError(
                f"{task.name}: {split} labels are {y.dtype} {y.shape}; expected {np.dtype(y_dtype)} {want_y}"
            )
        if regression:
            if not np.isfinite(y).all():
                raise TaskError(f"{task.name}: {split} targets hold NaN or Inf (first at index {_first_bad(y)})")
            continue
        if task.kind == "lm" and not np.array_equal(x, y):
            raise TaskError(f"{task.name}: {split} labels of a language-modelling task must equal its inputs")
        scored = y[y != IGNORE_INDEX] if task.kind == "token" else y
        if scored.size and (scored.min() < 0 or scored.max() >= task.num_classes):
            raise TaskError(
                f"{task.name}: {split} labels span [{scored.min()}, {scored.max()}]; expected [0, {task.num_classes})"
            )
    if task.kind == "lm":
        _check_byte_counts(task, splits)


def _check_byte_counts(task: Task, splits: _Splits) -> None:
    """An lm task over a tokenizer's ids needs, per held-out id, the bytes it stands for (bits per byte)."""
    for split, counts, x in (("val", splits.val_bytes, splits.val_x), ("test", splits.test_bytes, splits.test_x)):
        if counts is None:
            if task.num_classes != BYTE_VOCAB:
                raise TaskError(
                    f"{task.name}: a vocabulary of {task.num_classes} ids needs the bytes each {split} id stands for "
                    "(bits per byte); without them, ids must be bytes (256)"
                )
        elif counts.dtype != np.int64 or counts.shape != x.shape or counts.min() < 0 or counts[:, 1:].sum() <= 0:
            raise TaskError(
                f"{task.name}: {split} byte counts must be int64 >= 0 shaped like the ids {x.shape} and cover at "
                f"least one predicted byte; got {counts.dtype} {counts.shape}"
            )


def _first_bad(a: np.ndarray) -> tuple[int, ...]:
    """The index of the first non-finite value, for an error message that points at the row."""
    return tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])


def _split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of range(len(labels)), stratified by label where there are enough of each class."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        keep, held = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=labels)
    except ValueError:  # a class too small to stratify (only in toy data): a plain shuffle split
        keep, held = train_test_split(index, test_size=test_fraction, random_state=seed)
    return np.asarray(keep), np.asarray(held)


# -- digits -------------------------------------------------------------------------------------


def _build_digits(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> _Splits:
    """scikit-learn's bundled digits, split 60/20/20 (stratified, seeded)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.uint8)[:, None, :, :]  # values are whole numbers 0..16
    y = digits.target.astype(np.int64)
    rest, test = _split_indices(y, 0.2, split_seed)
    train_in_rest, val_in_rest = _split_indices(y[rest], 0.25, split_seed)
    train, val = rest[train_in_rest], rest[val_in_rest]
    return _Splits(x[train], y[train], x[val], y[val], x[test], y[test])


# -- mqar ---------------------------------------------------------------------------------------

MQAR_SIZES = {"train": 4000, "val": 500, "test": 500}
MQAR_NUM_PAIRS = 8


def make_mqar(
    n: int, seq_len: int, vocab: int, num_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Generate `n` multi-query associative recall sequences (Zoology, Arora et al. 2023).

    Each sequence is `k1 v1 k2 v2 ... kK vK` followed by a query region of padding (id 0) in which
    every key appears once more, at distinct random positions in random order. Keys are distinct
    ids from [1, vocab // 2) and values distinct ids from [vocab // 2, vocab), as in Zoology. The
    label at a key's query position is its value; every other label is IGNORE_INDEX.

    Returns (x, y), both int64 (n, seq_len).
    """
    half = vocab // 2
    if num_pairs < 1 or half - 1 < num_pairs or vocab - half < num_pairs:
        raise TaskError(
            f"mqar: a vocabulary of {vocab} cannot hold {num_pairs} distinct keys in [1, {half}) "
            f"and values in [{half}, {vocab})"
        )
    if seq_len < 3 * num_pairs:
        raise TaskError(
            f"mqar: seq_len {seq_len} is too short for {num_pairs} pairs and their queries "
            f"(needs at least {3 * num_pairs})"
        )
    if n < 0:
        raise TaskError(f"mqar: cannot make {n} sequences")
    rows = np.arange(n)[:, None]
    # Distinct draws per row: the first K of a random permutation of the candidates.
    keys = np.argsort(rng.random((n, half - 1)), axis=1)[:, :num_pairs] + 1
    values = np.argsort(rng.random((n, vocab - half)), axis=1)[:, :num_pairs] + half
    query_slots = seq_len - 2 * num_pairs
    positions = np.argsort(rng.random((n, query_slots)), axis=1)[:, :num_pairs] + 2 * num_pairs
    x = np.zeros((n, seq_len), dtype=np.int64)
    x[:, 0 : 2 * num_pairs : 2] = keys
    x[:, 1 : 2 * num_pairs : 2] = values
    x[rows, positions] = keys
    y = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    y[rows, positions] = values
    return x, y


def _build_mqar(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> _Splits:
    """Generated from the split seed, one independent generator stream per split."""
    streams = np.random.SeedSequence(split_seed).spawn(3)
    made = {
        split: make_mqar(
            MQAR_SIZES[split], task.in_shape[0], task.num_classes, MQAR_NUM_PAIRS, np.random.default_rng(stream)
        )
        for split, stream in zip(("train", "val", "test"), streams)
    }
    return _Splits(*made["train"], *made["val"], *made["test"])


# -- stdlib-bytes -------------------------------------------------------------------------------

STDLIB_FILES: dict[str, tuple[str, ...]] = {
    "train": (
        "argparse.py",
        "calendar.py",
        "contextlib.py",
        "copy.py",
        "csv.py",
        "fractions.py",
        "functools.py",
        "graphlib.py",
        "heapq.py",
        "queue.py",
        "random.py",
        "shlex.py",
        "string.py",
        "tempfile.py",
        "textwrap.py",
    ),
    "val": ("gettext.py", "pprint.py"),
    "test": ("bisect.py", "colorsys.py", "numbers.py", "weakref.py"),
}
"""The standard-library modules of each split: a fixed, sorted list, so the split never depends on what
else an installation carries (a file a Python lacks is skipped, the rest keep their split)."""


def stdlib_corpus(split: str, stdlib: Path | None = None) -> bytes:
    """The bytes of `split`'s standard-library files, concatenated in the listed order."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"]) if stdlib is None else stdlib
    return b"".join((root / name).read_bytes() for name in STDLIB_FILES[split] if (root / name).is_file())


def _build_stdlib_bytes(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> _Splits:
    """Non-overlapping windows of each split's bytes (the remainder is dropped); the split seed plays no
    part, because the held-out files are fixed."""
    seq_len = task.in_shape[0]
    arrays = []
    for split in ("train", "val", "test"):
        data = np.frombuffer(stdlib_corpus(split), dtype=np.uint8)
        if len(data) < seq_len:
            raise TaskError(
                f"{task.name}: this Python has {len(data)} bytes of the {split} files "
                f"({', '.join(STDLIB_FILES[split])}) in its standard library; at least {seq_len} are needed"
            )
        ids = data[: len(data) // seq_len * seq_len].reshape(-1, seq_len).astype(np.int64)
        arrays += [ids, ids.copy()]  # the labels of a language model are its inputs; the trainer shifts
    return _Splits(*arrays)


# -- file-based image datasets (torchvision's on-disk layout) ------------------------------------

_IMAGE_SCALE: dict[str, float] = {
    "digits": 16.0,
    "mnist": 255.0,
    "fashion-mnist": 255.0,
    "cifar10": 255.0,
    "cifar100": 255.0,
    "svhn": 255.0,
}

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

_FILE_SOURCES: dict[str, _FileSource] = {
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


def _build_from_files(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> _Splits:
    """Read the official train and test sets, then hold out a seeded 10% of train as validation."""
    source = _FILE_SOURCES[task.name]
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
    keep, val = _split_indices(train_y, _VAL_FRACTION, split_seed)
    return _Splits(train_x[keep], train_y[keep], train_x[val], train_y[val], test_x, test_y)


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


# -- scoring ------------------------------------------------------------------------------------


_METRIC_KINDS: dict[str, tuple[str, ...]] = {
    "accuracy": ("image", "token", "sequence", "table", "tabular"),
    "query_accuracy": ("token",),
    "balanced_accuracy": ("image", "token", "sequence", "table"),
    "macro_f1": ("image", "token", "sequence", "table"),
    "mse": ("sequence", "table"),
    "mae": ("sequence", "table"),
    "r2": ("sequence", "table"),
    "bits_per_byte": ("lm",),
}
"""Which kinds each metric can score: class metrics need classes, regression metrics one value per target."""


def check_metric(task: Task) -> None:
    """Refuse a metric the task's kind cannot be scored by (an lm task by accuracy, an image task by MSE)."""
    if task.metric not in METRICS:
        raise TaskError(f"{task.name}: unknown metric {task.metric!r}; known metrics: {', '.join(METRICS)}")
    if task.kind not in _METRIC_KINDS[task.metric]:
        fitting = [name for name, kinds in _METRIC_KINDS.items() if task.kind in kinds]
        raise TaskError(
            f"{task.name}: a {task.kind} task cannot be scored by {task.metric}; use one of {', '.join(fitting)}"
        )


def output_shape(task: Task, labels: np.ndarray) -> tuple[int, ...]:
    """The shape of the outputs the runner writes for held-out `labels` of this task (what the host reads).

    Logits (N, num_classes) for a class per example and (N, L, num_classes) for a class per
    position; predicted values (N, num_classes) for a regression; for a language-modelling task the
    runner writes one number per sequence, its summed negative log-likelihood in nats, (N,):
    its logits (N, L, 256) would be 1 KiB per byte of held-out text.
    """
    n = labels.shape[0] if labels.ndim else 0
    if task.kind == "lm":
        return (n,)
    if task.kind == "token":
        return (*labels.shape, task.num_classes)
    return (n, task.num_classes)


def score(task: Task, outputs: np.ndarray, labels: np.ndarray, byte_counts: np.ndarray | None = None) -> float:
    """The task's metric of the runner's outputs against held-out labels (see `output_shape`).

    Class metrics (accuracy, query accuracy, balanced accuracy, macro-F1) take the argmax of the
    logits and count only positions whose label is not IGNORE_INDEX; a prediction whose logits hold
    a NaN counts as wrong. Balanced accuracy and macro-F1 follow scikit-learn: the mean recall over
    the classes in the labels, and the mean F1 over the classes in the labels or predictions.
    Regression metrics (mse, mae, r2) compare values in the targets' own units, averaged over
    targets (r2 as scikit-learn's uniform average). Bits per byte is the summed negative
    log-likelihood over every predicted id (positions 1..L-1 of each sequence) divided by ln 2 and
    by the bytes those ids stand for: one each for byte ids, `byte_counts` (N, L) for a tokenizer's. Any shape or dtype that does not fit, or a NaN where a value is needed, raises
    TaskError: a wrong shape must never turn into a quietly wrong score.
    """
    check_metric(task)
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    metric = METRICS[task.metric]
    if not np.issubdtype(outputs.dtype, np.floating) and not np.issubdtype(outputs.dtype, np.integer):
        raise TaskError(f"{task.name}: outputs must be real numbers, got dtype {outputs.dtype}")
    label_ndim = 2 if task.kind in ("token", "lm") or metric.regression else 1
    if labels.ndim != label_ndim:
        raise TaskError(f"{task.name}: labels have shape {labels.shape}; expected {label_ndim} dimensions")
    if metric.regression != np.issubdtype(labels.dtype, np.floating) or not (
        metric.regression or np.issubdtype(labels.dtype, np.integer)
    ):
        want = "floats" if metric.regression else "integers"
        raise TaskError(f"{task.name}: labels of a {task.metric} task must be {want}, got dtype {labels.dtype}")
    expected = output_shape(task, labels)
    if outputs.shape != expected:
        raise TaskError(f"{task.name}: outputs have shape {outputs.shape}; expected {expected}")
    if len(labels) == 0:
        raise TaskError(f"{task.name}: no labelled examples to score")
    if task.kind == "lm" or metric.regression:
        value = (
            _bits_per_byte(task, outputs, labels, byte_counts)
            if task.kind == "lm"
            else _regression_score(task, outputs.astype(np.float64), labels.astype(np.float64))
        )
        # Finite outputs can still overflow (errors of 1e200 squared; NLLs near the float64 maximum, summed): an
        # infinite score would rank as merely the worst, yet stop every predictor fitted on the archive.
        if not math.isfinite(value):
            raise TaskError(f"{task.name}: the outputs' {task.metric} is {value}, not a finite number")
        return value
    scored = labels != IGNORE_INDEX if task.kind == "token" else np.ones(labels.shape, dtype=bool)
    if not scored.any():
        raise TaskError(f"{task.name}: no labelled positions to score")
    wanted = labels[scored]
    if wanted.min() < 0 or wanted.max() >= task.num_classes:
        raise TaskError(f"{task.name}: labels span [{wanted.min()}, {wanted.max()}]; expected [0, {task.num_classes})")
    predicted = np.where(np.isnan(outputs).any(axis=-1), -1, outputs.argmax(axis=-1))[scored]  # -1: no class
    if task.metric in ("accuracy", "query_accuracy"):
        return float((predicted == wanted).mean())
    classes = np.unique(wanted)
    recall = np.array([(predicted[wanted == c] == c).mean() for c in classes])
    if task.metric == "balanced_accuracy":
        return float(recall.mean())
    classes = np.union1d(classes, predicted[predicted >= 0])
    f1 = []
    for c in classes:
        true_pos = np.sum((predicted == c) & (wanted == c))
        denominator = np.sum(predicted == c) + np.sum(wanted == c)
        f1.append(2 * true_pos / denominator)
    return float(np.mean(f1))


def _regression_score(task: Task, outputs: np.ndarray, labels: np.ndarray) -> float:
    if not np.isfinite(outputs).all():
        raise TaskError(f"{task.name}: predictions hold NaN or Inf (first at index {_first_bad(outputs)})")
    if not np.isfinite(labels).all():
        raise TaskError(f"{task.name}: targets hold NaN or Inf (first at index {_first_bad(labels)})")
    error = outputs - labels
    if task.metric == "mse":
        return float(np.mean(error**2))
    if task.metric == "mae":
        return float(np.mean(np.abs(error)))
    total = ((labels - labels.mean(axis=0)) ** 2).sum(axis=0)
    if (total == 0).any():
        raise TaskError(f"{task.name}: r2 is undefined for a target that is constant over the held-out split")
    return float(np.mean(1.0 - (error**2).sum(axis=0) / total))


def _bits_per_byte(task: Task, outputs: np.ndarray, labels: np.ndarray, byte_counts: np.ndarray | None = None) -> float:
    """Summed NLL in nats per sequence (N,) against (N, L) ids: bits per byte of the L - 1 predicted ids.

    Byte ids (a vocabulary of 256, no `byte_counts`) stand for one byte each; a tokenizer's ids for
    the bytes `byte_counts` gives per position.
    """
    if labels.shape[1] < 2:
        raise TaskError(f"{task.name}: sequences of {labels.shape[1]} id(s) have nothing to predict")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= task.num_classes:
        raise TaskError(f"{task.name}: labels must be ids in [0, {task.num_classes})")
    if not np.isfinite(outputs).all() or (outputs < 0).any():
        raise TaskError(f"{task.name}: per-sequence negative log-likelihoods must be finite and non-negative")
    if byte_counts is None:
        if task.num_classes != BYTE_VOCAB:
            raise TaskError(
                f"{task.name}: bits per byte over a vocabulary of {task.num_classes} ids needs the bytes each id "
                "stands for (val_bytes and test_bytes in the data); without them, ids must be bytes (256)"
            )
        predicted = labels.shape[0] * (labels.shape[1] - 1)
    else:
        if byte_counts.shape != labels.shape or not np.issubdtype(byte_counts.dtype, np.integer):
            raise TaskError(
                f"{task.name}: byte counts are {byte_counts.dtype} {byte_counts.shape}; expected {labels.shape}"
            )
        predicted = int(byte_counts[:, 1:].sum())
        if byte_counts.min() < 0 or predicted <= 0:
            raise TaskError(f"{task.name}: byte counts must be >= 0 and cover at least one predicted byte")
    return float(outputs.astype(np.float64).sum() / predicted / math.log(2))


_BUILDERS: dict[str, Callable[[Task, Path | None, bool, int], _Splits]] = {
    "digits": _build_digits,
    "mqar": _build_mqar,
    "stdlib-bytes": _build_stdlib_bytes,
    **{name: _build_from_files for name in _FILE_SOURCES},
}
