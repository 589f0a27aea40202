"""An MLP space for table tasks: a stack of equal hidden layers chosen by five whole-network settings.

The string names every setting, in a fixed order, as `d<depth>-w<width>-<activation>-p<dropout>-<norm>`,
for example `d2-w128-relu-p0.1-batch`: 2 hidden layers of 128 units, ReLU, dropout 0.1, batch
normalization. These are the knobs tabular deep-learning studies tune for an MLP (Kadra et al., 2021;
Gorishniy et al., 2021). The head gives class logits, or one value per target for a regression task
(the trainer standardizes the targets), so one space serves both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentarch.search.spaces.base import SettingsSpace, SettingsString, Size, SpaceError, module_literals

if TYPE_CHECKING:
    from agentarch.tasks.task import Task

DEPTHS = (1, 2, 3, 4)
WIDTHS = (64, 128, 256)
ACTIVATIONS = ("relu", "gelu", "silu")
DROPOUTS = ("0.0", "0.1", "0.2")  # strings, so the canonical form has exactly one spelling of each
NORMS = ("none", "batch", "layer")

# Each setting in string order: its prefix in the string and its allowed values.
FIELDS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "depth": ("d", DEPTHS),
    "width": ("w", WIDTHS),
    "activation": ("", ACTIVATIONS),
    "dropout": ("p", DROPOUTS),
    "norm": ("", NORMS),
}
FORMAT = "d<depth>-w<width>-<relu|gelu|silu>-p<dropout>-<none|batch|layer>, e.g. d2-w128-relu-p0.1-batch"


ARCH = SettingsString("mlp", FIELDS, FORMAT)
parse = ARCH.parse
format_arch = ARCH.format


class MLPSpace(SettingsSpace):
    """Plain MLPs for standardized tabular features (table tasks, classification or regression)."""

    name = "mlp"
    kinds = ("table",)
    grammar = (
        f"an MLP written {FORMAT}: d is the number of hidden layers, w their units, then the activation, "
        "p the dropout rate and the normalization after each hidden layer"
    )
    settings = ARCH
    notes = {
        "depth": "hidden layers",
        "width": "units per hidden layer",
        "activation": "activation function",
        "dropout": "dropout rate",
        "norm": "normalization",
    }

    def size(self, arch: str, task: Task) -> Size:
        """Counted by arithmetic on the settings and the number of features, layer by layer as mlp.py.j2 builds the
        network (exact, no code run): each hidden layer a linear layer with bias and, with batch or layer norm, a
        scale and a shift per unit; then the linear head."""
        s = parse(arch)
        features, width, params, flops = task.in_shape[0], s["width"], 0, 0
        for _ in range(s["depth"]):
            params += features * width + width + (0 if s["norm"] == "none" else 2 * width)
            flops += 2 * features * width
            features = width
        outputs = task.num_classes
        return Size(params + features * outputs + outputs, flops + 2 * features * outputs)

    def parse_code(self, code: str) -> str:
        values = module_literals(code, ["DEPTH", "WIDTH", "ACTIVATION", "DROPOUT", "NORM"])
        if not isinstance(values["DROPOUT"], float):
            raise SpaceError(f"DROPOUT must be a float; got {values['DROPOUT']!r}")
        settings = {
            "depth": values["DEPTH"],
            "width": values["WIDTH"],
            "activation": values["ACTIVATION"],
            "dropout": str(values["DROPOUT"]),
            "norm": values["NORM"],
        }
        return self.validate(format_arch(settings))

    def describe(self, arch: str) -> str:
        s = parse(arch)
        norm = "no normalization" if s["norm"] == "none" else f"{s['norm']} normalization"
        return (
            f"An MLP of {s['depth']} hidden layer(s) of {s['width']} units with {s['activation']}, "
            f"dropout {s['dropout']} and {norm}."
        )

    def _context(self, arch: str, task: Task) -> dict[str, Any]:
        return {**parse(arch), "description": self.describe(arch)}
