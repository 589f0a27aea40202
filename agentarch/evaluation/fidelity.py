"""Multi-fidelity evaluation: successive halving (Jamieson and Talwalkar 2016; Hyperband's inner loop).

Every candidate gets a short training budget; the best 1/eta by validation score (in the task's direction:
the lowest 1/eta for an MSE) are promoted to
an eta-times longer budget, and so on up to the full budget. It is ASI-Arch's explore-then-verify
made systematic: most compute goes to the few candidates that earned it. Every rung is recorded
as an evaluation keyed by its fidelity (epochs), so the archive says which budget a score is from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentarch.errors import UsageError
from agentarch.evaluation.evaluator import EvalResult, Evaluator
from agentarch.store import ranking
from agentarch.store.summaries import best_by_validation


@dataclass
class Rung:
    """One budget level: who was trained at it and what they scored."""

    epochs: int
    results: list[EvalResult] = field(default_factory=list)

    @property
    def trained(self) -> list[EvalResult]:
        return [r for r in self.results if r.status == "trained" and r.metrics["val_accuracy"] is not None]


@dataclass
class HalvingResult:
    rungs: list[Rung]
    best: EvalResult | None
    epochs_spent: int  # the sum over every training of its epochs: the compute, in units a reader can check
    seconds_spent: float  # the same in measured training seconds

    def summary(self) -> dict[str, Any]:
        return {
            "rungs": [
                {"epochs": r.epochs, "trained": len(r.trained), "ids": [x.id for x in r.results]} for r in self.rungs
            ],
            "best": None if self.best is None else {"id": self.best.id, **self.best.metrics},
            "epochs_spent": self.epochs_spent,
            "seconds_spent": round(self.seconds_spent, 1),
        }


def rung_budgets(min_epochs: int, max_epochs: int, eta: int) -> list[int]:
    """min, min*eta, min*eta^2, ... capped at max (the last rung is always the full budget)."""
    if eta < 2 or min_epochs < 1 or max_epochs < min_epochs:
        raise UsageError(f"need eta >= 2 and 1 <= min_epochs <= max_epochs (got eta={eta}, {min_epochs}..{max_epochs})")
    budgets = [min_epochs]
    while budgets[-1] * eta < max_epochs:
        budgets.append(budgets[-1] * eta)
    if budgets[-1] != max_epochs:
        budgets.append(max_epochs)
    return budgets


def survivors(trained: list[EvalResult], eta: int, direction: ranking.Direction) -> list[EvalResult]:
    """The best 1/eta (at least one) of a rung's trained candidates by validation score in the task's direction,
    best first; equal scores keep the order they were trained in."""
    ranked = ranking.ranked(trained, lambda r: r.metrics["val_accuracy"], direction)
    return ranked[: max(1, math.ceil(len(ranked) / eta))]


def successive_halving(
    evaluator: Evaluator,
    candidates: list[tuple[str, str]],
    min_epochs: int,
    max_epochs: int,
    eta: int = 3,
    proposer: str = "user",
    on_result: Callable[[int, EvalResult], None] = lambda epochs, result: None,
) -> HalvingResult:
    """Evaluate (name, code) candidates by successive halving; the best is judged at the full budget only."""
    budgets = rung_budgets(min_epochs, max_epochs, eta)
    direction = evaluator.task.direction
    rungs = [Rung(budgets[0])]
    spent_epochs, spent_seconds = 0, 0.0
    first = evaluator.settings.model_copy(update={"epochs": budgets[0]})
    entry = Evaluator(evaluator.archive, first, evaluator.run_id, evaluator.executor)
    for name, code in candidates:
        result = entry.evaluate(code, name, proposer)
        rungs[0].results.append(result)
        spent_epochs, spent_seconds = _spend(result, budgets[0], spent_epochs, spent_seconds)
        on_result(budgets[0], result)
    for epochs in budgets[1:]:
        rung = Rung(epochs)
        for survivor in survivors(rungs[-1].trained, eta, direction):
            result = evaluator.reevaluate(survivor.id, epochs)
            rung.results.append(result)
            spent_epochs, spent_seconds = _spend(result, epochs, spent_epochs, spent_seconds)
            on_result(epochs, result)
        rungs.append(rung)
    best = best_by_validation(rungs[-1].trained, lambda r: r.metrics["val_accuracy"], direction)
    return HalvingResult(rungs, best, spent_epochs, spent_seconds)


def _spend(result: EvalResult, epochs: int, spent_epochs: int, spent_seconds: float) -> tuple[int, float]:
    if result.status != "trained":
        return spent_epochs, spent_seconds
    return spent_epochs + epochs, spent_seconds + (result.metrics["train_seconds"] or 0.0)
