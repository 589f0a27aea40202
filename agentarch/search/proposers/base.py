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
from agentarch.search.limits import Limits
from agentarch.search.objectives import MEASURES
from agentarch.search.spaces import SearchSpace

IN_SPACE = "llm-space"
"""The in-space LLM proposer's name (agentarch.search.proposers.llm_space), as the archive's `proposer` column and
`agentarch baseline --algo` know it."""
BEST_OF_N = "best-of-n"
"""The proposer name of the LLM loop's control without feedback: the LLM prompted from the seeds alone (`feedback`
off).

These two names live here, beside the interface, rather than with the proposer and the loop, so that
`agentarch baseline --help` can list them without importing the model client, its templates or the loop."""

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
    """Bookkeeping shared by the proposers of a space: which networks this search has proposed already, and the
    task's limits (agentarch.search.limits) that every architecture it proposes keeps to.

    Keys are the space's identities, so two strings that build the same network count as one. With `limits`, an
    architecture over one is never accepted, samples are drawn inside them (`sample`), and a space that cannot
    keep to them at all is refused as the search starts (LimitError).
    """

    def __init__(self, space: SearchSpace, distinct: bool, rng: random.Random, limits: Limits | None = None) -> None:
        if limits is not None and limits.space.name != space.name:
            raise ValueError(f"limits for the {limits.space.name} space given to a search of {space.name}")
        self.space = space
        self.distinct = distinct
        self.rng = rng
        self.limits = limits
        self.seen: set[str] = set()
        if limits is not None:
            limits.check()

    def allows(self, arch: str) -> bool:
        """Whether `arch` keeps to the limits (always, without limits); a refusal is counted in the limits' stats."""
        if self.limits is None or self.limits.allows(arch):
            return True
        self.limits.stats.refused += 1
        return False

    def accept(self, arch: str) -> bool:
        """Take `arch` as proposed by this search: False for a repeat (when distinct) or an architecture over the
        limits."""
        key = self.space.identity(arch)
        if self.distinct and key in self.seen:
            return False
        if not self.allows(arch):
            return False
        self.seen.add(key)
        return True

    def remember(self, arch: str) -> None:
        """`arch` was proposed earlier (a replayed result): a distinct search does not propose it again."""
        self.seen.add(self.space.identity(arch))

    def draw(self, make: Callable[[], str], tries: int = MAX_REDRAWS) -> str:
        """Call `make()` until it gives an architecture this search may propose (at most `tries` times)."""
        for _ in range(tries):
            arch = make()
            if self.accept(arch):
                return arch
        inside = "" if self.limits is None else " inside the limits"
        raise SpaceExhausted(
            f"no unseen architecture{inside} in {tries} draws from the {self.space.name} space; "
            "lower --budget or widen the space"
        )

    def sample(self) -> str:
        """A uniform sample of the space, inside the limits, that this search may propose. When MAX_REDRAWS samples
        inside the limits were all proposed already, the draw is among the listed ones inside that were not;
        SpaceExhausted says when none is left."""
        limits = self.limits
        if limits is None:
            return self.draw(lambda: self.space.sample(self.rng))
        try:
            return self.draw(lambda: limits.sample(self.rng))
        except SpaceExhausted:
            inside = limits.inside()
            if inside is None:
                raise
        left = [arch for arch in inside if self.space.identity(arch) not in self.seen] if self.distinct else inside
        if not left:
            raise SpaceExhausted(
                f"all {len(inside)} architectures of the {self.space.name} space inside the limits were proposed "
                "already; lower --budget or loosen the limits"
            ) from None
        arch = self.rng.choice(left)
        self.seen.add(self.space.identity(arch))
        return arch

    def forget(self, arch: str) -> None:
        """`arch` was withdrawn unevaluated: a distinct search may propose it again."""
        self.seen.discard(self.space.identity(arch))
