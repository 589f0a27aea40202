"""Seed: an attention-free byte model of gated causal dilated convolutions (WaveNet; van den Oord et al., 2016).

Each layer is a depthwise convolution over the last two steps at dilation 1, 2, 4, ... (so six
layers see 64 bytes back), padded on the left only, so the output at position t never sees a later
byte; a GLU gate (Dauphin et al., 2017) and a pointwise projection follow, behind LayerNorm with a
residual connection. No attention and no position embeddings: it is the cheap local-context
yardstick an attention model should beat on repeated identifiers and indentation.
"""

import torch
import torch.nn.functional as F
from torch import nn


class GatedCausalConv(nn.Module):
    def __init__(self, d_model: int, dilation: int, kernel: int = 2):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.norm = nn.LayerNorm(d_model)
        self.conv = nn.Conv1d(d_model, 2 * d_model, kernel, dilation=dilation)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).transpose(1, 2)
        h = self.conv(F.pad(h, (self.pad, 0)))  # left padding only: causal
        return x + self.proj(F.glu(h, dim=1).transpose(1, 2))


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, d_model: int = 64, n_layers: int = 6):
        super().__init__()
        self.tok = nn.Embedding(num_classes, d_model)
        self.layers = nn.Sequential(*[GatedCausalConv(d_model, 2**i) for i in range(n_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.layers(self.tok(x))))
