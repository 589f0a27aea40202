"""Runs and their plots: the list of runs, one run's page (live while it runs), its PNG plots and best-so-far JSON.

Also what a run ranks by (`run_goals`): its stored objectives and constraints, which the leaderboard's front sort
and the Pareto chart take up when a run is picked.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentarch.search.objectives import GoalError, Goals
from agentarch.search.proposers.baselines import ALGOS
from agentarch.store import browse, measurements, review_log, run_progress
from agentarch.store.handle import ArchiveError
from agentarch.web import charts, downloads, params, plots, runview
from agentarch.web.params import Pager
from agentarch.web.site import Site

LIVE_REFRESH_S = 5
"""How often a running run's page refreshes itself."""
NOTES_SHOWN = 10
"""A run page's newest notebook entries; `?notes=all` shows every one (a long run writes hundreds, and a running
run's page reloads itself every few seconds)."""

RUN_COLUMNS = (
    "id",
    "kind",
    "task",
    "proposer",
    "status",
    "started_at",
    "ended_at",
    "proposed",
    "trained",
    "metric",
    "best_val_accuracy",
    "best_scoring",
    "cost_usd",
)


def routes(site: Site) -> list[Route]:
    def runs_page(request: Request) -> Response:
        with site.archive() as db:
            pager = Pager(params.page(request), run_progress.count_runs(db))
            runs = run_progress.runs_with_progress(db, *downloads.window(request, pager.page))
        if downloads.requested(request):
            return downloads.respond(request, runs, RUN_COLUMNS, "runs")
        return site.render(request, "runs.html", {"runs": runs, "pager": pager})

    def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        with site.archive() as db:
            try:
                run = run_progress.run_overview(db, run_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
            top = browse.annotate(db, browse.leaderboard(db, browse.Filters(run=run_id), limit=20))
            pending = review_log.count_pending_reviews(db, run_id)
            goals = run_goals(run, db.task_info(run["task"]))
            notebook, notes = runview.notebook(
                db, run_id, None if request.query_params.get("notes") == "all" else NOTES_SHOWN
            )
            models = runview.models(db, run)
            quality = site.qualities.kept(db, run["task"])
        axes = [o.measure for o in goals.objectives] if goals.multi else ["params", "val"]
        return site.render(
            request,
            "run.html",
            {
                "run": run,
                "rows": top,
                "pending": pending,
                "goals": goals.describe(),
                "notebook": notebook,
                "notes": notes,
                "models": models,
                "quality": quality,
                "x": axes[0],
                "y": axes[1],
                "refresh": LIVE_REFRESH_S if run["status"] == "running" else None,
            },
        )

    def run_plot(request: Request) -> Response:
        run_id, kind = request.path_params["run_id"], request.path_params["kind"]
        if kind not in ("best", "pareto"):
            raise HTTPException(404, f"no plot {kind!r}; there are best.png and pareto.png")
        with site.archive() as db:
            run = db.find_run(run_id)
            if run is None:
                raise HTTPException(404, f"no run {run_id!r}; `agentarch archive runs` lists them")
            scored_by = db.task_info(run["task"])
            png = (
                plots.draw_best_so_far(run_progress.run_history(db, run, ALGOS))
                if kind == "best"
                else plots.draw_pareto(
                    measurements.pareto_points(db, run_id), scored_by["metric"], scored_by["direction"]
                )
            )
        return Response(png, media_type="image/png")

    def best_json(request: Request) -> Response:
        with site.archive() as db:
            run = db.find_run(request.path_params["run_id"])
            if run is None:
                raise HTTPException(404, f"no run {request.path_params['run_id']!r}")
            return JSONResponse(charts.best_so_far(run_progress.run_history(db, run, ALGOS)))

    return [
        Route("/runs", runs_page),
        Route("/run/{run_id}", run_page),
        Route("/run/{run_id}/{kind}.png", run_plot),
        Route("/api/run/{run_id}/best.json", best_json),
    ]


def run_goals(run: dict[str, Any], task: dict[str, Any]) -> Goals:
    """A run's objectives and constraints from its config; the task's metric alone for a run that stored none (or
    stored what this version cannot read)."""
    config = run.get("config") or {}
    try:
        return Goals.parse(
            config.get("objectives") or [], config.get("constraints") or [], task["direction"], task["metric"]
        )
    except GoalError:
        return Goals.parse((), (), task["direction"], task["metric"])
