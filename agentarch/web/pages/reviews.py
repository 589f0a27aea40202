"""The review queue and its decisions: pending proposals with their code and diffs, one review, approve/edit/reject.

A person decides here what a run waiting at its review gate may train; the reviewer's name is remembered in a
cookie so the queue asks it once (the candidate page's flag form uses the same cookie).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from agentarch.store import browse, review_log, run_progress
from agentarch.store.archive import Archive
from agentarch.store.handle import ArchiveError
from agentarch.web import downloads, params
from agentarch.web.params import Pager
from agentarch.web.rendering import CODE_SHOWN, code_diff, highlight_code
from agentarch.web.site import Site

REVIEWER_COOKIE = "agentarch_reviewer"
"""Remembers who decides, so the review queue asks a person's name once, not on every card."""
# Pending reviews shown at once, oldest first: each carries its code, its diff and three forms, and
# a person decides them one by one anyway.
REVIEWS_SHOWN = 10

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


def routes(site: Site) -> list[Route]:
    def reviews_page(request: Request, error: str | None = None, status_code: int = 200) -> Response:
        page = params.page(request)
        with site.archive() as db:
            queue = db.reviews(status="pending")
            pending = queue[:REVIEWS_SHOWN]
            parents = browse.candidate_fields(db, [r["parent_id"] for r in pending], ("name", "code"))
            pager = Pager(page, review_log.count_decided_reviews(db))
            decided = review_log.decided_reviews(db, pager.size, pager.offset)
            just_decided = _decided(db, params.int_param(request, "done"))
            statuses = run_progress.run_statuses(
                db, [r["run_id"] for r in [*pending, *([just_decided] if just_decided else [])]]
            )
        if downloads.requested(request):
            return downloads.respond(request, pending + decided, REVIEW_COLUMNS, "reviews")
        for review in pending:
            review["code_html"] = highlight_code(review["code"], f"/reviews/{review['id']}/code.py")
            review["editable"] = len(review["code"] or "") <= CODE_SHOWN  # a page offers to edit what it shows
            review["run_status"] = statuses.get(review.get("run_id"))
            parent = parents.get(review.get("parent_id"))
            review["parent_diff"] = (
                code_diff(parent["code"], review["code"], f"parent #{parent['id']} {parent['name']}", "proposed")
                if parent
                else None
            )
        if just_decided:
            just_decided["run_status"] = statuses.get(just_decided.get("run_id"))
        return site.render(
            request,
            "reviews.html",
            {
                "pending": pending,
                "queued": len(queue),
                "decided": decided,
                "pager": pager,
                "error": error,
                "reviewer": reviewer(request),
                "just_decided": just_decided,
                "stopped": sorted({r["run_id"] for r in pending if r["run_status"] not in (None, "running")}),
            },
            status_code,
        )

    def review_page(request: Request) -> Response:
        review_id = request.path_params["review_id"]
        with site.archive() as db:
            try:
                review = db.review(review_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
            run_status = run_progress.run_statuses(db, [review.get("run_id")]).get(review.get("run_id"))
        edit = (
            code_diff(review["code"], review["decision_code"], "proposed", "as the person edited it")
            if review.get("decision_code")
            else None
        )
        return site.render(
            request,
            "review.html",
            {
                "r": review,
                "code_html": highlight_code(review["code"], f"/reviews/{review_id}/code.py"),
                "edit": edit,
                "run_status": run_status,
            },
        )

    def review_code(request: Request) -> Response:
        """The proposed code as a file (`?edited=1`: the person's edit): the pages show at most
        `rendering.CODE_SHOWN` characters of it."""
        review_id = request.path_params["review_id"]
        with site.archive() as db:
            try:
                review = db.review(review_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
        edited = request.query_params.get("edited") == "1"
        code = (review.get("decision_code") if edited else review.get("code")) or ""
        return downloads.code_download(code, f"review-{review_id}{'-edited' if edited else ''}.py")

    async def review_decide(request: Request) -> Response:
        review_id = request.path_params["review_id"]
        form = await request.form()  # the Guard has checked its CSRF token and origin
        decision = params.text(form, "decision")
        # browsers send textareas with CRLF; the code only counts for an edit (the one form carries it always)
        code = params.text(form, "code").replace("\r\n", "\n") if decision == "edited" else ""
        by = params.reviewer_name(form)

        def decide() -> Response:
            with site.archive() as db:
                try:
                    db.decide(
                        review_id,
                        decision,
                        by=by,
                        reason=params.text(form, "reason").strip() or None,
                        code=code or None,
                    )
                except ArchiveError as e:
                    return reviews_page(request, error=str(e), status_code=400)
            return remember_reviewer(RedirectResponse(f"/reviews?done={review_id}", status_code=303), by)

        return await run_in_threadpool(decide)

    return [
        Route("/reviews", reviews_page),
        Route("/reviews/{review_id:id}", review_page, methods=["GET"]),
        Route("/reviews/{review_id:id}", review_decide, methods=["POST"]),
        Route("/reviews/{review_id:id}/code.py", review_code),
    ]


def _decided(db: Archive, review_id: int | None) -> dict[str, Any] | None:
    """The review a decision was just taken on (`?done=`), to confirm it; None when there is none."""
    try:
        return db.review(review_id) if review_id is not None else None
    except ArchiveError:
        return None


def reviewer(request: Request) -> str:
    """The name this browser decided under last time (empty on a first visit)."""
    return unquote(request.cookies.get(REVIEWER_COOKIE, ""))[: params.NAME_CHARS]


def remember_reviewer(response: Response, by: str) -> Response:
    response.set_cookie(REVIEWER_COOKIE, quote(by), max_age=365 * 86400, samesite="strict")
    return response
