"""Reading a page request: its page number and pager, candidate and review ids, search text, form fields, links.

Every listing page and form reads its query string and fields the same way, and answers a bad value with the
same 400 that says what works: one module, so no page reads `?page=` or `?ids=` its own way. Every number is
bounded here before it reaches the archive: SQLite holds 64-bit integers, and a 23-digit `?page=` once reached it as
an OFFSET and came back as a 500 (OverflowError). Ids in a path (`/candidate/{candidate_id:id}`) go through the same
check, as the `id` path convertor registered below.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request

from agentarch.web import listing

PAGE_SIZE = listing.DEFAULT_PAGE_SIZE
MAX_PAGE = 10_000_000
"""The highest page number asked for: ten million pages of 25 rows is far more than an archive holds, and keeps
the OFFSET it makes well inside SQLite's integers."""
MAX_ID = 2**63 - 1
"""The largest id SQLite can store (a signed 64-bit integer); a larger one names nothing and cannot be queried."""
MAX_IDS = 100
"""Ids one `?ids=` may list: compare takes six, and the curves JSON as many."""
MAX_QUERY = 500
"""Characters of search text: a pasted name or a line of code fits; a megabyte of text is not a search."""

_DIGITS = re.compile(r"[0-9]{1,30}")  # ASCII digits only: str.isdigit() takes "²", which int() refuses


def whole(raw: str, name: str, low: int, high: int, what: str) -> int:
    """`raw` as a whole number in [low, high], or a 400 that names the parameter and the range it takes."""
    text = raw.strip()
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise HTTPException(400, f"{name} must be {what}, a whole number from {low} to {high}, not {shown!r}")
    return int(text)


def record_id(raw: str, name: str) -> int:
    """A candidate or review id (`#12` or `12`) within what SQLite stores."""
    return whole(raw.strip().removeprefix("#"), name, 1, MAX_ID, "an id such as 12")


class IdConvertor(Convertor[int]):
    """The `{name:id}` path convertor: Starlette's `int` with `record_id`'s bound, so `/candidate/<23 digits>` is a
    400 that says what an id is, not a 500 from the query it would make. Raised while routing, the 400 reaches the
    app's error page like any other."""

    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        return record_id(value, "the id in the address")

    def to_string(self, value: int) -> str:
        return str(int(value))


register_url_convertor("id", IdConvertor())


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


def page(request: Request) -> int:
    return whole(request.query_params.get("page", "1"), "page", 1, MAX_PAGE, "a page number")


def int_param(request: Request, name: str) -> int | None:
    """An optional id parameter (`?done=`, `?a=`): None when blank."""
    raw = request.query_params.get(name, "").strip()
    return record_id(raw, name) if raw else None


def url(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (None drops one); the token never goes into links."""
    params = {k: v for k, v in request.query_params.items() if k != "token"}
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    return request.url.path + (f"?{urlencode(params)}" if params else "")


def ids(request: Request) -> list[int]:
    """Candidate ids from `?ids=` (repeated, or separated by commas or spaces, `#` allowed), each once, in order."""
    raw = " ".join(request.query_params.getlist("ids")).replace(",", " ").split()
    if len(raw) > MAX_IDS:
        raise HTTPException(400, f"ids lists at most {MAX_IDS} candidates, not {len(raw)}; compare takes 2 to 6")
    return list(dict.fromkeys(record_id(item, "each of ids") for item in raw))


def query(request: Request) -> str:
    """The search text (`?q=`), stripped; a 400 past `MAX_QUERY` characters."""
    text = request.query_params.get("q", "").strip()
    if len(text) > MAX_QUERY:
        raise HTTPException(
            400, f"search text is at most {MAX_QUERY} characters, not {len(text)}; search for a name, an id or a phrase"
        )
    return text


NAME_CHARS = 100
"""Characters of a reviewer's name kept: it is stored with each decision and remembered in a cookie (which a browser
drops past 4 kB)."""


def reviewer_name(form: FormData) -> str:
    """Who decides, as the form's `by` field says ("web" when blank), cut to `NAME_CHARS`."""
    return text(form, "by").strip()[:NAME_CHARS] or "web"


def text(form: FormData, name: str) -> str:
    """A form field as text ("" when absent, or a file where text was expected)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""
