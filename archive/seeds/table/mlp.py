"""Seed: a three-layer MLP on standardized features (the standard tabular deep-learning baseline).

Features arrive normalized per feature (zero mean, unit variance over the training split), so a
plain MLP is a fair start: two hidden layers of 256 with BatchNorm, ReLU and dropout, then a
linear head. The head gives class logits (B, num_classes), or, for a regression task, one value per
target (the trainer standardizes the targets, so no output scaling is needed).
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_shape[0], hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
