"""Scoring: a task's metric of the runner's outputs on held-out inputs, against labels only the host holds.

Its own module because scoring happens on the host after the sandbox is done, apart from making data: the
evaluation imports it to judge outputs, and preparation to refuse a metric that a task's kind cannot be scored by.
"""

from __future__ import annotations

import math

import numpy as np

from agentarch.tasks import dense
from agentarch.tasks.task import BYTE_VOCAB, IGNORE_INDEX, METRICS, Task, TaskError

_METRIC_KINDS: dict[str, tuple[str, ...]] = {
    "accuracy": ("image", "token", "sequence", "table", "graph", "graphs", "tabular"),
    "query_accuracy": ("token",),
    "balanced_accuracy": ("image", "token", "sequence", "table", "graph", "graphs"),
    "macro_f1": ("image", "token", "sequence", "table", "graph", "graphs"),
    "mse": ("sequence", "table"),
    "mae": ("sequence", "table"),
    "r2": ("sequence", "table"),
    "bits_per_byte": ("lm",),
    "psnr": ("dense",),
    "ssim": ("dense",),
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
    its logits (N, L, 256) would be 1 KiB per byte of held-out text. A dense task's outputs are the restored
    images, (N, C, H, W) like its targets.
    """
    n = labels.shape[0] if labels.ndim else 0
    if task.kind == "dense":  # the restored images, shaped like the held-out targets
        return tuple(labels.shape)
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
    if task.kind == "dense":  # restored images against targets: PSNR or SSIM (agentarch.tasks.dense)
        return dense.score(task, outputs, labels)
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


def secondary(task: Task, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The metrics a task is judged by besides its own, by name: a dense task's other restoration metric (SSIM
    beside PSNR, or PSNR beside SSIM); none for other kinds. Raises TaskError as `score` does."""
    if task.kind != "dense":
        return {}
    return {name: value for name, value in dense.scores(task, outputs, labels).items() if name != task.metric}


def _regression_score(task: Task, outputs: np.ndarray, labels: np.ndarray) -> float:
    if not np.isfinite(outputs).all():
        raise TaskError(f"{task.name}: predictions hold NaN or Inf (first at index {first_bad(outputs)})")
    if not np.isfinite(labels).all():
        raise TaskError(f"{task.name}: targets hold NaN or Inf (first at index {first_bad(labels)})")
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


def first_bad(a: np.ndarray) -> tuple[int, ...]:
    """The index of the first non-finite value, for an error message that points at the row."""
    return tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
