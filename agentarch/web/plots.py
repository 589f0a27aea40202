"""The archive's plots as PNG bytes: a candidate's loss curves, a run's best-so-far and its Pareto front.

Shared by the web pages (served as images) and the static report (written as files), so the two
always draw the same thing. These functions draw what `agentarch.store.measurements` and
`agentarch.store.run_progress` read from the archive. The scores are the task's metric, so "best" follows its direction (`agentarch.store.ranking`): a best-so-far line of an MSE
goes down, and its Pareto front keeps the lowest MSE for the size.

Figures are built with matplotlib's object API on the Agg canvas, never pyplot: pyplot keeps global
state that is not safe across the web server's worker threads, and Agg needs no display. The margins are
fitted to the tick labels when the figure is saved (an MSE's "12,345.6" is wider than an accuracy's "0.9"), and
a log axis labels the 2s and 5s (or every digit) when the data span less than a few decades.

The web pages draw the same data in the browser (agentarch/web/charts.py, static/charts.js), where a point
can be hovered and clicked; these PNGs are for the static report and a page's "PNG" link.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from agentarch.store.ranking import Direction, better, key, running_best
from agentarch.store.run_progress import RunHistory


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


def several_fidelities(history: RunHistory) -> bool:
    """Whether the run and its baselines trained at more than one fidelity: then each line names its epochs."""
    return len({*scored_fidelities(history), *(fidelity for _, fidelity in history.baselines)}) > 1


def scored_fidelities(history: RunHistory) -> set[int | None]:
    """The fidelities the run has scores at (a failed evaluation may not say its fidelity, and scored nothing)."""
    return {f for v, f in zip(history.values, history.fidelities) if v is not None}


def own_lines(history: RunHistory) -> Iterator[tuple[str, list[float | None]]]:
    """The run's own validation scores as one list per fidelity (None at the other fidelities' evaluations), each
    with its label; one list of them all when the run trained at one fidelity."""
    label = f"this run ({history.proposer})"
    if not several_fidelities(history) or not history.fidelities:
        yield label, history.values
        return
    for fidelity in sorted(scored_fidelities(history), key=lambda f: f or 0):
        values = [v if f == fidelity else None for v, f in zip(history.values, history.fidelities)]
        yield f"{label}, {fidelity} epochs", values


def best_so_far_lines(history: RunHistory) -> list[tuple[str, list[float | None]]]:
    """The run's best-so-far validation score by evaluation (one line per fidelity, when it trained at several),
    then one line per baseline proposer and fidelity on its task: the mean over that proposer's runs."""
    lines = [(label, running_best(values, history.direction)) for label, values in own_lines(history)]
    epochs = several_fidelities(history)
    for (proposer, fidelity), runs in history.baselines.items():
        label = f"{proposer} ({len(runs)} run{'s' if len(runs) > 1 else ''}, mean)"
        if epochs:
            label += f", {fidelity} epochs"
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
    """A blank figure; its margins are fitted to the labels when saved (`fit_margins`)."""
    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def fit_margins(figure: Figure) -> None:
    """Margins that fit the y tick labels: as wide as the longest label (an MSE's "12000" is wider than an
    accuracy's "0.9"), read from the axis's own locator and formatter without drawing; matplotlib's tight layout
    measures by drawing, which costs half a plot again."""
    axes = figure.axes[0]
    labels = axes.yaxis.get_major_formatter().format_ticks(axes.yaxis.get_major_locator()())
    chars = max((len(label) for label in labels), default=1)
    left_inches = 0.45 + 0.085 * chars  # the rotated axis label and the ticks, then the digits at 10 pt
    figure.subplots_adjust(left=left_inches / figure.get_figwidth(), right=0.97, top=0.96, bottom=0.14)


def _png(figure: Figure) -> bytes:
    """The figure as PNG, its margins fitted to its labels (`fit_margins`): fixed margins clip long tick labels."""
    fit_margins(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _empty(axes: Any, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="#666")
    axes.set_xticks([])
    axes.set_yticks([])


def compact(value: float) -> str:
    """A tick label for a count: 900, 1.5k, 20k, 3M, 1.2G (trailing zeros dropped)."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def log_axis(axis: Any, low: float, high: float) -> None:
    """Log-scale ticks that label enough values to read: every digit within about a decade, 1-2-5 within a few,
    powers of ten beyond; labelled compactly (20k, 1.5M). Minor ticks are off: they cost a third of the drawing."""
    decades = math.log10(high / low) if high > low > 0 else 0.0
    subs = (1, 2, 3, 4, 5, 6, 7, 8, 9) if decades < 1.2 else (1, 2, 5) if decades < 4 else (1,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=30))
    axis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def loss_curves_figure(series: Sequence[tuple[str, Sequence[dict[str, float]]]]) -> Figure:
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
    return figure


def draw_loss_curves(series: Sequence[tuple[str, Sequence[dict[str, float]]]]) -> bytes:
    """`loss_curves_figure` as PNG (the report; the candidate page's PNG link)."""
    return _png(loss_curves_figure(series))


def best_so_far_figure(history: RunHistory) -> Figure:
    """Best validation score against evaluation index (1-based): the run's step line (one per fidelity), and its
    baselines'. For a lower-is-better metric the lines go down and the legend moves up, out of their way."""
    figure, axes = _figure()
    drawn = False
    for i, (label, values) in enumerate(best_so_far_lines(history)):
        points = [(x, y) for x, y in enumerate(values, start=1) if y is not None]
        if points:
            own = label.startswith("this run")
            axes.step(
                *zip(*points),
                where="post",
                label=label,
                linewidth=2.2 if own else 1.2,
                alpha=1.0 if own else 0.8,
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
    return figure


def draw_best_so_far(history: RunHistory) -> bytes:
    """`best_so_far_figure` as PNG (the report; the run page's PNG link)."""
    return _png(best_so_far_figure(history))


def _legend_place(direction: Direction) -> str:
    """A fixed corner away from where the best scores gather ("best" would scan every point)."""
    return "lower right" if direction == "max" else "upper right"


def pareto_figure(points: Sequence[tuple[float, float]], metric: str, direction: Direction) -> Figure:
    """Validation score against parameter count (log scale), the Pareto front highlighted."""
    figure, axes = _figure()
    points = [(p, a) for p, a in points if p and p > 0 and a is not None]
    if not points:
        _empty(axes, "no trained candidate with a parameter count")
        return figure
    front = pareto_front(points, direction)
    # markers on a plain line, not scatter(): somewhat cheaper for thousands of points, and they all look alike
    axes.plot(*zip(*points), linestyle="none", marker="o", markersize=3, color="#9aa5b1", label="trained candidates")
    axes.plot(*zip(*front), color="#c0392b", marker="o", markersize=5, drawstyle="steps-post", label="Pareto front")
    axes.set_xscale("log")
    sizes = [p for p, _ in points]
    low, high = min(sizes), max(sizes)
    if low == high:  # one size: a decade around it, so the log axis has room and ticks
        low, high = low / 3, high * 3
    axes.set_xlim(low / 1.15, high * 1.15)
    log_axis(axes.xaxis, low, high)
    axes.set_xlabel("parameters")
    axes.set_ylabel(f"validation {metric}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc=_legend_place(direction))
    return figure


def draw_pareto(points: Sequence[tuple[float, float]], metric: str, direction: Direction) -> bytes:
    """`pareto_figure` as PNG (the report; the run page's PNG link)."""
    return _png(pareto_figure(points, metric, direction))
