"""Seed: a 1-D convolutional sequence classifier with global pooling (in the spirit of Kim, 2014).

The input is embedded per position: ids through an embedding table (a sequence task over ids
passes `vocab_size`), float features (B, L, F) through a linear layer. Three residual blocks of a
width-5 convolution along the sequence with BatchNorm and GELU follow; mean and max pooling over
positions give one vector per sequence, and a linear head gives (B, num_classes). The output is one
prediction per sequence, so nothing needs to be causal.
"""

import torch
from torch import nn


class ConvBlock(nn.Module):
    def __init__(self, width: int, kernel: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2)
        self.norm = nn.BatchNorm1d(width)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.norm(self.conv(x)))


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, vocab_size: int | None = None, width: int = 64):
        super().__init__()
        if len(in_shape) == 1:
            self.embed = nn.Embedding(vocab_size, width)
        else:
            self.embed = nn.Linear(in_shape[1], width)
        self.blocks = nn.Sequential(*[ConvBlock(width) for _ in range(3)])
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.embed(x).transpose(1, 2))  # (B, width, L)
        return self.head(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))
