"""Seed: a graph isomorphism network (GIN, Xu, Hu, Leskovec and Jegelka 2019) with sum pooling, for graph
classification.

Each layer sums the neighbours' states into a node's own, weighted (1 + eps) with eps learned, and passes the sum
through a two-layer MLP: as injective on neighbourhoods as message passing gets. Every layer's node states are summed
per graph (`batch` says which graph a node is in) and the readouts concatenated into the classifier, as in the paper.
"""

import torch
import torch.nn.functional as F
from torch import nn


def sum_pool(h: torch.Tensor, batch: torch.Tensor, graphs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(graphs, h.shape[1], device=h.device, dtype=h.dtype).index_add_(0, batch, h)


class GINLayer(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.eps = nn.Parameter(torch.zeros(1))
        self.mlp = nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out))

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        neighbours = torch.zeros_like(h).index_add_(0, edge_index[1], h[edge_index[0]])
        return self.mlp((1 + self.eps) * h + neighbours)


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, hidden: int = 48, layers: int = 3):
        super().__init__()
        widths = [in_shape[0]] + [hidden] * layers
        self.layers = nn.ModuleList(GINLayer(a, b) for a, b in zip(widths, widths[1:]))
        self.head = nn.Sequential(nn.Linear(hidden * layers, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        graphs = batch.max() + 1  # a tensor: the exported graph computes the count (int() would freeze it)
        h, readouts = x, []
        for layer in self.layers:
            h = F.relu(layer(h, edge_index))
            readouts.append(sum_pool(h, batch, graphs))
        return self.head(torch.cat(readouts, dim=1))
