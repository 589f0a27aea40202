"""Seed: a small Transformer encoder (Vaswani et al., 2017) with mean pooling, for one label per sequence.

Ids are embedded through a table (a sequence task over ids passes `vocab_size`), float features
(B, L, F) through a linear layer; learned position embeddings are added. Two pre-norm blocks of
bidirectional multi-head attention and a GELU MLP follow (nothing is predicted per position, so
every position may see every other), then LayerNorm, the mean over positions and a linear head
give (B, num_classes).
"""

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, l, d))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, vocab_size: int | None = None,
                 d_model: int = 64, n_heads: int = 4):
        super().__init__()
        if len(in_shape) == 1:
            self.embed = nn.Embedding(vocab_size, d_model)
        else:
            self.embed = nn.Linear(in_shape[1], d_model)
        self.pos = nn.Embedding(in_shape[0], d_model)
        self.blocks = nn.Sequential(Block(d_model, n_heads), Block(d_model, n_heads))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device)
        h = self.blocks(self.embed(x) + self.pos(positions))
        return self.head(self.norm(h).mean(dim=1))
