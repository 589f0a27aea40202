"""A judge's ratings of trained candidates (issue 28, `--judge MODEL`): novelty, soundness and complexity as integers
1-10 with a short justification, or the reason a rating failed, kept in the `judgments` table (schema 16).

Its own module because a rating is an opinion about a candidate, never one of its measures: the scores stay what the
evaluation measured, and whoever reads a rating (the run's objectives, parent selection's tie-breaker, `archive show`,
the candidate page) asks here. Everything written was parsed and bounded by agentarch.llm.judge first; the
justification is still model-written text, which every reader shows escaped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agentarch.store.handle import _IDS, Handle, capped, now

JUDGED = "judged"
FAILED = "failed"

_COLUMNS = (
    "status",
    "model",
    "novelty",
    "soundness",
    "complexity",
    "score",
    "justification",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
)


def record(archive: Handle, candidate_id: int, run_id: str | None, judgment: dict[str, Any]) -> None:
    """Keep `judgment` (agentarch.llm.judge's: status, model, ratings or error, calls, tokens, cost) for the candidate.
    At most one per candidate: a record step replayed after a crash keeps the first rating, never a second row."""
    row = {column: judgment.get(column) for column in _COLUMNS}
    row.update(
        candidate_id=candidate_id,
        run_id=run_id,
        call_ids=json.dumps([int(i) for i in judgment.get("call_ids") or []]),
        created_at=now(),
    )
    with archive._writing():
        archive.db["judgments"].insert(capped(row), ignore=True)


def for_candidate(archive: Handle, candidate_id: int) -> dict[str, Any] | None:
    """The candidate's judgment (its `call_ids` decoded), or None when it was never judged."""
    rows = list(archive.db["judgments"].rows_where("candidate_id = ?", [candidate_id], limit=1))
    if not rows:
        return None
    row = rows[0]
    return {**row, "call_ids": json.loads(row["call_ids"] or "[]")}


def scores(archive: Handle, candidate_ids: Sequence[int]) -> dict[int, float]:
    """The judge's score of each candidate that was rated (a failed judgment has none), by id: what an objective
    `judge:max` and the parent choice's tie-breaker read."""
    if not candidate_ids:
        return {}
    rows = archive.db.execute(
        f"SELECT candidate_id, score FROM judgments WHERE status = ? AND candidate_id IN ({_IDS})",
        [JUDGED, json.dumps(list(candidate_ids))],
    ).fetchall()
    return {int(i): float(score) for i, score in rows if score is not None}


def of_run(archive: Handle, run_id: str) -> dict[str, Any]:
    """What a run's judge came to: candidates judged, judgments failed, and what its calls cost."""
    rows = archive.db.execute(
        "SELECT status, COUNT(*), COALESCE(SUM(cost_usd), 0) FROM judgments WHERE run_id = ? GROUP BY status", [run_id]
    ).fetchall()
    counts = {status: int(n) for status, n, _ in rows}
    return {
        JUDGED: counts.get(JUDGED, 0),
        FAILED: counts.get(FAILED, 0),
        "cost_usd": round(sum(float(c) for _, _, c in rows), 6),
    }
