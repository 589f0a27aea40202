"""The one interface every proposer implements, so the loop, the runner and the archive never care who proposed.

A proposer is asked for a batch of proposals, the orchestrator evaluates them (sandbox or table),
and the proposer is told what came of each. Baselines propose architecture strings of a declared
search space; the LLM proposer (later) proposes free-form code. Both carry their lineage.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentarch.errors import AgentarchError
from agentarch.search.objectives import MEASURES
from agentarch.search.spaces import SearchSpace

MEASURE_COLUMNS = tuple(column for column in MEASURES.values() if column != "val_accuracy")
"""The measures besides the score that an objective may name: params, flops, latency_ms, peak_memory_mb."""


@dataclass
class Proposal:
    """One candidate to evaluate, and where it came from.

    `arch` is a search-space architecture string (None for free-form code); `code` is the candidate
    source when the proposer wrote it itself (None: the orchestrator renders `arch` for the task).
    `parents` are archive candidate ids; `parent_archs` the same parents as architecture strings
    (tabular searches, which write nothing to the archive, have only these).
    """

    proposer: str
    arch: str | None = None
    code: str | None = None
    parents: list[int] = field(default_factory=list)
    parent_archs: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Observation:
    """What came of a proposal. `val_accuracy` is the search signal; None when it was not trained.

    `measures` holds what else was measured, by archive column name (`params`, `flops`, `latency_ms`,
    `peak_memory_mb`; None where unknown): a search with several objectives ranks by them, the others ignore them.
    """

    proposal: Proposal
    status: str
    val_accuracy: float | None
    test_accuracy: float | None = None
    candidate_id: int | None = None
    measures: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def from_row(cls, proposal: Proposal, row: Mapping[str, Any]) -> Observation:
        """The outcome an archive row (or a run's outcome) holds: its status, scores, id and measures."""
        measures = {column: row.get(column) for column in MEASURE_COLUMNS}
        return cls(proposal, row["status"], row.get("val_accuracy"), row.get("test_accuracy"), row.get("id"), measures)

    def row(self) -> dict[str, float | None]:
        """The outcome as the archive row `agentarch.search.objectives.Goals` ranks: the validation score and measures."""
        return {**self.measures, "val_accuracy": self.val_accuracy}


class Proposer(abc.ABC):
    """Propose a batch, observe the results; seeded so that the same seed gives the same search."""

    name: str

    @abc.abstractmethod
    def propose(self, n: int) -> list[Proposal]:
        """The next `n` proposals (n > 1 lets several evaluate at once)."""

    @abc.abstractmethod
    def observe(self, observations: list[Observation]) -> None:
        """Take in the outcome of earlier proposals, in any order."""


MAX_REDRAWS = 1000
"""How many times a distinct search redraws before it declares the space exhausted."""


class SpaceExhausted(AgentarchError, RuntimeError):
    """No unseen architecture could be found: the budget exceeds what the space (or this search) can offer."""


class Distinct:
    """Bookkeeping shared by the proposers of a space: which networks this search has proposed already.

    Keys are the space's identities, so two strings that build the same network count as one.
    """

    def __init__(self, space: SearchSpace, distinct: bool, rng: random.Random) -> None:
        self.space = space
        self.distinct = distinct
        self.rng = rng
        self.seen: set[str] = set()

    def accept(self, arch: str) -> bool:
        key = self.space.identity(arch)
        if self.distinct and key in self.seen:
            return False
        self.seen.add(key)
        return True

    def draw(self, make: Callable[[], str]) -> str:
        """Call `make()` until it gives an architecture this search may propose."""
        for _ in range(MAX_REDRAWS):
            arch = make()
            if self.accept(arch):
                return arch
        raise SpaceExhausted(
            f"no unseen architecture in {MAX_REDRAWS} draws from the {self.space.name} space; "
            "lower --budget or widen the space"
        )

    def forget(self, arch: str) -> None:
        """`arch` was withdrawn unevaluated: a distinct search may propose it again."""
        self.seen.discard(self.space.identity(arch))
