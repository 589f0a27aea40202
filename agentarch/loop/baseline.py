"""Run a baseline search: a proposer over a search space, evaluated by the table or by the sandbox.

Two evaluation paths, one protocol: the search sees the validation score only; each seed's result
is the test score of its best-by-validation candidate (best in the task's direction: the lowest MSE); a
multi-seed summary is the mean and standard deviation of those over seeds (the NAS-Bench-201 protocol).

- tabular tasks (nb201-*): every proposal is a table query, nothing is trained or recorded per
  query; each seed's best cell is recorded once in the archive (rendered as the paper's network,
  marked with its proposer), so later LLM prompts can cite it. How a table's answer becomes archive rows
  (`table_query`, `table_assessment`) lives here once: the agent loop's `look_up` step records each of its
  proposals on a table the same way;
- trainable tasks: every proposal is rendered to code and goes through `Evaluator.evaluate`, like
  any other candidate, with its parent's archive id as lineage.

With several objectives (`Goals`, e.g. val:max and params:min) the searches rank by them (see
`agentarch.search.proposers.baselines`), and on a table each seed also reports its front: the cells on the Pareto front
by validation (what the search saw), and the hypervolume of those cells reported on test accuracy, so that, as
with the single best, the test score never chooses. The hypervolume is normalised so that every search and seed
is measured against one fixed box (`TableScales`).

On a table, `screen=K` makes the search predictor-guided (`agentarch.search.guided`): the proposer offers K candidates per
query, a predictor fitted on the cells evaluated so far picks one to query, and the rest are withdrawn unevaluated;
the budget still counts queries, and each seed keeps every choice (`SeedResult.choices`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agentarch.errors import UsageError
from agentarch.evaluation import dedup
from agentarch.evaluation.candidate import candidate_row
from agentarch.evaluation.evaluator import METRIC_KEYS, Assessment, EvalResult, Evaluator
from agentarch.search.guided import REFIT, Choice, Guide, table_features
from agentarch.search.objectives import Goals
from agentarch.search.proposers.base import MEASURE_COLUMNS, Observation, Proposal
from agentarch.search.proposers.baselines import beyond_the_metric, make_proposer
from agentarch.search.recipes import archived, label
from agentarch.search.spaces import SearchSpace
from agentarch.store.archive import Archive
from agentarch.store.ranking import Direction
from agentarch.store.scoring import TABLE_ISOLATION  # the isolation of a table's answer: nothing ran
from agentarch.store.summaries import best_by_validation
from agentarch.tasks.tabular import NB201Table, TableScore, nb201_table
from agentarch.tasks.task import Task

PERCENT = 100.0
"""NAS-Bench-201 answers in percent, as the paper reports; the archive keeps every task's accuracy as a fraction."""
TABLE_DEVICE = "nas-bench-201"


def table_query(task: Task, arch: str) -> TableScore:
    """The NAS-Bench-201 table's answer for cell `arch` on the dataset of table task `task` (nb201-DATASET), in
    percent; TableError when `arch` is no cell of the table."""
    return nb201_table().query(task.name.removeprefix("nb201-"), arch)


def table_assessment(row: dict[str, Any], task: Task, score: TableScore, seed: int, reason: str | None) -> Assessment:
    """A table's answer as the rows to record, whoever asked (a baseline's best cell, a proposal of the agent loop):
    the candidate `row` (its code the cell's network for the task's images) trained at the benchmark's fidelity
    (`task.epochs`), its scores as fractions (the archive's unit), the cell's parameters and FLOPs, and an evaluation
    whose isolation and device say that the table answered and nothing ran."""
    scores = {"val_accuracy": score.val_accuracy / PERCENT, "test_accuracy": score.test_accuracy / PERCENT}
    metrics = {**dict.fromkeys(METRIC_KEYS), **scores, **score.measures()}
    candidate = {
        **row,
        "ast_hash": row.get("ast_hash") or dedup.ast_hash(row["code"]),
        **score.measures(),
        "status": "trained",
        "reason": reason,
        "duplicate_of": None,
        "dedup_level": None,
    }
    evaluation = {
        "fidelity": task.epochs,
        "seed": seed,
        "status": "trained",
        **scores,
        **score.measures(),
        "isolation": TABLE_ISOLATION,
        "device": TABLE_DEVICE,
    }
    return Assessment("trained", candidate, evaluation, reason, metrics=metrics, hparams=dict(row.get("hparams") or {}))


@dataclass(frozen=True)
class Trial:
    """One evaluation of a search: None scores when it was not trained (invalid, failed, timeout); `measures` are
    its other columns (params, flops, ...) by archive name."""

    arch: str
    val: float | None
    test: float | None
    candidate_id: int | None = None  # the archive row that holds the scores (trainable tasks)
    measures: dict[str, float | None] = field(default_factory=dict)

    def row(self, score: str = "val") -> dict[str, float | None]:
        """The trial as the row `Goals` ranks, its `val_accuracy` being the validation or (score="test") the test
        score."""
        return {**self.measures, "val_accuracy": self.val if score == "val" else self.test}


@dataclass(frozen=True)
class TableScales:
    """What each measure is divided by before a table hypervolume, so each coordinate lies in [0, 1]: accuracy
    (percent) by 100, parameters and FLOPs by the largest cell's in the space. The reference point is the worst
    corner of that box: 0 accuracy and the largest cell's size (a point must beat it to add volume)."""

    divisors: dict[str, float]

    @classmethod
    def of(cls, table: NB201Table, dataset: str) -> TableScales:
        return cls(
            {
                "val_accuracy": 100.0,
                "params": float(table.params[dataset].max()),
                "flops": float(table.flops[dataset].max()),
            }
        )

    def normalise(self, row: dict[str, float | None]) -> dict[str, float | None]:
        return {k: None if v is None else v / self.divisors.get(k, 1.0) for k, v in row.items()}

    @staticmethod
    def reference(goals: Goals) -> tuple[float, ...]:
        """The worst corner in `Goals.keys` space: 0 for an objective maximised, -1 for one minimised."""
        return tuple(0.0 if o.direction == "max" else -1.0 for o in goals.objectives)


@dataclass
class SeedResult:
    """One seed's search: every evaluation in order, which way its task's scores are better, and the goals it
    searched by (None: the task's metric alone); `scales` are set on a table, where hypervolumes are reported;
    `choices` hold a predictor-guided search's screenings, one per evaluation."""

    seed: int
    history: list[Trial] = field(default_factory=list)
    direction: Direction = "max"
    goals: Goals | None = None
    scales: TableScales | None = None
    choices: list[Choice] = field(default_factory=list)

    def best(self, budget: int | None = None) -> Trial | None:
        """The best-by-validation trial among the first `budget` evaluations that have both scores (and meet the
        goals' constraints)."""
        feasible = (
            self.history[:budget]
            if self.goals is None
            else [t for t in self.history[:budget] if self.goals.feasible(t.row())]
        )
        return best_by_validation(feasible, lambda trial: None if trial.test is None else trial.val, self.direction)

    def front(self, budget: int | None = None) -> list[Trial]:
        """The trials on the Pareto front by validation among the first `budget` (with test scores), in order."""
        assert self.goals is not None, "a front needs goals"
        trials = [t for t in self.history[:budget] if t.test is not None]
        rows = [t.row() for t in trials]
        on_front = {id(row) for row in self.goals.front(rows)}
        return [t for t, row in zip(trials, rows) if id(row) in on_front]

    def hypervolume(self, budget: int | None = None) -> float:
        """The normalised hypervolume of the validation front's cells, scored on test (see `TableScales`)."""
        assert self.goals is not None and self.scales is not None, "a hypervolume needs goals and table scales"
        rows = [self.scales.normalise(t.row("test")) for t in self.front(budget)]
        return self.goals.hypervolume(rows, self.scales.reference(self.goals))

    def front_report(self, budget: int | None = None) -> dict[str, Any]:
        """The front and its hypervolume, as one seed's JSON line shows them."""
        front = [{"arch": t.arch, "val": t.val, "test": t.test, **t.measures} for t in self.front(budget)]
        return {"front": front, "hypervolume": self.hypervolume(budget)}


def summarize(algo: str, task: str, budget: int, results: list[SeedResult]) -> dict[str, Any]:
    """The summary line `agentarch baseline --json` prints last; with several objectives on a table it adds the
    objectives and the mean and std over seeds of the hypervolume and the front's size."""
    bests = [b for b in (r.best(budget) for r in results) if b is not None]
    tests = [b.test for b in bests]
    summary = {
        "algo": algo,
        "task": task,
        "budget": budget,
        "seeds": len(results),
        "mean_test": statistics.fmean(tests) if tests else None,
        "std_test": statistics.pstdev(tests) if len(tests) > 1 else 0.0 if tests else None,
        "mean_val": statistics.fmean(b.val for b in bests) if bests else None,
    }
    multi = [r for r in results if r.goals is not None and r.goals.multi and r.scales is not None]
    if multi:
        volumes = [r.hypervolume(budget) for r in multi]
        summary.update(
            objectives=multi[0].goals.describe()["objectives"],  # type: ignore[union-attr]
            mean_hypervolume=statistics.fmean(volumes),
            std_hypervolume=statistics.pstdev(volumes),
            mean_front=statistics.fmean(len(r.front(budget)) for r in multi),
        )
    return summary


def check_screen(screen: int, goals: Goals | None) -> None:
    """Refuse to screen a search with goals beyond the task's metric: the predictor ranks by validation score alone."""
    if screen > 1 and beyond_the_metric(goals) is not None:
        raise UsageError(
            "--screen ranks by predicted validation score alone; it takes no other objective or constraint"
        )


def search_table(
    algo: str,
    space: SearchSpace,
    task: Task,
    budget: int,
    seed: int,
    goals: Goals | None = None,
    screen: int = 1,
    explore: float = 0.1,
    refit: float = REFIT,
    **options: Any,
) -> SeedResult:
    """One seed of a search on a NAS-Bench-201 table: `budget` queries, repeats allowed (as in the paper). The
    table's parameter and FLOP counts are each query's measures, for goals that name them. With `screen` K > 1 each
    query is the `Guide`'s pick of K proposals (`explore`: the share picked at random; `refit`: see
    `agentarch.search.guided`); the predictor ranks by validation score, so it takes no goals beyond the task's metric."""
    check_screen(screen, goals)
    table, dataset = nb201_table(), task.name.removeprefix("nb201-")
    proposer = make_proposer(algo, space, seed, direction=task.direction, goals=goals, task=task, **options)
    guide = Guide(task.name, task.direction, seed, table_features(dataset), explore, refit) if screen > 1 else None
    result = SeedResult(seed, direction=task.direction, goals=goals, scales=TableScales.of(table, dataset))
    while len(result.history) < budget:
        if guide is None:
            (proposal,) = proposer.propose(1)
        else:
            proposals = proposer.propose(screen)
            choice = guide.choose([p.arch or "" for p in proposals])
            result.choices.append(choice)
            proposal = proposals[choice.chosen]
            proposer.withdraw([p for p in proposals if p is not proposal])
        assert proposal.arch is not None
        score = table_query(task, proposal.arch)
        measures = score.measures()
        result.history.append(Trial(proposal.arch, score.val_accuracy, score.test_accuracy, measures=measures))
        proposer.observe([Observation(proposal, "trained", score.val_accuracy, score.test_accuracy, measures=measures)])
        if guide is not None:
            guide.learn(proposal.arch, score.val_accuracy)
    return result


def search_trained(
    algo: str,
    space: SearchSpace,
    evaluator: Evaluator,
    budget: int,
    seed: int,
    on_result: Callable[[Proposal, EvalResult], None] = lambda p, r: None,
    goals: Goals | None = None,
    **options: Any,
) -> SeedResult:
    """One seed of a search whose proposals are trained in the sandbox and recorded with lineage.

    An architecture the archive already evaluated (an earlier run) is not trained again: the
    evaluator reports it as a duplicate and the search observes the earlier scores. What the smoke run
    measured (params, flops, latency, memory) goes with each observation, for goals that name it.
    """
    task = evaluator.task
    proposer = make_proposer(
        algo, space, seed, distinct=True, direction=task.direction, goals=goals, task=task, **options
    )
    result = SeedResult(seed, direction=task.direction, goals=goals)
    while len(result.history) < budget:
        (proposal,) = proposer.propose(1)
        assert proposal.arch is not None
        code = space.render(proposal.arch, task)
        space_name, arch = archived(space, proposal.arch)  # a searched recipe is its own column, read from the code
        name = label(space_name, proposal.arch)
        outcome = evaluator.evaluate(code, name, proposer=algo, parents=proposal.parents, space=space_name, arch=arch)
        holder, source = outcome.id, outcome.metrics
        if outcome.status == "duplicate" and outcome.duplicate_of is not None:
            holder = outcome.duplicate_of
            source = evaluator.archive.scored(holder)
        val, test = source["val_accuracy"], source["test_accuracy"]
        measures = {column: source.get(column) for column in MEASURE_COLUMNS}
        result.history.append(Trial(proposal.arch, val, test, holder, measures))
        proposer.observe([Observation(proposal, outcome.status, val, test, candidate_id=holder, measures=measures)])
        on_result(proposal, outcome)
    return result


def record_table_best(
    archive: Archive, run_id: str, algo: str, space: SearchSpace, task: Task, result: SeedResult
) -> int | None:
    """Record a tabular seed's best cell as a candidate (once per cell), so prompts can cite the baseline's find.

    The code is the cell inside the paper's network for the task's images; the evaluation is the
    table's answer (fidelity: the benchmark's 200 epochs), marked as such in `isolation` and `device`.
    """
    best = result.best()
    if best is None:
        return None
    archive.register_task(task)
    index = next(i for i, trial in enumerate(result.history) if trial is best)
    earlier = archive.find_arch(task.name, space.name, best.arch)
    if earlier is not None:
        result.history[index] = replace(best, candidate_id=int(earlier["id"]))
        return int(earlier["id"])
    code = space.render(best.arch, task)
    screened = f", each the predictor's pick of {len(result.choices[0].archs)}" if result.choices else ""
    row = candidate_row(
        run_id=run_id,
        task=task.name,
        name=f"{space.name}:{best.arch}",
        proposer=algo,
        code=code,
        space=space.name,
        arch=best.arch,
    )
    reason = f"best of {len(result.history)} table queries by {algo}{screened} (seed {result.seed})"
    assessment = table_assessment(row, task, table_query(task, best.arch), result.seed, reason)
    candidate_id = archive.record(assessment.candidate, assessment.evaluation)
    result.history[index] = replace(best, candidate_id=candidate_id)
    return candidate_id


def parse_seeds(text: str) -> list[int]:
    """'0-99', '3', '1,4,9' or a mix ('0-4,10') to a sorted list of distinct seeds."""
    seeds: set[int] = set()
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last if sep else first)
        except ValueError:
            raise UsageError(f"cannot read seeds {text!r}; write e.g. 0-99, 7 or 1,4,9") from None
        if low < 0 or high < low:
            raise UsageError(f"seed range {part.strip()!r} is empty or negative; write e.g. 0-99")
        seeds.update(range(low, high + 1))
    return sorted(seeds)
