"""How far to trust a task's predictor, as the web UI shows it: held-out rank correlations, computed once per
task and number of trained candidates and kept in the server process.

`agentarch.search.predictor.cross_validate` fits one model per fold on every trained candidate of the task (and the
other tasks' as the loop's predictor pools them): a fraction of a second for a hundred candidates, seconds for
thousands. That is too slow for a leaderboard, so the figure has its own page (/predictor), and the answer is kept
until the archive's count of trained candidates changes (a new one trained, so the predictor would learn from it).
The leaderboard shows a kept answer, never computes one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from agentarch.search import predictor
from agentarch.store import browse
from agentarch.store.archive import Archive

FOLDS = 5


@dataclass(frozen=True)
class Quality:
    """A task's predictor on held-out candidates: `spearman` and `kendall` (None where its predictions were all
    equal), over `n` candidates in `folds` folds, from `features`; or `reason`, why no predictor can be fitted yet."""

    task: str
    trained: int
    archive_trained: int = 0  # of every task: the predictor pools the other tasks' (predictor.pooled_examples)
    n: int = 0
    folds: int = 0
    spearman: float | None = None
    kendall: float | None = None
    features: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def summary(self) -> str:
        """One line: "predictor: Spearman 0.62, Kendall 0.45 on 120 held-out candidates", or why there is none."""
        if self.reason:
            return f"no predictor yet: {self.reason}"
        if self.spearman is None or self.kendall is None:
            return f"predictor: no rank correlation (its predictions were all equal) on {self.n:,} held-out candidates"
        return f"predictor: Spearman {self.spearman:.2f}, Kendall {self.kendall:.2f} on {self.n:,} held-out candidates"


class Qualities:
    """The held-out quality of each task's predictor, computed at most once per (task, trained candidates). One
    computation at a time: two people opening the page at once wait for one answer instead of fitting twice."""

    def __init__(self) -> None:
        self._kept: dict[str, Quality] = {}
        self._lock = threading.Lock()

    def kept(self, archive: Archive, task: str) -> Quality | None:
        """The task's answer if one is kept for its current number of trained candidates (one count query)."""
        found = self._kept.get(task)
        return (
            found if found is not None and (found.trained, found.archive_trained) == _trained(archive, task) else None
        )

    def of(self, archive: Archive, task: str) -> Quality:
        """The task's answer, computed now unless kept."""
        with self._lock:
            trained = _trained(archive, task)
            found = self._kept.get(task)
            if found is None or (found.trained, found.archive_trained) != trained:
                found = self._kept[task] = _measure(archive, task, *trained)
            return found

    def clear(self) -> None:
        """Forget every kept answer (a benchmark's first visit)."""
        self._kept.clear()


def _trained(archive: Archive, task: str) -> tuple[int, int]:
    """The task's trained candidates and the archive's."""
    count = browse.count_candidates
    return count(archive, browse.Filters(task=task, status="trained")), count(archive, browse.Filters(status="trained"))


def _measure(archive: Archive, task: str, trained: int, archive_trained: int) -> Quality:
    found = predictor.examples(archive, task)
    reason = predictor.shortfall(found, task)
    if reason:
        return Quality(task, trained, archive_trained, n=len(found), reason=reason)
    pool = predictor.pooled_examples(archive, task)
    scores = predictor.cross_validate(found, task, archive.direction(task), FOLDS, pool)
    return Quality(
        task,
        trained,
        archive_trained,
        n=scores["n"],
        folds=scores["folds"],
        spearman=scores["spearman"],
        kendall=scores["kendall"],
        features=scores["features"],
    )
