"""Islands: separate parent pools within one run, with ring migration (the island model of evolutionary search).

Proposal number `seq` belongs to island `seq % n`. An island's pool is the outcomes of its own proposals plus
the migrants it received: every `every` recorded outcomes (in the order they ended), each island's best joins
the next island's pool (0 → 1 → ... → n-1 → 0). The pools are a function of the run's outcomes in that order,
which the archive's proposals ledger keeps, so a resumed run rebuilds exactly the pools it had.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentarch.search.objectives import Goals


def island_of(seq: int, islands: int) -> int:
    """The island of proposal number `seq` (round robin)."""
    return seq % islands


def pools(outcomes: Sequence[dict[str, Any]], islands: int, every: int, goals: Goals) -> list[list[dict[str, Any]]]:
    """Each island's pool: its own outcomes and its migrants, in the order they joined.

    The best of an island is the first of its pool ranked by `goals` (trained outcomes with every measure
    only); an island whose best the next one already holds sends nothing.
    """
    found: list[list[dict[str, Any]]] = [[] for _ in range(islands)]
    for count, outcome in enumerate(outcomes, start=1):
        found[outcome.get("island", 0) % islands].append(outcome)
        if islands > 1 and count % every == 0:
            bests = [_best(pool, goals) for pool in found]
            for i, best in enumerate(bests):
                target = found[(i + 1) % islands]
                if best is not None and all(o.get("key") != best.get("key") for o in target):
                    target.append({**best, "migrant": True})
    return found


def _best(pool: list[dict[str, Any]], goals: Goals) -> dict[str, Any] | None:
    trained = [o for o in pool if o.get("status") == "trained"]
    ranked = goals.ranked(trained)
    return dict(ranked[0]) if ranked else None
