"""The leaderboard's `front` sort: rows ordered by `Goals.standing` (NSGA-II: front number, then crowding).

With one or two objectives (the default, and most runs) `pareto.fronts` sorts and sweeps, fast enough for a
whole task's thousands of candidates; with three or more it compares every pair, which suits a run's few
hundred candidates rather than a whole task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentarch.search.objectives import Goals

Place = tuple[int, float]
"""(front number from 0, crowding distance)."""


def order(goals: Goals, rows: Sequence[Mapping[str, Any]], best_first: bool = True) -> list[tuple[int, int | None]]:
    """(id, front) of every row in the front sort's order: by front, then the less crowded first (NSGA-II's
    crowded comparison), equal places newest first; `best_first` False turns the ranked rows round. Rows that
    cannot be ranked come last either way (front None), newest first."""
    places = goals.standing(rows)
    sign = 1 if best_first else -1
    ranked = [(row, place) for row, place in zip(rows, places) if place is not None]
    ranked.sort(key=lambda item: (sign * item[1][0], -sign * item[1][1], -item[0]["id"]))
    unranked = sorted((row for row, place in zip(rows, places) if place is None), key=lambda row: -row["id"])
    return [(row["id"], place[0]) for row, place in ranked] + [(row["id"], None) for row in unranked]
