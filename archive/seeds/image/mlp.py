"""Seed: a two-hidden-layer MLP on the flattened image (the classic fully connected baseline).

No convolution and no spatial prior at all, so it is the yardstick the convolutional seeds should
beat. Works for any (C, H, W).
"""

import math

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(in_shape), hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
