"""Choosing the parent and the few-shot examples an LLM proposal is written from.

Few-shot architecture prompting (FSAP, as in NNGPT/LEMUR): the proposer sees `n` trained
candidates from the archive (3 by default) and is asked to improve on one of them, the parent.
How the parent is chosen decides how greedy the search is, so three strategies are offered:

- `topk`: uniform among the five best by validation score (ASI-Arch) -- greedy, little spread;
- `weighted`: ShinkaEvolve's weighting, a sigmoid of the standardized validation score times
  1 / (1 + number of children) -- good candidates are preferred, but one already tried many times
  yields to the others;
- `niches`: MAP-Elites over (parameters, score) -- a size class (half a decade of parameters)
  is drawn uniformly and its best candidate is the parent, so small and large designs both evolve.

After the parent come the best candidate overall, the best candidate a baseline search found (so
the LLM sees what conventional NAS reached), then the elites of other size classes, best first.
Only trained candidates of the task are eligible: a failed or duplicate proposal teaches nothing
about the score. The validation score is the ranking signal (test scores never steer a choice here), and
"best" is in the task's direction as the archive keeps it (`agentarch.store.ranking`): the lowest MSE is the best.
A judge's score (`--judge`, agentarch.store.judgments) only breaks ties between equal validation scores, unless the
run's objective names it (`--objective judge:max`).
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from agentarch.errors import UsageError
from agentarch.search.objectives import JUDGE_MEASURE, MEASURES, Goals
from agentarch.search.proposers.baselines import ALGOS
from agentarch.store import browse, judgments, lineage
from agentarch.store.archive import Archive
from agentarch.store.ranking import Direction, sign
from agentarch.store.ranking import key as score_key

if TYPE_CHECKING:
    from agentarch.tasks.task import Task

STRATEGIES = ("topk", "weighted", "niches")
MAX_EXAMPLES = 6

TOP_K = 5
"""`topk` draws the parent among this many best candidates (ASI-Arch's choice)."""

WEIGHT_LAMBDA = 2.0
"""Selection pressure of `weighted`: the sigmoid's slope per standard deviation of the validation score.
At 2, a candidate one deviation above the median weighs 0.88 and one below 0.12 (before children)."""

NICHE_DECADES = 0.5
"""Width of a `niches` size class in decades of parameters (0.5: 10k-31k, 31k-100k, 100k-316k, ...)."""


@dataclass
class FewShot:
    """The context of one proposal: the parent to improve on and the examples shown, parent first."""

    parent: dict[str, Any] | None
    examples: list[dict[str, Any]]
    strategy: str

    @property
    def example_ids(self) -> list[int]:
        return [row["id"] for row in self.examples]

    @property
    def parent_id(self) -> int | None:
        return None if self.parent is None else self.parent["id"]


def select(
    archive: Archive,
    task: str,
    n: int = 3,
    strategy: str = "topk",
    rng: random.Random | None = None,
    goals: Goals | None = None,
    members: list[int] | None = None,
) -> FewShot:
    """Pick a parent by `strategy` and up to `n` examples (parent first) from the task's trained candidates.

    The same `rng` state gives the same choice; without one, each call draws afresh. With several objectives
    (`goals.multi`) the pool is ranked by Pareto front and crowding instead of the validation score, candidates
    that break a constraint are left out, and the parent carries its `standing` (front number, the front's
    size) for the prompt. `members` limits the pool to an island's candidates (ignored while none is trained).
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_EXAMPLES:
        raise UsageError(f"the number of few-shot examples must be an integer from 0 to {MAX_EXAMPLES}, got {n!r}")
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown parent selection strategy {strategy!r}; use one of: {', '.join(STRATEGIES)}")
    rng = rng or random.Random()
    pool = _judged(archive, browse.ranked_with_code(archive, task))
    if members is not None:
        wanted = set(members)
        pool = [row for row in pool if row["id"] in wanted] or pool
    if goals is not None and goals.multi:
        pool = _by_front(pool, goals)
    elif goals is not None and not goals.by_metric_alone:  # one other objective (judge:max), or constraints
        pool = [dict(row) for row in goals.ranked(pool)]
    else:
        pool = _ties_by_judge(pool, archive.direction(task))
    if n == 0 or not pool:
        return FewShot(parent=None, examples=[], strategy=strategy)
    if strategy == "topk":
        parent = rng.choice(pool[:TOP_K])
    elif strategy == "weighted":
        children = lineage.child_counts(archive, task)
        parent = rng.choices(pool, weights=_weights(pool, children, archive.direction(task)))[0]
    else:
        parent = rng.choice(_elites(pool))
    return FewShot(parent=parent, examples=_examples(pool, parent, n), strategy=strategy)


def _judged(archive: Archive, pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pool's rows, each with the judge's score (`judge`, None where no judge rated it: agentarch.store.judgments),
    which an objective `judge:max` ranks by and equal validation scores are told apart by."""
    rated = judgments.scores(archive, [row["id"] for row in pool])
    return [{**row, JUDGE_MEASURE: rated.get(row["id"])} for row in pool]


def _ties_by_judge(pool: list[dict[str, Any]], direction: Direction) -> list[dict[str, Any]]:
    """The pool ranked by validation score as before, candidates with equal scores ordered by the judge's score (the
    rated before the unrated): a tie-breaker only, so the judge never outranks a measured difference."""

    def order(row: dict[str, Any]) -> tuple[float, float]:
        judged = row.get(JUDGE_MEASURE)
        return (-score_key(row["val_accuracy"], direction), -(judged if judged is not None else -math.inf))

    return sorted(pool, key=order)  # stable: rows equal in both keep the archive's order


def _by_front(pool: list[dict[str, Any]], goals: Goals) -> list[dict[str, Any]]:
    """The pool ranked by front and crowding (NSGA-II), each row with its `standing`: the front it is on (1 is the
    Pareto front) and that front's size, which the prompt shows next to the trade-off to improve."""
    placed = goals.placed(pool)
    sizes = Counter(front for _, (front, _) in placed)
    return [{**pool[i], "standing": {"front": front + 1, "of": sizes[front]}} for i, (front, _) in placed]


def from_seeds(kind: str, n: int) -> FewShot:
    """The best-of-N control's context: up to `n` of the shipped seed architectures for the task's kind, no parent,
    nothing from the archive, so every proposal is drawn independently from the same prompt."""
    folder = resources.files("agentarch.seeds") / kind
    files = (
        sorted((f for f in folder.iterdir() if f.name.endswith(".py")), key=lambda f: f.name) if folder.is_dir() else []
    )
    examples = [
        {
            "id": f"seed {kind}/{f.name}",
            "proposer": "seed",
            "val_accuracy": None,
            "params": None,
            "analysis": None,
            "code": f.read_text(),
        }
        for f in files[:n]
    ]
    return FewShot(parent=None, examples=examples, strategy="seeds")


def _examples(pool: list[dict[str, Any]], parent: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The parent, the best overall, the baselines' best, elites of size classes not yet shown, the rest by rank."""
    chosen = [parent]

    def add(row: dict[str, Any]) -> None:
        if len(chosen) < n and all(row["id"] != c["id"] for c in chosen):
            chosen.append(row)

    add(pool[0])
    for row in pool:
        if row["proposer"] in ALGOS:
            add(row)
            break
    for elite in _elites(pool):
        if all(_niche(elite) != _niche(c) for c in chosen):
            add(elite)
    for row in pool:  # fewer size classes than examples: fill up by rank
        add(row)
    return chosen


def _weights(pool: list[dict[str, Any]], children: Counter[int], direction: Direction) -> list[float]:
    """ShinkaEvolve weights: sigmoid(lambda * s * (val - median) / scale) / (1 + children), s = +1 where higher is
    better and -1 where lower is, so a score better than the median weighs more either way.

    `scale` is the standard deviation of the pool's validation scores, so the pressure does not
    depend on how close the scores are (a task where everyone is at 98-99% still discriminates).
    """
    vals = [row["val_accuracy"] for row in pool]
    median = statistics.median(vals)
    scale = statistics.pstdev(vals) or 1.0
    pressure = WEIGHT_LAMBDA * sign(direction) / scale
    return [_sigmoid(pressure * (row["val_accuracy"] - median)) / (1 + children[row["id"]]) for row in pool]


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(x / 2.0))  # the logistic function, without overflow for large |x|


def _niche(row: dict[str, Any]) -> int | None:
    """The size class of a candidate: its half-decade of parameters (None when its size is unknown)."""
    params = row.get("params")
    if not params or params <= 0:
        return None
    return math.floor(math.log10(params) / NICHE_DECADES)


def _elites(pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best candidate of each occupied size class, best first (`pool` is ranked, so the first seen wins)."""
    elites: dict[int | None, dict[str, Any]] = {}
    for row in pool:
        elites.setdefault(_niche(row), row)
    return list(elites.values())


def limits_shown(task: Task, goals: Goals | None, parent: Mapping[str, Any] | None) -> dict[str, Any]:
    """The limits a proposal keeps to, as propose.j2 and edit.j2 state them, with the parent's own figures.

    `lines`: the task's max_params (the sandbox refuses a network over it), then each of the run's constraints
    (`--constraint`), in words. `parent`: the parent's figure for each measure with an upper bound (parameters
    always), with its share of the tightest bound, e.g. "13,508 parameters (68% of the 20,000 allowed)"; empty
    without a parent or its figures. `columns`: the archive columns a constraint names besides the score and the
    parameters (FLOPs, latency, memory), shown with each example unless several objectives show them already."""
    constraints = goals.constraints if goals is not None else ()
    lines = [f"at most {task.max_params:,} parameters (the task's max_params)"]
    lines += [
        f"{task.metric if c.measure == 'val' else c.measure} {c.op} {_number(c.bound)} (a constraint of this run)"
        for c in constraints
    ]
    measures = ["params", *dict.fromkeys(c.measure for c in constraints if c.measure not in ("val", "params"))]
    figures = []
    for measure in measures:
        value = None if parent is None else parent.get(MEASURES[measure])
        if value is None:
            continue
        bounds = [c.bound for c in constraints if c.measure == measure and c.op in ("<=", "<")]
        bound = min([*bounds, *([task.max_params] if measure == "params" else [])], default=None)
        said = f"{_number(value)} {_UNITS[measure]}"
        if bound:
            said += f" ({value / bound:.0%} of the {_number(bound)} allowed)"
        figures.append(said)
    shown = {o.measure for o in goals.objectives} if goals is not None and goals.multi else set()
    columns = [MEASURES[m] for m in measures if m != "params" and m not in shown]
    return {"lines": lines, "parent": figures, "columns": columns}


_UNITS = {"params": "parameters", "flops": "FLOPs", "latency_ms": "ms latency", "peak_memory_mb": "MB peak memory"}


def _number(value: float) -> str:
    """A count with thousands separators (1,234,567), a measured value as it is (3.5)."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"
