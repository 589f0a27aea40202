"""Searching the training recipe with the architecture (`--search-recipe`): a search space of (architecture, recipe)
pairs built over any declared space.

FBNetV3 searched the two together because the best network under one recipe is not the best under another. Wrapping
the space, rather than teaching each proposer about recipes, gives every offline proposer (random, REA, TPE, islands)
the joint search with nothing of its own changed: a point of `RecipeSpace` is the inner space's architecture string
followed by ` RECIPE ` and the recipe as compact JSON; sampling draws both, a mutation changes either the architecture
(one of the inner space's mutations) or one recipe choice, TPE suggests both, and two points are the same only when
both parts are. Rendering writes the inner space's code and the recipe as its `RECIPE` literal, which the host reads
and checks like any candidate's (agentarch/evaluation/checks.py), so a proposer's recipe gets no privilege.

Each recipe choice is on a short menu inside the task's bounds (agentarch/tasks/recipes.py), the task's own default
always on it: the search can come back to today's recipe. The search starts near that default rather than uniformly
over the menus, because a uniform draw mostly pairs an optimizer with a learning rate it cannot use (SGD at 1e-4,
AdamW at 0.3) and spends a small budget's initial population on recipes that barely train (benchmarks/
recipe_search.md): a sample is the default recipe with its learning rate moved log-uniformly within a factor of about
3 of what the optimizer suits, and each other choice moved one step away with probability `MOVE`; a mutation moves
one choice one step. A step is the same in both: the learning rate x/÷ 2 or 2.8 (2 or 3 steps of its grid of powers of
sqrt 2 around the default), another optimizer with the learning rate and weight decay rescaled to suit it
(`recipes.sensible`), a neighbouring weight decay or warmup, smoothing or an augmentation toggled, another schedule. The archive keeps the inner space's name and
architecture on the candidate row and the recipe in its own column (`archived`), so every reader of architectures is
unchanged.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from agentarch.search.spaces.base import SearchSpace, Size, SpaceError, module_literals
from agentarch.tasks import recipes

if TYPE_CHECKING:
    import optuna

    from agentarch.tasks.task import Task

SEPARATOR = " RECIPE "
"""Between a point's architecture and its recipe."""
SUFFIX = "+recipe"
"""A recipe space's name is its inner space's with this after it (its own key in the limits' caches)."""
MENUS: dict[str, tuple[float, ...]] = {
    "weight_decay": (0.0, 1e-4, 5e-4, 1e-3, 0.01, 0.05, 0.1),
    "warmup_frac": (0.0, 0.05, 0.1, 0.2),
    "label_smoothing": (0.0, 0.05, 0.1, 0.2),
}
"""The menu of each numeric choice but the learning rate, kept to those inside the task's bounds (the task's default
and each optimizer's `recipes.sensible` weight decay added)."""
LR_STEP = 2**0.5
"""The ratio between neighbouring learning rates on a recipe space's grid (the task's default times its powers)."""
LR_SPREAD = 3
"""How many grid steps a sample's learning rate lies at most from its optimizer's sensible one (x/÷ 2.8)."""
LR_MOVES = (2, 3)
"""How many grid steps a mutation moves the learning rate (x/÷ 2 or 2.8): a smaller move barely changes the score."""
MOVE = 1 / 3
"""The chance that a sample moves each choice other than the learning rate one step from the default's: about two
of six moved, so a sample stays near a recipe known to train."""
SMOOTHING = 0.1
"""The label smoothing that a toggle turns on (the nearest on the task's menu)."""


def split(point: str) -> tuple[str, dict[str, Any] | None]:
    """A point's architecture and recipe (None for a plain architecture string)."""
    arch, found, recipe = point.partition(SEPARATOR)
    if not found:
        return point, None
    try:
        value = json.loads(recipe)
    except ValueError:
        raise SpaceError(f"the recipe after {SEPARATOR.strip()} is not JSON: {recipe[:80]!r}") from None
    if not isinstance(value, dict):
        raise SpaceError(f"the recipe after {SEPARATOR.strip()} must be a JSON object")
    return arch, value


def join(arch: str, recipe: dict[str, Any]) -> str:
    return f"{arch}{SEPARATOR}{json.dumps(recipe, separators=(',', ':'))}"


def archived(space: SearchSpace, point: str) -> tuple[str, str]:
    """The space name and architecture a candidate row keeps for `point` of `space`: a recipe space's inner ones (the
    recipe is the row's own column, read from the code)."""
    if isinstance(space, RecipeSpace):
        return space.inner.name, split(point)[0]
    return space.name, point


def label(space_name: str, point: str) -> str:
    """What a candidate of `point` is called: `macro:d3-w32-k3-skip1-max`, with a searched recipe in words after it."""
    arch, recipe = split(point)
    return f"{space_name.removesuffix(SUFFIX)}:{arch}" + (f" ({recipes.describe(recipe)})" if recipe else "")


class RecipeSpace(SearchSpace):
    """(architecture, recipe) pairs: the architectures of `inner`, the recipes `task` allows."""

    def __init__(self, inner: SearchSpace, task: Task) -> None:
        if isinstance(inner, RecipeSpace):
            raise SpaceError(f"the {inner.name} space searches recipes already")
        self.inner = inner
        self.name = inner.name + SUFFIX
        self.kinds = inner.kinds
        self.grammar = (
            f"{inner.grammar}\nWith the recipe searched too, the architecture is followed by{SEPARATOR!r} and the recipe "
            f"as a JSON object ({', '.join(recipes.KEYS)})."
        )
        self.kind = task.kind
        self.bounds = task.recipe_bounds()
        self.default = default = task.default_recipe()
        self.menus: dict[str, tuple[Any, ...]] = {
            "optimizer": self.bounds.optimizers,
            "schedule": self.bounds.schedules,
            "augment": tuple("+".join(names) for names in self._augment_sets()),
        }
        ranges = {
            "lr": self.bounds.lr,
            "weight_decay": self.bounds.weight_decay,
            "warmup_frac": self.bounds.warmup_frac,
            "label_smoothing": (0.0, self.bounds.label_smoothing_max),
        }
        self.sensible = {name: recipes.sensible(name, default, self.bounds) for name in self.bounds.optimizers}
        for key, menu in MENUS.items():
            low, high = ranges[key]
            inside = {v for v in menu if low <= v <= high} | {float(default[key])}
            if key == "weight_decay":
                inside |= {decay for _, decay in self.sensible.values()}
            self.menus[key] = tuple(sorted(v for v in inside if low <= v <= high) or [low])
        self.menus["lr"] = self._lr_grid(float(default["lr"]))

    def _lr_grid(self, lr: float) -> tuple[float, ...]:
        """The task's learning rate times each power of `LR_STEP` inside the bounds (3 significant digits): a grid
        rather than a range, so TPE's categorical choice and a sample's value agree, and ratios are what a step moves."""
        low, high = self.bounds.lr
        lr = min(max(lr, low), high)
        grid = {lr}
        for sign in (-1, 1):
            power = 1
            while low <= (value := float(f"{lr * LR_STEP ** (sign * power):.3g}")) <= high:
                grid.add(value)
                power += 1
        return tuple(sorted(grid))

    def _augment_sets(self) -> Iterator[tuple[str, ...]]:
        allowed = [a for a in self.bounds.augmentations if self.kind in recipes.AUGMENTATIONS[a]]
        for size in range(len(allowed) + 1):
            yield from itertools.combinations(sorted(allowed), size)

    # -- the recipe part ------------------------------------------------------------------------------------------

    def _recipe(self, choices: dict[str, Any]) -> dict[str, Any]:
        """The recipe of one choice per menu (augment as its '+'-joined names), in canonical form."""
        recipe = {key: choices[key] for key in recipes.KEYS if key != "augment"}
        recipe["augment"] = [name for name in str(choices["augment"]).split("+") if name]
        return self._checked(recipe)

    def _checked(self, recipe: object) -> dict[str, Any]:
        canonical, problems = recipes.check(recipe, self.bounds, self.kind)
        if problems:
            raise SpaceError("; ".join(problems))
        missing = [key for key in recipes.KEYS if key not in canonical]
        if missing:
            raise SpaceError(f"a searched recipe names every choice; missing {', '.join(missing)}")
        return canonical

    def _choices(self, recipe: dict[str, Any]) -> dict[str, Any]:
        return {key: "+".join(recipe["augment"]) if key == "augment" else recipe[key] for key in self.menus}

    def _nearest(self, key: str, value: float) -> int:
        """The index of the menu value nearest `value` (by ratio for the learning rate): a recipe read from code may
        hold a value off the menu, and a rescaled learning rate usually does."""
        menu = self.menus[key]
        if key == "lr":
            return min(range(len(menu)), key=lambda i: abs(math.log(menu[i] / value)))
        return min(range(len(menu)), key=lambda i: abs(menu[i] - value))

    def _snapped(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """The choices of `recipe` each moved onto its menu: the task's default may lie outside a task file's bounds
        (an optimizer it refuses is replaced by its first, with the learning rate and weight decay that one suits)."""
        choices = self._choices(recipe)
        if choices["optimizer"] not in self.menus["optimizer"]:
            choices["optimizer"] = self.menus["optimizer"][0]
            choices["lr"], choices["weight_decay"] = self.sensible[choices["optimizer"]]
        for key, menu in self.menus.items():
            if choices[key] not in menu:
                choices[key] = menu[self._nearest(key, choices[key])] if key in MENUS or key == "lr" else menu[0]
        return choices

    def _movable(self) -> list[str]:
        return [key for key, menu in self.menus.items() if len(menu) > 1]

    def _step(self, choices: dict[str, Any], key: str, rng: random.Random) -> None:
        """Move one choice of `choices` one step (see the module's docstring), in place."""
        menu = self.menus[key]
        value = choices[key]
        if key == "lr":
            at, moves = self._nearest(key, value), rng.choice(LR_MOVES)
            inside = [i for i in (at - moves, at + moves) if 0 <= i < len(menu)]
            choices[key] = menu[rng.choice(inside or [i for i in (0, len(menu) - 1) if i != at])]
        elif key == "optimizer":
            new = rng.choice([name for name in menu if name != value])
            (old_lr, old_decay), (lr, decay) = self.sensible[value], self.sensible[new]
            choices["lr"] = self.menus["lr"][self._nearest("lr", choices["lr"] * lr / old_lr)]
            if choices["weight_decay"] == self.menus["weight_decay"][self._nearest("weight_decay", old_decay)]:
                choices["weight_decay"] = self.menus["weight_decay"][self._nearest("weight_decay", decay)]
            choices[key] = new
        elif key == "label_smoothing":
            choices[key] = 0.0 if value else menu[self._nearest(key, SMOOTHING) or 1]
        elif key == "augment":
            names = {name for name in value.split("+") if name} ^ {rng.choice(menu[-1].split("+"))}
            choices[key] = "+".join(sorted(names))
        elif key in MENUS:
            at = self._nearest(key, value)
            choices[key] = (
                menu[at + 1] if at == 0 else menu[at - 1] if at == len(menu) - 1 else menu[at + rng.choice((-1, 1))]
            )
        else:
            choices[key] = rng.choice([other for other in menu if other != value])

    # -- the SearchSpace interface ---------------------------------------------------------------------------------

    def sample(self, rng: random.Random) -> str:
        """An architecture of the inner space with a recipe near the task's default: each choice but the learning rate
        moved one step with probability `MOVE` (the optimizer first, so its move rescales the learning rate), then the
        learning rate moved up to `LR_SPREAD` grid steps either way, uniformly."""
        arch = self.inner.sample(rng)
        choices = self._snapped(self.default)
        for key in self._movable():
            if key != "lr" and rng.random() < MOVE:
                self._step(choices, key, rng)
        at = self._nearest("lr", choices["lr"]) + rng.randint(-LR_SPREAD, LR_SPREAD)
        choices["lr"] = self.menus["lr"][min(max(at, 0), len(self.menus["lr"]) - 1)]
        return join(arch, self._recipe(choices))

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Half the time one of the inner space's mutations, else one recipe choice moved one step."""
        inner, recipe = split(self.validate(arch))
        assert recipe is not None
        movable = self._movable()
        if not movable or rng.random() < 0.5:
            return join(self.inner.mutate(inner, rng), recipe)
        choices = self._choices(recipe)
        self._step(choices, rng.choice(movable), rng)
        return join(inner, self._recipe(choices))

    def suggest(self, trial: optuna.trial.BaseTrial) -> str:
        arch = self.inner.suggest(trial)
        choices = {key: trial.suggest_categorical(f"recipe_{key}", list(menu)) for key, menu in self.menus.items()}
        return join(arch, self._recipe(choices))

    def trial_params(self, arch: str) -> dict[str, Any]:
        inner, recipe = split(self.validate(arch))
        assert recipe is not None
        choices = {f"recipe_{key}": value for key, value in self._choices(recipe).items()}
        return {**self.inner.trial_params(inner), **choices}

    def validate(self, arch: str) -> str:
        inner, recipe = split(arch)
        if recipe is None:
            raise SpaceError(f"a {self.name} point is an architecture, then{SEPARATOR!r} and its recipe as JSON")
        return join(self.inner.validate(inner), self._checked(recipe))

    def identity(self, arch: str) -> str:
        inner, recipe = split(self.validate(arch))
        return join(self.inner.identity(inner), recipe or {})

    def parse_code(self, code: str) -> str:
        try:
            recipe = module_literals(code, ["RECIPE"])["RECIPE"]
        except SpaceError:
            recipe = {}
        return self.validate(join(self.inner.parse_code(code), {**self.default, **recipe}))

    def size(self, arch: str, task: Task) -> Size:
        return self.inner.size(split(arch)[0], task)

    def describe(self, arch: str) -> str:
        inner, recipe = split(arch)
        return f"{self.inner.describe(inner)}; trained with {recipes.describe(recipe or {})}"

    def _context(self, arch: str, task: Task) -> dict[str, Any]:
        return self.inner._context(split(arch)[0], task)

    def check_fit(self, task: Task) -> None:
        self.inner.check_fit(task)

    def render(self, arch: str, task: Task) -> str:
        """The inner space's code for the architecture, with the recipe as its RECIPE literal."""
        inner, recipe = split(self.validate(arch))
        return recipes.with_recipe(self.inner.render(inner, task), recipe)
