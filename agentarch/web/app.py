"""The archive in a browser: leaderboard, candidate pages, diffs, the review queue, runs, search, export.

Server-side rendered with Jinja2 (autoescape on: candidate code, prompts and analyses are untrusted
text) on Starlette. This module assembles the application: the archive it serves, the templates, the
guard in front of every route (`agentarch.web.access`: the Host allowlist, the token, the CSRF and origin checks on
writes), the routes of each kind of page (`agentarch.web.pages`), the stylesheet, static files and error pages; and
it serves it with uvicorn, on loopback unless given a token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from agentarch.errors import UsageError
from agentarch.store.archive import Archive
from agentarch.web import params
from agentarch.web.access import Guard, Hosts, is_loopback
from agentarch.web.pages import candidates, leaderboard, pareto, predictor, reviews, runs
from agentarch.web.predictor_quality import Qualities
from agentarch.web.rendering import HERE, highlight_css, template_environment
from agentarch.web.site import Site


def create_app(archive_path: Path, token: str | None = None, hosts: Hosts | None = None) -> Starlette:
    """The web UI over one archive file, answering only the Host names of `hosts` (loopback on any port when None);
    with `token`, every request must prove it knows it (`agentarch.web.access`).

    The archive is opened once here so that a bad path fails at start-up rather than on the first
    page (a missing file is refused, not created), and an older archive is migrated (its indexes made) before
    the first query.
    """
    archive_path = Path(archive_path)
    if not archive_path.is_file():  # opening it would create an empty archive and serve that
        raise UsageError(f"no archive at {archive_path}; pass an existing one (a run, eval or baseline makes one)")
    Archive(archive_path).close()

    templates = Jinja2Templates(
        env=template_environment(),
        context_processors=[
            lambda request: {
                "csrf": getattr(request.state, "csrf", ""),  # the Guard sets it on every request; forms carry it
                "url": lambda **changes: params.url(request, **changes),
            }
        ],
    )
    stylesheet_css = highlight_css()
    qualities = Qualities()
    site = Site(archive_path, templates, qualities)

    def stylesheet(request: Request) -> Response:
        return Response(stylesheet_css, media_type="text/css")

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.detail}, exc.status_code)
        return site.render(request, "error.html", {"status": exc.status_code, "message": exc.detail}, exc.status_code)

    app = Starlette(
        routes=[
            *leaderboard.routes(site),
            *candidates.routes(site),
            *reviews.routes(site),
            *runs.routes(site),
            *pareto.routes(site),
            *predictor.routes(site),
            Route("/highlight.css", stylesheet),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.qualities = qualities  # a benchmark empties it to time a first visit
    app.add_middleware(Guard, hosts=hosts or Hosts.loopback(), token=token)
    return app


def serve(
    archive_path: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    allow_hosts: Sequence[str] = (),
) -> None:
    """Run the web UI with uvicorn until interrupted, answering the Host names `Hosts.of` allows.

    Anyone who can reach a non-loopback address could approve candidates (and so get code run on
    this machine's trainers), so binding one needs a token.
    """
    if not is_loopback(host) and not token:
        raise UsageError(
            f"refusing to serve on {host} without a token: anyone on the network could read the archive "
            "and decide reviews. Pass --token (at least 16 characters, e.g. $(openssl rand -hex 16)) or "
            "--generate-token, or bind 127.0.0.1."
        )
    app = create_app(archive_path, token, Hosts.of(host, port, allow_hosts))
    uvicorn.run(app, host=host, port=port, log_level="info")
