"""What the browser's charts draw, as JSON: best-so-far lines by fidelity, Pareto fronts, loss curves.

The pages draw their charts in the browser (static/charts.js), so a person can hover a point for its candidate
and click through to it; the server sends each chart as one object of plain lists:

    {"x": {"label", "log"}, "y": {"label", "log"}, "empty": "shown when no series has a point",
     "series": [{"label", "style": "step" | "line" | "dots" | "front", "points": [[x, y, id, name], ...]}]}

where `id` (a candidate id, or null) is what a click opens. Which score is better comes from the task's direction
(`agentarch.store.ranking`) and a run's objectives and constraints (`agentarch.search.objectives`), as everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentarch.search import pareto
from agentarch.search.objectives import MEASURES as COLUMNS
from agentarch.search.objectives import Goals
from agentarch.store.measurements import MEASURES
from agentarch.store.ranking import Direction, better
from agentarch.store.run_progress import RunHistory
from agentarch.web.plots import best_so_far_lines, own_lines

Chart = dict[str, Any]


def axis(label: str, log: bool = False) -> dict[str, Any]:
    return {"label": label, "log": log}


def _steps(values: Sequence[float | None], ids: Sequence[int | None], direction: Direction) -> list[list[Any]]:
    """A best-so-far line as its corners: a point wherever the best changes, and the last evaluation, each with the
    candidate that holds the best there (None for a baseline's mean)."""
    points: list[list[Any]] = []
    best: float | None = None
    holder: int | None = None
    for x, (value, cid) in enumerate(zip(values, ids), start=1):
        if better(value, best, direction):
            best, holder = value, cid
            points.append([x, best, holder])
    if points and points[-1][0] != len(values):
        points.append([len(values), best, holder])
    return points


def best_so_far(history: RunHistory) -> Chart:
    """The run's best validation score by evaluation, one line per fidelity it trained at, and its task's baselines
    (means over their runs, per fidelity): the lines of `plots.best_so_far_lines`, with the candidates that hold the
    run's bests."""
    ids = history.candidates or [None] * len(history.values)
    series = [
        {"label": label, "style": "step", "points": _steps(values, ids, history.direction)}
        for label, values in own_lines(history)
    ]
    own = len(series)
    for label, line in best_so_far_lines(history)[own:]:
        points = [[x, y, None] for x, y in enumerate(line, start=1) if y is not None]
        series.append({"label": label, "style": "line", "points": points})
    return {
        "x": axis("evaluation"),
        "y": axis(f"best validation {history.metric}"),
        "series": series,
        "empty": "nothing trained yet",
    }


def measure_label(measure: str, metric: str) -> str:
    return f"validation {metric}" if measure == "val" else MEASURES[measure].label


def direction_of(measure: str, goals: Goals, task_direction: Direction) -> Direction:
    """Which way a plotted measure is better: as the run's objectives say, else the task's for its score and
    smaller for every cost (parameters, FLOPs, latency, memory)."""
    for objective in goals.objectives:
        if objective.measure == measure:
            return objective.direction
    if measure == "val":
        return task_direction
    return MEASURES[measure].direction or "min"


def front_chart(
    rows: Sequence[Mapping[str, Any]],
    x: str,
    y: str,
    metric: str,
    task_direction: Direction,
    goals: Goals,
) -> Chart:
    """Every candidate's (x, y) as a dot, the ones that break the run's constraints apart, and the Pareto front of
    the feasible ones over the two measures (each in its direction, `direction_of`) as a line through its points."""
    x_col, y_col = COLUMNS[x], COLUMNS[y]
    signs = [1 if direction_of(m, goals, task_direction) == "max" else -1 for m in (x, y)]
    plotted, infeasible = [], []
    for row in rows:
        if row.get(x_col) is None or row.get(y_col) is None:
            continue
        point = [row[x_col], row[y_col], row["id"], row.get("name") or ""]
        (plotted if goals.feasible(row) else infeasible).append(point)
    keys = [(signs[0] * p[0], signs[1] * p[1]) for p in plotted]
    front = sorted((plotted[i] for i in pareto.front(keys)), key=lambda p: (p[0], p[1]))
    series = [{"label": f"trained candidates ({len(plotted)})", "style": "dots", "points": plotted}]
    if infeasible:
        series.append({"label": f"break a constraint ({len(infeasible)})", "style": "dots", "points": infeasible})
    series.append({"label": f"Pareto front ({len(front)})", "style": "front", "points": front})
    return {
        "x": axis(measure_label(x, metric), MEASURES[x].log),
        "y": axis(measure_label(y, metric), MEASURES[y].log),
        "series": series,
        "empty": "no trained candidate has both measures",
    }


def loss_curves(series: Sequence[tuple[str, int, Sequence[Mapping[str, Any]]]]) -> Chart:
    """Training loss against step, one line per (label, candidate id, curve), for one candidate or several overlaid."""
    lines = []
    for label, candidate_id, curve in series:
        points = [[p["step"], p["loss"], candidate_id] for p in curve if _finite(p.get("loss"))]
        if points:
            lines.append({"label": label, "style": "line", "points": points})
    return {"x": axis("step"), "y": axis("training loss"), "series": lines, "empty": "no loss curve recorded"}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")
