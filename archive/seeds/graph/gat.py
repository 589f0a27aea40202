"""Seed: a graph attention network (GAT, Velickovic et al. 2018) in plain PyTorch.

Each head scores every edge j -> i (self-loops added) by LeakyReLU(a_src . W h_j + a_dst . W h_i), turns the scores
into weights over each node's incoming edges with a softmax per target node (a segment softmax: the per-node maximum
from scatter_reduce, sums from index_add_), and sums the weighted messages into the target. The first layer has 8
heads of 8 units, concatenated, then ELU; the second one head that gives the logits. Dropout 0.6 on the inputs of
both layers and on the attention weights, as in the paper.
"""

import torch
import torch.nn.functional as F
from torch import nn


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Softmax of `scores` (E, heads) over the edges that share a target node `index` (E,)."""
    expanded = index.unsqueeze(1).expand_as(scores)
    largest = torch.full((num_nodes, scores.shape[1]), float("-inf"), device=scores.device, dtype=scores.dtype)
    largest = largest.scatter_reduce(0, expanded, scores, reduce="amax", include_self=True).detach()
    weights = (scores - largest[index]).exp()
    total = torch.zeros_like(largest).index_add_(0, index, weights)
    return weights / total[index]


class GATLayer(nn.Module):
    def __init__(self, d_in: int, d_out: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.d_out = heads, d_out
        self.linear = nn.Linear(d_in, heads * d_out, bias=False)
        self.att_src = nn.Parameter(torch.randn(heads, d_out) * d_out**-0.5)
        self.att_dst = nn.Parameter(torch.randn(heads, d_out) * d_out**-0.5)
        self.bias = nn.Parameter(torch.zeros(heads * d_out))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h = self.linear(x).view(n, self.heads, self.d_out)
        score_src = (h * self.att_src).sum(-1)  # (N, heads)
        score_dst = (h * self.att_dst).sum(-1)
        scores = F.leaky_relu(score_src[src] + score_dst[dst], 0.2)  # (E, heads)
        alpha = self.dropout(segment_softmax(scores, dst, n))
        messages = h[src] * alpha.unsqueeze(-1).to(h.dtype)
        out = torch.zeros_like(h).index_add_(0, dst, messages)
        return out.reshape(n, self.heads * self.d_out) + self.bias


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, hidden: int = 8, heads: int = 8):
        super().__init__()
        self.layer1 = GATLayer(in_shape[0], hidden, heads, dropout=0.6)
        self.layer2 = GATLayer(hidden * heads, num_classes, 1, dropout=0.6)
        self.dropout = nn.Dropout(0.6)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        loops = torch.arange(x.shape[0], device=x.device)
        src = torch.cat([edge_index[0], loops])
        dst = torch.cat([edge_index[1], loops])
        h = F.elu(self.layer1(self.dropout(x), src, dst))
        return self.layer2(self.dropout(h), src, dst)
