"""Seed: a graph convolutional network (GCN, Kipf and Welling 2017) in plain PyTorch.

Each layer transforms every node's features, then sums them into each node from its neighbours and itself, weighted
by the symmetric normalisation D^-1/2 (A + I) D^-1/2 (D the degree with the self-loop). Messages are gathered along
the edges and summed into their targets with index_add_: no sparse extension is needed. Two layers, 64 hidden units,
ReLU and dropout 0.5 between them, as in the paper's citation-network setting.
"""

import torch
import torch.nn.functional as F
from torch import nn


def with_self_loops(edge_index: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    loops = torch.arange(num_nodes, device=edge_index.device)
    return torch.cat([edge_index[0], loops]), torch.cat([edge_index[1], loops])


class GCNLayer(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False)
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        messages = h[src] * norm.unsqueeze(1).to(h.dtype)
        return torch.zeros_like(h).index_add_(0, dst, messages) + self.bias


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        self.conv1 = GCNLayer(in_shape[0], hidden)
        self.conv2 = GCNLayer(hidden, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        src, dst = with_self_loops(edge_index, x.shape[0])
        degree = torch.zeros(x.shape[0], device=x.device).index_add_(0, dst, torch.ones(dst.shape[0], device=x.device))
        norm = degree[src].rsqrt() * degree[dst].rsqrt()
        h = F.relu(self.conv1(self.dropout(x), src, dst, norm))
        return self.conv2(self.dropout(h), src, dst, norm)
