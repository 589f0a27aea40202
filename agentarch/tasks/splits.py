"""How a task's examples are divided into train, validation and test: the seeded, stratified split that the
built-in tasks and task files' sources share, and the cut of a source's rows (a `Dataset`) into `SplitData`, as
the source gives it or by seeded fractions.

Its own module because the built-in tasks (agentarch.tasks.builtin, agentarch.tasks.downloads) and the readers
of task files' data (agentarch.tasks.sources) all split, and none of them should import another to do it.
scikit-learn is imported only when a split is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agentarch.tasks.task import SplitData, TaskError

MIN_SPLIT = 2
"""Fewest examples a split may hold: one example cannot be scored meaningfully, none cannot be scored at all."""

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Dataset:
    """One source's rows before splitting.

    `x` is in the stored format (uint8 images, int64 ids, float32 features), `y` holds int64 class
    ids, float32 (N, targets) values, or, for language modelling, the ids themselves. `given` is the
    split index (0 train, 1 val, 2 test) of every row when the source names its splits, else None.
    """

    x: np.ndarray
    y: np.ndarray
    given: np.ndarray | None
    classes: tuple[str, ...] | None  # class names in label order; None for regression and lm
    where: str  # the file or folder read, for messages
    vocab_size: int | None = None  # id inputs: ids are in [0, vocab_size)
    byte_counts: np.ndarray | None = None  # lm over a tokenizer's ids: the bytes each id stands for, shaped like x

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])


def seeded_parts(
    labels: np.ndarray, fractions: tuple[float, float], seed: int, where: str, unit: str = "examples"
) -> list[np.ndarray]:
    """Train, val and test indices of `labels` by seeded (val, test) fractions, stratified by label: the one rule for
    examples (`split`) and for whole graphs (agentarch/tasks/graphsets.py)."""
    val_fraction, test_fraction = fractions
    if len(labels) < 3 * MIN_SPLIT:
        raise TaskError(f"{where}: {len(labels)} {unit} are too few to split; need at least {3 * MIN_SPLIT}")
    rest, test = split_indices(labels, test_fraction, seed)
    train_in_rest, val_in_rest = split_indices(labels[rest], val_fraction / (1 - test_fraction), seed)
    return [np.sort(rest[train_in_rest]), np.sort(rest[val_in_rest]), np.sort(test)]


def split(
    data: Dataset, fractions: tuple[float, float] | None, seed: int, stratify: bool, name: str = "task"
) -> SplitData:
    """Cut `data` into train, val and test: as the source says, or by seeded (val, test) fractions.

    Classes are stratified where they can be. Each split needs MIN_SPLIT examples, and every class
    an example in train (a class the model never sees in training would only be guessed).
    """
    if data.given is not None:
        parts = [np.flatnonzero(data.given == i) for i in range(3)]
    else:
        if fractions is None:
            raise TaskError(f"{data.where}: the source gives no train/val/test split; set [splits] val and test")
        labels = data.y if stratify else np.zeros(len(data.y), dtype=np.int64)
        parts = seeded_parts(labels, fractions, seed, data.where)
    for split_name, index in zip(SPLIT_NAMES, parts):
        if len(index) < MIN_SPLIT:
            raise TaskError(
                f"{name}: the {split_name} split of {data.where} has {len(index)} example(s); it needs at least "
                f"{MIN_SPLIT} (add data, or raise its fraction in [splits])"
            )
    if data.classes is not None:
        seen = np.bincount(data.y[parts[0]], minlength=len(data.classes))
        empty = [data.classes[i] for i in np.flatnonzero(seen == 0)]
        if empty:
            raise TaskError(
                f"{name}: class {', '.join(repr(c) for c in empty)} of {data.where} has no examples in the train split"
            )
    arrays = [a for index in parts for a in (data.x[index], data.y[index])]
    if data.byte_counts is None:
        return SplitData(*arrays)
    return SplitData(*arrays, val_bytes=data.byte_counts[parts[1]], test_bytes=data.byte_counts[parts[2]])


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of range(len(labels)), stratified by label where there are enough of each class."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        keep, held = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=labels)
    except ValueError:  # a class too small to stratify (only in toy data): a plain shuffle split
        keep, held = train_test_split(index, test_size=test_fraction, random_state=seed)
    return np.asarray(keep), np.asarray(held)
