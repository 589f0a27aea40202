"""Pareto fronts, crowding and hypervolume: the arithmetic of several objectives at once (NSGA-II's parts).

Every function takes points as tuples of keys where bigger is better in every coordinate: the caller turns
each objective into such a key first (`agentarch.search.objectives.Goals.keys`, which negates what is minimised), so
nothing here knows about directions, metrics or the archive.
"""

from __future__ import annotations

from collections.abc import Sequence

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """`a` is at least as good as `b` everywhere and better somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def front(points: Sequence[Point]) -> list[int]:
    """The indices of the non-dominated points (the first front), in input order; equal points all stay.

    Two objectives take a sort and one sweep (O(n log n)), so a task-wide front over tens of thousands of
    candidates is cheap; more objectives compare each point with the front found so far.
    """
    if not points:
        return []
    if len(points[0]) == 2:
        order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
        kept, best_y, last = [], float("-inf"), None
        for i in order:
            x, y = points[i]
            if y > best_y or (last is not None and (x, y) == last):
                kept.append(i)
                best_y, last = max(best_y, y), (x, y)
        return sorted(kept)
    kept = [i for i, p in enumerate(points) if not any(dominates(points[j], p) for j in range(len(points)))]
    return kept


def fronts(points: Sequence[Point]) -> list[list[int]]:
    """All fronts, best first, each as indices in ascending order: front k holds the points that only points of
    fronts before it dominate.

    Two objectives take one sort and a sweep with bisection (Jensen's non-dominated sort, O(n log n): a
    leaderboard of tens of thousands of candidates); more take NSGA-II's fast non-dominated sort, which compares
    every pair (O(m n^2): a run's few hundred candidates)."""
    if points and len(points[0]) <= 2:
        return _fronts_by_sweep(points)
    return _fronts_by_pairs(points)


def _fronts_by_sweep(points: Sequence[Point]) -> list[list[int]]:
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


def _fronts_by_pairs(points: Sequence[Point]) -> list[list[int]]:
    n = len(points)
    beaten_by = [0] * n
    beats: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                beats[i].append(j)
                beaten_by[j] += 1
            elif dominates(points[j], points[i]):
                beats[j].append(i)
                beaten_by[i] += 1
    current = [i for i in range(n) if beaten_by[i] == 0]
    result = []
    while current:
        result.append(current)
        following = []
        for i in current:
            for j in beats[i]:
                beaten_by[j] -= 1
                if beaten_by[j] == 0:
                    following.append(j)
        current = sorted(following)
    return result


def crowding(points: Sequence[Point], members: Sequence[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each member of one front: the side lengths (normalised per objective) of
    the box its neighbours span. The extremes get infinity, so the front's ends are always kept."""
    distance = {i: 0.0 for i in members}
    if len(members) <= 2:
        return {i: float("inf") for i in members}
    for axis in range(len(points[members[0]])):
        ordered = sorted(members, key=lambda i: points[i][axis])
        low, high = points[ordered[0]][axis], points[ordered[-1]][axis]
        distance[ordered[0]] = distance[ordered[-1]] = float("inf")
        if high == low:
            continue
        for before, here, after in zip(ordered, ordered[1:], ordered[2:]):
            distance[here] += (points[after][axis] - points[before][axis]) / (high - low)
    return distance


def standing(points: Sequence[Point]) -> list[tuple[int, float]]:
    """Each point's (front number, crowding distance): front 0 is the best; within a front a larger distance is
    better (a less crowded trade-off). Sorting by `(rank, -distance)` is NSGA-II's crowded-comparison order."""
    result: list[tuple[int, float]] = [(0, 0.0)] * len(points)
    for rank, members in enumerate(fronts(points)):
        for i, dist in crowding(points, members).items():
            result[i] = (rank, dist)
    return result


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """The volume dominated by `points` and bounded by `reference` (a point worse than every point counted).

    Points not strictly better than the reference in every coordinate add nothing. Two objectives are one
    sweep; more are sliced along the first objective (exact; meant for fronts of tens of points, not thousands).
    """
    kept = [tuple(p) for p in points if all(x > r for x, r in zip(p, reference))]
    if not kept:
        return 0.0
    if len(reference) == 1:
        return max(p[0] for p in kept) - reference[0]
    kept = [kept[i] for i in front(kept)]
    if len(reference) == 2:
        volume, best_y = 0.0, reference[1]
        for x, y in sorted(kept, key=lambda p: (-p[0], -p[1])):
            if y > best_y:
                volume += (x - reference[0]) * (y - best_y)
                best_y = y
        return volume
    volume = 0.0
    cuts = sorted({p[0] for p in kept}, reverse=True)
    for high, low in zip(cuts, [*cuts[1:], reference[0]]):
        slab = [p[1:] for p in kept if p[0] >= high]
        volume += (high - low) * hypervolume(slab, reference[1:])
    return volume
