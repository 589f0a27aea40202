"""Node classification on one graph (`kind = "graph"`): the built-in stochastic block model task (sbm-nodes), a task
file's graph from npz, the node splits, and the checks of the stored format.

One graph is one example: its nodes interact by design, so training is full-batch (every step sees the whole graph)
and a split is a set of nodes, not of graphs. Stored formats (preparation.py writes them like any task's splits):

    inputs/train_x.npy     float32 (N, F)   every node's features (the network sees the whole graph)
    inputs/train_y.npy     int64 (N,)       the training nodes' labels, IGNORE_INDEX at every other node
    inputs/val_x.npy       int64 (n_val,)   which nodes the validation split holds (a mask as indices; no label)
    inputs/test_x.npy      int64 (n_test,)
    inputs/edge_index.npy  int64 (2, E)     edge k goes from node edge_index[0, k] to node edge_index[1, k]
    labels/val_y.npy       int64 (n_val,)   host only, like every task's held-out labels
    labels/test_y.npy      int64 (n_test,)

The runner writes the logits of the validation and test nodes, (n_val, C) and (n_test, C), which the host scores
with the class metrics as it scores any classifier's (agentarch.tasks.scoring).

Its own module because a graph's data is read, split and checked unlike rows of examples: built-in tasks,
preparation and task files all ask it. It imports numpy (and scikit-learn inside a split); never torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agentarch.tasks.npzfiles import load_npz
from agentarch.tasks.splits import MIN_SPLIT, split_indices
from agentarch.tasks.task import IGNORE_INDEX, SplitData, TaskError

if TYPE_CHECKING:
    from agentarch.tasks.task import Task

EDGE_FILE = "edge_index.npy"
"""The graph's edges in the inputs folder, beside the node splits."""

SBM_SEED = 27
"""The seed of the built-in graph: the graph belongs to the task, the same for every split seed."""
SBM_NODES, SBM_COMMUNITIES, SBM_FEATURES = 600, 4, 16
SBM_P_IN, SBM_P_OUT = 0.05, 0.01
"""Edge probabilities within a community and across two: about 7.5 neighbours of the node's own community and 4.5 of
the others on average, so a node's neighbourhood says its community far more surely than its own features do."""
SBM_SIGNAL, SBM_NOISE = 1.0, 1.0
"""A node's first SBM_COMMUNITIES features are its community's indicator times SBM_SIGNAL plus Gaussian noise of std
SBM_NOISE; the other features are noise alone. Features alone give about half the nodes' communities."""
SBM_FRACTIONS = (0.2, 0.6)
"""Validation and test shares of the built-in graph's nodes (stratified by community, seeded by the split seed)."""


@dataclass(frozen=True)
class Graph:
    """One graph before its nodes are split: features (N, F) float32, edges (2, E) int64, labels (N,) int64 (a
    negative label marks a node in no split), and the split of each node (0 train, 1 val, 2 test, -1 none) where the
    source gives one."""

    x: np.ndarray
    edge_index: np.ndarray
    y: np.ndarray
    given: np.ndarray | None
    where: str  # the file read, for messages

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in label order: a graph's labels are ids, so their names are the ids themselves."""
        return tuple(str(c) for c in range(int(self.y.max()) + 1))

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (int(self.x.shape[1]),)


def stochastic_block_model(
    nodes: int, communities: int, p_in: float, p_out: float, features: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded stochastic block model: (features (N, F) float32, edges (2, E) int64, communities (N,) int64).

    Nodes are dealt round-robin into communities (equal sizes), each unordered pair is an edge with probability
    `p_in` inside a community and `p_out` across, stored in both directions and without self-loops (a network adds
    its own where it wants them); features as SBM_SIGNAL and SBM_NOISE describe."""
    rng = np.random.default_rng(seed)
    y = np.arange(nodes, dtype=np.int64) % communities
    rng.shuffle(y)
    same = y[:, None] == y[None, :]
    upper = np.triu(rng.random((nodes, nodes)) < np.where(same, p_in, p_out), k=1)
    src, dst = np.nonzero(upper)
    edge_index = np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]).astype(np.int64)
    x = rng.normal(0.0, SBM_NOISE, (nodes, features)).astype(np.float32)
    x[np.arange(nodes), y] += SBM_SIGNAL
    return x, edge_index, y


def build_sbm(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> SplitData:
    """The built-in sbm-nodes: the SBM_SEED graph, its nodes split by SBM_FRACTIONS with `split_seed`."""
    x, edge_index, y = stochastic_block_model(SBM_NODES, SBM_COMMUNITIES, SBM_P_IN, SBM_P_OUT, SBM_FEATURES, SBM_SEED)
    return split_graph(Graph(x, edge_index, y, None, task.name), SBM_FRACTIONS, split_seed, task.name)


def split_graph(graph: Graph, fractions: tuple[float, float] | None, seed: int, name: str) -> SplitData:
    """The graph's nodes cut into train, val and test (as its source says, or by seeded, stratified (val, test)
    fractions), in the stored formats of the module docstring: only the training nodes' labels stay with the inputs.
    """
    if graph.given is not None:
        if fractions is not None:
            raise TaskError(f"{graph.where} has train/val/test masks; remove [splits] from the task file")
        parts = [np.flatnonzero(graph.given == i) for i in range(3)]
    else:
        if fractions is None:
            raise TaskError(f"{graph.where}: no train/val/test masks; add them, or set [splits] val and test")
        labelled = np.flatnonzero(graph.y >= 0)
        rest, test = split_indices(graph.y[labelled], fractions[1], seed)
        train_in_rest, val_in_rest = split_indices(graph.y[labelled][rest], fractions[0] / (1 - fractions[1]), seed)
        parts = [np.sort(labelled[rest[train_in_rest]]), np.sort(labelled[rest[val_in_rest]]), np.sort(labelled[test])]
    for split_name, nodes in zip(("train", "val", "test"), parts):
        if len(nodes) < MIN_SPLIT:
            raise TaskError(
                f"{name}: the {split_name} split of {graph.where} has {len(nodes)} node(s); it needs "
                f"at least {MIN_SPLIT}"
            )
    train_y = np.full(len(graph.y), IGNORE_INDEX, dtype=np.int64)
    train_y[parts[0]] = graph.y[parts[0]]
    return SplitData(
        graph.x.astype(np.float32, copy=False),
        train_y,
        parts[1].astype(np.int64),
        graph.y[parts[1]].astype(np.int64),
        parts[2].astype(np.int64),
        graph.y[parts[2]].astype(np.int64),
        edge_index=graph.edge_index.astype(np.int64, copy=False),
    )


def check_edges(edge_index: np.ndarray, nodes: int, where: str) -> None:
    """Refuse an edge index that is not int64-able (2, E) over node ids in [0, nodes), saying what to change."""
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        hint = " (it looks transposed: store edge_index.T)" if edge_index.ndim == 2 and edge_index.shape[1] == 2 else ""
        raise TaskError(
            f"{where}: edge_index must be (2, E), source nodes then target nodes; got {edge_index.shape}{hint}"
        )
    if not np.issubdtype(edge_index.dtype, np.integer):
        raise TaskError(f"{where}: edge_index must hold integer node ids, got dtype {edge_index.dtype}")
    if edge_index.shape[1] == 0:
        raise TaskError(f"{where}: edge_index holds no edges; a graph task needs some")
    if edge_index.min() < 0 or edge_index.max() >= nodes:
        raise TaskError(
            f"{where}: edge_index names nodes [{edge_index.min()}, {edge_index.max()}]; the graph has nodes "
            f"[0, {nodes}) (one row of x per node)"
        )


def check_splits(task: Task, splits: SplitData) -> None:
    """Refuse data that breaks the stored format (module docstring): finite float32 features (N, F) of the task's
    width, training labels in [0, C) or IGNORE_INDEX, held-out node indices distinct, in range, apart from each other
    and from the training nodes, their labels in [0, C), and every class among the training nodes."""
    x, train_y, edges = splits.train_x, splits.train_y, splits.edge_index
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1:] != task.in_shape:
        raise TaskError(f"{task.name}: node features are {x.dtype} {x.shape}; expected float32 (N, {task.in_shape[0]})")
    if not np.isfinite(x).all():
        raise TaskError(f"{task.name}: node features hold NaN or Inf")
    nodes = len(x)
    if edges is None:
        raise TaskError(f"{task.name}: a graph task needs its edges (SplitData.edge_index)")
    check_edges(edges, nodes, task.name)
    if train_y.dtype != np.int64 or train_y.shape != (nodes,):
        raise TaskError(f"{task.name}: training labels are {train_y.dtype} {train_y.shape}; expected int64 ({nodes},)")
    train = np.flatnonzero(train_y != IGNORE_INDEX)
    taken = np.zeros(nodes, dtype=bool)
    taken[train] = True
    for split, index, y in (
        ("train", train, train_y[train]),
        ("val", splits.val_x, splits.val_y),
        ("test", splits.test_x, splits.test_y),
    ):
        if index.dtype != np.int64 or y.dtype != np.int64 or index.ndim != 1 or index.shape != y.shape:
            raise TaskError(
                f"{task.name}: {split} nodes and labels must be int64 of one length; got {index.dtype} "
                f"{index.shape} and {y.dtype} {y.shape}"
            )
        if len(index) < MIN_SPLIT:
            raise TaskError(f"{task.name}: the {split} split has {len(index)} node(s); it needs at least {MIN_SPLIT}")
        if y.min() < 0 or y.max() >= task.num_classes:
            raise TaskError(
                f"{task.name}: {split} labels span [{y.min()}, {y.max()}]; expected [0, {task.num_classes})"
            )
        if split == "train":
            continue
        if index.min() < 0 or index.max() >= nodes or len(np.unique(index)) != len(index):
            raise TaskError(f"{task.name}: {split} nodes must be distinct ids in [0, {nodes})")
        if taken[index].any():
            raise TaskError(f"{task.name}: {split} nodes overlap another split's (node {index[taken[index]][0]})")
        taken[index] = True
    missing = sorted(set(range(task.num_classes)) - set(train_y[train].tolist()))
    if missing:
        raise TaskError(f"{task.name}: class {', '.join(map(str, missing))} has no node in the train split")


def read_npz(path: Path) -> Graph:
    """A graph from an npz file: `x` (N, F) features, `edge_index` (2, E) node ids, `y` (N,) class ids, and
    optionally `train_mask`, `val_mask`, `test_mask` (N,) booleans, all three or none (then [splits] cuts the
    nodes). Every problem is a TaskError that names the key and what to store instead."""
    where = str(path)
    arrays = load_npz(path)
    missing = [key for key in ("x", "edge_index", "y") if key not in arrays]
    if missing:
        raise TaskError(
            f"{where}: missing {', '.join(missing)}; a graph npz holds x (N, F), edge_index (2, E), y (N,) "
            f"and optionally train_mask, val_mask, test_mask; it holds {', '.join(arrays) or 'nothing'}"
        )
    x, edge_index, y = arrays["x"], arrays["edge_index"], arrays["y"]
    if x.ndim != 2 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TaskError(f"{where}: x must be numbers (N, F), one row of features per node; got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        raise TaskError(f"{where}: x holds NaN or Inf")
    nodes = len(x)
    if y.shape != (nodes,) or not np.issubdtype(y.dtype, np.integer):
        raise TaskError(f"{where}: y must be integer class ids ({nodes},), one per row of x; got {y.dtype} {y.shape}")
    check_edges(edge_index, nodes, where)
    masks = [key for key in ("train_mask", "val_mask", "test_mask") if key in arrays]
    given = None
    if masks:
        if len(masks) != 3:
            raise TaskError(f"{where}: give train_mask, val_mask and test_mask together (found {', '.join(masks)})")
        given = np.full(nodes, -1, dtype=np.int64)
        for index, key in enumerate(masks):
            mask = arrays[key]
            if mask.shape != (nodes,) or not (mask.dtype == np.bool_ or np.isin(mask, (0, 1)).all()):
                raise TaskError(
                    f"{where}: {key} must be booleans ({nodes},), one per node; got {mask.dtype} {mask.shape}"
                )
            mask = mask.astype(bool)
            if (given[mask] >= 0).any():
                raise TaskError(
                    f"{where}: {key} overlaps an earlier mask (node {np.flatnonzero(mask & (given >= 0))[0]})"
                )
            given[mask] = index
        if (y[given >= 0] < 0).any():
            raise TaskError(f"{where}: a masked node has a negative label; every node in a mask needs its class")
    if y.max() < 1:
        raise TaskError(f"{where}: y holds fewer than two classes")
    return Graph(x.astype(np.float32), edge_index.astype(np.int64), y.astype(np.int64), given, where)
