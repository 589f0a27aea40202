"""Seed: an attention-free model in the style of Based (Arora et al., 2024): gated convolution, then linear attention.

The first block mixes each token with its few predecessors through a gated causal depthwise
convolution, y = W_o (W_g x * conv(W_u x)), the BaseConv operator of Zoology (Arora et al., 2023)
and a short-filter relative of H3 and Hyena. The second block is causal linear attention with the
second-order Taylor feature map of Based, phi(q) . phi(k) = 1 + q.k + (q.k)^2 / 2, which stands in
for exp(q.k) and is always positive. The convolution lets a value token see the key just before
it; the linear attention then looks that key up from the query, so the model can do associative
recall without softmax attention. Each mixer is followed by a GELU MLP, all in a pre-norm residual
stack; there are no position embeddings (the convolution carries the local order).

Linear attention is computed here in its parallel (quadratic) form, which for short sequences is
the simplest and fastest; it equals the recurrent form, phi(q_t)^T sum_{s<=t} phi(k_s) v_s^T over a
running normalizer, whose constant-size state makes the model attention-free at inference.
"""

import math

import torch
from torch import nn


class GatedShortConv(nn.Module):
    def __init__(self, d_model: int, kernel: int = 4):
        super().__init__()
        self.kernel = kernel
        self.in_proj = nn.Linear(d_model, 2 * d_model)
        self.conv = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, u = self.in_proj(x).chunk(2, dim=-1)
        u = self.conv(nn.functional.pad(u.transpose(1, 2), (self.kernel - 1, 0)))  # left padding keeps it causal
        return self.out_proj(gate * u.transpose(1, 2))


class TaylorLinearAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, feature_dim: int = 16):
        super().__init__()
        self.n_heads, self.feature_dim = n_heads, feature_dim
        self.qk = nn.Linear(d_model, 2 * n_heads * feature_dim, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, l, d = x.shape
        q, k = self.qk(x).view(b, l, 2, self.n_heads, self.feature_dim).permute(2, 0, 3, 1, 4)
        v = self.v(x).view(b, l, self.n_heads, d // self.n_heads).transpose(1, 2)
        s = q @ k.transpose(-1, -2) / math.sqrt(self.feature_dim)
        weights = (1 + s + 0.5 * s * s).tril()  # phi(q) . phi(k), causal
        y = (weights @ v) / weights.sum(-1, keepdim=True)
        return self.out(y.transpose(1, 2).reshape(b, l, d))


class Block(nn.Module):
    def __init__(self, d_model: int, mixer: nn.Module):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, d_model: int = 64, n_heads: int = 4):
        super().__init__()
        self.tok = nn.Embedding(num_classes, d_model)
        self.blocks = nn.Sequential(
            Block(d_model, GatedShortConv(d_model)),
            Block(d_model, TaylorLinearAttention(d_model, n_heads)),
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.tok(x))))
