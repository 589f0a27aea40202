"""A candidate's smoke-stage measurements as its page shows them, each with a line on what it means.

Before a candidate trains, the sandbox's smoke stage times it (ms per batch on the training device), reads its peak
memory and scores the untrained network with zero-cost proxies (sandbox/proxies.py), which the task's predictor
learns from (agentarch/search/predictor.py). Each evaluation ran its own smoke stage, so each has its own figures. The
archive keeps the proxies as JSON text and what computing them took in the evaluation's timings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

PROXIES: dict[str, str] = {
    "synflow": "SynFlow: how much signal flows through the untrained network from an all-ones input with every "
    "weight made positive (log of the summed |weight × gradient|); needs no data. Higher tends to train better.",
    "grad_norm": "gradient norm: the size of the training loss's gradient over all parameters on one batch of real "
    "training data, at initialisation. Near 0 or huge warns of a network that will not train well.",
    "naswot": "NASWOT: how differently the ReLU-like units split one batch of examples at initialisation (the "
    "log-determinant of their agreement); higher means the untrained network already tells inputs apart. None "
    "for a network without ReLU-like activations.",
}
"""What each zero-cost proxy is, in one line, by the name the archive stores it under."""

SECONDS = "what computing the proxies cost, in seconds of the smoke stage (the price of these hints)"
"""The line for the proxies' cost."""


def proxies(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """An evaluation's proxy scores by name (from the archive's JSON text), known names first; the cost is
    `proxy_seconds`, not a score, and is left out. Empty when it has none or the text cannot be read."""
    scores = {
        str(k): float(v) for k, v in _stored(evaluation).items() if k != "seconds" and _number(v) and math.isfinite(v)
    }
    return {name: scores[name] for name in [*PROXIES, *sorted(scores)] if name in scores}


def proxy_seconds(evaluation: Mapping[str, Any]) -> float | None:
    """What computing the evaluation's proxies took: kept with the proxies as `seconds`, or in its timings."""
    seconds = _stored(evaluation).get("seconds")
    if seconds is None:
        seconds = (evaluation.get("timings") or {}).get("proxy_seconds")
    return float(seconds) if _number(seconds) else None


def _stored(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation's `proxies` column decoded (the archive keeps JSON text); empty for none or unreadable text."""
    raw = evaluation.get("proxies")
    try:
        found = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def measured(evaluations: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The evaluations whose smoke stage measured anything, oldest first: id, stage, latency_ms, peak_memory_mb,
    proxies (by name) and proxy_seconds."""
    rows = []
    for e in evaluations:
        row = {
            "id": e["id"],
            "stage": e.get("stage") or "explore",
            "latency_ms": e.get("latency_ms"),
            "peak_memory_mb": e.get("peak_memory_mb"),
            "proxies": proxies(e),
            "proxy_seconds": proxy_seconds(e),
        }
        if row["latency_ms"] is not None or row["proxies"] or row["proxy_seconds"] is not None:
            rows.append(row)
    return rows


def columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(name, what it is) of each proxy any of these rows has, in `PROXIES`' order, then any other by name."""
    seen = dict.fromkeys(name for row in rows for name in row["proxies"])
    named = [name for name in PROXIES if name in seen] + sorted(set(seen) - set(PROXIES))
    return [(name, PROXIES.get(name, "a proxy this version does not describe")) for name in named]
