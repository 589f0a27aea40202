"""The archive in a browser: leaderboard, candidate pages, diffs, the review queue, runs, search, export.

Server-side rendered with Jinja2 (autoescape on: candidate code, prompts and analyses are untrusted
text) on Starlette. Every request opens its own `Archive`: SQLite connections must not cross the
worker threads the sync handlers run on, and opening one costs well under a millisecond.

Every list is paginated and each page is a fixed handful of queries, all asked of the query layer
(`agentarch.store.queries`, `Archive`): this module writes no SQL, so a listing here ranks and scores exactly
as the CLI, the report and few-shot selection do.

Access: on loopback no token is needed. With a token, every request must carry it (`?token=`, an
`Authorization: Bearer` header, or the cookie set on the first visit with `?token=`), and every
POST must carry it in its form (a hidden field) or the header: the cookie alone is not enough for
a write, so another site cannot make a signed-in browser approve a candidate.
"""

from __future__ import annotations

import difflib
import functools
import hmac
import io
import json
import math
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import jinja2
import uvicorn
from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentarch import formats
from agentarch.errors import UsageError
from agentarch.search.objectives import GoalError, Goals
from agentarch.search.proposers.baselines import ALGOS
from agentarch.store import queries
from agentarch.store.archive import CANDIDATE_STATUSES, Archive, ArchiveError
from agentarch.web import charts, listing, plots, runview, smoke, standing
from agentarch.web.predictor_quality import Qualities

HERE = Path(__file__).resolve().parent
PAGE_SIZE = listing.DEFAULT_PAGE_SIZE
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_COOKIE = "agentarch_token"
REVIEWER_COOKIE = "agentarch_reviewer"
"""Remembers who decides, so the review queue asks a person's name once, not on every card."""
COMPARE_MAX = 6
LIVE_REFRESH_S = 5
"""How often a running run's page refreshes itself."""
NOTES_SHOWN = 10
"""A run page's newest notebook entries; `?notes=all` shows every one (a long run writes hundreds, and a running
run's page reloads itself every few seconds)."""
# Pending reviews shown at once, oldest first: each carries its code, its diff and three forms, and
# a person decides them one by one anyway.
REVIEWS_SHOWN = 10
NONE = "–"
"""What a page shows for a value that is not there (no score yet, no cost)."""
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
)
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
    "cost_usd",
)
REVIEW_COLUMNS = (
    "id",
    "kind",
    "status",
    "run_id",
    "candidate_id",
    "proposal_key",
    "parent_id",
    "intent",
    "reason",
    "decided_by",
    "decided_at",
    "created_at",
)


# -- rendering helpers --------------------------------------------------------------------------------

_FORMATTER = HtmlFormatter(cssclass="highlight", linenos="table")
_LEXER = PythonLexer()


@functools.lru_cache(maxsize=256)
def highlight_code(code: str | None) -> Markup:
    """Candidate code as highlighted HTML; pygments escapes the text, so the result is safe to embed.

    Cached by the code text: lexing takes ~5-10 ms per candidate, and the review queue, reloaded
    after every decision, shows one per pending candidate.
    """
    return Markup(highlight(code or "", _LEXER, _FORMATTER))


def code_diff(a: str | None, b: str | None, a_label: str, b_label: str) -> Markup:
    """A unified diff (3 lines of context) as HTML, one escaped line per span classed add, del, hunk or head.

    Unified rather than difflib.HtmlDiff's side-by-side table: HtmlDiff compares changed lines
    character by character and takes ~0.2 s for two different 70-line candidates, too slow for a
    review queue that shows one diff per pending candidate.
    """
    lines = difflib.unified_diff((a or "").splitlines(), (b or "").splitlines(), a_label, b_label, lineterm="")
    spans = []
    for i, line in enumerate(lines):
        kind = (
            "head"
            if i < 2
            else "hunk"
            if line.startswith("@@")
            else "add"
            if line.startswith("+")
            else "del"
            if line.startswith("-")
            else "ctx"
        )
        spans.append(f'<span class="{kind}">{escape(line)}</span>')
    if not spans:
        return Markup("<p>The code is identical.</p>")
    return Markup(f'<pre class="udiff">{"".join(spans)}</pre>')


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    env.filters.update(
        acc=functools.partial(formats.accuracy, missing=NONE),
        num=functools.partial(formats.count, missing=NONE),
        num1=functools.partial(formats.tenths, missing=NONE),
        usd=functools.partial(formats.usd, missing=NONE),
        pretty=_pretty_json,
    )
    return env


@dataclass
class Pager:
    page: int
    total: int
    size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


def _page(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise HTTPException(400, f"page must be a whole number from 1, not {raw!r}")
    return int(raw)


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "").strip().lstrip("#")
    if not raw:
        return None
    if not raw.isdigit():
        raise HTTPException(400, f"{name} must be a candidate id (a number), not {raw!r}")
    return int(raw)


def _url(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (None drops one); the token never goes into links."""
    params = {k: v for k, v in request.query_params.items() if k != "token"}
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    return request.url.path + (f"?{urlencode(params)}" if params else "")


def _export(request: Request, rows: list[dict[str, Any]], columns: tuple[str, ...], name: str) -> Response:
    """The view's rows as CSV or JSON (`?format=`); lists and dicts become JSON text in a CSV cell."""
    fmt = request.query_params["format"]
    picked = [{c: row.get(c) for c in columns} for row in rows]
    if fmt == "json":
        return Response(
            json.dumps(picked, default=str),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}.json"'},
        )
    if fmt != "csv":
        raise HTTPException(400, f"format is csv or json, not {fmt!r}")
    buffer = io.StringIO()
    formats.write_csv(buffer, picked, columns)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def _wants_export(request: Request) -> bool:
    return "format" in request.query_params


def _window(request: Request, page: int, size: int = PAGE_SIZE) -> tuple[int | None, int]:
    """(limit, offset) of the rows a request asks for: one page, or every row for an export with `all=1`."""
    if _wants_export(request) and request.query_params.get("all") == "1":
        return None, 0
    return size, (page - 1) * size


def _ids(request: Request) -> list[int]:
    """Candidate ids from `?ids=` (repeated, or separated by commas or spaces, `#` allowed), each once, in order."""
    raw = " ".join(request.query_params.getlist("ids")).replace(",", " ").split()
    ids = []
    for item in raw:
        text = item.lstrip("#")
        if not text.isdigit():
            raise HTTPException(400, f"ids are candidate ids (numbers such as 12 or #12), not {item!r}")
        ids.append(int(text))
    return list(dict.fromkeys(ids))


def _front_goals(run: dict[str, Any] | None, task: dict[str, Any]) -> tuple[Goals, str]:
    """The objectives and constraints a front sort ranks by, and whose they are: the picked run's when it stored
    objectives, else `FRONT_OBJECTIVES`."""
    if run is not None and (run.get("config") or {}).get("objectives"):
        return _goals(run, task), f"run {run['id']}'s objectives"
    return Goals.parse(FRONT_OBJECTIVES, (), task["direction"], task["metric"]), "score against size"


def _goals(run: dict[str, Any], task: dict[str, Any]) -> Goals:
    """A run's objectives and constraints from its config; the task's metric alone for a run that stored none (or
    stored what this version cannot read)."""
    config = run.get("config") or {}
    try:
        return Goals.parse(
            config.get("objectives") or [], config.get("constraints") or [], task["direction"], task["metric"]
        )
    except GoalError:
        return Goals.parse((), (), task["direction"], task["metric"])


# -- access -------------------------------------------------------------------------------------------


def _matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _bearer(headers: Any) -> str | None:
    value = headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


class TokenGate:
    """Refuse (401) any request without the token; remember a `?token=` visit in an HttpOnly cookie."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        cookie = SimpleCookie()
        cookie[TOKEN_COOKIE] = token
        cookie[TOKEN_COOKIE].update({"httponly": True, "samesite": "Strict", "path": "/"})
        self.set_cookie = cookie[TOKEN_COOKIE].OutputString()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        from_query = _matches(request.query_params.get("token"), self.token)
        if not (
            from_query
            or _matches(_bearer(request.headers), self.token)
            or _matches(request.cookies.get(TOKEN_COOKIE), self.token)
        ):
            response = PlainTextResponse(
                "401: this agentarch server needs its token. Open the address `agentarch serve` printed "
                "(…/?token=…), or send the header 'Authorization: Bearer <token>'.\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        if not from_query:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("set-cookie", self.set_cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookie)


# -- the application ----------------------------------------------------------------------------------


def create_app(archive_path: Path, token: str | None = None) -> Starlette:
    """The web UI over one archive file; with `token`, every request must prove it knows it (see module docstring).

    The archive is opened once here so that a bad path fails at start-up rather than on the first
    page (a missing file is refused, not created), and an older archive is migrated (its indexes made) before
    the first query.
    """
    archive_path = Path(archive_path)
    token = token or None  # an empty token would let anyone in with `?token=`
    if not archive_path.is_file():  # opening it would create an empty archive and serve that
        raise UsageError(f"no archive at {archive_path}; pass an existing one (a run, eval or baseline makes one)")
    Archive(archive_path).close()

    templates = Jinja2Templates(
        env=template_environment(),
        context_processors=[lambda request: {"token": token, "url": lambda **changes: _url(request, **changes)}],
    )
    highlight_css = _FORMATTER.get_style_defs(".highlight")
    qualities = Qualities()

    def archive() -> Archive:
        return Archive(archive_path)

    def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    def check_form_token(request: Request, form: FormData) -> None:
        if token is None or _matches(_text(form, "token"), token) or _matches(_bearer(request.headers), token):
            return
        raise HTTPException(401, "this form was sent without the server's token; reload the page and send it again")

    # -- leaderboard and search

    def leaderboard(request: Request) -> Response:
        q = request.query_params
        with archive() as db:
            tasks = queries.tasks(db)
            task = listing.task_of(q, queries.newest_task(db))
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
            by_front = order.key == queries.FRONT
            if by_front and front_goals is None:
                raise HTTPException(400, "the front sort compares the candidates of one task; pick a task")
            ranked = _ranked_by_front(db, filters, front_goals, order.descending) if front_goals and by_front else []
            total = len(ranked) if by_front else queries.count_candidates(db, filters)
            pager = Pager(min(_page(request), max(1, math.ceil(total / size))), total, size)
            limit, offset = _window(request, pager.page, size)
            rows = (
                _front_rows(db, ranked, limit, offset)
                if by_front
                else queries.leaderboard(db, filters, limit, offset, sort=order)
            )
            if _wants_export(request):
                columns = (*ROW_COLUMNS, "front") if by_front else ROW_COLUMNS
                return _export(request, rows, columns, f"leaderboard-{task or 'all'}")
            if not by_front:  # the front sort's rows come annotated
                queries.annotate(db, rows)
            proposers = queries.proposers(db, task) if task else []
            runs = queries.run_ids(db, task) if task else []
            quality = qualities.kept(db, task) if task else None
        return render(
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
                "stages": queries.STAGES,
                "marks": queries.REVIEW_MARKS,
                "runs": runs,
                "scored_by": scored_by,
                "typed": listing.range_fields(q),
                "page_sizes": listing.PAGE_SIZES,
                "measures": queries.MEASURES,
                "front_goals": front_goals.describe() if front_goals else None,
                "front_source": front_source,
                "quality": quality,
            },
        )

    def search(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        page = _page(request)
        rows: list[dict[str, Any]] = []
        total = 0
        if query:
            with archive() as db:
                target = None if _wants_export(request) else queries.exact_target(db, query)
                if target is not None:
                    kind, found = target
                    return RedirectResponse(f"/{kind}/{quote(str(found))}", status_code=303)
                total, rows = queries.search(db, query, *_window(request, page))
                if _wants_export(request):
                    return _export(request, rows, ROW_COLUMNS, "search")
                queries.annotate(db, rows)
        return render(
            request,
            "search.html",
            {"q": query, "rows": rows, "pager": Pager(page, total), "searched": queries.fts_query(query)},
        )

    # -- one candidate, its lineage, diffs and comparisons

    def candidate_page(
        request: Request, candidate_id: int, error: str | None = None, status_code: int = 200
    ) -> Response:
        with archive() as db:
            try:
                row = db.candidate(candidate_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
            scored = queries.annotate(db, [db.scored(candidate_id)])[0]
            related_ids = [*(row.get("parents") or []), *(row.get("examples") or [])]
            if row.get("duplicate_of"):
                related_ids.append(row["duplicate_of"])
            related = queries.candidate_fields(db, related_ids, ("name", "status"))
            evaluations = db.evaluations(candidate_id)
            measured = smoke.measured(evaluations)
            context = {
                "c": row,
                "scored": scored,
                "code_html": highlight_code(row["code"]),
                "evaluations": evaluations,
                "smoke": measured,
                "proxies": smoke.columns(measured),
                "proxy_seconds": smoke.SECONDS,
                "llm_calls": db.llm_calls(candidate_id=candidate_id),
                "parents": [related[i] for i in row.get("parents") or [] if i in related],
                "examples": [related[i] for i in row.get("examples") or [] if i in related],
                "duplicate_of": related.get(row.get("duplicate_of")),
                "children": queries.children(db, candidate_id),
                "reviews": queries.candidate_reviews(db, candidate_id, row.get("proposal_key")),
                "reviewer": _reviewer(request),
                "error": error,
            }
        return render(request, "candidate.html", context, status_code)

    def candidate_get(request: Request) -> Response:
        return candidate_page(request, request.path_params["candidate_id"])

    def candidate_curve(request: Request) -> Response:
        candidate_id = request.path_params["candidate_id"]
        with archive() as db:
            try:
                db.candidate(candidate_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
            return Response(plots.draw_loss_curves(queries.loss_curves(db, candidate_id)), media_type="image/png")

    def lineage_page(request: Request) -> Response:
        candidate_id = request.path_params["candidate_id"]
        with archive() as db:
            try:
                tree = queries.lineage(db, candidate_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
        return render(request, "lineage.html", {"tree": tree, "c": tree.ancestry.row})

    async def candidate_flag(request: Request) -> Response:
        candidate_id = request.path_params["candidate_id"]
        form = await request.form()
        check_form_token(request, form)
        by = _text(form, "by").strip() or "web"

        def flag() -> Response:
            with archive() as db:
                try:
                    db.flag(candidate_id, by=by, reason=_text(form, "reason"))
                except ArchiveError as e:
                    return candidate_page(request, candidate_id, error=str(e), status_code=400)
            return _remember_reviewer(RedirectResponse(f"/candidate/{candidate_id}#reviews", status_code=303), by)

        return await run_in_threadpool(flag)

    def diff(request: Request) -> Response:
        a, b = _int_param(request, "a"), _int_param(request, "b")
        shown = None
        if a is not None and b is not None:
            with archive() as db:
                try:
                    left, right = db.candidate(a), db.candidate(b)
                except ArchiveError as e:
                    raise HTTPException(404, str(e)) from None
            shown = code_diff(left["code"], right["code"], f"#{a} {left['name']}", f"#{b} {right['name']}")
        return render(request, "diff.html", {"a": a, "b": b, "diff": shown})

    def compare(request: Request) -> Response:
        ids = _ids(request)
        if not ids:
            return render(request, "compare.html", {"rows": [], "ids": ""})
        if not 2 <= len(ids) <= COMPARE_MAX:
            raise HTTPException(400, f"compare takes 2 to {COMPARE_MAX} candidates, not {len(ids)}")
        with archive() as db:
            rows = queries.rows_by_id(db, ids)
            missing = sorted(set(ids) - {row["id"] for row in rows})
            if missing:
                raise HTTPException(404, f"no candidate {', '.join(f'#{i}' for i in missing)} in this archive")
            codes = queries.candidate_fields(db, ids, ("code",))
        first = rows[0]
        diffs = [
            (row, code_diff(codes[first["id"]]["code"], codes[row["id"]]["code"], f"#{first['id']}", f"#{row['id']}"))
            for row in rows[1:]
        ]
        return render(
            request,
            "compare.html",
            {"rows": rows, "ids": ",".join(map(str, ids)), "diffs": diffs, "metrics": _metrics(rows)},
        )

    # -- reviews

    def reviews_page(request: Request, error: str | None = None, status_code: int = 200) -> Response:
        page = _page(request)
        with archive() as db:
            queue = db.reviews(status="pending")
            pending = queue[:REVIEWS_SHOWN]
            parents = queries.candidate_fields(db, [r["parent_id"] for r in pending], ("name", "code"))
            pager = Pager(page, queries.count_decided_reviews(db))
            decided = queries.decided_reviews(db, pager.size, pager.offset)
            just_decided = _decided(db, _int_param(request, "done"))
            statuses = queries.run_statuses(
                db, [r["run_id"] for r in [*pending, *([just_decided] if just_decided else [])]]
            )
        if _wants_export(request):
            return _export(request, pending + decided, REVIEW_COLUMNS, "reviews")
        for review in pending:
            review["code_html"] = highlight_code(review["code"])
            review["run_status"] = statuses.get(review.get("run_id"))
            parent = parents.get(review.get("parent_id"))
            review["parent_diff"] = (
                code_diff(parent["code"], review["code"], f"parent #{parent['id']} {parent['name']}", "proposed")
                if parent
                else None
            )
        if just_decided:
            just_decided["run_status"] = statuses.get(just_decided.get("run_id"))
        return render(
            request,
            "reviews.html",
            {
                "pending": pending,
                "queued": len(queue),
                "decided": decided,
                "pager": pager,
                "error": error,
                "reviewer": _reviewer(request),
                "just_decided": just_decided,
                "stopped": sorted({r["run_id"] for r in pending if r["run_status"] not in (None, "running")}),
            },
            status_code,
        )

    def review_page(request: Request) -> Response:
        review_id = request.path_params["review_id"]
        with archive() as db:
            try:
                review = db.review(review_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
            run_status = queries.run_statuses(db, [review.get("run_id")]).get(review.get("run_id"))
        edit = (
            code_diff(review["code"], review["decision_code"], "proposed", "as the person edited it")
            if review.get("decision_code")
            else None
        )
        return render(
            request,
            "review.html",
            {"r": review, "code_html": highlight_code(review["code"]), "edit": edit, "run_status": run_status},
        )

    async def review_decide(request: Request) -> Response:
        review_id = request.path_params["review_id"]
        form = await request.form()
        check_form_token(request, form)
        decision = _text(form, "decision")
        # browsers send textareas with CRLF; the code only counts for an edit (the one form carries it always)
        code = _text(form, "code").replace("\r\n", "\n") if decision == "edited" else ""
        by = _text(form, "by").strip() or "web"

        def decide() -> Response:
            with archive() as db:
                try:
                    db.decide(
                        review_id, decision, by=by, reason=_text(form, "reason").strip() or None, code=code or None
                    )
                except ArchiveError as e:
                    return reviews_page(request, error=str(e), status_code=400)
            return _remember_reviewer(RedirectResponse(f"/reviews?done={review_id}", status_code=303), by)

        return await run_in_threadpool(decide)

    # -- runs and charts

    def runs_page(request: Request) -> Response:
        with archive() as db:
            pager = Pager(_page(request), queries.count_runs(db))
            runs = queries.runs_with_progress(db, *_window(request, pager.page))
        if _wants_export(request):
            return _export(request, runs, RUN_COLUMNS, "runs")
        return render(request, "runs.html", {"runs": runs, "pager": pager})

    def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        with archive() as db:
            try:
                run = queries.run_overview(db, run_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
            top = queries.annotate(db, queries.leaderboard(db, queries.Filters(run=run_id), limit=20))
            pending = queries.count_pending_reviews(db, run_id)
            goals = _goals(run, db.task_info(run["task"]))
            notebook, notes = runview.notebook(
                db, run_id, None if request.query_params.get("notes") == "all" else NOTES_SHOWN
            )
            models = runview.models(db, run)
            quality = qualities.kept(db, run["task"])
        axes = [o.measure for o in goals.objectives] if goals.multi else ["params", "val"]
        return render(
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
        with archive() as db:
            run = db.find_run(run_id)
            if run is None:
                raise HTTPException(404, f"no run {run_id!r}; `agentarch archive runs` lists them")
            scored_by = db.task_info(run["task"])
            png = (
                plots.draw_best_so_far(queries.run_history(db, run, ALGOS))
                if kind == "best"
                else plots.draw_pareto(queries.pareto_points(db, run_id), scored_by["metric"], scored_by["direction"])
            )
        return Response(png, media_type="image/png")

    def pareto_page(request: Request) -> Response:
        q = request.query_params
        with archive() as db:
            tasks = queries.tasks(db)
            task = listing.task_of(q, queries.newest_task(db)) or (tasks[0] if tasks else None)
            runs = queries.run_ids(db, task) if task else []
            scored_by = db.task_info(task) if task else None
        x, y = _axis(q, "x", "params"), _axis(q, "y", "val")
        run = q.get("run", "").strip() or None
        return render(
            request,
            "pareto.html",
            {
                "tasks": tasks,
                "task": task,
                "runs": runs,
                "run": run,
                "x": x,
                "y": y,
                "axes": queries.PLOT_MEASURES,
                "measures": queries.MEASURES,
                "scored_by": scored_by,
            },
        )

    def predictor_page(request: Request) -> Response:
        with archive() as db:
            task = listing.task_of(request.query_params, queries.newest_task(db))
            if not task:
                raise HTTPException(400, "which task's predictor? add ?task=NAME")
            quality = qualities.of(db, task)
            scored_by = db.task_info(task)
        return render(request, "predictor.html", {"task": task, "quality": quality, "scored_by": scored_by})

    def best_json(request: Request) -> Response:
        with archive() as db:
            run = db.find_run(request.path_params["run_id"])
            if run is None:
                raise HTTPException(404, f"no run {request.path_params['run_id']!r}")
            return JSONResponse(charts.best_so_far(queries.run_history(db, run, ALGOS)))

    def pareto_json(request: Request) -> Response:
        q = request.query_params
        x, y = _axis(q, "x", "params"), _axis(q, "y", "val")
        run_id = q.get("run", "").strip() or None
        with archive() as db:
            run = db.find_run(run_id) if run_id else None
            if run_id and run is None:
                raise HTTPException(404, f"no run {run_id!r}")
            task = run["task"] if run else q.get("task", "").strip() or queries.newest_task(db)
            if not task:
                return JSONResponse(charts.front_chart([], x, y, "score", "max", Goals.parse()))
            info = db.task_info(task)
            goals = _goals(run, info) if run else Goals.parse((), (), info["direction"], info["metric"])
            measures = [x, y, *(c.measure for c in goals.constraints)]
            rows = queries.measure_points(db, task, measures, run=run_id)
        return JSONResponse(charts.front_chart(rows, x, y, info["metric"], info["direction"], goals))

    def curves_json(request: Request) -> Response:
        ids = _ids(request)[:COMPARE_MAX]
        with archive() as db:
            names = queries.readable_names(db, queries.rows_by_id(db, ids))
            series = [
                (f"#{cid} {names[cid]}: {label}" if len(ids) > 1 else label, cid, curve)
                for cid in ids
                if cid in names
                for label, curve in queries.loss_curves(db, cid)
            ]
        return JSONResponse(charts.loss_curves(series))

    def stylesheet(request: Request) -> Response:
        return Response(highlight_css, media_type="text/css")

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.detail}, exc.status_code)
        return render(request, "error.html", {"status": exc.status_code, "message": exc.detail}, exc.status_code)

    app = Starlette(
        routes=[
            Route("/", leaderboard),
            Route("/search", search),
            Route("/candidate/{candidate_id:int}", candidate_get),
            Route("/candidate/{candidate_id:int}/lineage", lineage_page),
            Route("/candidate/{candidate_id:int}/curve.png", candidate_curve),
            Route("/candidate/{candidate_id:int}/flag", candidate_flag, methods=["POST"]),
            Route("/diff", diff),
            Route("/compare", compare),
            Route("/reviews", reviews_page),
            Route("/reviews/{review_id:int}", review_page, methods=["GET"]),
            Route("/reviews/{review_id:int}", review_decide, methods=["POST"]),
            Route("/runs", runs_page),
            Route("/run/{run_id}", run_page),
            Route("/run/{run_id}/{kind}.png", run_plot),
            Route("/pareto", pareto_page),
            Route("/predictor", predictor_page),
            Route("/api/run/{run_id}/best.json", best_json),
            Route("/api/pareto.json", pareto_json),
            Route("/api/curves.json", curves_json),
            Route("/highlight.css", stylesheet),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.qualities = qualities  # a benchmark empties it to time a first visit
    if token is not None:
        app.add_middleware(TokenGate, token=token)
    return app


def _ranked_by_front(
    db: Archive, filters: queries.Filters, goals: Goals, best_first: bool
) -> list[tuple[int, int | None]]:
    """(id, front from 0 or None) of every candidate the filters let through, in the front sort's order."""
    measures = [*(o.measure for o in goals.objectives), *(c.measure for c in goals.constraints)]
    return standing.order(goals, queries.measure_rows(db, filters, measures), best_first)


def _front_rows(
    db: Archive, ranked: list[tuple[int, int | None]], limit: int | None, offset: int
) -> list[dict[str, Any]]:
    """One page of the front sort as annotated listing rows, each with its `front` counted from 1 (None: unranked)."""
    window = dict(ranked[offset : None if limit is None else offset + limit])
    rows = queries.rows_by_id(db, list(window))
    for row in rows:
        front = window[row["id"]]
        row["front"] = None if front is None else front + 1
    return rows


def _axis(q: Any, name: str, default: str) -> str:
    value = q.get(name, "").strip() or default
    if value not in queries.PLOT_MEASURES:
        raise HTTPException(400, f"{name} is one of {', '.join(queries.PLOT_MEASURES)}, not {value!r}")
    return value


COMPARED = ("val_accuracy", "test_accuracy", "params", "flops", "latency_ms", "peak_memory_mb", "train_seconds")


def _metrics(rows: list[dict[str, Any]]) -> dict[str, int | None]:
    """For each compared measure, the id of the candidate that does best on it (None when fewer than two have it):
    scores by their task's direction, every cost by the smallest."""
    best: dict[str, int | None] = {}
    for column in COMPARED:
        have = [r for r in rows if r.get(column) is not None]
        if len(have) < 2 or len({r[column] for r in have}) < 2:
            best[column] = None
            continue
        score = column in ("val_accuracy", "test_accuracy")
        sign = (1 if have[0]["direction"] == "max" else -1) if score else -1
        best[column] = max(have, key=lambda r: sign * r[column])["id"]
    return best


def _decided(db: Archive, review_id: int | None) -> dict[str, Any] | None:
    """The review a decision was just taken on (`?done=`), to confirm it; None when there is none."""
    try:
        return db.review(review_id) if review_id is not None else None
    except ArchiveError:
        return None


def _reviewer(request: Request) -> str:
    """The name this browser decided under last time (empty on a first visit)."""
    return unquote(request.cookies.get(REVIEWER_COOKIE, ""))[:100]


def _remember_reviewer(response: Response, by: str) -> Response:
    response.set_cookie(REVIEWER_COOKIE, quote(by), max_age=365 * 86400, samesite="strict")
    return response


def _text(form: FormData, name: str) -> str:
    """A form field as text ("" when absent, or a file where text was expected)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def serve(archive_path: Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None) -> None:
    """Run the web UI with uvicorn until interrupted.

    Anyone who can reach a non-loopback address could approve candidates (and so get code run on
    this machine's trainers), so binding one needs a token.
    """
    if host not in LOOPBACK_HOSTS and not token:
        raise UsageError(
            f"refusing to serve on {host} without a token: anyone on the network could read the archive "
            "and decide reviews. Pass a token (e.g. --token $(openssl rand -hex 16)) or bind 127.0.0.1."
        )
    uvicorn.run(create_app(archive_path, token), host=host, port=port, log_level="info")
