"""Runs as the runs pages and the report show them: how far each got (candidates by status, best validation score,
LLM calls, tokens and spend), which are still running, and the history a run's best-so-far plot is drawn from,
beside the other baseline runs on its task.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentarch.store.archive import Archive
from agentarch.store.browse import Filters, leaderboard
from agentarch.store.handle import _IDS, ArchiveError, _count
from agentarch.store.ranking import Direction, sql_sign
from agentarch.store.scoring import _BEST_VAL, DEFAULT_METRIC, SCORED_KIND, TASK_JOIN, TRUSTED, ScoringMix


def count_runs(archive: Archive) -> int:
    return _count(archive, "SELECT COUNT(*) FROM runs")


def run_ids(archive: Archive, task: str | None) -> list[str]:
    """The ids of a task's runs, newest first."""
    return [row[0] for row in archive.db.execute("SELECT id FROM runs WHERE task = ? ORDER BY started_at DESC", [task])]


def runs_with_progress(archive: Archive, limit: int | None, offset: int = 0) -> list[dict[str, Any]]:
    """Runs, newest first, each with its progress: proposed and trained counts, best validation score (by its
    task's direction; `metric` names it) and how it was scored (`best_scoring`, `mix`: `agentarch.store.scoring`),
    and LLM spend (None when it made no paid call)."""
    runs = archive.runs(limit, offset)
    progress = _progress(archive, [run["id"] for run in runs])
    for run in runs:
        found = progress[run["id"]]
        run.update(
            proposed=sum(found["statuses"].values()),
            trained=found["statuses"].get("trained", 0),
            best_val_accuracy=found["best_val_accuracy"],
            best_scoring=found["best_scoring"],
            mix=found["mix"],
            metric=found["metric"],
            direction=found["direction"],
            cost_usd=found["cost_usd"],
        )
    return runs


def run_overview(archive: Archive, run_id: str) -> dict[str, Any]:
    """A run's row with its progress: candidates by status, LLM calls, tokens and spend, best validation score and
    how it was scored (`best_scoring`; `mix`, the run's unverified scores; `best_verified`, the best verified listing
    row when the best is unverified and the run has others), and its task's `metric` and `direction`."""
    run = archive.find_run(run_id)
    if run is None:
        raise ArchiveError(f"no run {run_id!r}; `agentarch archive runs` lists them")
    found = _progress(archive, [run_id])[run_id]
    return {
        **run,
        "config": run["config"] or {},
        "summary": run["summary"] or {},
        **found,
        "proposed": sum(found["statuses"].values()),
        "trained": found["statuses"].get("trained", 0),
        "cost_usd": found["cost_usd"] or 0.0,
        "best_verified": _best_verified(archive, run_id)
        if found["best_scoring"] == TRUSTED and found["mix"].mixed
        else None,
    }


def _best_verified(archive: Archive, run_id: str) -> dict[str, Any] | None:
    """The run's best candidate by validation among those not unverified (None when none has a score): what a run
    whose best is unverified names beside it, so the pick is never taken for a verified one."""
    found = leaderboard(archive, Filters(run=run_id, verified=True), limit=1)
    return found[0] if found and found[0]["val_accuracy"] is not None else None


def _progress(archive: Archive, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per run: candidates by status, best validation score and how it and the others were scored, its task's metric
    and direction, and LLM calls, tokens and spend; four queries."""
    ids = [json.dumps(run_ids)]
    progress: dict[str, dict[str, Any]] = {
        run_id: {
            "statuses": {},
            "best_val_accuracy": None,
            "best_scoring": None,
            "mix": ScoringMix(0, 0),
            "metric": DEFAULT_METRIC,
            "direction": "max",
            "llm_calls": 0,
            "cost_usd": None,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
        for run_id in run_ids
    }
    for run_id, status, n in archive.db.execute(
        f"SELECT run_id, status, COUNT(*) FROM candidates WHERE run_id IN ({_IDS}) GROUP BY run_id, status", ids
    ):
        progress[run_id]["statuses"][status] = n
    for run_id, metric, direction in archive.db.execute(
        f"SELECT r.id, t.metric, t.direction FROM runs r JOIN tasks t ON t.name = r.task WHERE r.id IN ({_IDS})", ids
    ):
        progress[run_id].update(metric=metric, direction=direction)
    # SQLite's bare columns with MAX(): `best` and `kind` come from the row whose signed key is largest, the run's best
    for run_id, best, kind, _, unverified, scored in archive.db.execute(
        f"SELECT run_id, best, kind, MAX(best * sign), SUM(kind = '{TRUSTED}'), COUNT(kind) FROM (SELECT c.run_id, "
        f"({_BEST_VAL}) AS best, ({SCORED_KIND}) AS kind, {sql_sign('task_row.direction')} AS sign "
        f"FROM candidates c {TASK_JOIN} WHERE c.run_id IN ({_IDS})) WHERE best IS NOT NULL GROUP BY run_id",
        ids,
    ):
        progress[run_id].update(best_val_accuracy=best, best_scoring=kind, mix=ScoringMix(unverified, scored))
    for run_id, calls, cost, prompt_tokens, completion_tokens in archive.db.execute(
        "SELECT run_id, COUNT(*), SUM(cost_usd), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) "
        f"FROM llm_calls WHERE run_id IN ({_IDS}) GROUP BY run_id",
        ids,
    ):
        progress[run_id].update(
            llm_calls=calls, cost_usd=cost, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    return progress


def run_statuses(archive: Archive, run_ids: Iterable[str | None]) -> dict[str, str]:
    """run id -> its status (running, finished, interrupted, failed) for the runs that exist among `run_ids`."""
    wanted = json.dumps([r for r in dict.fromkeys(run_ids) if r])
    return dict(archive.db.execute(f"SELECT id, status FROM runs WHERE id IN ({_IDS})", [wanted]).fetchall())


@dataclass(frozen=True)
class RunHistory:
    """Validation score at each evaluation of a run, in the order they were recorded, with the fidelity (epochs) and
    candidate of each, and the same for each other baseline run on its task, by proposer and fidelity. An evaluation
    that did not train is None: it spent budget too, and a multi-seed baseline run counts its seeds one after
    another. `metric` names the score and `direction` says which way a best-so-far line moves. Scores at different
    fidelities are not comparable (a 2-epoch score is not a 30-epoch one), so the plots draw a line per fidelity."""

    proposer: str
    values: list[float | None]
    baselines: dict[tuple[str, int | None], list[list[float | None]]]
    metric: str = DEFAULT_METRIC
    direction: Direction = "max"
    fidelities: list[int | None] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)


def run_history(archive: Archive, run: dict[str, Any], baselines: Sequence[str]) -> RunHistory:
    """What a run's best-so-far plot is drawn from (`run` needs its id, task and proposer): its own evaluations,
    and the other runs on its task whose proposer is one of `baselines` (the conventional algorithms' names, in
    the order the plot lists them)."""
    scored = "CASE WHEN e.status = 'trained' THEN e.val_accuracy END"
    own = archive.db.execute(
        f"SELECT {scored}, e.fidelity, e.candidate_id FROM evaluations e JOIN candidates c ON c.id = e.candidate_id "
        "WHERE c.run_id = ? ORDER BY e.id",
        [run["id"]],
    ).fetchall()
    per_run: dict[tuple[str, str], list[tuple[int | None, float | None]]] = defaultdict(list)
    for proposer, fidelity, other_run, value in archive.db.execute(
        f"SELECT c.proposer, e.fidelity, c.run_id, {scored} FROM candidates c JOIN evaluations e "
        f"ON e.candidate_id = c.id WHERE c.task = ? AND c.proposer IN ({_IDS}) AND c.run_id IS NOT NULL "
        "AND c.run_id != ? ORDER BY e.id",
        [run["task"], json.dumps(list(baselines)), run["id"]],
    ):
        per_run[(proposer, other_run)].append((fidelity, value))
    # a baseline run trains at one fidelity (its epochs); its failed evaluations, which may not say, count with it
    curves: dict[tuple[str, int | None], list[list[float | None]]] = defaultdict(list)
    for (proposer, _), evaluations in per_run.items():
        fidelity = max((f for f, v in evaluations if v is not None and f is not None), default=None)
        curves[(proposer, fidelity)].append([v for _, v in evaluations])
    ordered = sorted(curves, key=lambda k: (list(baselines).index(k[0]), k[1] or 0))
    task = archive.task_info(run["task"])
    return RunHistory(
        run["proposer"],
        [row[0] for row in own],
        {key: curves[key] for key in ordered},
        metric=task["metric"],
        direction=task["direction"],
        fidelities=[row[1] for row in own],
        candidates=[row[2] for row in own],
    )
