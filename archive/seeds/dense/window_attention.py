"""Seed: a small windowed-attention restorer in the spirit of SwinIR (Liang et al., 2021), without shifted windows.

A 3x3 convolution embeds each pixel of the degraded image; four blocks follow, each a depthwise 3x3 convolution
(mixing neighbouring windows), multi-head self-attention inside non-overlapping 4x4 windows with a learned bias per
pair of window positions, and a GELU MLP, each pre-normed and residual. A 3x3 convolution and a pixel shuffle turn
the features into the detail added to the nearest-neighbour upsampled input (for denoising, to the input itself).
Windows are cut with reshapes that keep the batch axis apart, so no example can see another's pixels.
"""

import torch
import torch.nn.functional as F
from torch import nn


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.zeros(heads, window * window, window * window))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, windows, N, dim)
        b, w, n, d = x.shape
        qkv = self.qkv(x).reshape(b, w, n, 3, self.heads, d // self.heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, windows, heads, N, head_dim)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.bias
        out = (attn.softmax(dim=-1) @ v).transpose(2, 3).reshape(b, w, n, d)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim: int, window: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.window = window
        self.local = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim, H, W), H and W multiples of the window
        x = x + self.local(x)
        b, d, h, w = x.shape
        s = self.window
        t = x.reshape(b, d, h // s, s, w // s, s).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // s) * (w // s), s * s, d)
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return t.reshape(b, h // s, w // s, s, s, d).permute(0, 5, 1, 3, 2, 4).reshape(b, d, h, w)


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, out_shape: tuple[int, ...] | None = None,
                 dim: int = 32, depth: int = 4, heads: int = 2, window: int = 4):
        super().__init__()
        out_shape = out_shape or (num_classes, *in_shape[1:])
        self.factor = out_shape[-1] // in_shape[-1]
        self.size = in_shape[1:]
        self.pad = ((-in_shape[2]) % window, (-in_shape[1]) % window)  # to whole windows: right, bottom
        self.embed = nn.Conv2d(in_shape[0], dim, 3, padding=1)
        self.blocks = nn.Sequential(*[Block(dim, window, heads) for _ in range(depth)])
        self.out = nn.Conv2d(dim, num_classes * self.factor**2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        if any(self.pad):
            h = F.pad(h, (0, self.pad[0], 0, self.pad[1]))
        h = self.blocks(h)[:, :, : self.size[0], : self.size[1]]
        base = x
        if self.factor > 1:  # nearest neighbour: each pixel repeated factor x factor times
            b, c, hh, ww = x.shape
            f = self.factor
            base = x[:, :, :, None, :, None].expand(b, c, hh, f, ww, f).reshape(b, c, hh * f, ww * f)
        return base + F.pixel_shuffle(self.out(h), self.factor)
