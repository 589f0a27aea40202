"""Seed: a small ResNet (original post-activation basic blocks) in the CIFAR layout of He et al. (2016), section 4.2.

A 3x3 stem, three stages of two basic residual blocks (widths 32, 64, 128; the last two stages
halve the resolution), batch normalization, global average pooling and a linear classifier. The
last batch norm of each residual branch starts at zero (Goyal et al., 2017), so every block starts
as the identity. Adaptive pooling makes it work for any (C, H, W).
"""

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        nn.init.zeros_(self.branch[-1].weight)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.branch(x) + self.shortcut(x))


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, widths: tuple[int, ...] = (32, 64, 128),
                 blocks_per_stage: int = 2):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_shape[0], widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        c_in = widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(c_in, width, stride))
                c_in = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
