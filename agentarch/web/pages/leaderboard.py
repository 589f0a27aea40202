"""The leaderboard and search: the archive's candidates filtered, sorted and paged, and full-text search over them.

The leaderboard's query string is read by `agentarch.web.listing`; its front sort ranks by Pareto front and
crowding (`agentarch.web.standing`) against the picked run's objectives, or score against size.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from agentarch.search.objectives import Goals
from agentarch.store import browse, measurements, run_progress
from agentarch.store.archive import Archive
from agentarch.store.handle import ArchiveError
from agentarch.store.records import CANDIDATE_STATUSES
from agentarch.web import downloads, listing, params, standing
from agentarch.web.pages.runs import run_goals
from agentarch.web.params import Pager
from agentarch.web.site import Site

FRONT_OBJECTIVES = ("val", "params:min")
"""What the front sort ranks by when no run with objectives of its own is picked: the task's score in its direction
against the size."""

ROW_COLUMNS = (
    "id",
    "task",
    "name",
    "proposer",
    "model",
    "run_id",
    "status",
    "metric",
    "val_accuracy",
    "test_accuracy",
    "params",
    "fidelity",
    "train_seconds",
    "parents",
    "scoring",
    "unverified",
)


def routes(site: Site) -> list[Route]:
    def leaderboard(request: Request) -> Response:
        q = request.query_params
        with site.archive() as db:
            tasks = browse.tasks(db)
            task = listing.task_of(q, browse.newest_task(db))
            if task and task not in tasks:  # a task with nothing recorded yet: still the one shown and picked
                tasks = sorted([*tasks, task])
            try:
                filters, order = listing.filters(q, task), listing.sort(q)
            except ArchiveError as e:
                raise HTTPException(400, str(e)) from None
            size = listing.page_size(q)
            scored_by = db.task_info(task) if task else None
            front_goals, front_source = (
                _front_goals(db.find_run(filters.run) if filters.run else None, scored_by) if scored_by else (None, "")
            )
            by_front = order.key == browse.FRONT
            if by_front and front_goals is None:
                raise HTTPException(400, "the front sort compares the candidates of one task; pick a task")
            ranked = _ranked_by_front(db, filters, front_goals, order.descending) if front_goals and by_front else []
            total = len(ranked) if by_front else browse.count_candidates(db, filters)
            pager = Pager(min(params.page(request), max(1, math.ceil(total / size))), total, size)
            limit, offset = downloads.window(request, pager.page, size)
            rows = (
                _front_rows(db, ranked, limit, offset)
                if by_front
                else browse.leaderboard(db, filters, limit, offset, sort=order)
            )
            if downloads.requested(request):
                columns = (*ROW_COLUMNS, "front") if by_front else ROW_COLUMNS
                return downloads.respond(request, rows, columns, f"leaderboard-{task or 'all'}")
            if not by_front:  # the front sort's rows come annotated
                browse.annotate(db, rows)
            mix = browse.scoring_mix(db, filters)  # the whole listing's, not this page's: said above its rows
            proposers = browse.proposers(db, task) if task else []
            runs = run_progress.run_ids(db, task) if task else []
            quality = site.qualities.kept(db, task) if task else None
        return site.render(
            request,
            "leaderboard.html",
            {
                "rows": rows,
                "pager": pager,
                "tasks": tasks,
                "task": task,
                "filters": filters,
                "sort": order,
                "proposers": proposers,
                "statuses": CANDIDATE_STATUSES,
                "stages": browse.STAGES,
                "marks": browse.REVIEW_MARKS,
                "runs": runs,
                "scored_by": scored_by,
                "typed": listing.range_fields(q),
                "page_sizes": listing.PAGE_SIZES,
                "measures": measurements.MEASURES,
                "front_goals": front_goals.describe() if front_goals else None,
                "front_source": front_source,
                "quality": quality,
                "mix": mix,
            },
        )

    def search(request: Request) -> Response:
        query = params.query(request)
        page = params.page(request)
        rows: list[dict[str, Any]] = []
        total = 0
        if query:
            with site.archive() as db:
                named = _may_name(query) and not downloads.requested(request)
                target = browse.exact_target(db, query) if named else None
                if target is not None:
                    kind, found = target
                    return RedirectResponse(f"/{kind}/{quote(str(found))}", status_code=303)
                total, rows = browse.search(db, query, *downloads.window(request, page))
                if downloads.requested(request):
                    return downloads.respond(request, rows, ROW_COLUMNS, "search")
                browse.annotate(db, rows)
        return site.render(
            request,
            "search.html",
            {
                "q": query,
                "rows": rows,
                "pager": Pager(page, total),
                "searched": browse.fts_query(query),
                "mix": browse.rows_mix(rows),
            },
        )

    return [Route("/", leaderboard), Route("/search", search)]


def _may_name(query: str) -> bool:
    """Whether `browse.exact_target` may look the search text up: text of digits (by `str.isdigit`, which takes "²")
    must be an id `params.record_id` takes, else it is only searched for. exact_target hands such text to int() and to
    SQLite, and `?q=²` or 23 digits were a 500 (ValueError, OverflowError)."""
    number = query.strip().removeprefix("#")
    if not number.isdigit():
        return True
    try:
        params.record_id(number, "q")
    except HTTPException:
        return False
    return True


def _front_goals(run: dict[str, Any] | None, task: dict[str, Any]) -> tuple[Goals, str]:
    """The objectives and constraints a front sort ranks by, and whose they are: the picked run's when it stored
    objectives, else `FRONT_OBJECTIVES`."""
    if run is not None and (run.get("config") or {}).get("objectives"):
        return run_goals(run, task), f"run {run['id']}'s objectives"
    return Goals.parse(FRONT_OBJECTIVES, (), task["direction"], task["metric"]), "score against size"


def _ranked_by_front(
    db: Archive, filters: browse.Filters, goals: Goals, best_first: bool
) -> list[tuple[int, int | None]]:
    """(id, front from 0 or None) of every candidate the filters let through, in the front sort's order."""
    measures = [*(o.measure for o in goals.objectives), *(c.measure for c in goals.constraints)]
    return standing.order(goals, browse.measure_rows(db, filters, measures), best_first)


def _front_rows(
    db: Archive, ranked: list[tuple[int, int | None]], limit: int | None, offset: int
) -> list[dict[str, Any]]:
    """One page of the front sort as annotated listing rows, each with its `front` counted from 1 (None: unranked)."""
    window = dict(ranked[offset : None if limit is None else offset + limit])
    rows = browse.rows_by_id(db, list(window))
    for row in rows:
        front = window[row["id"]]
        row["front"] = None if front is None else front + 1
    return rows
