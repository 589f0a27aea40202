"""A static HTML report of one run: open index.html from disk, mail it, attach it to a paper; no server needed.

It shows what the run page of the web UI shows (progress, spend, top candidates, best-so-far and
Pareto plots) plus the loss curves of the top three candidates, drawn by the same plots module, with
the stylesheet inlined so the folder is self-contained. Scores are named by the task's metric and ranked
by its direction, as the archive keeps them, so a report of an MSE task says "val mse" and puts the lowest first.
A report is made to be shared, so it names files by their names only: the run's config keeps this machine's paths
(the archive, the data and cache folders, the evaluated files), which say nothing to a reader and something about
the machine.
"""

from __future__ import annotations

import typing
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any

from agentarch.config import Settings
from agentarch.search.proposers.baselines import ALGOS
from agentarch.store import browse, measurements, run_progress
from agentarch.store.archive import Archive
from agentarch.web import plots
from agentarch.web.rendering import HERE, template_environment

TOP = 20
CURVES = 3
PATH_KEYS = frozenset(
    {name for name, f in Settings.model_fields.items() if f.annotation is Path or Path in typing.get_args(f.annotation)}
    | {"paths"}
)
"""Config keys that hold paths on the machine that ran: the settings typed as paths, and `eval`'s and `halve`'s files."""


def shareable(value: Any, key: str | None = None) -> Any:
    """The config with every path cut to its file name (`/home/ada/data/mnist` -> `mnist`), and a task given as a
    file named by its file name; everything else as it was."""
    if isinstance(value, dict):
        return {k: shareable(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [shareable(v, key) for v in value]
    if isinstance(value, str) and (key in PATH_KEYS or (key == "task" and value.endswith(".toml"))):
        return PurePath(value).name
    return value


def write_report(archive_path: Path, run_id: str, out_dir: Path) -> Path:
    """Write index.html and its PNG plots into `out_dir` (created if missing); returns the index.html path.

    Raises ArchiveError when the run is not in the archive.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with Archive(archive_path) as db:
        run = run_progress.run_overview(db, run_id)
        rows = browse.annotate(db, browse.leaderboard(db, browse.Filters(run=run_id), limit=TOP))
        (out_dir / "best_so_far.png").write_bytes(plots.draw_best_so_far(run_progress.run_history(db, run, ALGOS)))
        points = measurements.pareto_points(db, run_id)
        (out_dir / "pareto.png").write_bytes(plots.draw_pareto(points, run["metric"], run["direction"]))
        curves = []
        for row in [r for r in rows if r["status"] == "trained"][:CURVES]:
            name = f"curve-{row['id']}.png"
            (out_dir / name).write_bytes(plots.draw_loss_curves(measurements.loss_curves(db, row["id"])))
            curves.append({"file": name, "row": row})
    html = (
        template_environment()
        .get_template("report.html")
        .render(
            run=run,
            rows=rows,
            curves=curves,
            config=shareable(run["config"]),
            css=(HERE / "static" / "style.css").read_text(),
            archive=Path(archive_path).name,
            written_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
    )
    index = out_dir / "index.html"
    index.write_text(html, encoding="utf-8")
    return index
