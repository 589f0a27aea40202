"""Seed: a small decoder-only Transformer (Vaswani et al., 2017) in the pre-norm GPT/Llama layout.

Token embeddings, two blocks of causal multi-head softmax attention with rotary position
embeddings (RoPE; Su et al., 2021) and a GELU MLP, each behind LayerNorm with a residual
connection, then a final LayerNorm and a linear head. Two attention layers are enough for
associative recall: the first can copy each key onto the value that follows it, the second can
look that key up from the query (an induction head; Olsson et al., 2022). Rotary positions make
"the previous token" the same relation everywhere, which the first layer learns much sooner than
it does with learned absolute position embeddings.
"""

import torch
import torch.nn.functional as F
from torch import nn


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels (first half, second half) by position-dependent angles."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # keep bfloat16 under autocast: attention needs one dtype
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, seq_len: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        head_dim = d_model // n_heads
        freqs = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(torch.arange(seq_len).float(), freqs)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, self.cos[:l], self.sin[:l]), rotate(k, self.cos[:l], self.sin[:l])
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, l, d))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, seq_len: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, seq_len)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, d_model: int = 64, n_heads: int = 4,
                 n_layers: int = 2):
        super().__init__()
        self.tok = nn.Embedding(num_classes, d_model)
        self.blocks = nn.Sequential(*[Block(d_model, n_heads, in_shape[0]) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.tok(x))))
