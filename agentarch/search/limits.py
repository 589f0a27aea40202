"""A task's limits on a candidate's size, kept before anything runs: the one home of that rule for every search.

A task's `max_params` (the sandbox refuses a network over it) and each `--constraint` on params or FLOPs
(agentarch.search.objectives) bound what a search may propose. A space computes the size of its own template's
network for a task on the host (`SearchSpace.size`: arithmetic on the architecture's fields, no code run), so a
search of that space checks each architecture before proposing it. `Limits.allows` is the predicate, and
`agentarch.search.proposers.base.Distinct` (the bookkeeping every space proposer draws through: random search,
regularized evolution's samples and mutations, TPE's suggestions, the in-space LLM's answers and fallback samples)
consults it, so an architecture over a limit is never proposed.

Sampling inside the limits (`Limits.sample`) is rejection: up to `SAMPLE_TRIES` draws of the space's own sampler,
the first inside the limits taken, so a limit that does not bind changes no draw of a seeded search. A draw inside
the limits is uniform over the architectures inside them (the spaces sample uniformly). After `SAMPLE_TRIES`
rejections (a tight limit: under about 3% of the space inside) the draw is uniform over the space's listed
architectures inside the limits (`SearchSpace.archs`; the shipped spaces list 120 to 15,625, computed once per
space, task shape and limits), the same distribution without the wait. A space that cannot list its
architectures raises LimitError after the bound, naming the limits and the smallest size it drew.

A space whose every architecture breaks the limits cannot search at all: `Limits.check` says so at start, naming
the limits and the space's smallest network (its size and architecture). Measures the host cannot compute
(latency, memory, the score) are left to the sandbox and to the searches' ranking by `Goals`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentarch.errors import AgentarchError
from agentarch.search.objectives import MEASURES, Constraint, Goals
from agentarch.search.spaces.base import SearchSpace, Size

if TYPE_CHECKING:
    from agentarch.tasks.task import Task

SAMPLE_TRIES = 100
"""Draws of the space's sampler a sample inside the limits takes before it draws among the listed architectures."""
HOST_MEASURES = ("params", "flops")
"""The measures a space computes on the host: constraints on them are kept before proposing."""

_SIZES: dict[tuple[Any, ...], dict[str, Size]] = {}
"""Sizes computed, by `shape_key` and architecture: a search asks for the same ones again and again."""
_INSIDE: dict[tuple[Any, ...], tuple[list[str], list[tuple[Size, str]]]] = {}
"""`Limits._listed` by space, task shape and limits: a few per process (a run plans every proposal afresh)."""


class LimitError(AgentarchError, ValueError):
    """A space cannot keep to a task's limits (none of its architectures fits); the message names the limits and the
    smallest network."""


def shape_key(space: SearchSpace, task: Task) -> tuple[Any, ...]:
    """What a space's sizes depend on: the space and the task's name (nb201's skeleton), kind and shapes."""
    return (space.name, task.name, task.kind, tuple(task.in_shape), task.num_classes, task.vocab_size)


@dataclass
class LimitStats:
    """What keeping to the limits cost a search: `samples` drawn inside them, the draws `rejected` on the way, the
    samples that were drawn among the listed architectures (`listed`) after SAMPLE_TRIES rejections, and the
    architectures `refused` (a mutation, a TPE suggestion or a model's answer over a limit)."""

    samples: int = 0
    rejected: int = 0
    listed: int = 0
    refused: int = 0


@dataclass
class Limits:
    """The limits a search of `space` keeps to on `task`: the task's `max_params` and the constraints on params and
    FLOPs (`of` keeps only those from a run's goals)."""

    space: SearchSpace
    task: Task
    constraints: tuple[Constraint, ...] = ()
    stats: LimitStats = field(default_factory=LimitStats)

    @classmethod
    def of(cls, space: SearchSpace, task: Task, goals: Goals | Sequence[Constraint] | None = None) -> Limits:
        """The limits of `task` and of the constraints in `goals` (a run's Goals, or constraints) that the host can
        check: those on params and flops."""
        constraints = goals.constraints if isinstance(goals, Goals) else tuple(goals or ())
        return cls(space, task, tuple(c for c in constraints if c.measure in HOST_MEASURES))

    @property
    def measured(self) -> bool:
        """Whether the space computes sizes on the host (a space that does not is checked by the sandbox alone)."""
        return type(self.space).size is not SearchSpace.size

    def size(self, arch: str) -> Size:
        """The size of `arch`'s network on the task (computed once per architecture, space and task shape)."""
        sizes = _SIZES.setdefault(shape_key(self.space, self.task), {})
        found = sizes.get(arch)
        if found is None:
            found = sizes[arch] = self.space.size(arch, self.task)
        return found

    def breaks(self, arch: str) -> str | None:
        """The first limit `arch` breaks, in words with its size; None when it keeps to them all (or the space
        cannot say)."""
        if not self.measured:
            return None
        size = self.size(arch)
        if size.params > self.task.max_params:
            return f"{arch} has {size.params:,} parameters, over the task's max_params of {self.task.max_params:,}"
        for constraint in self.constraints:
            value = size.params if constraint.measure == "params" else size.flops
            if value is not None and not constraint.holds({MEASURES[constraint.measure]: value}):
                bound = f"{constraint.measure} {constraint.op} {_number(constraint.bound)}"
                return f"{arch} has {value:,} {constraint.measure}, which breaks the constraint {bound}"
        return None

    def excess(self, arch: str) -> float:
        """How far `arch` is outside the limits, relative to each bound (0 inside): 0.5 is half again the budget.
        What TPE is told of a refused suggestion, so that it learns where the limits are."""
        if not self.measured:
            return 0.0
        size = self.size(arch)
        bounds = [(size.params, "<=", float(self.task.max_params))]
        bounds += [(size.params if c.measure == "params" else size.flops, c.op, c.bound) for c in self.constraints]
        total = 0.0
        for value, op, bound in bounds:
            if value is None or abs(bound) < 1e-12:
                continue
            ratio = value / bound - 1 if op in ("<=", "<") else 1 - value / bound
            total += max(ratio, 0.0)
        return total

    def allows(self, arch: str) -> bool:
        """Whether `arch` keeps to every limit (the one predicate every search of the space consults)."""
        return self.breaks(arch) is None

    def describe(self) -> list[str]:
        """The limits in words: the task's parameter budget, then each constraint."""
        said = [f"at most {self.task.max_params:,} parameters (the task's max_params)"]
        return said + [f"{c.measure} {c.op} {_number(c.bound)} (a constraint of the run)" for c in self.constraints]

    def sample(self, rng: random.Random) -> str:
        """A uniform sample of the space inside the limits (see the module's docstring: rejection for SAMPLE_TRIES
        draws, then a draw among the listed architectures inside them)."""
        self.stats.samples += 1
        for _ in range(SAMPLE_TRIES):
            arch = self.space.sample(rng)
            if self.allows(arch):
                return arch
            self.stats.rejected += 1
        inside = self.inside()
        if inside is None:
            raise LimitError(
                f"no architecture of the {self.space.name} space inside {self._said()} in {SAMPLE_TRIES} draws "
                "(the space cannot list its architectures to choose among those inside); loosen the limits"
            )
        self.stats.listed += 1
        return rng.choice(inside)

    def inside(self) -> list[str] | None:
        """Every architecture of the space inside the limits, in the space's order (None: the space cannot list
        them); LimitError when there is none."""
        listed = self._listed()
        if listed is None:
            return None
        inside, extremes = listed
        if not inside:
            (small, smallest), (large, largest), (cheap, cheapest) = extremes
            flops = f" and {small.flops:,} FLOPs" if small.flops is not None else ""
            if cheap.flops is not None and any(c.measure == "flops" for c in self.constraints) and cheap != small:
                flops += f" (the fewest FLOPs, {cheap.flops:,}, are {cheapest}'s)"
            raise LimitError(
                f"no architecture of the {self.space.name} space fits task {self.task.name}'s limits, "
                f"{self._said()}: its smallest network, {smallest}, has {small.params:,} parameters{flops} "
                f"(its largest, {largest}, {large.params:,}); raise max_params in the task file or loosen "
                "--constraint, or choose another space"
            )
        return inside

    def check(self) -> None:
        """Raise LimitError, naming the limits and the smallest network, when no architecture of the space fits them:
        called as a search starts, before anything runs. A space that cannot list its architectures is checked by
        its first samples instead."""
        if self.measured:
            self.inside()

    def _listed(self) -> tuple[list[str], list[tuple[Size, str]]] | None:
        """The architectures inside the limits, and the space's extremes (smallest and largest by parameters, fewest
        FLOPs), computed once per space, task shape and limits."""
        key = (shape_key(self.space, self.task), self.task.max_params, self.constraints)
        if key not in _INSIDE:
            archs = self.space.archs()
            if archs is None:
                return None
            sized = [(self.size(a), a) for a in archs]
            by_params = sorted(sized, key=lambda item: (item[0].params, item[0].flops or 0))
            cheapest = min(sized, key=lambda item: (item[0].flops or 0, item[0].params))
            _INSIDE[key] = ([a for _, a in sized if self.allows(a)], [by_params[0], by_params[-1], cheapest])
        return _INSIDE[key]

    def _said(self) -> str:
        return "; ".join(self.describe())


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"
