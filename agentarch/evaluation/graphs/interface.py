"""What a task's exported graph takes and gives: its named inputs (in the order forward takes them), their element
types and axes, its output, which stored files feed each input in the clean evaluator, which rows of the output
are scored, and the host's fixed probe inputs.

One home for the rule, read by checks.py (the interface a graph must have), shapes.py and measures.py (the sizes
its dynamic axes take when it is measured), scoring.py (the requests to the clean evaluator) and worker.py (which
reads the request, not this module: it imports no agentarch code). The runner writes the same names and axes
(sandbox/runner.py, `export_inputs`).

- examples (image, token, sequence, table, lm, dense): one input `x` (batch, *in_shape), float32 or int64 ids,
  whose axis 0 is the dynamic batch axis; one output (batch, ...). Each split's stored inputs `<split>_x` are run
  batch by batch; every row is scored.
- node classification (`graph`): `x` float32 (nodes, F) and `edge_index` int64 (2, edges), both counts dynamic;
  output (nodes, classes). The clean evaluator runs the task's whole graph once (`train_x`: every node's
  features, normalised as the trainer does; `edge_index`) and the host scores the rows of the validation and test
  nodes (`val_x`, `test_x` hold their indices).
- graph classification (`graphs`): `x` float32 (nodes, F), `edge_index` int64 (2, edges) and `batch` int64 (nodes,),
  each node's graph; output (graphs, classes), one row per graph. The graph count is not an input's axis: the
  network computes it from `batch` (`batch.max() + 1`), so the host measures the graph on one graph of the training
  split's mean size with `batch`'s value bound (`sizes`), and shapes.py follows the count from that value. The clean
  evaluator runs every held-out graph alone (`feeds`: `ptr` names the split's node offsets), `batch` all zeros, and
  its one row is the graph's output: no graph's output can depend on another's when no other is in its input, which
  is what the batch proof gives a kind of examples (docs/sandbox.md says why not a proof here).
A new input of a kind is one more Port here, one more file in its feeds, and one more entry in the runner's
`export_inputs`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agentarch.tasks.graphsets import EDGES, PTR
from agentarch.tasks.task import Task

FLOAT, INT64, FLOAT16, DOUBLE = 1, 7, 10, 11
"""ONNX's element types (onnx.TensorProto's numbers), written out: scoring.py imports this module on every command,
and importing onnx costs 1.1 s."""

Bound = dict[str, "dict[int, int] | np.ndarray"]
"""How a graph is measured at fixed sizes (`sizes`): per input, its dynamic axes' sizes, or its whole value (an array,
its shape included: graph classification's `batch`, whose value the graph count is computed from)."""
Axis = str | int | None
"""An axis of a port: a symbol (a dynamic size, the same symbol the same size across ports), a fixed size, or None
(a fixed size the task's shape checks elsewhere)."""


@dataclass(frozen=True)
class Port:
    """One named input or output of a graph: the element types it may have and its axes."""

    name: str
    dtypes: tuple[int, ...]
    axes: tuple[Axis, ...]


@dataclass(frozen=True)
class Interface:
    """A graph's inputs, in forward's order, and its one output; `whole` when one run takes the task's whole
    stored input (a graph) and the scored rows are picked from its output, rather than batches of examples."""

    inputs: tuple[Port, ...]
    output: Port
    whole: bool = False

    @property
    def names(self) -> list[str]:
        return [port.name for port in self.inputs]


PROBE_NODES = 12
"""Nodes of the host's probe graph (the runner's functional hash uses a graph of the same size)."""
NODE_EXTRA_OPS = frozenset({"ScatterElements", "ScatterND", "GatherElements", "GatherND"})
"""The operators message passing exports to beyond the allowlist (checks.py): sums and maxima of messages into their
target nodes (index_add, scatter_reduce: ScatterElements), gathers along edges (GatherElements; x[src] is a plain
Gather). Allowed for the networks of graphs only (both graph kinds); what they move between nodes is the design
(docs/sandbox.md)."""


GRAPHS = ("graph", "graphs")
"""The kinds whose networks take graphs, with named inputs."""


def interface(task: Task) -> Interface | None:
    """The task's interface, or None for a kind of examples, which checks.py checks with its own rule (one input
    `x` with a dynamic batch axis)."""
    if task.kind not in GRAPHS:
        return None
    return ports(task.kind, int(task.in_shape[0]), int(task.num_classes))


def ports(kind: str, features: int, classes: int) -> Interface:
    """The interface of a kind of GRAPHS whose nodes have `features` features and whose output `classes` columns."""
    nodes = (Port("x", (FLOAT,), ("nodes", features)), Port("edge_index", (INT64,), (2, "edges")))
    if kind == "graphs":
        return Interface(
            inputs=(*nodes, Port("batch", (INT64,), ("nodes",))),
            output=Port("y", (FLOAT, FLOAT16, DOUBLE), ("graphs", classes)),
        )
    return Interface(inputs=nodes, output=Port("y", (FLOAT, FLOAT16, DOUBLE), ("nodes", classes)), whole=True)


def claimed_kind(names: list[str]) -> str | None:
    """The kind of GRAPHS a graph's input names say it was exported for (x and edge_index: node classification; and
    batch: graph classification), or None for a network of examples (one input, x). The names claim, checks.py's
    `_check_ports` holds the graph to the claim: what reads a graph without its task (the predictor's features,
    features.py) learns its interface so."""
    if "batch" in names:
        return "graphs"
    return "graph" if "edge_index" in names else None


REFERENCE_NODES, REFERENCE_EDGES = 64, 256
"""The graph a network of graphs is measured on where no task says its sizes (the predictor's features): one graph
of 64 nodes and 256 edges (4 in a node on average, between sbm-graphs' 3 and sbm-nodes' 12), so its sizes per node
compare across tasks, and smoke and trained graphs, which may not know their task, agree."""


def reference_sizes(kind: str, edges: int = REFERENCE_EDGES) -> Bound:
    """The bound (`sizes`'s form) of the reference graph, with `edges` edges: for a graphs kind, `batch` bound to
    all zeros, one graph."""
    found: Bound = {"x": {0: REFERENCE_NODES}, "edge_index": {1: edges}}
    if kind == "graphs":
        found["batch"] = np.zeros(REFERENCE_NODES, dtype=np.int64)
    return found


def extra_ops(task: Task) -> frozenset[str]:
    """Operators the task's graphs may use beyond checks.ALLOWED_OPS."""
    return NODE_EXTRA_OPS if task.kind in GRAPHS else frozenset()


def feeds(task: Task, splits: list[str]) -> dict[str, dict[str, object]]:
    """For each split, the stored files (names without .npy, in the task's inputs folder) that feed each input, and
    the file of the rows to score (None: every row): what a `run` request tells the clean evaluator. A graphs task's
    split names its node offsets (`ptr`) instead: its graphs are run one by one (the module docstring)."""
    if task.kind == "graphs":
        return {
            split: {"inputs": {"x": f"{split}_x", "edge_index": f"{split}_{EDGES}"}, "ptr": f"{split}_{PTR}"}
            for split in splits
        }
    if task.kind == "graph":
        return {
            split: {"inputs": {"x": "train_x", "edge_index": "edge_index"}, "rows": f"{split}_x"} for split in splits
        }
    return {split: {"inputs": {"x": f"{split}_x"}, "rows": None} for split in splits}


def sizes(task: Task, inputs_dir: Path) -> Bound | None:
    """The sizes of a graph task's dynamic axes, per input and axis, at which its graphs are measured (FLOPs and
    structure of one step on the task's graph, as the training budget prices it); for a graphs task one graph of the
    training split's mean node and edge counts, `batch` bound to its value (all zeros: the graph count is 1), so its
    FLOPs are one example's as the budget prices them; None for a kind of examples, measured per example with a
    symbolic batch size."""
    if task.kind == "graphs":
        graphs = int(np.load(Path(inputs_dir) / f"train_{PTR}.npy", mmap_mode="r", allow_pickle=False).shape[0]) - 1
        total = int(np.load(Path(inputs_dir) / "train_x.npy", mmap_mode="r", allow_pickle=False).shape[0])
        edges = int(np.load(Path(inputs_dir) / f"train_{EDGES}.npy", mmap_mode="r", allow_pickle=False).shape[1])
        nodes = max(1, round(total / graphs))
        return {"x": {0: nodes}, "edge_index": {1: round(edges / graphs)}, "batch": np.zeros(nodes, dtype=np.int64)}
    if task.kind != "graph":
        return None
    meta = json.loads((Path(inputs_dir) / "meta.json").read_text())
    return {"x": {0: int(meta["num_nodes"])}, "edge_index": {1: int(meta["num_edges"])}}


def probe_graph(features: int, seed: int) -> dict[str, np.ndarray]:
    """The host's fixed probe graph: PROBE_NODES nodes of standard normal features on a ring, both directions, node 0
    a hub joined to every other even node (so degrees differ, and mean, sum and normalised aggregations differ)."""
    rng = np.random.default_rng(seed)
    ring = np.arange(PROBE_NODES)
    hub = np.arange(2, PROBE_NODES, 2)
    src = np.concatenate([ring, hub])
    dst = np.concatenate([(ring + 1) % PROBE_NODES, np.zeros_like(hub)])
    edges = np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]).astype(np.int64)
    return {"x": rng.standard_normal((PROBE_NODES, features), dtype=np.float32), "edge_index": edges}


def probe_graphs(features: int, seed: int) -> dict[str, np.ndarray]:
    """The host's fixed probe graphs of a graphs task, as a split is stored: the probe graph (`probe_graph`) and a ring
    with a hub of about half as many nodes after it, so sum and mean pooling differ too; `ptr` their node offsets."""
    first = probe_graph(features, seed)
    small = PROBE_NODES // 2 + 1
    ring = np.arange(small)
    hub = np.arange(2, small, 2)
    src, dst = np.concatenate([ring, hub]), np.concatenate([(ring + 1) % small, np.zeros_like(hub)])
    second = np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]).astype(np.int64) + PROBE_NODES
    x = np.random.default_rng(seed + 1).standard_normal((small, features), dtype=np.float32)
    return {
        "x": np.concatenate([first["x"], x]),
        "edge_index": np.concatenate([first["edge_index"], second], axis=1),
        "ptr": np.array([0, PROBE_NODES, PROBE_NODES + small], dtype=np.int64),
    }
