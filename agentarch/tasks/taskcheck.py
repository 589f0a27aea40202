"""`agentarch tasks check`: a task file validated by preparing its data, and what a candidate of it gets (input,
output, splits, metric, training budget), one line each.

Its own module because the report speaks of every kind's contract, while task files (taskfiles.py) only read and
check the file: the report asks them for the task and its data, and preparation for the split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agentarch.tasks import dense, graphsets, taskfiles
from agentarch.tasks.preparation import prepare
from agentarch.tasks.task import IGNORE_INDEX, METRICS


def split_sizes(inputs_dir: Path) -> dict[str, int]:
    """How many examples each prepared split holds (read from the array headers only)."""
    return {s: len(np.load(inputs_dir / f"{s}_x.npy", mmap_mode="r")) for s in ("train", "val", "test")}


def check(path: Path, cache_dir: Path, split_seed: int = 0) -> list[tuple[str, str]]:
    """Validate a task file by preparing its data, and say what a candidate gets: shapes, outputs, splits, metric.

    Preparing is the check (every reader and the stored-format checks run); its cache is the one a
    later run uses, so nothing is done twice.
    """
    task = taskfiles.load(path)
    prepared = prepare(task, cache_dir, split_seed=split_seed)
    sizes = graphsets.split_sizes(prepared.inputs_dir) or split_sizes(prepared.inputs_dir)
    if task.kind == "graph":  # train_x holds every node; the training split is the nodes with a label
        train_y = np.load(prepared.inputs_dir / "train_y.npy", mmap_mode="r")
        sizes["train"] = int((train_y != IGNORE_INDEX).sum())
    spec = taskfiles.parse(path)
    metric = METRICS[task.metric]
    shape = ", ".join(str(d) for d in task.in_shape)
    if task.kind == "image":
        given = f"float32 (B, {shape}), normalized per channel with the training split's statistics"
    elif task.kind == "dense":
        given = f"float32 (B, {shape}), degraded images with pixel values in [0, 1]"
    elif task.kind == "graph":
        given = f"the whole graph: x float32 (N, {shape}) standardised per feature, edge_index int64 (2, E)"
    elif task.kind == "graphs":
        given = f"batches of graphs: x float32 (N, {shape}) standardised per feature, edge_index (2, E), batch (N,)"
    elif task.kind in ("token", "lm") or task.vocab_size is not None:
        vocab = task.vocab_size if task.kind == "sequence" else task.num_classes
        given = f"int64 ids (B, {shape}) in [0, {vocab})"
    else:
        given = f"float32 (B, {shape})"
    names = taskfiles.classes(task)
    if task.kind == "graph":
        outputs = f"logits (N, {task.num_classes}), one row per node (scored on the val and test nodes)"
    elif task.kind == "graphs":
        outputs = f"logits (G, {task.num_classes}), one row per graph of the batch"
    elif task.kind == "dense":
        out = ", ".join(str(d) for d in task.out_shape or ())
        outputs = f"restored images (B, {out}) in [0, 1] ({dense.describe_factor(task.in_shape, task.out_shape or ())})"
    elif task.kind == "lm":
        outputs = f"logits (B, {shape}, {task.num_classes}): position t predicts id t + 1 (the trainer shifts)"
    elif task.kind == "token":
        outputs = f"logits (B, {shape}, {task.num_classes}), one class per position"
    elif metric.regression:
        target = getattr(spec.data, "targets", None) or []
        outputs = f"values (B, {task.num_classes})" + (f": {', '.join(target)}" if target else "")
    else:
        shown = "" if names is None else ": " + ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        outputs = f"logits (B, {task.num_classes}) over {task.num_classes} classes{shown}"
    better = "higher" if metric.direction == "max" else "lower"
    return [
        ("task", f"{task.name} ({task.kind}) from {path}"),
        ("data", f"{spec.data.source}: {', '.join(str(p) for p in taskfiles.data_paths(spec, path))}"),
        ("input", given),
        ("output", outputs),
        (
            "splits",
            ", ".join(f"{k} {v}" for k, v in sizes.items())
            + (" nodes" if task.kind == "graph" else " graphs" if task.kind == "graphs" else "")
            + f" (split seed {split_seed})",
        ),
        ("metric", f"{task.metric} ({better} is better)"),
        (
            "training",
            f"{task.epochs} epochs, batch {task.batch_size}, lr {task.lr:g}, weight decay {task.weight_decay:g}",
        ),
        ("max params", f"{task.max_params:,}"),
        ("prepared", str(prepared.inputs_dir.parent)),
    ]
