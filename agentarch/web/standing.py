"""The leaderboard's `front` sort: each row's Pareto front and crowding, fast enough for thousands of rows.

The rule is `Goals.standing`'s (NSGA-II: front number, then crowding distance, from `agentarch.pareto`), and
`standing` here returns exactly what it returns. Only the way the fronts are found differs: `pareto.fronts`
compares every pair of points, about 4 s for 2,000 candidates and a minute for 8,000, while a page has 300 ms. With
one or two objectives (the default, and most runs) the fronts come from one sort and a sweep (Jensen's
non-dominated sort for two objectives: O(n log n)); with three or more they are `pareto.fronts`' own, which stays
quadratic and so suits a run's few hundred candidates rather than a whole task. Crowding is `pareto.crowding`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentarch import pareto
from agentarch.objectives import Goals

Place = tuple[int, float]
"""(front number from 0, crowding distance)."""


def fronts(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """All fronts, best first, each as indices in ascending order: what `pareto.fronts` returns, for points of keys
    where bigger is better."""
    if not points or len(points[0]) > 2:
        return pareto.fronts(points)
    lasts: list[tuple[float, float]] = []  # the latest point placed on each front
    members: list[list[int]] = []
    for neg_x, neg_y, i in sorted((-p[0], -(p[1] if len(p) > 1 else 0.0), i) for i, p in enumerate(points)):
        x, y = -neg_x, -neg_y
        # Points come by falling x, so a front's latest point has the largest y on it and dominates the point
        # whenever any of its members does; and a point dominated on front k is dominated on every front before k.
        # The first front that does not dominate it is therefore found by bisection.
        low, high = 0, len(lasts)
        while low < high:
            middle = (low + high) // 2
            last_x, last_y = lasts[middle]
            if last_y > y or (last_y == y and last_x > x):
                low = middle + 1
            else:
                high = middle
        if low == len(lasts):
            lasts.append((x, y))
            members.append([i])
        else:
            lasts[low] = (x, y)
            members[low].append(i)
    return [sorted(front) for front in members]


def standing(goals: Goals, rows: Sequence[Mapping[str, Any]]) -> list[Place | None]:
    """Each row's (front, crowding distance) by `goals`, None for a row that cannot be ranked (a missing measure, a
    broken constraint): `Goals.standing`'s answer."""
    keyed = [(i, k) for i, k in enumerate(map(goals.keys, rows)) if k is not None]
    points = [k for _, k in keyed]
    places: list[Place | None] = [None] * len(rows)
    for rank, members in enumerate(fronts(points)):
        for j, distance in pareto.crowding(points, members).items():
            places[keyed[j][0]] = (rank, distance)
    return places


def order(goals: Goals, rows: Sequence[Mapping[str, Any]], best_first: bool = True) -> list[tuple[int, int | None]]:
    """(id, front) of every row in the front sort's order: by front, then the less crowded first (NSGA-II's
    crowded comparison), equal places newest first; `best_first` False turns the ranked rows round. Rows that
    cannot be ranked come last either way (front None), newest first."""
    places = standing(goals, rows)
    sign = 1 if best_first else -1
    ranked = [(row, place) for row, place in zip(rows, places) if place is not None]
    ranked.sort(key=lambda item: (sign * item[1][0], -sign * item[1][1], -item[0]["id"]))
    unranked = sorted((row for row, place in zip(rows, places) if place is None), key=lambda row: -row["id"])
    return [(row["id"], place[0]) for row, place in ranked] + [(row["id"], None) for row in unranked]
