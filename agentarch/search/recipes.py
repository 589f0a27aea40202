"""Searching the training recipe with the architecture (`--search-recipe`): a search space of (architecture, recipe)
pairs built over any declared space.

FBNetV3 searched the two together because the best network under one recipe is not the best under another. Wrapping
the space, rather than teaching each proposer about recipes, gives every offline proposer (random, REA, TPE, islands)
the joint search with nothing of its own changed: a point of `RecipeSpace` is the inner space's architecture string
followed by ` RECIPE ` and the recipe as compact JSON; sampling draws both, a mutation changes either the architecture
(one of the inner space's mutations) or one recipe choice, TPE suggests both, and two points are the same only when
both parts are. Rendering writes the inner space's code and the recipe as its `RECIPE` literal, which the host reads
and checks like any candidate's (agentarch/evaluation/checks.py), so a proposer's recipe gets no privilege.

Each recipe choice is drawn from a short menu inside the task's bounds (agentarch/tasks/recipes.py), the task's own
default always on it: the search can come back to today's recipe. The archive keeps the inner space's name and
architecture on the candidate row and the recipe in its own column (`archived`), so every reader of architectures is
unchanged.
"""

from __future__ import annotations

import itertools
import json
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
    "lr": (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3),
    "weight_decay": (0.0, 1e-4, 5e-4, 1e-3, 0.01, 0.05, 0.1),
    "warmup_frac": (0.0, 0.05, 0.1, 0.2),
    "label_smoothing": (0.0, 0.05, 0.1, 0.2),
}
"""Each numeric choice's menu, kept to those inside the task's bounds (the task's default added)."""


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
        for key, menu in MENUS.items():
            low, high = ranges[key]
            inside = {v for v in menu if low <= v <= high} | {float(default[key])}
            self.menus[key] = tuple(sorted(v for v in inside if low <= v <= high) or [low])

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

    # -- the SearchSpace interface ---------------------------------------------------------------------------------

    def sample(self, rng: random.Random) -> str:
        arch = self.inner.sample(rng)
        return join(arch, self._recipe({key: rng.choice(menu) for key, menu in self.menus.items()}))

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Half the time one of the inner space's mutations, else one recipe choice moved: a numeric one to a
        neighbouring value on its menu, any other to another of its values."""
        inner, recipe = split(self.validate(arch))
        assert recipe is not None
        movable = [key for key, menu in self.menus.items() if len(menu) > 1]
        if not movable or rng.random() < 0.5:
            return join(self.inner.mutate(inner, rng), recipe)
        key = rng.choice(movable)
        choices = self._choices(recipe)
        menu = self.menus[key]
        if key in MENUS:
            at = menu.index(choices[key]) if choices[key] in menu else 0
            choices[key] = (
                menu[at + 1] if at == 0 else menu[at - 1] if at == len(menu) - 1 else menu[at + rng.choice((-1, 1))]
            )
        else:
            choices[key] = rng.choice([value for value in menu if value != choices[key]])
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
