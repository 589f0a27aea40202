"""Run a baseline search: a proposer over a search space, evaluated by the table or by the sandbox.

Two evaluation paths, one protocol: the search sees the validation score only; each seed's result
is the test score of its best-by-validation candidate (best in the task's direction: the lowest MSE); a
multi-seed summary is the mean and standard deviation of those over seeds (the NAS-Bench-201 protocol).

- tabular tasks (nb201-*): every proposal is a table query, nothing is trained or recorded per
  query; each seed's best cell is recorded once in the archive (rendered as the paper's network,
  marked with its proposer), so later LLM prompts can cite it;
- trainable tasks: every proposal is rendered to code and goes through `Evaluator.evaluate`, like
  any other candidate, with its parent's archive id as lineage.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agentarch import dedup
from agentarch.archive import Archive
from agentarch.candidate import candidate_row
from agentarch.errors import UsageError
from agentarch.evaluate import EvalResult, Evaluator
from agentarch.proposers.base import Observation, Proposal
from agentarch.proposers.baselines import make_proposer
from agentarch.ranking import Direction
from agentarch.spaces import SearchSpace
from agentarch.summaries import best_by_validation
from agentarch.tabular import nb201_table
from agentarch.tasks import Task


@dataclass(frozen=True)
class Trial:
    """One evaluation of a search: None scores when it was not trained (invalid, failed, timeout)."""

    arch: str
    val: float | None
    test: float | None
    candidate_id: int | None = None  # the archive row that holds the scores (trainable tasks)


@dataclass
class SeedResult:
    """One seed's search: every evaluation in order, and which way its task's scores are better."""

    seed: int
    history: list[Trial] = field(default_factory=list)
    direction: Direction = "max"

    def best(self, budget: int | None = None) -> Trial | None:
        """The best-by-validation trial among the first `budget` evaluations that have both scores."""
        return best_by_validation(
            self.history[:budget], lambda trial: None if trial.test is None else trial.val, self.direction
        )


def summarize(algo: str, task: str, budget: int, results: list[SeedResult]) -> dict[str, Any]:
    """The summary line `agentarch baseline --json` prints last."""
    bests = [b for b in (r.best(budget) for r in results) if b is not None]
    tests = [b.test for b in bests]
    return {
        "algo": algo,
        "task": task,
        "budget": budget,
        "seeds": len(results),
        "mean_test": statistics.fmean(tests) if tests else None,
        "std_test": statistics.pstdev(tests) if len(tests) > 1 else 0.0 if tests else None,
        "mean_val": statistics.fmean(b.val for b in bests) if bests else None,
    }


def search_table(algo: str, space: SearchSpace, task: Task, budget: int, seed: int, **options: Any) -> SeedResult:
    """One seed of a search on a NAS-Bench-201 table: `budget` queries, repeats allowed (as in the paper)."""
    table = nb201_table()
    dataset = task.name.removeprefix("nb201-")
    proposer = make_proposer(algo, space, seed, direction=task.direction, **options)
    result = SeedResult(seed, direction=task.direction)
    while len(result.history) < budget:
        (proposal,) = proposer.propose(1)
        assert proposal.arch is not None
        score = table.query(dataset, proposal.arch)
        result.history.append(Trial(proposal.arch, score.val_accuracy, score.test_accuracy))
        proposer.observe([Observation(proposal, "trained", score.val_accuracy, score.test_accuracy)])
    return result


def search_trained(
    algo: str,
    space: SearchSpace,
    evaluator: Evaluator,
    budget: int,
    seed: int,
    on_result: Callable[[Proposal, EvalResult], None] = lambda p, r: None,
    **options: Any,
) -> SeedResult:
    """One seed of a search whose proposals are trained in the sandbox and recorded with lineage.

    An architecture the archive already evaluated (an earlier run) is not trained again: the
    evaluator reports it as a duplicate and the search observes the earlier scores.
    """
    task = evaluator.task
    proposer = make_proposer(algo, space, seed, distinct=True, direction=task.direction, **options)
    result = SeedResult(seed, direction=task.direction)
    while len(result.history) < budget:
        (proposal,) = proposer.propose(1)
        assert proposal.arch is not None
        code = space.render(proposal.arch, task)
        name = f"{space.name}:{proposal.arch}"
        outcome = evaluator.evaluate(
            code, name, proposer=algo, parents=proposal.parents, space=space.name, arch=proposal.arch
        )
        holder = outcome.id
        val, test = outcome.metrics["val_accuracy"], outcome.metrics["test_accuracy"]
        if outcome.status == "duplicate" and outcome.duplicate_of is not None:
            holder = outcome.duplicate_of
            earlier = evaluator.archive.scored(holder)
            val, test = earlier["val_accuracy"], earlier["test_accuracy"]
        result.history.append(Trial(proposal.arch, val, test, holder))
        proposer.observe([Observation(proposal, outcome.status, val, test, candidate_id=holder)])
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
    candidate = {
        **candidate_row(
            run_id=run_id,
            task=task.name,
            name=f"{space.name}:{best.arch}",
            proposer=algo,
            code=code,
            space=space.name,
            arch=best.arch,
        ),
        "ast_hash": dedup.ast_hash(code),
        "status": "trained",
        "reason": f"best of {len(result.history)} table queries by {algo} (seed {result.seed})",
    }
    evaluation = {
        "fidelity": task.epochs,
        "seed": result.seed,
        "status": "trained",
        "val_accuracy": best.val / 100,
        "test_accuracy": best.test / 100,
        "isolation": "table",
        "device": "nas-bench-201",
    }
    candidate_id = archive.record(candidate, evaluation)
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
