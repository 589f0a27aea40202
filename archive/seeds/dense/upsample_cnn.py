"""Seed: bicubic upsampling plus a residual CNN that learns what bicubic misses (EDSR-style, Lim et al. 2017).

The input is upsampled by the task's factor with a fixed bicubic filter (Keys' cubic, a = -0.75, half-pixel
centres and clamped borders: what F.interpolate(mode="bicubic") computes), written as a depthwise convolution and a
pixel shuffle so that the exported graph needs no Resize operator; for denoising (factor 1) it is the input itself.
A 3x3 head, six residual blocks without batch norm (conv, ReLU, conv, the branch scaled by 0.1) and a 3x3 tail
whose output is pixel-shuffled to the target's size add the missing detail to that baseline, so the untrained
network already restores as well as bicubic interpolation does.
"""

import torch
import torch.nn.functional as F
from torch import nn


def cubic(t: float, a: float = -0.75) -> float:
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


class Bicubic(nn.Module):
    """Upsampling by a whole factor: one 5x5 depthwise filter per output phase, then a pixel shuffle."""

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.channels, self.factor = channels, factor
        taps = torch.tensor([[cubic((r + 0.5) / factor - 0.5 - o) for o in range(-2, 3)] for r in range(factor)])
        kernels = torch.einsum("yi,xj->yxij", taps, taps).reshape(factor * factor, 1, 5, 5)
        self.register_buffer("kernels", kernels.repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        phases = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), self.kernels, groups=self.channels)
        return F.pixel_shuffle(phases, self.factor)


class ResBlock(nn.Module):
    def __init__(self, width: int, scale: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.conv2(torch.relu(self.conv1(x)))


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, out_shape: tuple[int, ...] | None = None,
                 width: int = 32, blocks: int = 6):
        super().__init__()
        out_shape = out_shape or (num_classes, *in_shape[1:])
        factor = out_shape[-1] // in_shape[-1]
        self.base = Bicubic(in_shape[0], factor)
        self.head = nn.Conv2d(in_shape[0], width, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(width) for _ in range(blocks)])
        self.tail = nn.Conv2d(width, num_classes * factor * factor, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # start as the bicubic baseline
        nn.init.zeros_(self.tail.bias)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        detail = self.tail(h + self.body(h))
        return self.base(x) + F.pixel_shuffle(detail, self.factor)

