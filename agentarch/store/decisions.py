"""The decisions kept about proposals: a person's review (the gate's pauses, their decisions, flags raised
afterwards) and a screening group's choice of the member it trains.

Each decision is kept once, before anyone acts on it, and covers exactly what it was taken on: a review the code
it showed (by `code_sha256`), a screening its group's predictions. So a resumed run follows the decisions already
taken and every one can be audited. Its own module because both are decisions that stand, apart from what the
run records of the candidates themselves.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlite_utils

from agentarch.store.handle import ArchiveError, Handle, _where, capped, now


def code_sha256(code: str) -> str:
    """The exact identity of a piece of code (no normalization): what a review decision covers."""
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


class Decisions(Handle):
    """The part of `Archive` that keeps reviews and screening decisions."""

    def request_review(self, review: dict[str, Any]) -> int:
        """Queue a paused candidate for a person, once per proposal and code; returns the review id.

        The row keeps the sha256 of the code it shows, so its decision covers that code and no other:
        the same proposal with changed code (an LLM repair) is queued again as a new review.
        """
        digest = code_sha256(review["code"] or "")
        with self._writing():
            found = self.db.execute(
                "SELECT id FROM reviews WHERE proposal_key = ? AND code_sha256 = ?", [review["proposal_key"], digest]
            ).fetchone()
            if found:
                return int(found[0])
            return int(
                self.db["reviews"]
                .insert(
                    {"created_at": now(), "kind": "gate", "status": "pending", **capped(review), "code_sha256": digest}
                )
                .last_pk
            )

    def reviews(self, status: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        where, args = _where({"status": status, "run_id": run_id})
        return list(self.db["reviews"].rows_where(where, args, order_by="id"))

    def review(self, review_id: int) -> dict[str, Any]:
        try:
            return dict(self.db["reviews"].get(review_id))
        except sqlite_utils.db.NotFoundError:
            raise ArchiveError(f"no review {review_id}; `agentarch review --list` shows the queue") from None

    def decide(self, review_id: int, status: str, by: str, reason: str | None = None, code: str | None = None) -> None:
        """Record a person's decision on a pending review: approved, rejected (with a reason) or edited (with code)."""
        if status not in ("approved", "rejected", "edited"):
            raise ArchiveError(f"a decision is approved, rejected or edited, not {status!r}")
        if status == "rejected" and not (reason or "").strip():
            raise ArchiveError("say why when rejecting: the reason is kept with the candidate and shown to the LLM")
        if status == "edited" and not (code or "").strip():
            raise ArchiveError("an edit needs the edited code")
        with self._writing():
            row = self.db.execute("SELECT status FROM reviews WHERE id = ?", [review_id]).fetchone()
            if row is None:
                raise ArchiveError(f"no review {review_id}; `agentarch review --list` shows the queue")
            if row[0] != "pending":
                raise ArchiveError(f"review {review_id} was already decided ({row[0]}); nothing changed")
            self.db["reviews"].update(
                review_id,
                {
                    "status": status,
                    "decided_by": by,
                    "decided_at": now(),
                    "reason": reason,
                    "decision_code": code,
                    "decision_code_sha256": code_sha256(code) if status == "edited" and code is not None else None,
                },
            )

    def flag(self, candidate_id: int, by: str, reason: str) -> int:
        """A person's after-the-fact flag on a recorded candidate (e.g. a suspicious score)."""
        self.candidate(candidate_id)
        if not reason.strip():
            raise ArchiveError("say why the candidate is flagged")
        with self._writing():
            return int(
                self.db["reviews"]
                .insert(
                    {
                        "created_at": now(),
                        "kind": "flag",
                        "candidate_id": candidate_id,
                        "status": "flagged",
                        "decided_by": by,
                        "decided_at": now(),
                        "reason": reason,
                    }
                )
                .last_pk
            )

    def link_review(self, proposal_key: str, candidate_id: int) -> None:
        with self._writing():
            self.db.execute("UPDATE reviews SET candidate_id = ? WHERE proposal_key = ?", [candidate_id, proposal_key])

    def decide_screening(self, run_id: str, group: int, decision: dict[str, Any]) -> None:
        """Keep a screening group's decision; the first one kept stands (a second decider's is ignored)."""
        with self._writing():
            self.db["screenings"].insert(
                {
                    "run_id": run_id,
                    "grp": group,
                    "winner": decision["winner"],
                    "how": decision["how"],
                    "predictions": json.dumps(decision["predictions"]),
                    "created_at": now(),
                },
                ignore=True,
            )

    def screening(self, run_id: str, group: int) -> dict[str, Any] | None:
        """A screening group's decision (winner, how, predictions by proposal key), or None before it is taken."""
        row = self.db.execute(
            "SELECT winner, how, predictions FROM screenings WHERE run_id = ? AND grp = ?", [run_id, group]
        ).fetchone()
        return None if row is None else {"winner": row[0], "how": row[1], "predictions": json.loads(row[2])}
