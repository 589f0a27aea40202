"""One candidate and its relations: its page, its code, its graph and its export bundle as downloads, lineage, loss
curves, flag form, and the diff and compare views.

Everything here starts from candidate ids: one (its page, lineage, curve, flag), two (a diff) or a handful (the
compare table and the loss curves it draws).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from agentarch.llm import prompts
from agentarch.store import browse, bundle, judgments, lineage, measurements, review_log
from agentarch.store.graphs import GraphNotKept
from agentarch.store.handle import ArchiveError
from agentarch.store.scoring import scoring_kind
from agentarch.tasks import recipes
from agentarch.web import charts, downloads, params, plots, smoke
from agentarch.web.pages.reviews import remember_reviewer, reviewer
from agentarch.web.rendering import code_diff, highlight_code
from agentarch.web.site import Site

COMPARE_MAX = 6
COMPARED = ("val_accuracy", "test_accuracy", "params", "flops", "latency_ms", "peak_memory_mb", "train_seconds")


def routes(site: Site) -> list[Route]:
    def candidate_page(
        request: Request, candidate_id: int, error: str | None = None, status_code: int = 200
    ) -> Response:
        with site.archive() as db:
            try:
                row = db.candidate(candidate_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
            scored = browse.annotate(db, [db.scored(candidate_id)])[0]
            related_ids = [*(row.get("parents") or []), *(row.get("examples") or [])]
            if row.get("duplicate_of"):
                related_ids.append(row["duplicate_of"])
            related = browse.candidate_fields(db, related_ids, ("name", "status"))
            evaluations = [
                {
                    **e,
                    "scoring": scoring_kind(e),
                    "recipe_text": recipes.describe(e["recipe"]) if e.get("recipe") else "",
                }
                for e in db.evaluations(candidate_id)
            ]
            measured = smoke.measured(evaluations)
            scoring = bundle.scoring_evaluation(db, candidate_id)
            digest, kept, graph_note = bundle.graph_state(db, scoring)
            context = {
                "c": row,
                "scored": scored,
                "code_html": highlight_code(row["code"], f"/candidate/{candidate_id}/code.py"),
                "evaluations": evaluations,
                "smoke": measured,
                "proxies": smoke.columns(measured),
                "proxy_seconds": smoke.SECONDS,
                "llm_calls": db.llm_calls(candidate_id=candidate_id),
                "parents": [related[i] for i in row.get("parents") or [] if i in related],
                "examples": [related[i] for i in row.get("examples") or [] if i in related],
                "left_out": prompts.describe_left_out(row.get("prompt_left_out")),
                "duplicate_of": related.get(row.get("duplicate_of")),
                "children": lineage.children(db, candidate_id),
                "reviews": review_log.candidate_reviews(db, candidate_id, row.get("proposal_key")),
                "reviewer": reviewer(request),
                "error": error,
                "trained": scoring is not None,
                "scoring_kind": scoring_kind(scoring),
                "graph": {"sha256": digest, "kept": kept, "note": graph_note},
                "judgment": judgments.for_candidate(db, candidate_id),  # --judge: its rating beside the scores
            }
        return site.render(request, "candidate.html", context, status_code)

    def candidate_get(request: Request) -> Response:
        return candidate_page(request, request.path_params["candidate_id"])

    def candidate_code(request: Request) -> Response:
        """The full code as a file: the page shows at most `rendering.CODE_SHOWN` characters of it."""
        candidate_id = request.path_params["candidate_id"]
        with site.archive() as db:
            try:
                code = db.candidate(candidate_id)["code"] or ""
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
        return downloads.code_download(code, f"candidate-{candidate_id}.py")

    def candidate_graph(request: Request) -> Response:
        """The ONNX graph of the candidate's scoring evaluation, as a file (404 with the reason when there is none)."""
        candidate_id = request.path_params["candidate_id"]
        with site.archive() as db:
            try:
                db.candidate(candidate_id)
                digest, kept, note = bundle.graph_state(db, bundle.scoring_evaluation(db, candidate_id))
                if digest is None or not kept:
                    raise HTTPException(404, f"candidate {candidate_id}: {note}")
                data = db.graph_bytes(digest)
            except GraphNotKept as e:
                raise HTTPException(404, f"candidate {candidate_id}: {e}") from None
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
        return downloads.file_download(data, f"candidate-{candidate_id}.onnx", "application/octet-stream")

    def candidate_export(request: Request) -> Response:
        """What `agentarch export` writes (code, graph when kept, model card), zipped on the fly; nothing is written."""
        candidate_id = request.path_params["candidate_id"]
        with site.archive() as db:
            try:
                made = bundle.bundle(db, candidate_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
        return downloads.file_download(
            bundle.bundle_zip(made), f"candidate-{candidate_id}-export.zip", "application/zip"
        )

    def candidate_curve(request: Request) -> Response:
        candidate_id = request.path_params["candidate_id"]
        with site.archive() as db:
            try:
                db.candidate(candidate_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
            return Response(plots.draw_loss_curves(measurements.loss_curves(db, candidate_id)), media_type="image/png")

    def lineage_page(request: Request) -> Response:
        candidate_id = request.path_params["candidate_id"]
        with site.archive() as db:
            try:
                tree = lineage.lineage(db, candidate_id)
            except ArchiveError as e:
                raise HTTPException(404, str(e)) from None
        return site.render(request, "lineage.html", {"tree": tree, "c": tree.ancestry.row})

    async def candidate_flag(request: Request) -> Response:
        candidate_id = request.path_params["candidate_id"]
        form = await request.form()  # the Guard has checked its CSRF token and origin
        by = params.reviewer_name(form)

        def flag() -> Response:
            with site.archive() as db:
                try:
                    db.flag(candidate_id, by=by, reason=params.text(form, "reason"))
                except ArchiveError as e:
                    return candidate_page(request, candidate_id, error=str(e), status_code=400)
            return remember_reviewer(RedirectResponse(f"/candidate/{candidate_id}#reviews", status_code=303), by)

        return await run_in_threadpool(flag)

    def diff(request: Request) -> Response:
        a, b = params.int_param(request, "a"), params.int_param(request, "b")
        shown = None
        if a is not None and b is not None:
            with site.archive() as db:
                try:
                    left, right = db.candidate(a), db.candidate(b)
                except ArchiveError as e:
                    raise HTTPException(404, str(e)) from None
            shown = code_diff(left["code"], right["code"], f"#{a} {left['name']}", f"#{b} {right['name']}")
        return site.render(request, "diff.html", {"a": a, "b": b, "diff": shown})

    def compare(request: Request) -> Response:
        ids = params.ids(request)
        if not ids:
            return site.render(request, "compare.html", {"rows": [], "ids": ""})
        if not 2 <= len(ids) <= COMPARE_MAX:
            raise HTTPException(400, f"compare takes 2 to {COMPARE_MAX} candidates, not {len(ids)}")
        with site.archive() as db:
            rows = browse.rows_by_id(db, ids)
            missing = sorted(set(ids) - {row["id"] for row in rows})
            if missing:
                raise HTTPException(404, f"no candidate {', '.join(f'#{i}' for i in missing)} in this archive")
            codes = browse.candidate_fields(db, ids, ("code",))
        first = rows[0]
        diffs = [
            (row, code_diff(codes[first["id"]]["code"], codes[row["id"]]["code"], f"#{first['id']}", f"#{row['id']}"))
            for row in rows[1:]
        ]
        return site.render(
            request,
            "compare.html",
            {
                "rows": rows,
                "ids": ",".join(map(str, ids)),
                "diffs": diffs,
                "metrics": _metrics(rows),
                "mix": browse.rows_mix(rows),
            },
        )

    def curves_json(request: Request) -> Response:
        ids = params.ids(request)[:COMPARE_MAX]
        with site.archive() as db:
            names = browse.readable_names(db, browse.rows_by_id(db, ids))
            series = [
                (f"#{cid} {names[cid]}: {label}" if len(ids) > 1 else label, cid, curve)
                for cid in ids
                if cid in names
                for label, curve in measurements.loss_curves(db, cid)
            ]
        return JSONResponse(charts.loss_curves(series))

    return [
        Route("/candidate/{candidate_id:id}", candidate_get),
        Route("/candidate/{candidate_id:id}/code.py", candidate_code),
        Route("/candidate/{candidate_id:id}/model.onnx", candidate_graph),
        Route("/candidate/{candidate_id:id}/export.zip", candidate_export),
        Route("/candidate/{candidate_id:id}/lineage", lineage_page),
        Route("/candidate/{candidate_id:id}/curve.png", candidate_curve),
        Route("/candidate/{candidate_id:id}/flag", candidate_flag, methods=["POST"]),
        Route("/diff", diff),
        Route("/compare", compare),
        Route("/api/curves.json", curves_json),
    ]


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
