"""What a run optimises: objectives (`params:min`) and hard constraints (`params<=200000`), parsed once.

A run with one objective (the default: the task's metric in its direction) ranks as every ranking in the
project does (`agentarch.store.ranking`). With two or more, a candidate's standing is its Pareto front and crowding
distance (NSGA-II), computed by `agentarch.search.pareto` over keys where bigger is better; `Goals` makes those keys
from archive rows, so the parent choice of the LLM loop and of regularized evolution, the run summary and the
web's fronts all read one rule.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentarch.errors import AgentarchError
from agentarch.search import pareto
from agentarch.store.ranking import Direction

MEASURES: dict[str, str] = {
    "val": "val_accuracy",
    "params": "params",
    "flops": "flops",
    "latency_ms": "latency_ms",
    "peak_memory_mb": "peak_memory_mb",
    "judge": "judge",
}
"""Each measure an objective or constraint may name, and the archive column it is read from: `val` is the task's
validation metric (whatever the task scores: accuracy, MSE, bits per byte), `judge` the judge's score of a trained
candidate (1-10, higher better: agentarch.llm.judge; only in a run with --judge, and read from the judgments table,
never in place of a measured score), the rest what the smoke stage counts and measures in the sandbox (latency in ms
per batch on the training device)."""

JUDGE_MEASURE = "judge"

_ALIASES = {
    "val_accuracy": "val",
    "score": "val",
    "parameters": "params",
    "latency": "latency_ms",
    "memory": "peak_memory_mb",
}

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


class GoalError(AgentarchError, ValueError):
    """An objective or constraint cannot be read; the message shows the form that works."""


@dataclass(frozen=True)
class Objective:
    """One measure and which way is better."""

    measure: str
    direction: Direction

    @property
    def column(self) -> str:
        return MEASURES[self.measure]

    def key(self, value: float) -> float:
        """The value as a key where bigger is better."""
        return value if self.direction == "max" else -value

    def __str__(self) -> str:
        return f"{self.measure}:{self.direction}"


@dataclass(frozen=True)
class Constraint:
    """A hard limit: a candidate that breaks it (or lacks the measure) is never a parent and never on a front."""

    measure: str
    op: str
    bound: float

    def holds(self, row: Mapping[str, Any]) -> bool:
        value = row.get(MEASURES[self.measure])
        return value is not None and _OPERATORS[self.op](float(value), self.bound)

    def __str__(self) -> str:
        return f"{self.measure}{self.op}{self.bound:g}"


def _measure(name: str, metric: str, given: str) -> str:
    found = _ALIASES.get(name, name)
    if name == metric:  # the task's metric by its own name: "accuracy", "mse", "bits_per_byte"
        found = "val"
    if found not in MEASURES:
        raise GoalError(
            f"unknown measure {name!r} in {given!r}; use one of {', '.join(MEASURES)} "
            f"(val is the task's metric, {metric})"
        )
    return found


def parse_objective(text: str, task_direction: Direction = "max", metric: str = "accuracy") -> Objective:
    """`params:min`, `val:max`, or a bare measure: `val` in the task's direction, `judge` maximised, the others
    minimised."""
    name, _, direction = text.strip().partition(":")
    measure = _measure(name.strip(), metric, text)
    if not direction:
        return Objective(measure, {"val": task_direction, JUDGE_MEASURE: "max"}.get(measure, "min"))  # type: ignore[arg-type]
    if direction.strip() not in ("max", "min"):
        raise GoalError(f"objective {text!r}: the direction after ':' must be max or min, e.g. params:min")
    return Objective(measure, direction.strip())  # type: ignore[arg-type]


def parse_constraint(text: str, metric: str = "accuracy") -> Constraint:
    """`params<=200000`, `latency_ms<5`, `val>=0.9` (numbers may use e-notation or _ separators)."""
    found = re.fullmatch(r"\s*([A-Za-z_]+)\s*(<=|>=|<|>)\s*([-+0-9._eE]+)\s*", text)
    if found is None:
        raise GoalError(f"cannot read constraint {text!r}; write MEASURE<=VALUE, e.g. params<=200000 or latency_ms<5")
    name, op, number = found.groups()
    try:
        bound = float(number.replace("_", ""))
    except ValueError:
        raise GoalError(f"constraint {text!r}: {number!r} is not a number") from None
    if not math.isfinite(bound):
        raise GoalError(f"constraint {text!r}: the bound must be a finite number")
    return Constraint(_measure(name, metric, text), op, bound)


@dataclass(frozen=True)
class Goals:
    """A run's objectives and constraints, and the one rule that ranks archive rows by them."""

    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def parse(
        cls,
        objectives: Sequence[str] = (),
        constraints: Sequence[str] = (),
        direction: Direction = "max",
        metric: str = "accuracy",
    ) -> Goals:
        """The goals of a run's settings; no objective means the task's metric alone, in its direction."""
        parsed = tuple(parse_objective(o, direction, metric) for o in objectives) or (Objective("val", direction),)
        if len({o.measure for o in parsed}) < len(parsed):
            raise GoalError(f"each measure may be one objective only; got {', '.join(map(str, parsed))}")
        return cls(parsed, tuple(parse_constraint(c, metric) for c in constraints))

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def names(self, measure: str) -> bool:
        """Whether an objective or a constraint names `measure` (a run ranking by `judge` needs its judge)."""
        return any(item.measure == measure for item in (*self.objectives, *self.constraints))

    @property
    def by_metric_alone(self) -> bool:
        """Whether the goals ask for the task's metric alone, in one direction, with no constraint: the ranking every
        listing already has (so parent selection ranks by score, with no fronts)."""
        return not self.multi and not self.constraints and self.objectives[0].measure == "val"

    def feasible(self, row: Mapping[str, Any]) -> bool:
        return all(c.holds(row) for c in self.constraints)

    def keys(self, row: Mapping[str, Any]) -> tuple[float, ...] | None:
        """The row's objectives as keys where bigger is better; None when it lacks one or breaks a constraint."""
        if not self.feasible(row):
            return None
        values = [row.get(o.column) for o in self.objectives]
        if any(v is None or not math.isfinite(float(v)) for v in values):
            return None
        return tuple(o.key(float(v)) for o, v in zip(self.objectives, values))

    def standing(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, float] | None]:
        """Each row's (front number, crowding distance), None for a row that cannot be ranked (missing measure,
        broken constraint). Sort ranked rows by `(rank, -distance)`: best first."""
        keyed = [(i, k) for i, k in enumerate(map(self.keys, rows)) if k is not None]
        result: list[tuple[int, float] | None] = [None] * len(rows)
        for (i, _), place in zip(keyed, pareto.standing([k for _, k in keyed])):
            result[i] = place
        return result

    def placed(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, tuple[int, float]]]:
        """(index, (front, crowding)) of each rankable row, best first: by front, then the less crowded first
        (NSGA-II's crowded comparison; one objective: by its key)."""
        places = self.standing(rows)
        ranked = [(i, place) for i, place in enumerate(places) if place is not None]
        return sorted(ranked, key=lambda item: (item[1][0], -item[1][1]))

    def ranked(self, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The rankable rows, best first (`placed`)."""
        return [rows[i] for i, _ in self.placed(rows)]

    def front(self, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The rows on the first Pareto front (feasible, with every measure), in the order given."""
        keyed = [(row, k) for row in rows if (k := self.keys(row)) is not None]
        return [keyed[i][0] for i in pareto.front([k for _, k in keyed])]

    def reference(self, rows: Sequence[Mapping[str, Any]]) -> tuple[float, ...] | None:
        """A hypervolume reference point from `rows`: per objective the worst key, pushed out by a tenth of the
        range (or of its size when all are equal), so that the worst rows still add volume."""
        keyed = [k for k in map(self.keys, rows) if k is not None]
        if not keyed:
            return None
        worst = [min(column) for column in zip(*keyed)]
        spread = [max(column) - low for column, low in zip(zip(*keyed), worst)]
        return tuple(low - (0.1 * s if s > 0 else 0.1 * abs(low) or 1.0) for low, s in zip(worst, spread))

    def hypervolume(self, rows: Sequence[Mapping[str, Any]], reference: Sequence[float] | None = None) -> float:
        """The hypervolume of the rows' front against `reference` (in key space; default `self.reference(rows)`)."""
        keyed = [k for k in map(self.keys, rows) if k is not None]
        point = reference if reference is not None else self.reference(rows)
        return 0.0 if point is None else pareto.hypervolume(keyed, point)

    def describe(self) -> dict[str, Any]:
        """The goals as stored with a run and shown to a person: ["val:max", "params:min"], ["params<=200000"]."""
        return {"objectives": [str(o) for o in self.objectives], "constraints": [str(c) for c in self.constraints]}
