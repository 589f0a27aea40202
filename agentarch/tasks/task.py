"""What a task is: the `Task` record, the kinds contract (what goes into a candidate and what comes out), the
metrics with the direction each is better in, the `SplitData` a task's data builder returns, and `TaskError`.

Its own module because the rest of agentarch.tasks, and every room above, uses these names while this module
uses none of theirs: built-in tasks, task files, preparation and scoring all import it, and it imports none of
them. It never imports torch (the orchestrator imports it on every command).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from agentarch.errors import AgentarchError
from agentarch.tasks.recipes import CLASS_KINDS, RecipeBounds, default_bounds, default_recipe

IGNORE_INDEX = -100
"""Label value at token positions that are not scored (the PyTorch cross-entropy convention)."""

BYTE_VOCAB = 256
"""The vocabulary of byte-level language modelling: an id is one byte."""


class TaskError(AgentarchError, ValueError):
    """A task cannot be used as asked; the message says what to fix."""


Kind = Literal["image", "token", "sequence", "table", "lm", "dense", "graph", "graphs", "tabular"]
"""What goes into a candidate and what comes out (B = batch, L = sequence length):

- image: float (B, C, H, W) -> logits (B, num_classes)
- token: ids (B, L) -> logits (B, L, num_classes), one label per position (IGNORE_INDEX = not scored)
- sequence: ids (B, L) (with `vocab_size`) or floats (B, L, F) -> logits (B, num_classes), one label per sequence
- table: floats (B, F) -> logits (B, num_classes), or (B, num_classes) values for a regression metric
- lm: ids (B, L) (bytes, or a tokenizer's ids) -> logits (B, L, vocab = num_classes) predicting the next id; the
  trainer shifts, not the candidate
- dense: a degraded image (B, C, h, w), values in [0, 1] -> the restored image (B, C, H, W) = (B, *out_shape), built as
  `Net(in_shape, num_classes, out_shape=...)` with num_classes = C (image restoration: super-resolution, denoising)
- graph: one graph, node features x (N, F) and edges edge_index (2, E) int64 -> logits (N, num_classes), one class
  per node; `forward(x, edge_index)`, in_shape = (F,), the whole graph every step (node classification: nodes.py)
- graphs: a mini-batch of G small graphs, their nodes' features x (N, F), edges edge_index (2, E) over those nodes and
  batch (N,) int64, each node's graph in [0, G) -> logits (G, num_classes), one class per graph;
  `forward(x, edge_index, batch)`, in_shape = (F,) (graph classification: graphsets.py)
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
        Metric("psnr", "max"),  # image restoration, in dB (agentarch.tasks.dense)
        Metric("ssim", "max"),
    )
}


@dataclass(frozen=True)
class Task:
    """What a candidate is trained on and judged by, with the default training budget."""

    name: str
    kind: Kind
    in_shape: tuple[
        int, ...
    ]  # (C, H, W) image and dense; (L,) token, lm and id sequences; (L, F) float sequences; (F,) table and graphs
    num_classes: int  # classes; the vocabulary for token and lm tasks; targets of a regression; dense: channels
    metric: str  # a key of METRICS
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    max_params: int
    needs_data_dir: bool
    description: str  # one paragraph, shown to the proposer
    vocab_size: int | None = None  # id sequences of a sequence task: ids are in [0, vocab_size)
    build: Callable[[Task, Path | None, bool, int], SplitData] | None = None  # a task file's or entry point's loader
    fingerprint: str = ""  # what the prepared cache depends on besides the split seed (a task file's data)
    out_shape: tuple[int, ...] | None = None  # dense tasks: the restored image's (C, H, W), what the host scores
    recipe: RecipeBounds | None = None  # what a candidate's RECIPE may choose (None: `default_bounds` for the kind)

    def recipe_bounds(self) -> RecipeBounds:
        """What a candidate's training recipe may choose on this task (agentarch/tasks/recipes.py): a task file's
        `[recipe]` table, else the defaults for its kind; label smoothing only ever on class labels."""
        regression = METRICS[self.metric].regression
        if self.recipe is None:
            return default_bounds(self.kind, self.lr, self.weight_decay, regression)
        if self.kind in CLASS_KINDS and not regression:
            return self.recipe
        return self.recipe.model_copy(update={"label_smoothing_max": 0.0})

    def default_recipe(self) -> dict[str, object]:
        """The recipe of a candidate that declares none: the task's learning rate and weight decay, AdamW, cosine."""
        return default_recipe(self.lr, self.weight_decay)

    @property
    def direction(self) -> Literal["max", "min"]:
        """Which way the task's metric is better: every ranking (leaderboards, parents, REA, TPE, halving) asks."""
        return METRICS[self.metric].direction


class SplitData(NamedTuple):
    """A task's data in the stored formats, before it is written.

    `val_bytes` and `test_bytes` are for language modelling over a tokenizer's ids: the bytes of text
    each id stands for, (N, L) int64, which turn the likelihood into bits per byte (host only). `edge_index` is a
    graph task's edges (2, E) int64, its "inputs" the nodes of each split (agentarch.tasks.nodes). `more_inputs` are
    further arrays the network is given, written as inputs/NAME.npy: a graph set's edges and node offsets per split
    (agentarch.tasks.graphsets).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    val_bytes: np.ndarray | None = None
    test_bytes: np.ndarray | None = None
    edge_index: np.ndarray | None = None
    more_inputs: dict[str, np.ndarray] | None = None
