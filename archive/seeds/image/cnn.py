"""Seed: a small VGG-style CNN (Simonyan and Zisserman, 2015), scaled down for tiny images.

Two pairs of 3x3 convolutions with batch normalization, one 2x2 max-pool between them, then global
average pooling and a linear classifier. The adaptive pooling makes it work for any (C, H, W).
"""

import torch
from torch import nn


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(in_shape[0], width),
            conv_bn_relu(width, width),
            nn.MaxPool2d(2, ceil_mode=True),
            conv_bn_relu(width, 2 * width),
            conv_bn_relu(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
