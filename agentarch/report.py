"""A static HTML report of one run: open index.html from disk, mail it, attach it to a paper; no server needed.

It shows what the run page of the web UI shows (progress, spend, top candidates, best-so-far and
Pareto plots) plus the loss curves of the top three candidates, drawn by the same plots module, with
the stylesheet inlined so the folder is self-contained. Scores are named by the task's metric and ranked
by its direction, as the archive keeps them, so a report of an MSE task says "val mse" and puts the lowest first.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from agentarch import queries
from agentarch.archive import Archive
from agentarch.web import plots
from agentarch.web.app import HERE, template_environment

TOP = 20
CURVES = 3


def write_report(archive_path: Path, run_id: str, out_dir: Path) -> Path:
    """Write index.html and its PNG plots into `out_dir` (created if missing); returns the index.html path.

    Raises ArchiveError when the run is not in the archive.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with Archive(archive_path) as db:
        run = queries.run_overview(db, run_id)
        rows = queries.leaderboard(db, queries.Filters(run=run_id), limit=TOP)
        (out_dir / "best_so_far.png").write_bytes(plots.draw_best_so_far(queries.run_history(db, run)))
        points = queries.pareto_points(db, run_id)
        (out_dir / "pareto.png").write_bytes(plots.draw_pareto(points, run["metric"], run["direction"]))
        curves = []
        for row in [r for r in rows if r["status"] == "trained"][:CURVES]:
            name = f"curve-{row['id']}.png"
            (out_dir / name).write_bytes(plots.draw_loss_curves(queries.loss_curves(db, row["id"])))
            curves.append({"file": name, "row": row})
    html = (
        template_environment()
        .get_template("report.html")
        .render(
            run=run,
            rows=rows,
            curves=curves,
            css=(HERE / "static" / "style.css").read_text(),
            archive=str(archive_path),
            written_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
    )
    index = out_dir / "index.html"
    index.write_text(html, encoding="utf-8")
    return index
