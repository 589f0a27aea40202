"""Downloads: a listing's rows as CSV or JSON (`?format=`), one page of them or every row (`all=1`), code and other
files (a candidate's graph, its export bundle) to save.

The leaderboard, search, runs and review queue all offer the same two formats, picked by the same parameters;
one module, so a download names the same columns on every page. CSV cells that a spreadsheet would run as a
formula are neutralised by `formats.write_csv`.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from agentarch import formats
from agentarch.web.params import PAGE_SIZE

_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def attachment(filename: str) -> str:
    """A Content-Disposition that saves the response as `filename`, each run of characters a file name does not need
    (anything but letters, digits, `.`, `_` and `-`) written as `_`.

    A name can carry what a request asked for (the leaderboard's `?task=`): a quote in it added parameters of its own
    (`filename*=UTF-8''evil.html`, which browsers prefer), a character outside Latin-1 made Starlette's header encoding
    fail (a 500), and a CR LF made uvicorn drop the connection."""
    return f'attachment; filename="{_UNSAFE_IN_NAME.sub("_", filename)}"'


def respond(request: Request, rows: list[dict[str, Any]], columns: tuple[str, ...], name: str) -> Response:
    """The view's rows as CSV or JSON (`?format=`); lists and dicts become JSON text in a CSV cell."""
    fmt = request.query_params["format"]
    picked = [{c: row.get(c) for c in columns} for row in rows]
    if fmt == "json":
        return Response(
            json.dumps(picked, default=str),
            media_type="application/json",
            headers={"Content-Disposition": attachment(f"{name}.json")},
        )
    if fmt != "csv":
        raise HTTPException(400, f"format is csv or json, not {fmt!r}")
    buffer = io.StringIO()
    formats.write_csv(buffer, picked, columns)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": attachment(f"{name}.csv")},
    )


def requested(request: Request) -> bool:
    return "format" in request.query_params


def window(request: Request, page: int, size: int = PAGE_SIZE) -> tuple[int | None, int]:
    """(limit, offset) of the rows a request asks for: one page, or every row for an export with `all=1`."""
    if requested(request) and request.query_params.get("all") == "1":
        return None, 0
    return size, (page - 1) * size


def code_download(code: str, filename: str) -> Response:
    """Code as a file to save, never a page to render (the candidate and review pages show only its start)."""
    return Response(
        code,
        media_type="text/x-python; charset=utf-8",
        headers={"Content-Disposition": attachment(filename), "X-Content-Type-Options": "nosniff"},
    )


def file_download(data: bytes, filename: str, media_type: str) -> Response:
    """Bytes as a file to save under `filename` (made safe by `attachment`), never sniffed into something to render."""
    return Response(
        data,
        media_type=media_type,
        headers={"Content-Disposition": attachment(filename), "X-Content-Type-Options": "nosniff"},
    )
