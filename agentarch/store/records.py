"""The archive's writes of what happened: runs (started, finished), tasks (what their scores are), and each
candidate with its evaluations, every one a single transaction.

Nothing about a candidate is written before its outcome is known, so a crash leaves no half-recorded row; a
proposal recorded twice (a resumed run) is kept once. Its own module because these are the writes every
proposer's results go through, apart from the ledgers a run keeps on the way (`agentarch.store.ledger`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from agentarch import formats
from agentarch.store.handle import ArchiveError, Handle, capped, now
from agentarch.tasks.task import Task

CANDIDATE_STATUSES = ("trained", "invalid", "duplicate", "failed", "timeout", "rejected", "screened")


class Records(Handle):
    """The part of `Archive` that records runs, tasks, candidates and evaluations."""

    def register_task(self, task: Task) -> None:
        """Keep what `task`'s scores are (its metric and direction, kind and description) before any is recorded:
        every ranking reads the direction from here, and the archive stays readable without the task's file.

        Called by the evaluator once its task's data is prepared and before each record, and for a table search's
        record. A task already kept is left as it is; the same name with another metric is refused, since its
        scores so far would be ranked by the wrong rule.
        """
        kept = self._task_row(task.name)
        if kept is None:
            with self._writing():
                if self._task_row(task.name) is None:  # again, under the write lock
                    self._insert_task(task)
            return
        if kept["metric"] != task.metric:
            raise ArchiveError(
                f"{self.path} holds task {task.name!r} scored by {kept['metric']}, not {task.metric}; "
                "give a task with another metric another name (or use another --archive)"
            )

    def start_run(self, kind: str, task: str, proposer: str, config: dict[str, Any]) -> str:
        run_id = f"{kind}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self._writing():
            self.db["runs"].insert(
                {
                    "id": run_id,
                    "kind": kind,
                    "task": task,
                    "proposer": proposer,
                    "config": json.dumps(config),
                    "status": "running",
                    "started_at": now(),
                }
            )
        return run_id

    @contextmanager
    def run(
        self, kind: str, task: str, proposer: str, config: dict[str, Any], summary: Callable[[], dict[str, Any]]
    ) -> Iterator[str]:
        """Start a run, yield its id, and finish it however the block ends, with `summary()` as it stands.

        `finished` when the block completes, `interrupted` on Ctrl-C, `failed` (with the error's
        message) on any other exception, which then goes on up: no run is left `running` by a command.
        """
        run_id = self.start_run(kind, task, proposer, config)
        try:
            yield run_id
        except KeyboardInterrupt:
            self.finish_run(run_id, "interrupted", summary())
            raise
        except BaseException as err:
            self.finish_run(run_id, "failed", {**summary(), "error": str(err)[:2000]})
            raise
        self.finish_run(run_id, "finished", summary())

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self._writing():
            self.db["runs"].update(run_id, {"status": status, "ended_at": now(), "summary": json.dumps(summary)})

    def record(
        self, candidate: dict[str, Any], evaluation: dict[str, Any] | None = None, llm_calls: list[int] = ()
    ) -> int:  # type: ignore[assignment]
        """Write a candidate and (when it ran) its evaluation in one transaction; returns the candidate id.

        Nothing about a candidate is written before its outcome is known, so a crash mid-evaluation
        leaves no half-recorded row behind. `llm_calls` (ledger ids) are linked to the candidate in
        the same transaction. List and dict values are stored as JSON.

        A candidate carrying a `proposal_key` is written at most once: recording the same proposal
        again (an agent loop resumed after a crash between its write and its checkpoint) returns
        the id of the row already there.
        """
        row = {"created_at": now(), **{k: formats.cell(v) for k, v in capped(candidate).items()}}
        with self._writing():
            key = candidate.get("proposal_key")
            if key is not None:
                found = self.db.execute("SELECT id FROM candidates WHERE proposal_key = ?", [key]).fetchone()
                if found:
                    return int(found[0])
            candidate_id = int(self.db["candidates"].insert(row).last_pk)
            if evaluation is not None:
                self.db["evaluations"].insert(
                    {
                        "candidate_id": candidate_id,
                        "task": candidate["task"],
                        "created_at": now(),
                        **{k: formats.cell(v) for k, v in capped(evaluation).items()},
                    }
                )
            for call_id in llm_calls:
                self.db["llm_calls"].update(call_id, {"candidate_id": candidate_id})
        return candidate_id

    def add_evaluation(self, candidate_id: int, task: str, evaluation: dict[str, Any]) -> int:
        """Another evaluation of a recorded candidate (a longer training budget: a higher fidelity)."""
        with self._writing():
            return int(
                self.db["evaluations"]
                .insert(
                    {
                        "candidate_id": candidate_id,
                        "task": task,
                        "created_at": now(),
                        **{k: formats.cell(v) for k, v in capped(evaluation).items()},
                    }
                )
                .last_pk
            )
