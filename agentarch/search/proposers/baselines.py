"""Conventional NAS baselines over a declared search space: random search, regularized evolution, TPE.

They propose architecture strings of a `SearchSpace`; the orchestrator renders and trains them (or
looks them up in a table) exactly as it does the LLM's proposals, which keeps the comparison fair.
Each is seeded: the same seed and the same observations give the same proposals.

`distinct=True` (used when proposals are trained) never proposes an architecture twice in one search,
so a budget of N buys N trainings; the tabular protocol of NAS-Bench-201 allows repeats, so there it
is off and every query counts, as in the paper.

The search signal is the task's validation score, better in the task's `direction` (`agentarch.store.ranking`):
REA's tournament keeps the lowest MSE, and TPE's study minimizes it. Given `Goals` with more than that (several
objectives, constraints, or another measure), REA's tournament picks by Pareto front and crowding over the
population (NSGA-II's crowded comparison, `Goals.standing`) and TPE runs Optuna's multi-objective TPE; random
search needs no choice and ignores them.

Given `limits` (agentarch.search.limits: the task's max_params and the constraints on params and FLOPs), each keeps
to them before proposing: random search and REA's initial population sample inside them, REA's mutations and TPE's
suggestions over a limit are refused and drawn again (a mutation with no neighbour inside them in MAX_REDRAWS draws
becomes a sample inside them; TPE is told a refused suggestion was pruned and how far it is over, and after
SUGGEST_TRIES of them in a row is handed a sample inside the limits as its trial). `make_proposer(task=...)` builds
them from the task and the goals.

Each can also `withdraw` proposals that nobody evaluated: predictor-guided search (`search_table(screen=K)`) asks
for K and evaluates one, and the other K-1 must count as never made, or REA would end its random initial
population early and TPE would keep trials open.
"""

from __future__ import annotations

import abc
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentarch.errors import UsageError
from agentarch.search.limits import Limits
from agentarch.search.objectives import MEASURES, Constraint, Goals
from agentarch.search.proposers.base import MAX_REDRAWS, Distinct, Observation, Proposal, Proposer, SpaceExhausted
from agentarch.search.spaces import SearchSpace
from agentarch.store import ranking
from agentarch.store.ranking import Direction

if TYPE_CHECKING:
    from agentarch.search.proposers.llm_space import InSpaceLLM, InSpaceModel
    from agentarch.tasks.task import Task

INITIAL = "initial population: uniform sample"
"""The note of REA's initial samples, by which `withdraw` knows one."""
LIMITS = "limits"
"""The per-trial constraint under which TPE is told how far a refused suggestion is over the limits (Optuna 5)."""
SUGGEST_TRIES = 20
"""How many TPE suggestions over the limits in a row a proposal refuses before TPE is handed a sample inside them."""


def _fitness(observation: Observation, direction: Direction) -> float:
    """The search signal as a key that is larger the better (`ranking.key`); an untrained proposal (failed, timed
    out) ranks below every trained one."""
    return ranking.key(observation.val_accuracy, direction)


def beyond_the_metric(goals: Goals | None) -> Goals | None:
    """`goals` when they ask for more than the task's metric in one direction (which the plain search signal
    already is), else None: one rule for when a baseline ranks by `Goals` instead of by `_fitness`."""
    if goals is None or (not goals.multi and not goals.constraints and goals.objectives[0].measure == "val"):
        return None
    return goals


class Baseline(Proposer):
    """A search-space baseline: it proposes architecture strings and can take back the ones nobody evaluated."""

    @abc.abstractmethod
    def withdraw(self, proposals: list[Proposal]) -> None:
        """Forget proposals that were never evaluated (screened out): the search goes on as if they were not made."""


class RandomSearch(Baseline):
    """Uniform samples from the space: the baseline every NAS method must beat (Li and Talwalkar, 2019)."""

    name = "random"

    def __init__(self, space: SearchSpace, seed: int, distinct: bool = False, limits: Limits | None = None) -> None:
        self.rng = random.Random(seed)
        self.pool = Distinct(space, distinct, self.rng, limits)

    def propose(self, n: int) -> list[Proposal]:
        return [Proposal(self.name, arch=self.pool.sample(), note="uniform sample") for _ in range(n)]

    def observe(self, observations: list[Observation]) -> None:
        """Random search learns nothing from results."""

    def withdraw(self, proposals: list[Proposal]) -> None:
        for proposal in proposals:
            self.pool.forget(proposal.arch or "")

    def replay(self, observations: list[Observation]) -> None:
        """Rebuild the search from its earlier results (a resumed run): they count as proposed."""
        for obs in observations:
            self.pool.remember(obs.proposal.arch or "")


@dataclass
class Member:
    """One individual of the evolving population."""

    arch: str
    fitness: float  # the validation score as `ranking.key`: larger is better whatever the task's direction
    candidate_id: int | None
    row: dict[str, float | None] = field(default_factory=dict)  # validation score and measures, for `Goals`


class RegularizedEvolution(Baseline):
    """Aging evolution (Real et al., AAAI 2019), as run on NAS-Bench-201.

    A population of the `population` most recent evaluations; each child mutates the fittest of
    `sample_size` members drawn at random (with replacement, as in NAS-Bench-201's implementation),
    and each new evaluation pushes out the OLDEST member, not the worst: old luck does not live forever.

    With `goals` beyond the task's metric, "fittest" is NSGA-II's crowded comparison: the sampled member on the
    best Pareto front of the whole population wins, the one in the less crowded stretch of that front breaks a
    tie, and a member that cannot be ranked (untrained, missing a measure, breaking a constraint) loses to any
    that can. Everything else (sampling, aging, mutation) is the same search.
    """

    name = "rea"

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        population: int = 10,
        sample_size: int = 3,
        distinct: bool = False,
        direction: Direction = "max",
        goals: Goals | None = None,
        limits: Limits | None = None,
    ) -> None:
        if population < 1 or not 1 <= sample_size <= population:
            raise UsageError(
                f"need population >= 1 and 1 <= sample size <= population (got P={population}, S={sample_size})"
            )
        self.space = space
        self.rng = random.Random(seed)
        self.pool = Distinct(space, distinct, self.rng, limits)
        self.population_size = population
        self.sample_size = sample_size
        self.goals = beyond_the_metric(goals)
        self.direction = goals.objectives[0].direction if goals is not None and self.goals is None else direction
        self.population: deque[Member] = deque(maxlen=population)
        self.initial_proposed = 0

    def propose(self, n: int) -> list[Proposal]:
        return [self._one() for _ in range(n)]

    def _one(self) -> Proposal:
        if self.initial_proposed < self.population_size or not self.population:
            self.initial_proposed += 1
            return Proposal(self.name, arch=self.pool.sample(), note=INITIAL)
        tournament = [self.rng.choice(self.population) for _ in range(self.sample_size)]
        parent = self.winner(tournament)
        rule = "" if self.goals is None else " by Pareto front, then crowding"
        note = f"one-step mutation of the best of {self.sample_size} sampled members{rule}"
        try:
            child = self.pool.draw(lambda: self.space.mutate(parent.arch, self.rng))
        except SpaceExhausted:
            if self.pool.limits is None:
                raise
            child = self.pool.sample()  # every neighbour of the parent is over the limits or proposed already
            note = f"uniform sample inside the limits: {MAX_REDRAWS} mutations of {parent.arch} were over them or seen"
        return Proposal(
            self.name,
            arch=child,
            parents=[] if parent.candidate_id is None else [parent.candidate_id],
            parent_archs=[parent.arch],
            note=note,
        )

    def winner(self, tournament: list[Member]) -> Member:
        """The tournament's best: by the search signal, or with goals by (front, -crowding) over the population;
        the first drawn of equals."""
        if self.goals is None:
            return max(tournament, key=lambda m: m.fitness)
        standing = self.goals.standing([m.row for m in self.population])
        order = {id(m): (float("inf"), 0.0) if p is None else (p[0], -p[1]) for m, p in zip(self.population, standing)}
        return min(tournament, key=lambda m: order[id(m)])

    def observe(self, observations: list[Observation]) -> None:
        for obs in observations:
            assert obs.proposal.arch is not None, "regularized evolution observes only its own proposals"
            self.population.append(
                Member(obs.proposal.arch, _fitness(obs, self.direction), obs.candidate_id, obs.row())
            )  # the oldest drops out

    def withdraw(self, proposals: list[Proposal]) -> None:
        """A withdrawn initial sample leaves its place in the initial population to the next proposal."""
        for proposal in proposals:
            self.pool.forget(proposal.arch or "")
            if proposal.note == INITIAL:
                self.initial_proposed -= 1

    def replay(self, observations: list[Observation]) -> None:
        """Rebuild the search from its earlier results, in order (a resumed run): proposed, then observed."""
        for obs in observations:
            self.pool.remember(obs.proposal.arch or "")
        self.initial_proposed = min(self.population_size, self.initial_proposed + len(observations))
        self.observe(observations)


VIOLATIONS = "constraint_violations"
"""The trial attribute that holds how far a TPE trial breaks each constraint. Optuna 5 reads a trial's own
constraints (`Trial.set_constraint`); older versions read them through the sampler's `constraints_func`."""


def _violations(trial: Any) -> list[float]:
    return trial.user_attrs[VIOLATIONS]


def _violation(constraint: Constraint, row: dict[str, float | None]) -> float:
    """How far `row` breaks `constraint`, as Optuna reads it (<= 0 is feasible): the distance to the bound (at
    least a hair, so a strict bound met with equality still breaks), 1 for a missing measure."""
    if constraint.holds(row):
        return 0.0
    value = row.get(MEASURES[constraint.measure])
    return 1.0 if value is None else max(abs(float(value) - constraint.bound), 1e-9)


class TPE(Baseline):
    """Tree-structured Parzen estimator (Bergstra et al., 2011) through Optuna's ask-and-tell interface.

    With `goals` beyond the task's metric the study has one direction per objective, which makes Optuna's
    TPESampler the multi-objective TPE (Ozaki et al., 2020), and each constraint's violation is handed to the
    sampler with the trial (see `VIOLATIONS`). A proposal without every objective's measure counts as failed.
    """

    name = "tpe"

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        distinct: bool = False,
        direction: Direction = "max",
        goals: Goals | None = None,
        limits: Limits | None = None,
    ) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.space = space
        self.rng = random.Random(seed)
        self.pool = Distinct(space, distinct, self.rng, limits)
        self.goals = beyond_the_metric(goals)
        self.per_trial = hasattr(optuna.trial.Trial, "set_constraint")
        if self.goals is None:
            plain = goals.objectives[0].direction if goals is not None else direction
            self.study = optuna.create_study(
                direction=ranking.optuna_direction(plain), sampler=optuna.samplers.TPESampler(seed=seed)
            )
        else:
            constrained = _violations if self.goals.constraints and not self.per_trial else None
            self.study = optuna.create_study(
                directions=[ranking.optuna_direction(o.direction) for o in self.goals.objectives],
                sampler=optuna.samplers.TPESampler(seed=seed, constraints_func=constrained),
            )
        self.pending: dict[int, Any] = {}  # id(proposal) -> its trial
        self.values: dict[str, tuple[Any, list[float]]] = {}  # arch -> what TPE was told: values, violations

    def propose(self, n: int) -> list[Proposal]:
        return [self._one() for _ in range(n)]

    def _one(self) -> Proposal:
        refused = 0
        for _ in range(MAX_REDRAWS):
            trial = self.study.ask()
            arch = self.space.suggest(trial)
            if not self.pool.allows(arch):
                self._refuse(trial, arch)
                refused += 1
                if refused >= SUGGEST_TRIES:
                    return self._handed(self.pool.sample(), refused)
                continue
            if self.pool.accept(arch):
                return self._pending(Proposal(self.name, arch=arch, note="TPE suggestion"), trial)
            # A repeat in a distinct search: tell TPE what it already knows and ask again.
            self._tell(trial, self.values.get(arch))
        raise SpaceExhausted(f"TPE kept suggesting seen architectures of the {self.space.name} space; lower --budget")

    def _refuse(self, trial: Any, arch: str) -> None:
        """Close the trial of a suggestion over the limits as pruned and infeasible by how far it is over them: TPE
        counts it among the bad trials (a pruned trial without reports ranks below the complete ones, and Optuna 5
        ranks an infeasible trial below every feasible one), so it learns where the limits are without a score."""
        if self.per_trial:
            assert self.pool.limits is not None
            trial.set_constraint(LIMITS, max(self.pool.limits.excess(arch), 1e-9))
        self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)

    def _pending(self, proposal: Proposal, trial: Any) -> Proposal:
        self.pending[id(proposal)] = trial
        return proposal

    def _handed(self, arch: str, refused: int) -> Proposal:
        """A proposal of `arch` (a sample inside the limits) as TPE's trial: enqueued with its parameters, so TPE
        models its outcome as it would its own suggestion's."""
        self.study.enqueue_trial(self.space.trial_params(arch))
        trial = self.study.ask()
        suggested = self.space.suggest(trial)
        if self.space.validate(suggested) != arch:
            raise AssertionError(f"the {self.space.name} space's trial_params({arch!r}) suggest {suggested!r}")
        note = f"uniform sample inside the limits: TPE's last {refused} suggestions broke them"
        return self._pending(Proposal(self.name, arch=arch, note=note), trial)

    def observe(self, observations: list[Observation]) -> None:
        for obs in observations:
            told = self._told(obs)
            if told is not None:
                self.values[obs.proposal.arch or ""] = told
            self._tell(self.pending.pop(id(obs.proposal)), told)

    def withdraw(self, proposals: list[Proposal]) -> None:
        """A withdrawn proposal's trial is closed as failed, which TPE leaves out of its model (as it does a
        failure): it learns nothing from a network that was never evaluated."""
        for proposal in proposals:
            self.pool.forget(proposal.arch or "")
            self._tell(self.pending.pop(id(proposal)), None)

    def _told(self, obs: Observation) -> tuple[Any, list[float]] | None:
        """What TPE is told of an outcome (the value, or one per objective, and the constraint violations); None
        for a failure."""
        if self.goals is None:
            return None if obs.val_accuracy is None else (obs.val_accuracy, [])
        row = obs.row()
        values = [row.get(o.column) for o in self.goals.objectives]
        if any(v is None or not math.isfinite(float(v)) for v in values):
            return None
        return [float(v) for v in values], [_violation(c, row) for c in self.goals.constraints]

    def _tell(self, trial: Any, told: tuple[Any, list[float]] | None) -> None:
        if told is None:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            return
        values, violations = told
        if self.goals is not None and self.goals.constraints:
            trial.set_user_attr(VIOLATIONS, violations)
            if self.per_trial:
                for constraint, violation in zip(self.goals.constraints, violations):
                    trial.set_constraint(str(constraint), violation)
        self.study.tell(trial, values)


ALGOS = (RandomSearch.name, RegularizedEvolution.name, TPE.name)
"""The baseline proposers' names, as the archive's `proposer` column holds them: the one list of them.

`agentarch baseline --algo` accepts them, few-shot selection cites the baselines' best, and a run's
best-so-far plot draws them beside it."""


def make_proposer(
    algo: str,
    space: SearchSpace,
    seed: int,
    *,
    distinct: bool = False,
    population: int = 10,
    sample_size: int = 3,
    direction: Direction = "max",
    goals: Goals | None = None,
    model: InSpaceModel | None = None,
    task: Task | None = None,
) -> Baseline | InSpaceLLM:
    """The baseline called `algo`, seeded, searching for the best score in the task's `direction` (or by `goals`,
    see the module's docstring); the error lists the known ones. `llm-space` (alias `llm`) is the in-space LLM
    proposer (agentarch.search.proposers.llm_space), which asks `model` and ranks by the task's metric alone.
    Given the `task`, the search keeps to its limits and the goals' constraints on params and FLOPs
    (`Limits.of(space, task, goals)`), and a space that cannot is refused here (LimitError)."""
    from agentarch.search.proposers import llm_space

    limits = Limits.of(space, task, goals) if task is not None else None
    if llm_space.canonical_algo(algo) == llm_space.IN_SPACE:
        if beyond_the_metric(goals) is not None:
            raise UsageError(f"{llm_space.IN_SPACE} shows the model the task's metric alone; it takes no other goals")
        return llm_space.InSpaceLLM(space, seed, model, distinct=distinct, direction=direction, limits=limits)
    if algo == RandomSearch.name:
        return RandomSearch(space, seed, distinct, limits)
    if algo == RegularizedEvolution.name:
        return RegularizedEvolution(space, seed, population, sample_size, distinct, direction, goals, limits)
    if algo == TPE.name:
        return TPE(space, seed, distinct, direction, goals, limits)
    raise UsageError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGOS)}, {llm_space.IN_SPACE}")
