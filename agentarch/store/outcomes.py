"""What a run learns from its own candidates and reads back on every resume: its notebook, its verify
retrainings, and each LLM proposal's outcome for the model bandit.

The loop rebuilds its state from these (the notebook's notes go into later prompts, the bandit's scores come from
the outcomes, a verified candidate is not retrained) instead of keeping it anywhere else, so a resumed run goes
on exactly as it would have. Its own module because these are the reads and writes that feed a run back into
itself.
"""

from __future__ import annotations

import json
from typing import Any

from agentarch.store.handle import Handle, capped, now
from agentarch.store.ranking import sql_sign
from agentarch.store.scoring import SCORING_EVALUATION


class Outcomes(Handle):
    """The part of `Archive` that keeps a run's notebook and reads back its verify retrainings and model outcomes."""

    def verified(self, run_id: str) -> dict[int, dict[str, Any]]:
        """The run's candidates that have a verify-stage evaluation, each with that evaluation's scores."""
        rows = self.db.execute(
            "SELECT e.candidate_id, e.status, e.fidelity, e.val_accuracy, e.test_accuracy FROM evaluations e "
            "JOIN candidates c ON c.id = e.candidate_id WHERE c.run_id = ? AND e.stage = 'verify' ORDER BY e.id",
            [run_id],
        ).fetchall()
        return {
            cid: {"id": cid, "status": status, "epochs": fidelity, "val_accuracy": val, "test_accuracy": test}
            for cid, status, fidelity, val, test in rows
        }

    def add_note(self, run_id: str, task: str, after: int, text: str, cites: list[int]) -> None:
        """Keep the run's notebook entry written after its `after`-th recorded candidate (once: a resumed run that
        writes it again keeps the first)."""
        with self._writing():
            self.db["notes"].insert(
                {
                    "run_id": run_id,
                    "task": task,
                    "after": after,
                    "text": capped({"text": text})["text"],
                    "cites": json.dumps(cites),
                    "created_at": now(),
                },
                ignore=True,
            )

    def notes(self, run_id: str) -> list[dict[str, Any]]:
        """The run's notebook, oldest first, `cites` decoded."""
        rows = self.db.execute(
            "SELECT after, text, cites, created_at FROM notes WHERE run_id = ? ORDER BY after", [run_id]
        ).fetchall()
        return [{"after": a, "text": t, "cites": json.loads(c or "[]"), "created_at": w} for a, t, c, w in rows]

    def model_outcomes(self, task: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every LLM proposal for `task` (of one run, or of all runs) with what the model bandit
        (agentarch.loop.bandit) scores it by, so that its state is rebuilt from the archive on every resume.

        First one row per candidate with a model, by id: `candidate_id`, `model`, `status`, `val_accuracy` (its
        first trained evaluation: the one the loop recorded, which a later verify does not change), `reference` (the
        score it set out to beat at that evaluation's fidelity: its first parent's earliest evaluation there, else
        the parent's scoring one; without a parent, the best score of the task's earlier candidates there),
        `cost_usd` and `llm_seconds` (over its linked LLM calls). Then one row per propose attempt left without a
        candidate (the LLM never answered), by ledger id: `candidate_id` None, `model`, `status` (the ledger's),
        `attempt`, `cost_usd`, `llm_seconds`.
        """
        first = "(SELECT id FROM evaluations WHERE candidate_id = o.id AND status = 'trained' ORDER BY id LIMIT 1)"
        parent = "json_extract(o.parents, '$[0]')"
        signed = sql_sign("(SELECT direction FROM tasks WHERE name = o.task)")
        only_run = "AND o.run_id = ?" if run_id is not None else ""
        rows = self.db.execute(
            f"""SELECT o.id, o.model, o.status, e.val_accuracy,
                CASE WHEN {parent} IS NOT NULL THEN COALESCE(
                    (SELECT val_accuracy FROM evaluations WHERE candidate_id = {parent} AND status = 'trained'
                     AND fidelity IS e.fidelity ORDER BY id LIMIT 1),
                    (SELECT {SCORING_EVALUATION.format(column="val_accuracy")} FROM candidates c WHERE c.id = {parent}))
                ELSE (SELECT MAX(b.val_accuracy * {signed}) * {signed} FROM evaluations b
                      JOIN candidates p ON p.id = b.candidate_id
                      WHERE p.task = o.task AND p.id < o.id AND b.status = 'trained' AND b.fidelity IS e.fidelity)
                END,
                COALESCE((SELECT SUM(cost_usd) FROM llm_calls WHERE candidate_id = o.id), o.cost_usd, 0),
                COALESCE((SELECT SUM(latency_s) FROM llm_calls WHERE candidate_id = o.id), 0)
            FROM candidates o LEFT JOIN evaluations e ON e.id = {first}
            WHERE o.task = ? AND o.model IS NOT NULL {only_run} ORDER BY o.id""",
            [task] if run_id is None else [task, run_id],
        ).fetchall()
        outcomes: list[dict[str, Any]] = [
            dict(zip(("candidate_id", "model", "status", "val_accuracy", "reference", "cost_usd", "llm_seconds"), row))
            for row in rows
        ]
        only_run = "AND l.run_id = ?" if run_id is not None else ""
        calls = self.db.execute(
            f"""SELECT l.model, l.status, l.attempt, COALESCE(l.cost_usd, 0), COALESCE(l.latency_s, 0)
            FROM llm_calls l JOIN runs r ON r.id = l.run_id
            WHERE l.candidate_id IS NULL AND l.purpose = 'propose' AND r.task = ? {only_run} ORDER BY l.id""",
            [task] if run_id is None else [task, run_id],
        ).fetchall()
        keys = ("model", "status", "attempt", "cost_usd", "llm_seconds")
        return outcomes + [{"candidate_id": None, **dict(zip(keys, call))} for call in calls]
