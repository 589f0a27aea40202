"""What runs report when they end: the two rules every run summary is built on.

The kinds of run report different things, so each keeps its own summary: `agentarch eval` counts
its files by status (`agentarch.evaluation.evaluator.eval_summary`); the agent loop adds proposals, repairs, LLM cost and
what stopped it (`agentarch.loop.summary.summarize`); a baseline reports the NAS-Bench-201 protocol over
seeds (`agentarch.loop.baseline.summarize`); successive halving reports its rungs
(`agentarch.evaluation.fidelity.HalvingResult.summary`). What they share is defined once, here: outcomes
counted by status, and the best candidate chosen by validation score in the task's direction (the search
signal; a test score never chooses; `agentarch.store.ranking` says which way is better), the earliest winning a tie.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar

from agentarch.store import ranking

T = TypeVar("T")


def status_counts(statuses: Iterable[str]) -> dict[str, int]:
    """How many outcomes ended in each status, in the order the statuses first occurred."""
    return dict(Counter(statuses))


def best_by_validation(items: Iterable[T], val: Callable[[T], float | None], direction: ranking.Direction) -> T | None:
    """The item with the best validation score in the task's `direction` (`val` gives None for one not scored).

    The earliest wins a tie, so a search that finds the same score again keeps its first find.
    """
    return ranking.best(items, val, direction)
