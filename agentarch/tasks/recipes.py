"""Training recipes: what a candidate may choose about how it is trained, and the bounds a task sets on the choice.

FBNetV3's lesson is that an architecture's score depends on its recipe as much as on its wiring, so a candidate may
declare one (a module-level `RECIPE = {...}` literal, read statically by agentarch/evaluation/checks.py): an
optimizer, a learning rate, weight decay, a schedule, warmup, label smoothing and augmentations. The task says what
is allowed (a task file's `[recipe]` table; a built-in task gets `default_bounds` for its kind). A recipe never
buys compute: it has no epochs, batch size or time; those stay the task's (and the host's CPU grant is priced
without it), so two candidates with different recipes are compared on the same budget.

A candidate without a recipe trains with `default_recipe`, which is the trainer's fixed loop as it always was
(AdamW, linear warmup over 5% of the steps then cosine decay, no smoothing, no augmentation).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

OPTIMIZERS = ("adamw", "adam", "sgd", "nesterov")
"""adamw (decoupled weight decay), adam (L2 weight decay in the gradient), sgd (momentum 0.9), nesterov (SGD with
Nesterov momentum 0.9); the trainer (sandbox/trainer.py) implements each."""
SCHEDULES = ("cosine", "linear", "constant", "step")
"""After the linear warmup: cosine decay to 0, linear decay to 0, constant, or x0.1 at 50% and again at 75%."""
AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    "shift": ("image",),
    "flip": ("image", "dense"),
    "noise": ("image", "dense", "table", "sequence"),
}
"""Each augmentation and the task kinds where it means something: `shift` moves each image up to 2 pixels, `flip`
mirrors half the images left to right (a dense task's clean target with them), `noise` adds Gaussian noise to float
inputs (never to ids). Token, lm and graph tasks have none."""
CLASS_KINDS = ("image", "token", "sequence", "table", "graph")
"""The kinds whose loss can take label smoothing (a regression task of these kinds cannot: see `check`)."""
KEYS = ("optimizer", "lr", "weight_decay", "schedule", "warmup_frac", "label_smoothing", "augment")
"""A recipe's keys, in the order it is shown."""
MAX_RECIPE_CHARS = 2000
"""The longest `RECIPE = ...` value the static check reads: a recipe is a handful of keys, anything longer is refused
before it is evaluated."""


class RecipeBounds(BaseModel):
    """What a task lets a recipe choose (a task file's `[recipe]` table; every key optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimizers: tuple[str, ...] = OPTIMIZERS
    lr: tuple[float, float] = (1e-4, 0.3)
    weight_decay: tuple[float, float] = (0.0, 0.1)
    schedules: tuple[str, ...] = SCHEDULES
    warmup_frac: tuple[float, float] = (0.0, 0.3)
    label_smoothing_max: float = Field(0.2, ge=0, lt=1)
    augmentations: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _sound(self) -> RecipeBounds:
        for name, known in (("optimizers", OPTIMIZERS), ("schedules", SCHEDULES), ("augmentations", AUGMENTATIONS)):
            unknown = [value for value in getattr(self, name) if value not in known]
            if unknown:
                raise ValueError(f"recipe {name}: unknown {', '.join(unknown)}; choose among {', '.join(known)}")
        if not self.optimizers or not self.schedules:
            raise ValueError("recipe optimizers and schedules each need at least one entry")
        for name in ("lr", "weight_decay", "warmup_frac"):
            low, high = getattr(self, name)
            if not 0 <= low <= high or (name == "lr" and low <= 0) or (name == "warmup_frac" and high >= 1):
                raise ValueError(f"recipe {name} = [{low}, {high}]: need 0 {'<' if name == 'lr' else '<='} low <= high")
        return self


def default_bounds(kind: str, lr: float, weight_decay: float, regression: bool = False) -> RecipeBounds:
    """A built-in task's bounds: every optimizer and schedule, a learning rate from 1e-4 to 0.3 and weight decay up to
    0.1 (each widened to take in the task's own default), label smoothing up to 0.2 on class labels only, and the
    augmentations that make sense for the kind (no image flip: a task file allows it where mirrored images keep
    their class, digits do not)."""
    return RecipeBounds(
        lr=(min(1e-4, lr), max(0.3, lr)),
        weight_decay=(0.0, max(0.1, weight_decay)),
        label_smoothing_max=0.2 if kind in CLASS_KINDS and not regression else 0.0,
        augmentations=tuple(name for name, kinds in AUGMENTATIONS.items() if kind in kinds and name != "flip")
        + (("flip",) if kind == "dense" else ()),
    )


def default_recipe(lr: float, weight_decay: float) -> dict[str, Any]:
    """The recipe of a candidate that declares none: the trainer's loop as it always was."""
    return {
        "optimizer": "adamw",
        "lr": lr,
        "weight_decay": weight_decay,
        "schedule": "cosine",
        "warmup_frac": 0.05,
        "label_smoothing": 0.0,
        "augment": [],
    }


LR_SCALE = {"adamw": 1.0, "adam": 1.0, "sgd": 16.0, "nesterov": 16.0}
"""Each optimizer's sensible learning rate as a multiple of another's: a task's learning rate is tuned for AdamW, and
SGD with momentum 0.9 takes steps proportional to the raw gradient rather than normalised ones, so it wants one about
16x larger (digits: AdamW 3e-3, SGD 0.048, the usual 0.05). A search that switches optimizer rescales by this, so a
switch is not wasted on a learning rate the new optimizer cannot use."""
L2_WEIGHT_DECAY = 5e-4
"""The weight decay of the optimizers that add it to the gradient (adam, sgd, nesterov): AdamW's decoupled 0.01-0.1
would, as an L2 term, shrink the weights far faster than it regularises them."""


def sensible(optimizer: str, default: dict[str, Any], bounds: RecipeBounds) -> tuple[float, float]:
    """The learning rate and weight decay `optimizer` starts from on a task whose default recipe is `default`: the
    default's learning rate rescaled by `LR_SCALE`, AdamW's own weight decay or at most `L2_WEIGHT_DECAY` for the
    others; each clipped into the task's bounds. The one rule for what suits an optimizer, which the recipe search
    (agentarch/search/recipes.py) samples around and rescales by."""
    lr = float(default["lr"]) * LR_SCALE[optimizer] / LR_SCALE[str(default["optimizer"])]
    decay = float(default["weight_decay"])
    if optimizer != "adamw":
        decay = min(decay, L2_WEIGHT_DECAY)
    return min(max(lr, bounds.lr[0]), bounds.lr[1]), min(max(decay, bounds.weight_decay[0]), bounds.weight_decay[1])


def check(recipe: object, bounds: RecipeBounds, kind: str) -> tuple[dict[str, Any], list[str]]:
    """The recipe in canonical form (its keys in `KEYS` order, `augment` a sorted list) and what is wrong with it, each
    problem a sentence that says what to change; the recipe is usable only when the list is empty."""
    if not isinstance(recipe, dict):
        return {}, [f"RECIPE must be a dict with keys among {', '.join(KEYS)}"]
    problems = [f"unknown RECIPE key {key!r} (known: {', '.join(KEYS)})" for key in recipe if key not in KEYS]
    for key, allowed in (("optimizer", bounds.optimizers), ("schedule", bounds.schedules)):
        if key in recipe and recipe[key] not in allowed:
            problems.append(f"RECIPE[{key!r}] is {str(recipe[key])[:40]!r}; this task allows {', '.join(allowed)}")
    ranges = {
        "lr": bounds.lr,
        "weight_decay": bounds.weight_decay,
        "warmup_frac": bounds.warmup_frac,
        "label_smoothing": (0.0, bounds.label_smoothing_max),
    }
    for key, (low, high) in ranges.items():
        if key not in recipe:
            continue
        value = recipe[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"RECIPE[{key!r}] must be a number, got {str(value)[:40]!r}")
        elif not low <= value <= high:
            hint = " (label smoothing applies to class labels only)" if key == "label_smoothing" and high == 0 else ""
            problems.append(f"RECIPE[{key!r}]={value:g} is outside this task's [{low:g}, {high:g}]{hint}")
    augment = recipe.get("augment", [])
    if not isinstance(augment, (list, tuple)) or not all(isinstance(a, str) for a in augment):
        problems.append("RECIPE['augment'] must be a list of augmentation names")
        augment = []
    for name in augment:
        if name not in bounds.augmentations or kind not in AUGMENTATIONS[name]:
            allowed = ", ".join(a for a in bounds.augmentations if kind in AUGMENTATIONS[a]) or "none"
            problems.append(f"augmentation {name[:40]!r} is not allowed on this {kind} task (allowed: {allowed})")
    if problems:
        return {}, problems
    canonical = {key: recipe[key] for key in KEYS if key in recipe and key != "augment"}
    canonical.update({k: float(v) for k, v in canonical.items() if k in ranges})
    if "augment" in recipe:
        canonical["augment"] = sorted(set(augment))
    return canonical, []


def with_recipe(code: str, recipe: dict[str, Any] | None) -> str:
    """`code` with `recipe` declared as its module-level RECIPE literal (unchanged for None: the task's default). The
    one way a proposer writes a recipe into code; the host then reads it back like any candidate's."""
    if not recipe:
        return code
    return f"{code.rstrip()}\n\nRECIPE = {recipe!r}\n"


def describe(recipe: dict[str, Any]) -> str:
    """One short line for a person: `sgd lr 0.05 wd 0.0005 cosine warmup 0.05 smoothing 0.1 +shift`. It reads what an
    archive holds, so any value is shown as short text rather than trusted to be a checked recipe's."""

    def shown(value: object) -> str:
        return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)[:40]

    parts = [shown(recipe.get("optimizer", "adamw"))]
    parts += [f"{label} {shown(recipe[key])}" for key, label in (("lr", "lr"), ("weight_decay", "wd")) if key in recipe]
    parts.append(shown(recipe.get("schedule", "cosine")))
    parts += [
        f"{label} {shown(recipe[k])}"
        for k, label in (("warmup_frac", "warmup"), ("label_smoothing", "smoothing"))
        if recipe.get(k)
    ]
    augment = recipe.get("augment") or []
    parts += [f"+{shown(name)}" for name in (augment if isinstance(augment, list) else [augment])[: len(AUGMENTATIONS)]]
    return " ".join(parts)
