"""Seed: the tabular ResNet of Gorishniy et al. (2021), "Revisiting Deep Learning Models for Tabular Data".

A linear layer lifts the standardized features to width 128; three residual blocks each apply
LayerNorm, a linear expansion to 256, ReLU, dropout and a projection back, added to their input;
a final LayerNorm, ReLU and linear head give class logits or one value per regression target.
The paper found this simple design a strong baseline across classification and regression tables.
"""

import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ff(self.norm(x))


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, width: int = 128, dropout: float = 0.1):
        super().__init__()
        self.lift = nn.Linear(in_shape[0], width)
        self.blocks = nn.Sequential(*[ResidualBlock(width, 2 * width, dropout) for _ in range(3)])
        self.head = nn.Sequential(nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.lift(x)))
