"""Which score is better: the one ordering rule every ranking in agentarch follows, in Python and in SQL.

A task's metric says its direction (`agentarch.tasks.task.METRICS`): accuracy is better higher ("max"), an MSE or
bits per byte lower ("min"). Everything that ranks (leaderboards, `Archive.top`, few-shot parents, run
summaries, successive halving, REA's tournament, TPE, best-so-far plots) asks here instead of comparing scores
itself, so that no ranking quietly assumes higher is better.

The rule is a signed key: a score times +1 for "max" and -1 for "min" is larger the better it is, so "best" is
always the largest key, and an unscored item (None) ranks below every scored one. In SQL the direction comes
from the archive's `tasks` table (schema 7): `sql_key` where a query ranks by a signed score, `sql_order` where
the direction is known when the query is written (so an index can deliver the order); a task without a row
there ranks as every task did before it (higher is better), which is what its scores were ranked by then.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, TypeVar

T = TypeVar("T")

Direction = Literal["max", "min"]
DIRECTIONS: tuple[Direction, ...] = ("max", "min")


def sign(direction: Direction) -> int:
    """+1 where higher is better, -1 where lower is; anything else is a programming error, never a silent max."""
    if direction not in DIRECTIONS:
        raise ValueError(f"a direction is 'max' or 'min', not {direction!r}")
    return 1 if direction == "max" else -1


def key(value: float | None, direction: Direction) -> float:
    """A sort key that is larger the better `value` is; None (not scored) is below every score."""
    return -math.inf if value is None else sign(direction) * value


def better(value: float | None, than: float | None, direction: Direction) -> bool:
    """Whether `value` strictly beats `than` (a scored value beats None; equal values do not beat each other)."""
    return value is not None and key(value, direction) > key(than, direction)


def best(items: Iterable[T], score: Callable[[T], float | None], direction: Direction) -> T | None:
    """The item with the best score (`score` gives None for one not scored), None when none is scored.

    The earliest wins a tie, so a search that finds the same score again keeps its first find.
    """
    found, found_score = None, None
    for item in items:
        value = score(item)
        if better(value, found_score, direction):
            found, found_score = item, value
    return found


def ranked(items: Iterable[T], score: Callable[[T], float | None], direction: Direction) -> list[T]:
    """The items best first; equal scores keep their order, unscored items come last."""
    return sorted(items, key=lambda item: -key(score(item), direction))


def running_best(values: Sequence[float | None], direction: Direction) -> list[float | None]:
    """Best value so far at each index (None before the first); a None value, a failed evaluation, keeps the best."""
    found: float | None = None
    out: list[float | None] = []
    for value in values:
        if better(value, found, direction):
            found = value
        out.append(found)
    return out


def optuna_direction(direction: Direction) -> Literal["maximize", "minimize"]:
    """The same direction as Optuna's `create_study` spells it."""
    return "maximize" if sign(direction) > 0 else "minimize"


def sql_sign(direction: str) -> str:
    """SQL for +1 or -1 from `direction`, an SQL expression holding a `tasks.direction` (NULL, a task without a
    row, is +1)."""
    return f"(CASE {direction} WHEN 'min' THEN -1 ELSE 1 END)"


def sql_order(column: str, direction: Direction) -> str:
    """SQL ORDER BY terms that put the best `column` first in a known `direction`, NULL last (as DESC does)."""
    return f"{column} DESC" if sign(direction) > 0 else f"{column} IS NULL, {column}"


def sql_key(column: str, direction: str) -> str:
    """SQL for `column` as a key that is larger the better it is in `direction` (an SQL expression, as for
    `sql_sign`): what every ORDER BY ... DESC and MAX() over scores in the archive ranks by (NULL stays NULL)."""
    return f"(({column}) * {sql_sign(direction)})"
