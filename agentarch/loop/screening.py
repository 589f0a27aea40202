"""Predictor-guided screening (`--screen K`): of every K proposals, only the one a predictor ranks best trains.

Proposal number `seq` belongs to group `seq // K`. Each member goes through the cheap stages (checks, dedup,
a smoke-only sandbox job that measures size, latency and zero-cost proxies) and then reports its
measurements here and waits; a member that ended before (invalid, a duplicate, a failed smoke run) is
counted out by the scheduler, and one that waits for a copy of its code in flight counts itself out (reporting
later, it follows what its group decided). Once every member of the group is in or out, the group decides: the member
with the best predicted validation score (agentarch/search/predictor.py, fitted on the task's archive and refitted
as trained candidates arrive) trains; with probability `explore`, or while the archive holds too few trained
candidates to fit a predictor, a member drawn at random trains instead. The others are recorded `screened`
with their prediction, so nothing is dropped silently and every choice can be audited.

What a member reports is what its smoke-only job measured: in graph scoring the host's measures of the network's
exported graph (parameters, FLOPs, and ONNX Runtime's latency in a clean evaluator) with no zero-cost proxy, never the
candidate's own figures (agentarch/evaluation/stages.py, `stages`), so a forged report cannot win a group.

A decision is written to the archive once (`screenings`) before anyone acts on it, so a member resumed after
a crash follows the decision its group already took, and a group never trains two members.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentarch.search.predictor import Predictor, features_of
from agentarch.store.archive import Archive


@dataclass
class _Group:
    size: int
    reports: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> features
    out: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Decision:
    """What one member does: train, or be recorded `screened` with its prediction and the reason."""

    train: bool
    prediction: float | None
    reason: str


class Screening:
    """The groups of one run; members call `report` (blocking) and the scheduler `ended` for those that left early."""

    def __init__(self, run_id: str, task: str, size: int, explore: float, seed: int) -> None:
        self.run_id, self.task, self.size, self.explore, self.seed = run_id, task, size, explore, seed
        self._groups: dict[int, _Group] = {}
        self._changed = threading.Condition()
        self._predictor: Predictor | None = None
        self._fit_lock = threading.Lock()

    def group_of(self, seq: int) -> int:
        return seq // self.size

    def _group(self, plan: Mapping[str, Any]) -> _Group:
        number = self.group_of(plan["seq"])
        if number not in self._groups:
            self._groups[number] = _Group(plan.get("group_size") or self.size)
        return self._groups[number]

    def ended(self, plan: Mapping[str, Any]) -> None:
        """A member left before reporting (its outcome is recorded without screening); its group stops waiting for it."""
        with self._changed:
            group = self._group(plan)
            if plan["key"] not in group.reports:
                group.out.add(plan["key"])
            self._changed.notify_all()

    def report(
        self,
        archive: Archive,
        plan: Mapping[str, Any],
        smoke: Mapping[str, Any],
        candidate: Mapping[str, Any],
        stop: threading.Event | None = None,
    ) -> Decision | None:
        """Report a smoke-tested member and wait until its group has decided; returns this member's part, or None once
        `stop` is set (the run is stopping: no group decides without the members that stopped)."""
        key, number = plan["key"], self.group_of(plan["seq"])
        with self._changed:
            group = self._group(plan)
            group.out.discard(key)  # counted out while it waited for a copy in flight, it reports after all
            group.reports[key] = features_of(smoke, candidate)
            self._changed.notify_all()
            while True:
                stored = archive.screening(self.run_id, number)
                if stored is not None:
                    return _part(stored, key)
                if stop is not None and stop.is_set():
                    group.reports.pop(key, None)
                    return None
                if len(group.reports) + len(group.out) >= group.size:
                    archive.decide_screening(self.run_id, number, self._decide(archive, number, group.reports))
                    continue
                self._changed.wait(0.5)

    def _decide(self, archive: Archive, number: int, reports: dict[str, dict[str, float]]) -> dict[str, Any]:
        """The group's decision as stored: the winner, every member's prediction, and how the winner was chosen."""
        with self._fit_lock:
            self._predictor = self._predictor.refit(archive) if self._predictor else Predictor.fit(archive, self.task)
            predictor = self._predictor
        keys = sorted(reports)
        predictions = {k: None if predictor is None else predictor.predict(reports[k]) for k in keys}
        rng = random.Random(f"{self.seed}/{self.run_id}/{number}")
        if predictor is None or rng.random() < self.explore:
            winner, how = rng.choice(keys), "no predictor yet: drawn at random" if predictor is None else "explored"
        else:
            winner, how = max(keys, key=lambda k: predictor.key(reports[k])), f"best predicted of {len(keys)}"
        return {"winner": winner, "how": how, "predictions": predictions}


def _part(stored: Mapping[str, Any], key: str) -> Decision:
    prediction = stored["predictions"].get(key)
    if stored["winner"] == key:
        return Decision(True, prediction, stored["how"])
    winner = stored["predictions"].get(stored["winner"])
    said = "n/a" if prediction is None else f"{prediction:.4g}"
    best = "n/a" if winner is None else f"{winner:.4g}"
    return Decision(
        False,
        prediction,
        f"[screen] not trained: predicted {said}; its group trained {stored['winner']} "
        f"(predicted {best}, {stored['how']})",
    )
