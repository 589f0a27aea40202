"""A run's ledgers: what it started and what it spent, kept as it goes so a resumed run knows exactly where it is.

Three of them: the LLM calls (every attempt with its tokens, cost, latency and error: the --max-cost budget and
the faults a run reports), the proposals (planned before each starts, its outcome when it ends: what is in
flight), and the sandbox jobs started and finished (a candidate the orchestrator keeps dying under is recorded
failed on resume instead of replayed). Its own module because these rows are bookkeeping about a run's work,
apart from the results it records (`agentarch.store.records`).
"""

from __future__ import annotations

import json
from typing import Any

from agentarch.store.decisions import code_sha256
from agentarch.store.handle import Handle, _where, capped, now


class Ledger(Handle):
    """The part of `Archive` that keeps a run's ledgers: LLM calls, proposals, and sandbox jobs started."""

    def record_llm_call(self, call: dict[str, Any]) -> int:
        """Append one LLM call (or failed attempt) to the ledger; returns its id."""
        with self._writing():
            return int(self.db["llm_calls"].insert({"created_at": now(), **capped(call)}).last_pk)

    def llm_calls(self, run_id: str | None = None, candidate_id: int | None = None) -> list[dict[str, Any]]:
        where, args = _where({"run_id": run_id, "candidate_id": candidate_id})
        return list(self.db["llm_calls"].rows_where(where, args, order_by="id"))

    def llm_faults(self, run_id: str) -> dict[str, int]:
        """How many of a run's LLM attempts failed, by kind (rate_limited, server_error, timeout, ...)."""
        rows = self.db.execute(
            "SELECT status, COUNT(*) FROM llm_calls WHERE run_id = ? AND status != 'ok' "
            "GROUP BY status ORDER BY status",
            [run_id],
        ).fetchall()
        return {status: int(n) for status, n in rows}

    def spent_usd(self, run_id: str) -> float:
        """What a run's LLM calls cost so far (the --max-cost budget)."""
        row = self.db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM llm_calls WHERE run_id = ?", [run_id]).fetchone()
        return float(row[0])

    def llm_seconds(self, run_id: str) -> float:
        """The seconds a run's LLM calls took, every attempt (what a local model costs instead of dollars)."""
        row = self.db.execute("SELECT COALESCE(SUM(latency_s), 0) FROM llm_calls WHERE run_id = ?", [run_id]).fetchone()
        return float(row[0])

    def reopen_run(self, run_id: str) -> None:
        """A stopped run is resumed: `running` again until it finishes or stops once more."""
        with self._writing():
            self.db.execute("UPDATE runs SET status = 'running', ended_at = NULL WHERE id = ?", [run_id])

    def evaluation_started(self, run_id: str, proposal_key: str, code: str, stage: str) -> int:
        """Mark, before the sandbox starts, that the agent loop starts this job; returns how many earlier starts
        of the same job never finished (the orchestrator died while the candidate was in the sandbox)."""
        key = [run_id, proposal_key, code_sha256(code), stage]
        with self._writing():
            row = self.db.execute(
                "SELECT started, finished FROM evaluation_starts WHERE run_id = ? "
                "AND proposal_key = ? AND code_sha256 = ? AND stage = ?",
                key,
            ).fetchone()
            started, finished = row or (0, 0)
            self.db["evaluation_starts"].upsert(
                {
                    "run_id": key[0],
                    "proposal_key": key[1],
                    "code_sha256": key[2],
                    "stage": key[3],
                    "started": started + 1,
                    "finished": finished,
                    "updated_at": now(),
                },
                pk=("run_id", "proposal_key", "code_sha256", "stage"),
            )
        return int(started - finished)

    def evaluation_finished(self, run_id: str, proposal_key: str, code: str, stage: str) -> None:
        """The job marked by `evaluation_started` came back (whatever its verdict): the host survived it."""
        with self._writing():
            self.db.execute(
                "UPDATE evaluation_starts SET finished = finished + 1, updated_at = ? WHERE run_id = ? "
                "AND proposal_key = ? AND code_sha256 = ? AND stage = ?",
                [now(), run_id, proposal_key, code_sha256(code), stage],
            )

    def open_proposal(self, run_id: str, key: str, seq: int, island: int, plan: dict[str, Any]) -> None:
        """Enter a proposal in its run's ledger before it starts (the scheduler's first write about it)."""
        with self._writing():
            self.db["proposals"].insert(
                {
                    "key": key,
                    "run_id": run_id,
                    "seq": seq,
                    "island": island,
                    "plan": json.dumps(plan),
                    "started_at": now(),
                },
                ignore=True,
            )

    def close_proposal(self, key: str, outcome: dict[str, Any]) -> None:
        """A proposal ended: keep its outcome (the first one, should a resumed run close it again)."""
        with self._writing():
            self.db.execute(
                "UPDATE proposals SET outcome = ?, ended_at = ? WHERE key = ? AND outcome IS NULL",
                [json.dumps(outcome), now(), key],
            )

    def proposals(self, run_id: str) -> list[dict[str, Any]]:
        """A run's ledger, in the order its proposals ended (those still open last, by start): plan and outcome
        decoded, the outcome None while the proposal is open."""
        rows = self.db.execute(
            "SELECT key, seq, island, plan, outcome FROM proposals WHERE run_id = ? "
            "ORDER BY ended_at IS NULL, ended_at, seq",
            [run_id],
        ).fetchall()
        return [
            {
                "key": key,
                "seq": seq,
                "island": island,
                "plan": json.loads(plan),
                "outcome": outcome and json.loads(outcome),
            }
            for key, seq, island, plan, outcome in rows
        ]
