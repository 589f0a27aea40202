"""The Pareto page: a task's candidates on two chosen measures, and the JSON its chart draws (/api/pareto.json).

The chart ranks by a picked run's objectives and constraints when it stored some, else by the task's metric; the
axes are any two of the plottable measures.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentarch.search.objectives import Goals
from agentarch.store import browse, measurements, run_progress
from agentarch.web import charts, listing
from agentarch.web.pages.runs import run_goals
from agentarch.web.site import Site


def routes(site: Site) -> list[Route]:
    def pareto_page(request: Request) -> Response:
        q = request.query_params
        with site.archive() as db:
            tasks = browse.tasks(db)
            task = listing.task_of(q, browse.newest_task(db)) or (tasks[0] if tasks else None)
            runs = run_progress.run_ids(db, task) if task else []
            scored_by = db.task_info(task) if task else None
            run = q.get("run", "").strip() or None
            # the chart's points carry no mark of their own: the page says how many of them are unverified
            mix = browse.scoring_mix(db, browse.Filters(task=task, run=run, status="trained")) if task else None
        x, y = _axis(q, "x", "params"), _axis(q, "y", "val")
        return site.render(
            request,
            "pareto.html",
            {
                "tasks": tasks,
                "task": task,
                "runs": runs,
                "run": run,
                "x": x,
                "y": y,
                "axes": measurements.PLOT_MEASURES,
                "measures": measurements.MEASURES,
                "scored_by": scored_by,
                "mix": mix,
            },
        )

    def pareto_json(request: Request) -> Response:
        q = request.query_params
        x, y = _axis(q, "x", "params"), _axis(q, "y", "val")
        run_id = q.get("run", "").strip() or None
        with site.archive() as db:
            run = db.find_run(run_id) if run_id else None
            if run_id and run is None:
                raise HTTPException(404, f"no run {run_id!r}")
            task = run["task"] if run else q.get("task", "").strip() or browse.newest_task(db)
            if not task:
                return JSONResponse(charts.front_chart([], x, y, "score", "max", Goals.parse()))
            info = db.task_info(task)
            goals = run_goals(run, info) if run else Goals.parse((), (), info["direction"], info["metric"])
            measures = [x, y, *(c.measure for c in goals.constraints)]
            rows = measurements.measure_points(db, task, measures, run=run_id)
        return JSONResponse(charts.front_chart(rows, x, y, info["metric"], info["direction"], goals))

    return [Route("/pareto", pareto_page), Route("/api/pareto.json", pareto_json)]


def _axis(q: Any, name: str, default: str) -> str:
    value = q.get(name, "").strip() or default
    if value not in measurements.PLOT_MEASURES:
        raise HTTPException(400, f"{name} is one of {', '.join(measurements.PLOT_MEASURES)}, not {value!r}")
    return value
