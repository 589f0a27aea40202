"""Mini-batches of graphs for graph classification (`kind = "graphs"`), in plain PyTorch.

A split's graphs are stored as one big graph (agentarch/tasks/graphsets.py): every graph's nodes, graph after graph,
the edges over them, and node offsets `ptr`. A mini-batch of graphs is the union of the chosen graphs, renumbered:
its nodes `x` (N, F), its edges `edge_index` (2, E) over those N nodes, and `batch` (N,), the row of each node's graph
in the batch (the PyG convention: nodes of row 0 first, then row 1, ...). A network returns one row per graph, in the
order the graphs were chosen, so the labels `y[index]` line up with its rows.

Its own module because the trainer (training batches, prediction) and the runner (smoke batch, probes, the check that
graphs in a batch do not see each other) cut batches alike. It imports torch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class GraphBatch:
    """Some graphs joined into one network input: `forward(x, edge_index, batch)`, one output row per graph."""

    x: torch.Tensor
    edge_index: torch.Tensor
    batch: torch.Tensor
    graphs: int

    def __len__(self) -> int:
        return self.graphs

    def args(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x, self.edge_index, self.batch

    def to(self, device: torch.device | str) -> GraphBatch:
        return GraphBatch(self.x.to(device), self.edge_index.to(device), self.batch.to(device), self.graphs)

    def cpu(self) -> GraphBatch:
        return self.to("cpu")

    def alone(self, row: int) -> GraphBatch:
        """Graph `row` of the batch on its own, as a batch of one."""
        nodes = torch.nonzero(self.batch == row).squeeze(1)
        renumber = torch.full((len(self.x),), -1, dtype=torch.long, device=self.x.device)
        renumber[nodes] = torch.arange(len(nodes), device=self.x.device)
        edges = renumber[self.edge_index[:, (renumber[self.edge_index] >= 0).all(0)]]
        return GraphBatch(self.x[nodes], edges, torch.zeros_like(nodes), 1)


def mixed_row(model: nn.Module, graphs: GraphBatch) -> int | None:
    """The first graph whose output depends on the other graphs of its batch, else None (`model` in eval mode).

    Held-out graphs are predicted in batches, so a network that pools over the whole batch (or passes messages
    between graphs) could score by what it sees of the others. The first and the last graph's rows, run inside
    `graphs`, must equal their rows run alone; whatever the network raises propagates."""
    with torch.no_grad():
        together = model(*graphs.args())
        for row in (0, len(graphs) - 1):
            alone = model(*graphs.alone(row).args())
            if alone.shape != together[row : row + 1].shape or not torch.allclose(
                alone.float(), together[row : row + 1].float(), rtol=1e-3, atol=1e-4
            ):
                return row
    return None


class GraphSplit:
    """One split's graphs, indexable like a split of examples: `split[index]` (a slice or an int64 tensor of graph
    numbers) is their GraphBatch, in that order; `len(split)` counts graphs."""

    ndim = 2
    """The node features' dimensions: the trainer asks it of every input (4 would mean images)."""

    def __init__(self, x: torch.Tensor, edge_index: torch.Tensor, ptr: torch.Tensor) -> None:
        self.x, self.edge_index, self.ptr = x, edge_index.long(), ptr.long()
        count = len(self.ptr) - 1
        self.node_graph = torch.repeat_interleave(torch.arange(count, device=x.device), self.ptr.diff())
        self.edge_graph = self.node_graph[self.edge_index[0]]

    def __len__(self) -> int:
        return len(self.ptr) - 1

    @property
    def device(self) -> torch.device:
        return self.x.device

    def __getitem__(self, index: slice | torch.Tensor) -> GraphBatch:
        count = len(self)
        if isinstance(index, slice):
            index = torch.arange(count, device=self.device)[index]
        index = index.to(self.device).long()
        row = torch.full((count,), -1, dtype=torch.long, device=self.device)
        row[index] = torch.arange(len(index), device=self.device)
        node_row = row[self.node_graph]
        kept = torch.nonzero(node_row >= 0).squeeze(1)
        order = kept[torch.argsort(node_row[kept], stable=True)]  # nodes of row 0 first, then row 1, ...
        renumber = torch.full((len(self.x),), -1, dtype=torch.long, device=self.device)
        renumber[order] = torch.arange(len(order), device=self.device)
        edges = self.edge_index[:, row[self.edge_graph] >= 0]
        return GraphBatch(self.x[order], renumber[edges], node_row[order], len(index))
