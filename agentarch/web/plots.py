"""The archive's plots as PNG bytes: a candidate's loss curves, a run's best-so-far and its Pareto front.

Shared by the web pages (served as images) and the static report (written as files), so the two
always draw the same thing. These functions draw what `agentarch.queries` reads from the archive. The scores
are the task's metric, so "best" follows its direction (`agentarch.ranking`): a best-so-far line of an MSE
goes down, and its Pareto front keeps the lowest MSE for the size.

Figures are built with matplotlib's object API on the Agg canvas, never pyplot: pyplot keeps global
state that is not safe across the web server's worker threads, and Agg needs no display.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from agentarch.queries import RunHistory
from agentarch.ranking import Direction, better, key, running_best


def mean_of_runs(runs: list[list[float | None]]) -> list[float | None]:
    """Pointwise mean of best-so-far lines, each shorter one held at its last value; None where no run scored yet.

    A run that stopped early keeps its final best, so the mean does not jump when a weak run ends.
    """
    means: list[float | None] = []
    for i in range(max(len(r) for r in runs)):
        scored = [r[min(i, len(r) - 1)] for r in runs]
        scored = [v for v in scored if v is not None]
        means.append(sum(scored) / len(scored) if scored else None)
    return means


def best_so_far_lines(history: RunHistory) -> list[tuple[str, list[float | None]]]:
    """The run's best-so-far validation score by evaluation, then one line per baseline proposer on its task:
    the mean over that proposer's runs."""
    lines = [(f"this run ({history.proposer})", running_best(history.values, history.direction))]
    for proposer, runs in history.baselines.items():
        label = f"{proposer} ({len(runs)} run{'s' if len(runs) > 1 else ''}, mean)"
        lines.append((label, mean_of_runs([running_best(values, history.direction) for values in runs])))
    return lines


def pareto_front(points: Sequence[tuple[float, float]], direction: Direction) -> list[tuple[float, float]]:
    """The (params, score) points that no other point beats with as few params and a better score, by params."""
    front: list[tuple[float, float]] = []
    for params, score in sorted(points, key=lambda p: (p[0], -key(p[1], direction))):
        if not front or better(score, front[-1][1], direction):
            front.append((params, score))
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
    """Training loss against step, one line per (label, curve); a curve is the trainer's [{"step", "loss", ...}]."""
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


def draw_best_so_far(history: RunHistory) -> bytes:
    """Best validation score against evaluation index (1-based): the run's step line, and its baselines'. For a
    lower-is-better metric the lines go down and the legend moves up, out of their way."""
    figure, axes = _figure()
    drawn = False
    for i, (label, values) in enumerate(best_so_far_lines(history)):
        points = [(x, y) for x, y in enumerate(values, start=1) if y is not None]
        if points:
            axes.step(
                *zip(*points),
                where="post",
                label=label,
                linewidth=2.2 if i == 0 else 1.2,
                alpha=1.0 if i == 0 else 0.8,
                marker="o" if len(points) == 1 else None,
            )  # one point is no line
            drawn = True
    if drawn:
        axes.set_xlabel("evaluation")
        axes.set_ylabel(f"best validation {history.metric}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc=_legend_place(history.direction))
    else:
        _empty(axes, "nothing trained yet")
    return _png(figure)


def _legend_place(direction: Direction) -> str:
    """A fixed corner away from where the best scores gather ("best" would scan every point)."""
    return "lower right" if direction == "max" else "upper right"


def draw_pareto(points: Sequence[tuple[float, float]], metric: str, direction: Direction) -> bytes:
    """Validation score against parameter count (log scale), the Pareto front highlighted."""
    figure, axes = _figure()
    points = [(p, a) for p, a in points if p and p > 0 and a is not None]
    if not points:
        _empty(axes, "no trained candidate with a parameter count")
        return _png(figure)
    front = pareto_front(points, direction)
    # markers on a plain line, not scatter(): somewhat cheaper for thousands of points, and they all look alike
    axes.plot(*zip(*points), linestyle="none", marker="o", markersize=3, color="#9aa5b1", label="trained candidates")
    axes.plot(*zip(*front), color="#c0392b", marker="o", markersize=5, drawstyle="steps-post", label="Pareto front")
    axes.set_xscale("log")
    axes.xaxis.set_minor_locator(NullLocator())  # a log axis's minor ticks cost a third of the drawing time
    axes.set_xlabel("parameters")
    axes.set_ylabel(f"validation {metric}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc=_legend_place(direction))
    return _png(figure)
