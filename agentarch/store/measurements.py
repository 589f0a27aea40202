"""What a candidate is measured by (its scores, size, latency, memory, training time) as SQL over the archive, and
the reads that plot or learn from those measures: a Pareto view's points, a run's (params, score) pairs, a
candidate's loss curves, and the predictor's training rows.

`MEASURES` is the one list of them, by the key a URL names: the leaderboard sorts and filters by it
(`agentarch.store.browse`), the charts plot it, and a run's objectives name its keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentarch.store.archive import Archive
from agentarch.store.ranking import Direction
from agentarch.store.scoring import _BEST_VAL, SCORING_EVALUATION, _scored


@dataclass(frozen=True)
class Measure:
    """A column a person can sort or filter a leaderboard by, and plot: its label and its SQL over candidate `c`.

    `log`: spans decades (sizes, FLOPs, time), so a chart draws it on a log axis. `direction`: which way is
    better when nothing else says (None: the task's metric decides, or no way is better).
    """

    key: str
    label: str
    sql: str
    log: bool = False
    direction: Direction | None = "min"


MEASURES: dict[str, Measure] = {
    m.key: m
    for m in (
        Measure("val", "validation score", _BEST_VAL, direction=None),
        Measure("test", "test score", _scored("test_accuracy"), direction=None),
        Measure("params", "parameters", f"COALESCE(c.params, {_scored('params')})", log=True),
        Measure("flops", "FLOPs", f"COALESCE(c.flops, {_scored('flops')})", log=True),
        Measure("latency_ms", "latency (ms per batch)", _scored("latency_ms"), log=True),
        Measure("peak_memory_mb", "peak memory (MB)", _scored("peak_memory_mb"), log=True),
        Measure("train_seconds", "training seconds", _scored("train_seconds"), log=True),
        Measure("fidelity", "fidelity (epochs)", _scored("fidelity")),
        Measure(
            "judge",
            "judge's score (1-10)",
            "(SELECT j.score FROM judgments j WHERE j.candidate_id = c.id AND j.status = 'judged')",
            direction="max",
        ),
    )
}
"""What the leaderboard sorts and filters by and the charts plot, by the key a URL names (`sort=params`)."""

PLOT_MEASURES = ("val", "params", "flops", "latency_ms", "peak_memory_mb", "judge")
"""The measures a Pareto view offers as axes: the ones a run's objectives may name (`agentarch.search.objectives`)."""


def measure_points(
    archive: Archive, task: str, measures: Sequence[str], run: str | None = None
) -> list[dict[str, Any]]:
    """Each trained candidate of a task (or of one run of it) with the `MEASURES` named (keyed as the measures'
    archive columns, `agentarch.search.objectives.MEASURES`: val_accuracy, params, ...), its id, name and run: what the
    Pareto views plot. One query, reading only the measures asked for."""
    only_run = "AND c.run_id = ?" if run else ""
    sql = (
        f"SELECT c.id, c.name, c.run_id, {_picked(measures)} FROM candidates c "
        f"WHERE c.task = ? {only_run} AND c.status = 'trained' ORDER BY c.id"
    )
    return list(archive.db.query(sql, [task, run] if run else [task]))


def _picked(measures: Sequence[str]) -> str:
    """The SELECT list of these `MEASURES`, each named as its archive column (`agentarch.search.objectives.MEASURES`)."""
    columns = {"val": "val_accuracy", "test": "test_accuracy"}
    return ", ".join(f"{MEASURES[m].sql} AS {columns.get(m, m)}" for m in dict.fromkeys(measures))


def pareto_points(archive: Archive, run_id: str) -> list[tuple[float, float]]:
    """(params, validation score) of each trained candidate of a run, scored like every listing row."""
    rows = archive.listing("WHERE c.run_id = ? AND e.val_accuracy IS NOT NULL", [run_id])
    return [(float(row["params"]), float(row["val_accuracy"])) for row in rows if row["params"] is not None]


def loss_curves(archive: Archive, candidate_id: int) -> list[tuple[str, list[dict[str, float]]]]:
    """(label, curve) of each evaluation of a candidate: one per fidelity and seed."""
    return [
        (f"evaluation {e['id']} ({e['fidelity']} epochs, seed {e['seed']}{_stage(e)})", e["curve"] or [])
        for e in archive.evaluations(candidate_id)
    ]


def _stage(evaluation: dict[str, Any]) -> str:
    return ", verify" if evaluation.get("stage") == "verify" else ""


def trained_measurements(archive: Archive, task: str) -> list[dict[str, Any]]:
    """Each trained candidate of a task, oldest first, with its scoring evaluation's validation score, what that
    evaluation's smoke run measured (params, FLOPs, latency_ms, proxies as JSON text), its search-space
    architecture and its graph's sha256 (graph scoring; the file is read through `Graphs`): what
    agentarch.search.predictor learns from. One query."""
    sql = (
        "SELECT c.id, c.space, c.arch, COALESCE(c.params, e.params) AS params, COALESCE(c.flops, e.flops) AS flops, "
        "e.latency_ms, e.proxies, e.val_accuracy, e.graph_sha256 FROM candidates c "
        f"JOIN evaluations e ON e.id = ({SCORING_EVALUATION.format(column='id')}) "
        "WHERE c.task = ? AND c.status = 'trained' AND e.val_accuracy IS NOT NULL ORDER BY c.id"
    )
    return list(archive.db.query(sql, [task]))
