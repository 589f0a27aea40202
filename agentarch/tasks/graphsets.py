"""Graph classification over many small graphs (`kind = "graphs"`): the built-in generated task (sbm-graphs), a task
file's graph set from npz, the split by graph, and the checks of the stored format.

A graph set is every graph's nodes concatenated, their edges over those global node ids, and per-graph node offsets:
graph g holds nodes ptr[g]:ptr[g + 1] and one label. A graph is one example, so the splits are sets of graphs and
training runs in mini-batches of graphs. Stored formats (preparation.py writes them like any task's splits), for each
split s of train, val and test:

    inputs/{s}_x.npy      float32 (N_s, F)    the nodes of the split's graphs, graph after graph
    inputs/{s}_edges.npy  int64 (2, E_s)      edges over the split's node ids (0 is the split's first node)
    inputs/{s}_ptr.npy    int64 (G_s + 1,)    node offsets: graph g holds nodes ptr[g]:ptr[g + 1]
    inputs/train_y.npy    int64 (G_train,)    one class per training graph
    labels/{val,test}_y.npy int64 (G,)        host only, like every task's held-out labels

A network is called `forward(x, edge_index, batch)` on a mini-batch of graphs (`batch` (N,) maps each node to its
graph's row, the PyG convention) and returns logits (G, C), one row per graph. The runner writes the logits of the
validation and test graphs, which the host scores with the class metrics as any classifier's (agentarch.tasks.scoring).

Its own module because a graph set is read, split and checked unlike rows of examples or one graph's nodes (nodes.py):
built-in tasks, preparation and task files all ask it. It imports numpy (and scikit-learn inside a split); never torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agentarch.tasks.npzfiles import load_npz
from agentarch.tasks.splits import MIN_SPLIT, SPLIT_NAMES, seeded_parts
from agentarch.tasks.task import SplitData, TaskError

if TYPE_CHECKING:
    from agentarch.tasks.task import Task

EDGES, PTR = "edges", "ptr"
"""Suffixes of a split's edges and node offsets in the inputs folder: `train_edges.npy`, `train_ptr.npy`."""

SBM_SEED = 28
"""The seed of the built-in graph set: the graphs belong to the task, the same for every split seed."""
SBM_GRAPHS, SBM_COLOURS, SBM_NOISE_FEATURES = 1200, 4, 4
SBM_NODES = (12, 28)
"""Nodes per graph, drawn uniformly from this range (both ends included)."""
SBM_DEGREE = 3.0
SBM_SAME = (0.75, 0.25, 0.0)
"""The expected share of a node's edges that join a node of its own colour, per class: class 0 gathers by colour,
class 1 mixes about as a random graph would (1/4 of the other nodes share a colour), class 2 never joins its own. The
expected degree is SBM_DEGREE in every class, so degree alone says nothing."""
SBM_SIGNAL, SBM_NOISE = 1.0, 0.5
"""A node's first SBM_COLOURS features are its colour's indicator times SBM_SIGNAL plus Gaussian noise of std SBM_NOISE,
the other SBM_NOISE_FEATURES noise alone: the colours are visible, the class only in who joins whom."""
SBM_FRACTIONS = (0.2, 0.2)
"""Validation and test shares of the built-in graphs (stratified by class, seeded by the split seed)."""


@dataclass(frozen=True)
class GraphSet:
    """Many graphs before they are split: node features (N, F) float32, edges (2, E) int64 over global node ids,
    node offsets ptr (G + 1,) int64, one label per graph (G,) int64, the split of each graph (0 train, 1 val, 2 test)
    where the source gives one, and the class names in label order."""

    x: np.ndarray
    edge_index: np.ndarray
    ptr: np.ndarray
    y: np.ndarray
    given: np.ndarray | None
    classes: tuple[str, ...]
    where: str  # the file read, for messages

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (int(self.x.shape[1]),)


def colour_graphs(
    graphs: int, colours: int, sizes: tuple[int, int], degree: float, same: tuple[float, ...], seed: int
) -> GraphSet:
    """A seeded set of coloured random graphs whose class is how often an edge joins two nodes of one colour (`same`,
    per class), at the same expected `degree` in every class. Edges are stored in both directions, no self-loops."""
    rng = np.random.default_rng(seed)
    y = np.arange(graphs, dtype=np.int64) % len(same)
    rng.shuffle(y)
    xs, edges, ptr = [], [], [0]
    for label in y:
        n = int(rng.integers(sizes[0], sizes[1] + 1))
        colour = rng.integers(0, colours, n)
        alike = colour[:, None] == colour[None, :]
        pairs_alike = max(1, int(np.triu(alike, k=1).sum()))
        pairs_apart = max(1, n * (n - 1) // 2 - pairs_alike)
        edges_wanted = degree * n / 2
        p_alike = min(1.0, same[label] * edges_wanted / pairs_alike)
        p_apart = min(1.0, (1 - same[label]) * edges_wanted / pairs_apart)
        upper = np.triu(rng.random((n, n)) < np.where(alike, p_alike, p_apart), k=1)
        src, dst = np.nonzero(upper)
        edges.append(np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]) + ptr[-1])
        x = rng.normal(0.0, SBM_NOISE, (n, colours + SBM_NOISE_FEATURES)).astype(np.float32)
        x[np.arange(n), colour] += SBM_SIGNAL
        xs.append(x)
        ptr.append(ptr[-1] + n)
    names = tuple(str(c) for c in range(len(same)))
    edge_index = np.concatenate(edges, axis=1).astype(np.int64)
    return GraphSet(np.concatenate(xs), edge_index, np.array(ptr, dtype=np.int64), y, None, names, "sbm-graphs")


def build_sbm(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> SplitData:
    """The built-in sbm-graphs: the SBM_SEED graph set, its graphs split by SBM_FRACTIONS with `split_seed`."""
    graphs = colour_graphs(SBM_GRAPHS, SBM_COLOURS, SBM_NODES, SBM_DEGREE, SBM_SAME, SBM_SEED)
    return split_graphs(graphs, SBM_FRACTIONS, split_seed, task.name)


def graph_of_nodes(ptr: np.ndarray) -> np.ndarray:
    """Which graph each node belongs to, (N,) int64, from the node offsets."""
    return np.repeat(np.arange(len(ptr) - 1, dtype=np.int64), np.diff(ptr))


def take(graphs: GraphSet, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graphs `index` (ascending) as one split: their nodes, their edges renumbered from 0, their offsets."""
    owner = graph_of_nodes(graphs.ptr)
    chosen = np.zeros(len(graphs.y), dtype=bool)
    chosen[index] = True
    keep_nodes = chosen[owner]
    renumber = np.cumsum(keep_nodes) - 1
    edges = graphs.edge_index[:, keep_nodes[graphs.edge_index[0]]]
    sizes = np.diff(graphs.ptr)[index]
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return graphs.x[keep_nodes], renumber[edges].astype(np.int64), ptr


def split_graphs(graphs: GraphSet, fractions: tuple[float, float] | None, seed: int, name: str) -> SplitData:
    """The graphs cut into train, val and test (as their source says, or by seeded, stratified (val, test) fractions),
    in the stored formats of the module docstring: only the training graphs' labels stay with the inputs."""
    if graphs.given is not None:
        if fractions is not None:
            raise TaskError(f"{graphs.where} has train/val/test masks; remove [splits] from the task file")
        parts = [np.flatnonzero(graphs.given == i) for i in range(3)]
    else:
        if fractions is None:
            raise TaskError(f"{graphs.where}: no train/val/test split; add masks, or set [splits] val and test")
        parts = seeded_parts(graphs.y, fractions, seed, graphs.where, unit="graphs")
    for split_name, index in zip(SPLIT_NAMES, parts):
        if len(index) < MIN_SPLIT:
            raise TaskError(
                f"{name}: the {split_name} split of {graphs.where} has {len(index)} graph(s); it needs at least "
                f"{MIN_SPLIT}"
            )
    taken = [take(graphs, index) for index in parts]
    more = {f"{s}_{suffix}": part[i] for s, part in zip(SPLIT_NAMES, taken) for i, suffix in ((1, EDGES), (2, PTR))}
    return SplitData(
        taken[0][0].astype(np.float32, copy=False),
        graphs.y[parts[0]].astype(np.int64),
        taken[1][0].astype(np.float32, copy=False),
        graphs.y[parts[1]].astype(np.int64),
        taken[2][0].astype(np.float32, copy=False),
        graphs.y[parts[2]].astype(np.int64),
        more_inputs=more,
    )


def check_set(x: np.ndarray, edge_index: np.ndarray, ptr: np.ndarray, where: str) -> None:
    """Refuse offsets that do not cut the nodes into non-empty graphs, and an edge that names a node out of range or
    joins two graphs (a network would pass messages between examples), saying what to change."""
    if ptr.ndim != 1 or len(ptr) < 2 or not np.issubdtype(ptr.dtype, np.integer):
        raise TaskError(f"{where}: graph_ptr must be integer node offsets (G + 1,); got {ptr.dtype} {ptr.shape}")
    if ptr[0] != 0 or ptr[-1] != len(x) or (np.diff(ptr) <= 0).any():
        raise TaskError(
            f"{where}: graph_ptr must rise strictly from 0 to {len(x)} (the rows of x): graph g holds nodes "
            f"graph_ptr[g]:graph_ptr[g + 1], and no graph is empty; it runs {ptr[0]} .. {ptr[-1]}"
        )
    if edge_index.ndim != 2 or edge_index.shape[0] != 2 or not np.issubdtype(edge_index.dtype, np.integer):
        raise TaskError(
            f"{where}: edge_index must be integer node ids (2, E); got {edge_index.dtype} {edge_index.shape}"
        )
    if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= len(x)):
        raise TaskError(
            f"{where}: edge_index names nodes [{edge_index.min()}, {edge_index.max()}]; x has {len(x)} rows"
        )
    owner = graph_of_nodes(ptr)
    across = np.flatnonzero(owner[edge_index[0]] != owner[edge_index[1]])
    if len(across):
        k = int(across[0])
        raise TaskError(
            f"{where}: edge {k} joins node {edge_index[0, k]} of graph {owner[edge_index[0, k]]} to node "
            f"{edge_index[1, k]} of graph {owner[edge_index[1, k]]}; an edge must stay inside its graph"
        )


def read_npz(path: Path) -> GraphSet:
    """A graph set from an npz file: `x` (N, F) every graph's node features, graph after graph, `edge_index` (2, E)
    over those rows, `graph_ptr` (G + 1,) node offsets, `y` (G,) one class per graph, and optionally `train_mask`,
    `val_mask`, `test_mask` (G,) booleans, all three or none (then [splits] cuts the graphs). Every problem is a
    TaskError that names the key and what to store instead."""
    where = str(path)
    arrays = load_npz(path)
    missing = [key for key in ("x", "edge_index", "graph_ptr", "y") if key not in arrays]
    if missing:
        raise TaskError(
            f"{where}: missing {', '.join(missing)}; a graph-set npz holds x (N, F), edge_index (2, E), graph_ptr "
            f"(G + 1,), y (G,) and optionally train_mask, val_mask, test_mask (G,); it holds "
            f"{', '.join(arrays) or 'nothing'}"
        )
    x, edge_index, ptr, y = arrays["x"], arrays["edge_index"], arrays["graph_ptr"], arrays["y"]
    if x.ndim != 2 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TaskError(f"{where}: x must be numbers (N, F), one row of features per node; got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        raise TaskError(f"{where}: x holds NaN or Inf")
    check_set(x, edge_index, ptr, where)
    count = len(ptr) - 1
    if y.shape != (count,) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise TaskError(
            f"{where}: y must be class ids >= 0, one per graph ({count},) as graph_ptr counts them; got {y.dtype} "
            f"{y.shape}"
        )
    if y.max() < 1:
        raise TaskError(f"{where}: y holds fewer than two classes")
    masks = [key for key in ("train_mask", "val_mask", "test_mask") if key in arrays]
    given = None
    if masks:
        if len(masks) != 3:
            raise TaskError(f"{where}: give train_mask, val_mask and test_mask together (found {', '.join(masks)})")
        given = np.full(count, -1, dtype=np.int64)
        for index, key in enumerate(masks):
            mask = arrays[key]
            if mask.shape != (count,) or not (mask.dtype == np.bool_ or np.isin(mask, (0, 1)).all()):
                raise TaskError(
                    f"{where}: {key} must be booleans ({count},), one per graph; got {mask.dtype} {mask.shape}"
                )
            mask = mask.astype(bool)
            if (given[mask] >= 0).any():
                raise TaskError(
                    f"{where}: {key} overlaps an earlier mask (graph {np.flatnonzero(mask & (given >= 0))[0]})"
                )
            given[mask] = index
    names = tuple(str(c) for c in range(int(y.max()) + 1))
    return GraphSet(
        x.astype(np.float32), edge_index.astype(np.int64), ptr.astype(np.int64), y.astype(np.int64), given, names, where
    )


def check_splits(task: Task, splits: SplitData) -> None:
    """Refuse data that breaks the stored format (module docstring): finite float32 node features of the task's width,
    offsets and edges that keep every graph apart, one int64 label in [0, C) per graph, and every class among the
    training graphs."""
    more = splits.more_inputs or {}
    for split in SPLIT_NAMES:
        x, y = getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y")
        edges, ptr = more.get(f"{split}_{EDGES}"), more.get(f"{split}_{PTR}")
        if edges is None or ptr is None:
            raise TaskError(
                f"{task.name}: a graphs task needs each split's edges and offsets ({split}_{EDGES}, {split}_{PTR})"
            )
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1:] != task.in_shape:
            raise TaskError(
                f"{task.name}: {split} node features are {x.dtype} {x.shape}; expected float32 (N, {task.in_shape[0]})"
            )
        if not np.isfinite(x).all():
            raise TaskError(f"{task.name}: {split} node features hold NaN or Inf")
        check_set(x, edges, ptr, f"{task.name} ({split})")
        if y.dtype != np.int64 or y.shape != (len(ptr) - 1,):
            raise TaskError(f"{task.name}: {split} labels are {y.dtype} {y.shape}; expected int64 ({len(ptr) - 1},)")
        if len(y) < MIN_SPLIT:
            raise TaskError(f"{task.name}: the {split} split has {len(y)} graph(s); it needs at least {MIN_SPLIT}")
        if y.min() < 0 or y.max() >= task.num_classes:
            raise TaskError(
                f"{task.name}: {split} labels span [{y.min()}, {y.max()}]; expected [0, {task.num_classes})"
            )
    missing = sorted(set(range(task.num_classes)) - set(splits.train_y.tolist()))
    if missing:
        raise TaskError(f"{task.name}: class {', '.join(map(str, missing))} has no graph in the train split")


def split_sizes(inputs_dir: Path) -> dict[str, int] | None:
    """Graphs per prepared split, from the offsets' headers; None where the folder holds no graph set."""
    if not (inputs_dir / f"train_{PTR}.npy").is_file():
        return None
    sizes = {}
    for split in SPLIT_NAMES:
        path = inputs_dir / f"{split}_{PTR}.npy"
        sizes[split] = int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0]) - 1 if path.is_file() else 0
    return sizes
