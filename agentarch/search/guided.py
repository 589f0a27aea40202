"""Predictor-guided choice for table searches (`search_table(..., screen=K)`): of every K proposals, one is evaluated.

The table-side twin of `agentarch.loop.screening` (which screens the agent loop's smoke-tested proposals): the
proposer offers K candidates per unit of budget, the `Guide` ranks them with a predictor (agentarch/search/predictor.py)
fitted on the cells this search has evaluated so far, and only its pick is queried; the other K-1 are withdrawn
unevaluated, so the budget still counts evaluations, as predictor-guided NAS is compared (BANANAS counts queried
architectures). With probability `explore`, and until `MIN_TRAINED` cells are evaluated, the pick is drawn at random
instead, so the predictor keeps seeing what it would rank low.

A candidate's features are what is known before it is evaluated: its architecture (the op on each edge, one-hot)
and its size (log parameters and FLOPs, which the table ships and the agent loop's smoke stage measures).

Fitting the predictor costs about 0.1 s (200 boosting rounds) and each prediction about 5 ms on an idle core
(most of it predictor.py's per-call thread limit), against microseconds for a table query; so it is refitted only
once the evaluated cells have grown by `refit` (a fraction) since the last fit: at 8, 10, 13, 17, 22, 28, 35, 44, 55,
69, 87 cells (11 fits in a search of 100), then 109, 137, 172 (14 in 200); fewer where exploring skipped the
predictor. A new cell adds less to what a predictor of n cells knows the larger n is, so the refits thin out as n
grows. A prediction is remembered until the next fit, as REA's mutants of one winner recur.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentarch.search.predictor import MIN_TRAINED, Example, Predictor, features_of, shortfall
from agentarch.store import ranking
from agentarch.store.ranking import Direction
from agentarch.tasks.tabular import nb201_table

Features = Callable[[str], dict[str, float]]
"""An architecture's features, as `agentarch.search.predictor.features_of` gives them."""

REFIT = 0.25
"""Refit once the evaluated cells have grown by this fraction since the last fit (0: after every evaluation)."""


def table_features(dataset: str) -> Features:
    """What is known of a NAS-Bench-201 cell before it is evaluated: its architecture and its size (parameters and
    FLOPs on the dataset's images), never its accuracies."""
    table = nb201_table()
    return lambda arch: features_of(table.query(dataset, arch).measures(), {"space": "nb201", "arch": arch})


@dataclass(frozen=True)
class Choice:
    """One screening: the K candidates, the predictor's score for each (None where none was asked), which one was
    evaluated and how it was chosen ("predicted", "explored" or "no predictor yet")."""

    archs: tuple[str, ...]
    predictions: tuple[float | None, ...]
    chosen: int
    how: str


class Guide:
    """One search's predictor and exploration draws; seeded, so the same seed and evaluations give the same picks."""

    def __init__(
        self, task: str, direction: Direction, seed: int, features: Features, explore: float = 0.1, refit: float = REFIT
    ) -> None:
        if not 0 <= explore <= 1 or refit < 0:
            raise ValueError(f"need 0 <= explore <= 1 and refit >= 0 (got {explore}, {refit})")
        self.task, self.direction, self.features, self.explore, self.refit = task, direction, features, explore, refit
        self.rng = random.Random(f"guide/{seed}")
        self.examples: list[Example] = []
        self.predictor: Predictor | None = None
        self.fits = 0
        self.predicted: dict[str, float] = {}  # arch -> the current predictor's score

    def choose(self, archs: Sequence[str]) -> Choice:
        """Which of these candidates to evaluate."""
        explored = self.rng.random() < self.explore
        predictor = None if explored else self._current()
        if predictor is None:
            how = "explored" if explored else "no predictor yet"
            return Choice(tuple(archs), (None,) * len(archs), self.rng.randrange(len(archs)), how)
        predictions = [self._predicted(predictor, arch) for arch in archs]
        best = max(range(len(archs)), key=lambda i: ranking.key(predictions[i], self.direction))
        return Choice(tuple(archs), tuple(predictions), best, "predicted")

    def learn(self, arch: str, score: float) -> None:
        """An evaluated candidate's validation score, for the next fit."""
        self.examples.append(Example(len(self.examples), self.features(arch), score))

    def _predicted(self, predictor: Predictor, arch: str) -> float:
        """The predictor's score for `arch`, remembered until the next fit: REA's mutants of one winner recur."""
        if arch not in self.predicted:
            self.predicted[arch] = predictor.predict(self.features(arch))
        return self.predicted[arch]

    def _current(self) -> Predictor | None:
        """The predictor, refitted first when the evaluated cells have grown enough; None while too few to fit."""
        if len(self.examples) < MIN_TRAINED:
            return None
        fitted = 0 if self.predictor is None else self.predictor.n
        if fitted and (len(self.examples) == fitted or len(self.examples) < fitted * (1 + self.refit)):
            return self.predictor
        if shortfall(self.examples, self.task) is None:
            self.predictor = Predictor.on(self.examples, self.task, self.direction)
            self.predicted.clear()
            self.fits += 1
        return self.predictor
