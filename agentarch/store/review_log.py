"""What the review pages read: a candidate's reviews, the decisions and flags taken so far, and how many of a
run's proposals wait for a person. The queue itself and the decisions are `Archive`'s (`agentarch.store.decisions`).
"""

from __future__ import annotations

from typing import Any

from agentarch.store.archive import Archive
from agentarch.store.handle import _all, _count


def candidate_reviews(archive: Archive, candidate_id: int, proposal_key: str | None) -> list[dict[str, Any]]:
    """Every review of a candidate, oldest first: the gate's pauses of its proposal, and flags raised on it."""
    sql = "SELECT * FROM reviews WHERE candidate_id = ? OR (proposal_key IS NOT NULL AND proposal_key = ?) ORDER BY id"
    return list(archive.db.query(sql, [candidate_id, proposal_key]))


def decided_reviews(archive: Archive, limit: int | None, offset: int = 0) -> list[dict[str, Any]]:
    """Reviews that are not pending any more (decisions and flags), newest first."""
    sql = "SELECT * FROM reviews WHERE status != 'pending' ORDER BY id DESC LIMIT ? OFFSET ?"
    return list(archive.db.query(sql, [_all(limit), offset]))


def count_decided_reviews(archive: Archive) -> int:
    return _count(archive, "SELECT COUNT(*) FROM reviews WHERE status != 'pending'")


def count_pending_reviews(archive: Archive, run_id: str) -> int:
    return _count(archive, "SELECT COUNT(*) FROM reviews WHERE run_id = ? AND status = 'pending'", [run_id])
