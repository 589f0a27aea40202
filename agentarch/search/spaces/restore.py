"""A restoration space for dense tasks (super-resolution, denoising): residual CNNs chosen by five settings.

The string names every setting, in a fixed order, as `d<blocks>-w<width>-k<kernel>-<activation>-<base>`, for
example `d4-w32-k3-relu-bicubic`: a 3x3 head convolution to 32 channels, 4 residual blocks (conv, ReLU, conv, the
branch scaled by 0.1, no batch norm: EDSR's block, Lim et al. 2017), a tail convolution to the output channels
times the factor squared and a pixel shuffle, added to the input upsampled by `base` (nearest neighbour, or
bicubic as a fixed depthwise filter and a pixel shuffle: the exported graph needs no Resize). For a denoising task
(factor 1) both bases are the input itself. The largest network (d8-w32-k5, about 0.41M parameters on one channel)
fits the built-in dense tasks' budget (0.5M).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentarch.search.spaces.base import SettingsSpace, SettingsString, Size, SpaceError, module_literals

if TYPE_CHECKING:
    from agentarch.tasks.task import Task

DEPTHS = (1, 2, 3, 4, 6, 8)
WIDTHS = (8, 16, 32)
KERNELS = (3, 5)
ACTIVATIONS = ("relu", "gelu")
BASES = ("nearest", "bicubic")
BICUBIC_TAPS = 5
"""The bicubic base's filter side: 4 taps of Keys' cubic at every phase, spread over 5 offsets."""

# Each setting in string order: its prefix in the string and its allowed values.
FIELDS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "depth": ("d", DEPTHS),
    "width": ("w", WIDTHS),
    "kernel": ("k", KERNELS),
    "activation": ("", ACTIVATIONS),
    "base": ("", BASES),
}
FORMAT = "d<blocks>-w<width>-k<kernel>-<relu|gelu>-<nearest|bicubic>, e.g. d4-w32-k3-relu-bicubic"


ARCH = SettingsString("restore", FIELDS, FORMAT)
parse = ARCH.parse
format_arch = ARCH.format


def factor_of(task: Task) -> int:
    """The task's upscaling factor (1 for denoising): the restored image's side over the input's."""
    if task.out_shape is None:
        raise SpaceError(f"task {task.name!r} has no out_shape; the restore space builds dense networks")
    return task.out_shape[-1] // task.in_shape[-1]


class RestoreSpace(SettingsSpace):
    """Residual CNN restorers over a fixed upsampling of the input (dense tasks)."""

    name = "restore"
    kinds = ("dense",)
    grammar = (
        f"a residual CNN restorer written {FORMAT}: d is the number of residual blocks, w their channels, k the "
        "kernel size, then the activation and how the input is upsampled before the network adds its detail"
    )
    settings = ARCH
    notes = {
        "depth": "residual blocks",
        "width": "channels",
        "kernel": "kernel size",
        "activation": "activation inside each block",
        "base": "upsampling of the input the network's output is added to",
    }

    def size(self, arch: str, task: Task) -> Size:
        """Counted by arithmetic, layer by layer as restore.py.j2 builds the network (exact, no code run): every
        convolution has a bias and runs at the input's resolution; the bicubic filter is a buffer, not a parameter,
        and as a depthwise convolution costs 2 x 25 x C x factor^2 FLOPs per input pixel (nearest costs none)."""
        s, factor = parse(arch), factor_of(task)
        k2, width, channels, outputs = s["kernel"] ** 2, s["width"], task.in_shape[0], task.num_classes
        pixels = task.in_shape[-2] * task.in_shape[-1]
        tail = outputs * factor * factor
        params = (
            k2 * channels * width + width + 2 * s["depth"] * (k2 * width * width + width) + k2 * width * tail + tail
        )
        macs = k2 * channels * width + 2 * s["depth"] * k2 * width * width + k2 * width * tail
        if s["base"] == "bicubic" and factor > 1:
            macs += BICUBIC_TAPS**2 * channels * factor * factor
        return Size(params, 2 * macs * pixels)

    def parse_code(self, code: str) -> str:
        values = module_literals(code, ["DEPTH", "WIDTH", "KERNEL", "ACTIVATION", "BASE"])
        return self.validate(
            f"d{values['DEPTH']}-w{values['WIDTH']}-k{values['KERNEL']}-{values['ACTIVATION']}-{values['BASE']}"
        )

    def describe(self, arch: str) -> str:
        s = parse(arch)
        return (
            f"A residual CNN of {s['depth']} blocks of {s['kernel']}x{s['kernel']} convolutions, {s['width']} "
            f"channels, {s['activation'].upper()}, adding detail to the {s['base']}-upsampled input."
        )

    def _context(self, arch: str, task: Task) -> dict[str, Any]:
        return {**parse(arch), "description": self.describe(arch)}
