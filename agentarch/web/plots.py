"""The archive's plots as PNG bytes: a candidate's loss curves, a run's best-so-far and its Pareto front.

Shared by the web pages (served as images) and the static report (written as files), so the two
always draw the same thing. Each `*_png(db, ...)` function reads what it needs from the archive in
a couple of queries and hands plain lists to a drawing function.

Figures are built with matplotlib's object API on the Agg canvas, never pyplot: pyplot keeps global
state that is not safe across the web server's worker threads, and Agg needs no display.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from agentarch.archive import Archive

BASELINE_PROPOSERS = ("random", "rea", "tpe")


def running_best(values: Sequence[float | None]) -> list[float | None]:
    """Best value seen so far at each index; None until the first value (an evaluation that failed counts, scores nothing)."""
    best: float | None = None
    out: list[float | None] = []
    for value in values:
        if value is not None and (best is None or value > best):
            best = value
        out.append(best)
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (params, accuracy) points no other point beats on both (fewer or equal params and higher accuracy), by params."""
    front: list[tuple[float, float]] = []
    for params, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((params, acc))
    return front


# -- drawing ------------------------------------------------------------------------------------


def _figure() -> tuple[Figure, Any]:
    """A blank figure with fixed margins: the automatic layout engines cost as much as drawing itself."""
    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    figure.subplots_adjust(left=0.11, right=0.97, top=0.96, bottom=0.14)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _empty(axes: Any, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="#666")
    axes.set_xticks([])
    axes.set_yticks([])


def draw_loss_curves(series: Sequence[tuple[str, Sequence[dict[str, float]]]]) -> bytes:
    """Training loss against step, one line per (label, curve); a curve is the trainer's list of {"step", "loss", ...}."""
    figure, axes = _figure()
    drawn = False
    for label, curve in series:
        points = [(p["step"], p["loss"]) for p in curve if p.get("loss") is not None and math.isfinite(p["loss"])]
        if points:
            axes.plot(*zip(*points), marker="." if len(points) < 30 else None, label=label)
            drawn = True
    if drawn:
        axes.set_xlabel("step")
        axes.set_ylabel("training loss")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc="upper right")
    else:
        _empty(axes, "no loss curve recorded")
    return _png(figure)


def draw_best_so_far(lines: Sequence[tuple[str, Sequence[float | None]]]) -> bytes:
    """Best validation accuracy against evaluation index (1-based), one step line per (label, best-so-far values)."""
    figure, axes = _figure()
    drawn = False
    for i, (label, values) in enumerate(lines):
        points = [(x, y) for x, y in enumerate(values, start=1) if y is not None]
        if points:
            axes.step(*zip(*points), where="post", label=label, linewidth=2.2 if i == 0 else 1.2,
                      alpha=1.0 if i == 0 else 0.8)
            drawn = True
    if drawn:
        axes.set_xlabel("evaluation")
        axes.set_ylabel("best validation accuracy")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc="lower right")
    else:
        _empty(axes, "nothing trained yet")
    return _png(figure)


def draw_pareto(points: Sequence[tuple[float, float]]) -> bytes:
    """Validation accuracy against parameter count (log scale), the Pareto front highlighted."""
    figure, axes = _figure()
    points = [(p, a) for p, a in points if p and p > 0 and a is not None]
    if not points:
        _empty(axes, "no trained candidate with a parameter count")
        return _png(figure)
    front = pareto_front(points)
    # markers on a plain line, not scatter(): somewhat cheaper for thousands of points, and they all look alike
    axes.plot(*zip(*points), linestyle="none", marker="o", markersize=3, color="#9aa5b1", label="trained candidates")
    axes.plot(*zip(*front), color="#c0392b", marker="o", markersize=5, drawstyle="steps-post", label="Pareto front")
    axes.set_xscale("log")
    axes.xaxis.set_minor_locator(NullLocator())  # a log axis's minor ticks cost a third of the drawing time
    axes.set_xlabel("parameters")
    axes.set_ylabel("validation accuracy")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="lower right")  # a fixed place: "best" scans every point
    return _png(figure)


# -- archive to plot ----------------------------------------------------------------------------


def candidate_curve_png(db: Archive, candidate_id: int) -> bytes:
    """The loss curves of every evaluation of one candidate (one per fidelity and seed)."""
    series = [(f"evaluation {e['id']} ({e['fidelity']} epochs, seed {e['seed']})", e["curve"] or [])
              for e in db.evaluations(candidate_id)]
    return draw_loss_curves(series)


def run_best_so_far_png(db: Archive, run_id: str) -> bytes:
    """This run's best-so-far line, and one per baseline proposer on the same task from other runs.

    A baseline's line is the mean over its runs of each run's best-so-far, at each index that at
    least one run reached; the label says how many runs it averages. Evaluations are counted in the
    order they were recorded, failed ones included (they spent the budget too).
    """
    run = db.db["runs"].get(run_id)
    this = [row[0] for row in db.db.execute(
        "SELECT CASE WHEN e.status = 'trained' THEN e.val_accuracy END FROM evaluations e "
        "JOIN candidates c ON c.id = e.candidate_id WHERE c.run_id = ? ORDER BY e.id", [run_id])]
    lines: list[tuple[str, Sequence[float | None]]] = [(f"this run ({run['proposer']})", running_best(this))]
    per_run: dict[str, dict[str, list[float | None]]] = defaultdict(lambda: defaultdict(list))
    marks = ", ".join("?" for _ in BASELINE_PROPOSERS)
    for proposer, other_run, val in db.db.execute(
            f"SELECT c.proposer, c.run_id, CASE WHEN e.status = 'trained' THEN e.val_accuracy END "
            f"FROM candidates c JOIN evaluations e ON e.candidate_id = c.id "
            f"WHERE c.task = ? AND c.proposer IN ({marks}) AND c.run_id IS NOT NULL AND c.run_id != ? ORDER BY e.id",
            [run["task"], *BASELINE_PROPOSERS, run_id]):
        per_run[proposer][other_run].append(val)
    for proposer in BASELINE_PROPOSERS:
        runs = [running_best(values) for values in per_run.get(proposer, {}).values()]
        if runs:
            lines.append((f"{proposer} ({len(runs)} run{'s' if len(runs) > 1 else ''}, mean)", _mean_by_index(runs)))
    return draw_best_so_far(lines)


def _mean_by_index(runs: list[list[float | None]]) -> list[float | None]:
    means: list[float | None] = []
    for i in range(max(len(r) for r in runs)):
        reached = [r[i] for r in runs if i < len(r) and r[i] is not None]
        means.append(sum(reached) / len(reached) if reached else None)
    return means


def run_pareto_points(db: Archive, run_id: str) -> list[tuple[float, float]]:
    """(params, best validation accuracy) of each trained candidate of a run."""
    rows = db.db.execute(
        "SELECT COALESCE(c.params, MAX(e.params)), MAX(e.val_accuracy) FROM candidates c "
        "JOIN evaluations e ON e.candidate_id = c.id AND e.status = 'trained' "
        "WHERE c.run_id = ? GROUP BY c.id", [run_id]).fetchall()
    return [(float(p), float(a)) for p, a in rows if p is not None and a is not None]


def run_pareto_png(db: Archive, run_id: str) -> bytes:
    return draw_pareto(run_pareto_points(db, run_id))
