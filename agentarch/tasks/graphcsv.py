"""Graphs from a pair of CSV files, the way most graph data leaves a database or a spreadsheet:

    nodes.csv   id, feature columns..., label, [split], [graph_id]
    edges.csv   src, dst                 (node ids from nodes.csv; store both directions of an undirected edge)

Without a `graph_id` column the rows are one graph's nodes (node classification, `kind = "graph"`: a
`nodes.Graph`); with it they are many graphs' (graph classification, `kind = "graphs"`: a `graphsets.GraphSet`),
each graph's label and split given on every one of its nodes' rows. `split` holds train, val or test (an empty cell:
a node in no split); without the column the task file's [splits] cuts the nodes or graphs.

Its own module because it turns two tables into a graph, which neither the table encoder (sources.py) nor the npz
readers (nodes.py, graphsets.py) do: every problem is a TaskError naming the file, the line and the fix. Task files
read every graph source, npz or CSV pair, through `read_source`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agentarch.tasks import graphsets, nodes
from agentarch.tasks.graphsets import GraphSet
from agentarch.tasks.nodes import Graph
from agentarch.tasks.npzfiles import load_npz
from agentarch.tasks.sources import SPLIT_ALIASES, Table, class_ids, read_csv
from agentarch.tasks.task import TaskError

ID, SPLIT, GRAPH_ID, SRC, DST = "id", "split", "graph_id", "src", "dst"
"""The column names the pair's readers know; the label column is the task file's `target`."""


def read_pair(nodes_csv: Path, edges_csv: Path, target: str, features: Sequence[str] | None) -> Graph | GraphSet:
    """The graph (no graph_id column) or graph set (a graph_id column) that the two files describe."""
    table = read_csv(nodes_csv)
    ids = [str(v).strip() for v in table.column(ID, "node id")]
    row_of: dict[str, int] = {}
    for i, node in enumerate(ids):
        if node == "":
            raise TaskError(f"{table.where}: {table.row(i)} has an empty {ID}; give every node an id")
        if node in row_of:
            raise TaskError(
                f"{table.where}: {table.row(i)} repeats node id {node[:40]!r} (first on {table.row(row_of[node])}); "
                "node ids must be unique"
            )
        row_of[node] = i
    grouped = GRAPH_ID in table.columns
    known = {ID, target, SPLIT, GRAPH_ID}
    names = list(features) if features is not None else [c for c in table.columns if c not in known]
    if not names:
        raise TaskError(f"{table.where}: no feature columns; add some besides {', '.join(sorted(known))}")
    labels = [str(v).strip() for v in table.column(target, "label (the task file's target)")]
    x = np.stack([_numbers(table, name) for name in names], axis=1)
    splits = _splits(table) if SPLIT in table.columns else None
    edges, edge_table = _edges(edges_csv, row_of)
    if not grouped:
        return _graph(table, x, edges, labels, splits)
    return _graph_set(table, edge_table, x, edges, labels, splits)


def _numbers(table: Table, name: str) -> np.ndarray:
    """One feature column as float32; a cell that is not a finite number names its line."""
    column = table.column(name, "feature")
    out = np.empty(len(column), dtype=np.float32)
    for i, value in enumerate(column):
        try:
            number = float(str(value).strip())
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise TaskError(
                f"{table.where}: column {name!r} {table.row(i)} holds {str(value)[:40]!r}, not a finite number; "
                "graph features must be numbers: fix the value, or leave the column out of data.features"
            )
        out[i] = number
    return out


def _splits(table: Table) -> np.ndarray:
    """Each row's split index (0 train, 1 val, 2 test, -1 an empty cell)."""
    order = {"train": 0, "val": 1, "test": 2}
    out = np.full(len(table.columns[SPLIT]), -1, dtype=np.int64)
    for i, value in enumerate(table.columns[SPLIT]):
        text = str(value).strip().lower()
        if text == "":
            continue
        if text not in SPLIT_ALIASES:
            raise TaskError(
                f"{table.where}: column {SPLIT!r} {table.row(i)} holds {str(value)[:40]!r}; write train, val or test "
                "(or leave it empty for a node in no split)"
            )
        out[i] = order[SPLIT_ALIASES[text]]
    return out


def _edges(path: Path, row_of: dict[str, int]) -> tuple[np.ndarray, Table]:
    """The edge list as row numbers of nodes.csv (2, E), and its table; an id nodes.csv lacks names its line."""
    table = read_csv(path)
    ends = [table.column(SRC, "edge source"), table.column(DST, "edge target")]
    out = np.empty((2, len(ends[0])), dtype=np.int64)
    for side, column in enumerate(ends):
        for i, value in enumerate(column):
            node = row_of.get(str(value).strip())
            if node is None:
                raise TaskError(
                    f"{table.where}: {table.row(i)} names node {str(value)[:40]!r}, which is not in the id column "
                    "of the nodes file; add the node, or remove the edge"
                )
            out[side, i] = node
    if out.shape[1] == 0:
        raise TaskError(f"{table.where}: no edges; a graph task needs some")
    return out, table


def _graph(table: Table, x: np.ndarray, edges: np.ndarray, labels: list[str], given: np.ndarray | None) -> Graph:
    """One graph's nodes: an empty label marks a node outside every split."""
    labelled = [i for i, label in enumerate(labels) if label != ""]
    y = np.full(len(labels), -1, dtype=np.int64)
    y[labelled] = class_ids([labels[i] for i in labelled], table.where)[0]
    if given is not None:
        unlabelled = np.flatnonzero((given >= 0) & (y < 0))
        if len(unlabelled):
            raise TaskError(
                f"{table.where}: {table.row(int(unlabelled[0]))} is in a split but has no label; give it one, "
                "or leave its split empty"
            )
    return Graph(x, edges, y, given, table.where)


def _graph_set(
    table: Table, edge_table: Table, x: np.ndarray, edges: np.ndarray, labels: list[str], given: np.ndarray | None
) -> GraphSet:
    """Many graphs: nodes regrouped graph after graph (in the order graphs first appear), one label and split each."""
    graph_ids = [str(v).strip() for v in table.columns[GRAPH_ID]]
    first: dict[str, int] = {}
    for i, graph in enumerate(graph_ids):
        if graph == "":
            raise TaskError(f"{table.where}: {table.row(i)} has an empty {GRAPH_ID}; give every node its graph")
        if labels[i] == "":
            raise TaskError(f"{table.where}: {table.row(i)} has no label; give each graph its class on every node")
        first.setdefault(graph, i)
        for name, values in (("label", labels), (SPLIT, given)):
            if values is not None and values[i] != values[first[graph]]:
                raise TaskError(
                    f"{table.where}: {table.row(i)} gives graph {graph[:40]!r} another {name} than "
                    f"{table.row(first[graph])}; a graph's {name} must be the same on every one of its nodes"
                )
    index = {graph: k for k, graph in enumerate(first)}
    owner = np.array([index[g] for g in graph_ids], dtype=np.int64)
    across = np.flatnonzero(owner[edges[0]] != owner[edges[1]])
    if len(across):
        k = int(across[0])
        raise TaskError(
            f"{edge_table.where}: {edge_table.row(k)} joins a node of graph {graph_ids[edges[0, k]][:40]!r} to one of "
            f"graph {graph_ids[edges[1, k]][:40]!r}; an edge must stay inside its graph"
        )
    order = np.argsort(owner, kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    starts = [first[g] for g in first]
    y, classes = class_ids([labels[i] for i in starts], table.where)
    ptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(first)))]).astype(np.int64)
    per_graph = None if given is None else given[starts]
    if per_graph is not None and (per_graph < 0).any():
        k = int(np.flatnonzero(per_graph < 0)[0])
        raise TaskError(f"{table.where}: graph {list(first)[k][:40]!r} has no split; write train, val or test")
    return GraphSet(x[order], position[edges], ptr, y, per_graph, classes, table.where)


def read_source(
    kind: str, files: Sequence[Path], target: str | None, features: Sequence[str] | None
) -> Graph | GraphSet:
    """A task file's graph data: one npz (`files` of one path) or a CSV pair (nodes, edges), as one graph for
    `kind = "graph"` or a graph set for `kind = "graphs"`; data of the other shape says which kind it fits."""
    if len(files) == 1:
        try:
            read: Graph | GraphSet = (graphsets.read_npz if kind == "graphs" else nodes.read_npz)(files[0])
        except TaskError as err:
            if kind == "graph" and "graph_ptr" in load_npz(files[0]):
                raise TaskError(
                    f"{err}; it holds graph_ptr (many graphs): for graph classification set kind = 'graphs'"
                )
            raise
    else:
        read = read_pair(files[0], files[1], target or "label", features)
    if kind == "graph" and isinstance(read, GraphSet):
        raise TaskError(
            f"{read.where} holds many graphs (a {GRAPH_ID} column); for graph classification set kind = 'graphs'"
        )
    if kind == "graphs" and isinstance(read, Graph):
        raise TaskError(
            f"{read.where} holds one graph; for graph classification give each node its graph in a {GRAPH_ID} column, "
            "or set kind = 'graph' to classify its nodes"
        )
    return read
