"""The predictor page: how well a task's predictor ranks candidates before they train (/predictor?task=NAME).

Its own page because the figure is slow to compute the first time (`agentarch.web.predictor_quality`), so the
leaderboard only shows it once this page has computed and kept it.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentarch.store import browse
from agentarch.web import listing
from agentarch.web.site import Site


def routes(site: Site) -> list[Route]:
    def predictor_page(request: Request) -> Response:
        with site.archive() as db:
            task = listing.task_of(request.query_params, browse.newest_task(db))
            if not task:
                raise HTTPException(400, "which task's predictor? add ?task=NAME")
            quality = site.qualities.of(db, task)
            scored_by = db.task_info(task)
        return site.render(request, "predictor.html", {"task": task, "quality": quality, "scored_by": scored_by})

    return [Route("/predictor", predictor_page)]
