"""A macro CNN space: a plain stack of convolution blocks chosen by five whole-network settings.

The string names every setting, in a fixed order, as `d<depth>-w<width>-k<kernel>-skip<0|1>-<pool>`,
for example `d4-w16-k3-skip1-max`: 4 blocks, 16 channels in the first two, 3x3 kernels, residual
connections, max pooling. A pooling layer follows every second block (halving the resolution,
with ceil_mode so that odd sizes such as 7x7 and tiny inputs such as 8x8 work) and the width
doubles after it. Widths stop at 32 so that the largest network (d6-w32-k5, about 0.8M
parameters) fits the smallest task budget (digits and mqar allow 1M).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentarch.search.spaces.base import SettingsSpace, SettingsString, Size, SpaceError, module_literals, pooled

if TYPE_CHECKING:
    import optuna

    from agentarch.tasks.task import Task

DEPTHS = (2, 3, 4, 5, 6)
WIDTHS = (8, 16, 32)
KERNELS = (3, 5)
SKIPS = (0, 1)
POOLS = ("max", "avg")

# Each setting in string order: its prefix in the string and its allowed values.
FIELDS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "depth": ("d", DEPTHS),
    "width": ("w", WIDTHS),
    "kernel": ("k", KERNELS),
    "skip": ("skip", SKIPS),
    "pool": ("", POOLS),
}
FORMAT = "d<depth>-w<width>-k<kernel>-skip<0|1>-<max|avg>, e.g. d4-w16-k3-skip1-max"


ARCH = SettingsString("macro", FIELDS, FORMAT)
parse = ARCH.parse
format_arch = ARCH.format


class MacroSpace(SettingsSpace):
    """Plain CNNs (image tasks): depth, width, kernel size, residual connections and pooling type."""

    name = "macro"
    kinds = ("image",)
    grammar = (
        f"a plain CNN written {FORMAT}: d is the number of convolution blocks, w the channels of the first two "
        "blocks (doubling after each pooling, which follows every second block), k the kernel size, skip1 adds "
        "residual connections, and the last part is the pooling type"
    )
    settings = ARCH
    notes = {
        "depth": "convolution blocks",
        "width": "channels of the first stage",
        "kernel": "kernel size",
        "skip": "1: residual connections",
        "pool": "pooling type",
    }

    def size(self, arch: str, task: Task) -> Size:
        """Counted by arithmetic on the settings and the image's shape, block by block as macro.py.j2 builds the
        network (exact, no code run): a block is a k x k convolution without bias and a batch norm, plus a 1x1
        convolution where a residual connection changes the width; pooling halves the side (rounding up)."""
        s = parse(arch)
        k2, c_in, h, w = s["kernel"] ** 2, task.in_shape[0], task.in_shape[-2], task.in_shape[-1]
        width, params, flops = s["width"], 0, 0
        for block in range(s["depth"]):
            params += k2 * c_in * width + 2 * width
            flops += 2 * k2 * c_in * width * h * w
            if s["skip"] and c_in != width:
                params += c_in * width
                flops += 2 * c_in * width * h * w
            c_in = width
            if block % 2 == 1:
                h, w, width = pooled(h), pooled(w), 2 * width
        classes = task.num_classes
        return Size(params + c_in * classes + classes, flops + 2 * c_in * classes)

    def suggest(self, trial: optuna.trial.BaseTrial) -> str:
        settings = {
            field: trial.suggest_categorical(field, list(choices))
            for field, (_, choices) in FIELDS.items()
            if field != "depth"
        }
        # Depth is ordered, so TPE may model it as a number rather than as unrelated categories.
        settings["depth"] = trial.suggest_int("depth", DEPTHS[0], DEPTHS[-1])
        return format_arch(settings)

    def parse_code(self, code: str) -> str:
        values = module_literals(code, ["DEPTH", "WIDTH", "KERNEL", "SKIP", "POOL"])
        if not isinstance(values["SKIP"], bool):
            raise SpaceError(f"SKIP must be True or False; got {values['SKIP']!r}")
        return self.validate(
            f"d{values['DEPTH']}-w{values['WIDTH']}-k{values['KERNEL']}-skip{int(values['SKIP'])}-{values['POOL']}"
        )

    def describe(self, arch: str) -> str:
        s = parse(arch)
        stages = (s["depth"] + 1) // 2
        widths = "->".join(str(s["width"] * 2**i) for i in range(stages))
        skip = "with residual connections" if s["skip"] else "without residual connections"
        return (
            f"A {s['depth']}-block CNN of {s['kernel']}x{s['kernel']} convolutions, {widths} channels, "
            f"{skip}, {s['pool']} pooling after every second block."
        )

    def _context(self, arch: str, task: Task) -> dict[str, Any]:
        return {**parse(arch), "description": self.describe(arch)}
