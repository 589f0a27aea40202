"""The leaderboard's query string, read: filters, sort and page size, each refused with a 400 that says what works.

People type into these fields what the pages show them ("200k" parameters, "1.5M" FLOPs, "0.95"), and links
carry "any" for "no restriction", so every value is read leniently here and reaches the query layer as a number,
a date or a known key (`agentarch.store.browse.Filters`, `Sort`), never as text.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any

from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException

from agentarch.store.browse import FRONT, REVIEW_MARKS, SORTS, STAGES, Filters, Sort
from agentarch.store.measurements import MEASURES
from agentarch.store.records import CANDIDATE_STATUSES

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
ANY = ("", "any", "all")
"""Values that mean "no restriction" in a picker."""
ALL_TASKS = "all"

_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9}
_NUMBER = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)([kmg]?)")


def number(text: str, name: str) -> float | None:
    """A number as a person writes it: 200000, 200,000, 200_000, 200k, 1.5M, 1e6, 0.95 (None when blank)."""
    cleaned = text.strip().lower().replace(",", "").replace("_", "").replace(" ", "")
    if not cleaned:
        return None
    found = _NUMBER.fullmatch(cleaned)
    if found is None:
        raise HTTPException(400, f"{name} must be a number (e.g. 0.95, 200000, 200k or 1.5M), not {text!r}")
    value, suffix = found.groups()
    scaled = float(value) * _SUFFIXES.get(suffix, 1.0)
    if not math.isfinite(scaled):  # 1e999: no measure is that large, and SQLite would compare against infinity
        raise HTTPException(400, f"{name} is too large to be a measure (write e.g. 1e12 at most), not {text!r}")
    return scaled


def day(text: str, name: str) -> str | None:
    """A date as YYYY-MM-DD (what a date field sends), None when blank."""
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise HTTPException(400, f"{name} must be a date as YYYY-MM-DD, not {text!r}") from None


def choice(q: QueryParams, name: str, allowed: tuple[str, ...]) -> str | None:
    value = q.get(name, "").strip()
    if value.lower() in ANY:
        return None
    if value not in allowed:
        raise HTTPException(400, f"{name} is one of {', '.join(allowed)} (or any), not {value!r}")
    return value


def task_of(q: QueryParams, newest: str | None) -> str | None:
    """The task asked for: the newest one when the link names none, every task for `all`."""
    value = q.get("task", "").strip()
    if value == ALL_TASKS:
        return None
    return value or newest


def filters(q: QueryParams, task: str | None) -> Filters:
    ranges = []
    for key in MEASURES:
        low, high = number(q.get(f"{key}_min", ""), f"{key}_min"), number(q.get(f"{key}_max", ""), f"{key}_max")
        if low is not None or high is not None:
            ranges.append((key, low, high))
    proposer = q.get("proposer", "").strip()
    run = q.get("run", "").strip()
    return Filters(
        task=task,
        proposer=None if proposer.lower() in ANY else proposer,
        status=choice(q, "status", CANDIDATE_STATUSES),
        run=None if run.lower() in ANY else run,
        ranges=tuple(ranges),
        since=day(q.get("since", ""), "since"),
        until=day(q.get("until", ""), "until"),
        marks=tuple(mark for mark in REVIEW_MARKS if flag(q, mark)),
        stage=choice(q, "stage", STAGES),
        verified=flag(q, "verified"),
    )


def flag(q: QueryParams, name: str) -> bool:
    """A checkbox: ticked for 1, on or true (what a form and a link send), unticked when absent or anything else."""
    return q.get(name) in ("1", "on", "true")


def sort(q: QueryParams) -> Sort:
    key = q.get("sort", "best").strip() or "best"
    if key not in SORTS and key != FRONT:
        raise HTTPException(400, f"sort is one of {', '.join([*SORTS, FRONT])}, not {key!r}")
    return Sort(key, q.get("order", "desc") != "asc")


def page_size(q: QueryParams) -> int:
    raw = q.get("size", "").strip()
    if not raw:
        return DEFAULT_PAGE_SIZE
    if raw not in map(str, PAGE_SIZES):
        raise HTTPException(400, f"size is one of {', '.join(map(str, PAGE_SIZES))}, not {raw!r}")
    return int(raw)


def range_fields(q: QueryParams) -> dict[str, Any]:
    """The range inputs as typed, to show them back in the form."""
    return {f"{key}_{end}": q.get(f"{key}_{end}", "") for key in MEASURES for end in ("min", "max")}
