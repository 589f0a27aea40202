"""Seed: a graph convolutional network (GCN, Kipf and Welling 2017) with mean pooling, for graph classification.

Three GCN layers (symmetric normalisation D^-1/2 (A + I) D^-1/2, messages summed into their targets with index_add_,
no sparse extension), then each graph's node states averaged into one row (`batch` says which row a node belongs
to), then a two-layer classifier. Pooling by `batch` alone keeps the graphs of a mini-batch apart.
"""

import torch
import torch.nn.functional as F
from torch import nn


def mean_pool(h: torch.Tensor, batch: torch.Tensor, graphs: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(graphs, h.shape[1], device=h.device, dtype=h.dtype).index_add_(0, batch, h)
    count = torch.zeros(graphs, device=h.device, dtype=h.dtype).index_add_(0, batch, torch.ones_like(h[:, 0]))
    return total / count.clamp(min=1).unsqueeze(1)


class GCNLayer(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, h: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        h = self.linear(h)
        return torch.zeros_like(h).index_add_(0, dst, h[src] * norm.unsqueeze(1).to(h.dtype))


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, hidden: int = 64, layers: int = 3):
        super().__init__()
        widths = [in_shape[0]] + [hidden] * layers
        self.convs = nn.ModuleList(GCNLayer(a, b) for a, b in zip(widths, widths[1:]))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        loops = torch.arange(x.shape[0], device=x.device)
        src, dst = torch.cat([edge_index[0], loops]), torch.cat([edge_index[1], loops])
        degree = torch.zeros(x.shape[0], device=x.device).index_add_(0, dst, torch.ones(dst.shape[0], device=x.device))
        norm = degree[src].rsqrt() * degree[dst].rsqrt()
        h = x
        for conv in self.convs:
            h = F.relu(conv(h, src, dst, norm))
        graphs = batch.max() + 1  # a tensor: the exported graph computes the count (int() would freeze it)
        return self.head(mean_pool(h, batch, graphs))
