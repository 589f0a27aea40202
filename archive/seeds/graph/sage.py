"""Seed: GraphSAGE with the mean aggregator (Hamilton, Ying and Leskovec 2017) in plain PyTorch.

Each layer keeps a node's own features apart from its neighbourhood's: h' = W_self h + W_neigh mean(h_j over the
node's in-neighbours j), so a node with an unusual neighbourhood is not averaged away. The mean is a sum along the
edges (index_add_) divided by the in-degree; a node without neighbours gets zeros from them. Two layers, 64 hidden
units, ReLU and dropout 0.5 between them, each layer's output L2-normalised as in the paper except the last.
"""

import torch
import torch.nn.functional as F
from torch import nn


def neighbour_mean(h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    src, dst = edge_index[0], edge_index[1]
    total = torch.zeros_like(h).index_add_(0, dst, h[src])
    count = torch.zeros(h.shape[0], device=h.device, dtype=h.dtype).index_add_(
        0, dst, torch.ones(dst.shape[0], device=h.device, dtype=h.dtype)
    )
    return total / count.clamp(min=1).unsqueeze(1)


class SAGELayer(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.self_linear = nn.Linear(d_in, d_out)
        self.neigh_linear = nn.Linear(d_in, d_out, bias=False)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.self_linear(h) + self.neigh_linear(neighbour_mean(h, edge_index))


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        self.layer1 = SAGELayer(in_shape[0], hidden)
        self.layer2 = SAGELayer(hidden, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = F.normalize(F.relu(self.layer1(self.dropout(x), edge_index)), dim=1)
        return self.layer2(self.dropout(h), edge_index)
