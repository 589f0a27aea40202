"""Preparing a task's data: its split for a seed, checked against the stored formats and written once into the cache.

A task's data is prepared once per split seed into two sibling folders (see docs/architecture.md,
"Data contracts"):

    <cache>/<task>-split<seed>/inputs/   train_x.npy train_y.npy val_x.npy test_x.npy meta.json
                                         (a graph task: and edge_index.npy; agentarch.tasks.nodes)
                                         (a graphs task: and {split}_edges.npy {split}_ptr.npy; graphsets)
    <cache>/<task>-split<seed>/labels/   val_y.npy test_y.npy
    <cache>/<task>-split<seed>/train/    train_x.npy train_y.npy meta.json (hard links into inputs/; and
                                         edge_index.npy, or train_edges.npy train_ptr.npy: TRAIN_EXTRA)

Only `inputs/` is shown to the sandbox, so a candidate can train on the training labels but never
see the validation or test labels; the host scores its outputs with `score` (`agentarch.tasks.scoring`).
With graph scoring the sandbox gets `train/` alone, so no validation or test input reaches candidate code
either: the clean evaluator runs the exported graph on `inputs/` (agentarch/evaluation/graphs/).

Its own module because whoever builds a task's data (a built-in builder, a task file, an entry point), the
cache, its atomic writes and the checks of the stored formats are the same. This module must stay light (the
orchestrator imports it on every command), so it never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from agentarch.tasks import dense, graphsets, nodes
from agentarch.tasks.builtin import BUILDERS, IMAGE_SCALE
from agentarch.tasks.scoring import check_metric, first_bad
from agentarch.tasks.task import BYTE_VOCAB, IGNORE_INDEX, METRICS, SplitData, Task, TaskError

INPUT_FILES = ("train_x.npy", "train_y.npy", "val_x.npy", "test_x.npy", "meta.json")
LABEL_FILES = ("val_y.npy", "test_y.npy")
TRAIN_FILES = ("train_x.npy", "train_y.npy", "meta.json")
"""What a training job sees under graph scoring: the training split and the host's normalisation statistics."""
TRAIN_EXTRA = ("edge_index.npy", "train_edges.npy", "train_ptr.npy")
"""Inputs a training job also sees where the task has them: a graph task's edges (every node's features are in its
train_x, as node classification's training input; its held-out node indices are not here), a graphs task's training
graphs' edges and node offsets (graphsets.py)."""


@dataclass(frozen=True)
class PreparedTask:
    """Where one task's prepared data lies: inputs for the sandbox, labels for the host only."""

    task: Task
    inputs_dir: Path
    labels_dir: Path

    @property
    def train_dir(self) -> Path:
        """The training split alone (TRAIN_FILES), for a sandbox that must see no held-out input (graph scoring)."""
        return self.inputs_dir.parent / "train"

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

    def split_data(self) -> SplitData:
        """The prepared splits read back as stored, inputs and labels, for a process that has no copy of this cache
        to prepare the task from (a Ray worker on another machine: agentarch/evaluation/ray_data.py)."""

        def read(folder: Path, name: str) -> np.ndarray | None:
            path = folder / f"{name}.npy"
            return np.load(path, allow_pickle=False) if path.is_file() else None

        inputs, labels = self.inputs_dir, self.labels_dir
        return SplitData(
            read(inputs, "train_x"),  # type: ignore[arg-type]
            read(inputs, "train_y"),  # type: ignore[arg-type]
            read(inputs, "val_x"),  # type: ignore[arg-type]
            read(labels, "val_y"),  # type: ignore[arg-type]
            read(inputs, "test_x"),  # type: ignore[arg-type]
            read(labels, "test_y"),  # type: ignore[arg-type]
            val_bytes=read(labels, "val_bytes"),
            test_bytes=read(labels, "test_bytes"),
            edge_index=read(inputs, nodes.EDGE_FILE.removesuffix(".npy")),
        )


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
    builder = task.build or BUILDERS.get(task.name)
    if builder is None:
        raise TaskError(f"no data loader for task {task.name!r}; known tasks: {', '.join(BUILDERS)}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or not 0 <= split_seed < 2**32:
        raise TaskError(f"split seed must be an integer in [0, 2**32), got {split_seed!r}")
    split_seed = int(split_seed)
    target = Path(cache_dir) / f"{task.name}{'-' + task.fingerprint if task.fingerprint else ''}-split{split_seed}"
    prepared = PreparedTask(task, target / "inputs", target / "labels")
    if _is_complete(target):
        with contextlib.suppress(OSError):  # caches made before labels were host-only get the mode too
            os.chmod(prepared.labels_dir, 0o700)
        with contextlib.suppress(OSError):  # a read-only cache shared by a cluster's workers: its owner makes it
            _training_only(target)
        return prepared
    splits = builder(task, None if data_dir is None else Path(data_dir), download, split_seed)
    _check_splits(task, splits)
    _write_atomically(target, task, splits)
    _training_only(target)
    return prepared


def _training_only(target: Path) -> None:
    """Make `target/train/`, the training split alone, once: hard links to the files in `inputs/` (copies where the
    file system has no hard links), put in place by one rename like the rest of the cache (a cache made before it
    existed gets it on its next use)."""
    train = target / "train"
    wanted = TRAIN_FILES + tuple(name for name in TRAIN_EXTRA if (target / "inputs" / name).is_file())
    if all((train / name).is_file() for name in wanted):
        return
    if all((train / name).is_file() for name in TRAIN_FILES):  # made before it held a graph task's edges
        for name in wanted:
            if not (train / name).is_file():
                shutil.copyfile(target / "inputs" / name, train / name)
        return
    tmp = Path(tempfile.mkdtemp(prefix=".train.", suffix=".tmp", dir=target))
    try:
        os.chmod(tmp, 0o755)
        for name in wanted:
            try:
                os.link(target / "inputs" / name, tmp / name)
            except OSError:
                shutil.copyfile(target / "inputs" / name, tmp / name)
        try:
            os.rename(tmp, train)  # replaces an empty folder; fails on a full one (another process was first)
        except OSError:
            if not all((train / name).is_file() for name in wanted):
                raise TaskError(f"could not put the training split at {train}; remove that folder and try again")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _is_complete(target: Path) -> bool:
    return all((target / "inputs" / f).is_file() for f in INPUT_FILES) and all(
        (target / "labels" / f).is_file() for f in LABEL_FILES
    )


def _write_atomically(target: Path, task: Task, splits: SplitData) -> None:
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
        if splits.edge_index is not None:  # a graph's edges are inputs: the network gets the whole graph
            np.save(inputs / nodes.EDGE_FILE, splits.edge_index, allow_pickle=False)
        for name, array in (splits.more_inputs or {}).items():  # a graph set's edges and offsets, split by split
            np.save(inputs / f"{name}.npy", array, allow_pickle=False)
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


def _meta(task: Task, splits: SplitData) -> dict[str, object]:
    """What the runner needs to turn stored inputs into network inputs, computed here on the host.

    Images get per-channel statistics; float sequences and tables get per-feature mean and std over
    the training split (so the runner normalizes every split with training statistics only); id
    sequences name their vocabulary; a regression carries the training targets' mean and std, by
    which the trainer standardizes its targets and un-standardizes its predictions. A dense task names the
    restored image's shape, and its pixel values are left as they are. A graph task's features are standardised over
    every node (all of them are inputs the network sees; no label enters the statistics), and it names its size.
    """
    meta: dict[str, object] = {"kind": task.kind, "in_shape": list(task.in_shape), "num_classes": task.num_classes}
    if task.kind == "dense":  # pixel values in [0, 1] as they are: identity statistics leave every reader's float path
        # (the trainer's, the clean evaluator's) a no-op, and the network's outputs stay in the targets' units
        meta.update(out_shape=list(task.out_shape or ()), mean=[0.0], std=[1.0])
    elif task.kind == "image":
        scale = IMAGE_SCALE.get(task.name, 255.0)
        mean, std = channel_stats(splits.train_x, scale)
        meta.update(scale=scale, mean=mean, std=std)
    elif _float_inputs(task):
        meta.update(zip(("mean", "std"), _feature_stats(splits.train_x)))
        if task.kind == "graph":
            edges = 0 if splits.edge_index is None else int(splits.edge_index.shape[1])
            meta.update(num_nodes=len(splits.train_x), num_edges=edges)
    elif task.kind == "sequence":
        meta["vocab_size"] = task.vocab_size
    if METRICS[task.metric].regression:
        meta["regression"] = True
        meta.update(zip(("target_mean", "target_std"), _feature_stats(splits.train_y)))
    return meta


def _float_inputs(task: Task) -> bool:
    """Whether the task's inputs are float features (tables, float series, a graph's nodes) rather than images or ids."""
    return task.kind in ("table", "graph", "graphs") or (task.kind == "sequence" and task.vocab_size is None)


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


def _check_splits(task: Task, splits: SplitData) -> None:
    """Refuse to cache data that breaks the contract (a bad file would otherwise surface as odd scores).

    Stored formats per kind: images uint8 (N, C, H, W); token, lm and id-sequence inputs int64 ids;
    float sequences and tables float32 features, all finite. Class labels are int64, (N, L) per
    position for token tasks (IGNORE_INDEX where not scored) and (N,) otherwise; regression targets
    are finite float32 (N, num_classes); an lm task's labels are its inputs (the next-id targets), and
    over a tokenizer's ids its held-out splits carry the bytes each id stands for. Dense inputs and targets are
    float32 images (agentarch.tasks.dense); a graph's are its nodes and edges (agentarch.tasks.nodes), a graph set's
    its graphs' (agentarch.tasks.graphsets).
    """
    check_metric(task)
    if task.kind == "dense":
        dense.check_splits(task, splits)
        return
    if task.kind == "graph":
        nodes.check_splits(task, splits)
        return
    if task.kind == "graphs":
        graphsets.check_splits(task, splits)
        return
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
            raise TaskError(f"{task.name}: {split} inputs hold NaN or Inf (first at index {first_bad(x)})")
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
                raise TaskError(f"{task.name}: {split} targets hold NaN or Inf (first at index {first_bad(y)})")
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


def _check_byte_counts(task: Task, splits: SplitData) -> None:
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
