"""The persistent archive: every candidate, every evaluation, every run, in one SQLite file.

sqlite-utils does the schema work; every write is one transaction (`Database.atomic`), the file is
in WAL mode so readers (the CLI, Datasette, the web UI) never block the writer, and a schema
version in `meta` stops an older agentarch from misreading a newer file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import sqlite_utils
from sqlite_utils.db import DescIndex

from agentarch import formats
from agentarch.errors import AgentarchError
from agentarch.store.ranking import Direction, sql_key, sql_order, sql_sign
from agentarch.tasks.registry import TASKS, Task

SCHEMA_VERSION = 12

CANDIDATE_STATUSES = ("trained", "invalid", "duplicate", "failed", "timeout", "rejected", "screened")
# A candidate whose code or function matches one of these was already evaluated (or already failed
# deterministically), so running it again would only spend compute.
_DEDUP_POOL = ("trained", "failed", "timeout")
STRUCTURE_MEMBERS = 500
"""How many trained candidates' structure signatures a new candidate is compared with (`Archive.structures`)."""
DedupLevel = Literal["whitespace", "ast", "functional", "structural"]
"""The levels at which a candidate can duplicate a recorded one (`candidates.dedup_level`)."""

_HASH_COLUMN: dict[DedupLevel, str] = {"whitespace": "text_hash", "ast": "ast_hash", "functional": "functional_hash"}

_SCORING_IN = (
    "(SELECT {{column}} FROM evaluations WHERE candidate_id = c.id AND status = 'trained' "
    "ORDER BY fidelity DESC, {order}, id LIMIT 1)"
)
SCORING_EVALUATION = (
    f"CASE {sql_sign('(SELECT direction FROM tasks WHERE name = c.task)')} "
    f"WHEN 1 THEN {_SCORING_IN.format(order=sql_order('val_accuracy', 'max'))} "
    f"ELSE {_SCORING_IN.format(order=sql_order('val_accuracy', 'min'))} END"
)
"""The evaluation a candidate's scores come from, as SQL over a candidate aliased `c`: among its trained
evaluations the highest fidelity (the longest training), then the best validation score by the task's direction
(`agentarch.store.ranking`), then the earliest. `{column}` is what it returns (`id` to join it, `val_accuracy` to rank
by it). It is a CASE over the two directions, each written with its direction known, because SQLite lets no
ORDER BY term of a subquery read the outer row, and so that schema 6's index idx_evaluations_scored delivers the
order and holds every column read: evaluation rows, which carry whole loss curves, are never read."""

TASK_JOIN = "LEFT JOIN tasks task_row ON task_row.name = c.task"
"""The `tasks` row of candidate `c` as `task_row` (all NULL for a task the archive has no row for): where a
listing's metric and direction come from, and what `sql_key(..., "task_row.direction")` ranks by."""

DEFAULT_METRIC = "accuracy"
"""The metric of a task the archive has no `tasks` row for: every score was an accuracy before schema 7."""

_LISTING = f"""
    SELECT c.id, c.created_at, c.run_id, c.task, c.name, c.proposer, c.model, c.parents, c.space, c.arch, c.status,
           c.reason, c.duplicate_of, c.dedup_level, COALESCE(c.params, e.params) AS params,
           COALESCE(c.flops, e.flops) AS flops, e.fidelity, e.seed, e.val_accuracy, e.test_accuracy, e.train_seconds,
           e.latency_ms, e.peak_memory_mb, e.stage, c.island,
           COALESCE(task_row.metric, '{DEFAULT_METRIC}') AS metric, COALESCE(task_row.direction, 'max') AS direction
    FROM {{source}}
    LEFT JOIN evaluations e ON e.id = ({SCORING_EVALUATION.format(column="id")})
    {TASK_JOIN}
    {{tail}}"""


class ArchiveError(AgentarchError, RuntimeError):
    """The archive cannot be used as asked; the message says what to do."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def code_sha256(code: str) -> str:
    """The exact identity of a piece of code (no normalization): what a review decision covers."""
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


class Archive:
    """A handle on one archive file. Cheap to open; one per process or thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        try:
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.enable_wal()
        except sqlite3.DatabaseError as err:
            raise ArchiveError(
                f"{self.path} is not an agentarch archive (SQLite says: {err}); pass another --archive path"
            ) from err
        self._migrate()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction that takes SQLite's write lock at its start (BEGIN IMMEDIATE).

        A deferred transaction that reads first and writes later cannot wait for a concurrent
        writer in WAL mode (SQLite answers "database is locked" at once); taking the lock up front
        lets the busy timeout queue writers from several threads and processes instead.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.conn.rollback()
            raise
        self.db.conn.commit()

    # -- schema -------------------------------------------------------------------------------

    def schema_version(self) -> int:
        if "meta" not in self.db.table_names():
            return 0
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise ArchiveError(
                f"{self.path} was written by a newer agentarch (schema {version}, this one reads up to "
                f"{SCHEMA_VERSION}); upgrade agentarch to open it. Nothing was changed."
            )
        if version == SCHEMA_VERSION:
            return
        if version == 0 and set(self.db.table_names()) - {"meta"}:
            raise ArchiveError(f"{self.path} holds tables but no agentarch schema version; pass another --archive path")
        with self._writing():
            version = self.schema_version()  # again, under the write lock: another process may have just migrated
            if version >= SCHEMA_VERSION:
                return
            if version < 1:
                self._create_v1()
            if version < 2:
                self._upgrade_to_v2()
            if version < 3:
                self._upgrade_to_v3()
            if version < 4:
                self._upgrade_to_v4()
            if version < 5:
                self._upgrade_to_v5()
            if version < 6:
                self._upgrade_to_v6()
            if version < 7:
                self._upgrade_to_v7()
            if version < 8:
                self._upgrade_to_v8()
            if version < 9:
                self._upgrade_to_v9()
            if version < 10:
                self._upgrade_to_v10()
            if version < 11:
                self._upgrade_to_v11()
            if version < 12:
                self._upgrade_to_v12()
            self.db["meta"].insert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, replace=True)

    def _create_v1(self) -> None:
        """The first schema: runs, candidates (code, hashes, lineage), evaluations (scores, curves, errors)."""
        self.db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
        self.db["runs"].create(
            {
                "id": str,
                "kind": str,
                "task": str,
                "proposer": str,
                "config": str,
                "status": str,
                "started_at": str,
                "ended_at": str,
                "summary": str,
            },
            pk="id",
        )
        self.db["candidates"].create(
            {
                "id": int,
                "created_at": str,
                "run_id": str,
                "task": str,
                "name": str,
                "proposer": str,
                "parents": str,
                "code": str,
                "text_hash": str,
                "ast_hash": str,
                "functional_hash": str,
                "hparams": str,
                "status": str,
                "reason": str,
                "duplicate_of": int,
                "dedup_level": str,
                "params": int,
                "flops": int,
            },
            pk="id",
            not_null={"created_at", "task", "proposer", "code", "status"},
            foreign_keys=[("run_id", "runs", "id"), ("duplicate_of", "candidates", "id")],
        )
        self.db["evaluations"].create(
            {
                "id": int,
                "candidate_id": int,
                "task": str,
                "fidelity": int,
                "seed": int,
                "status": str,
                "val_accuracy": float,
                "test_accuracy": float,
                "params": int,
                "flops": int,
                "train_seconds": float,
                "wall_seconds": float,
                "peak_memory_mb": float,
                "device": str,
                "isolation": str,
                "curve": str,
                "timings": str,
                "error": str,
                "created_at": str,
            },
            pk="id",
            not_null={"candidate_id", "task", "status", "created_at"},
            foreign_keys=[("candidate_id", "candidates", "id")],
        )
        for column in ("text_hash", "ast_hash", "functional_hash"):
            self.db["candidates"].create_index(["task", column])
        self.db["candidates"].create_index(["task", "status"])
        self.db["evaluations"].create_index(["candidate_id"])
        self.db["evaluations"].create_index(["task", "val_accuracy"])

    def _upgrade_to_v2(self) -> None:
        """Schema 2: a candidate proposed from a declared search space keeps its space and architecture string."""
        self.db["candidates"].add_column("space", str)
        self.db["candidates"].add_column("arch", str)
        self.db["candidates"].create_index(["task", "space", "arch"])

    def _upgrade_to_v3(self) -> None:
        """Schema 3: what an LLM-proposed candidate came from (prompt, answer, model, examples, analysis)
        and a ledger of every LLM call with its tokens, cost, latency and error."""
        for column, kind in (
            ("proposal_key", str),
            ("model", str),
            ("prompt", str),
            ("response", str),
            ("examples", str),
            ("analysis", str),
            ("repairs", int),
            ("prompt_tokens", int),
            ("completion_tokens", int),
            ("cost_usd", float),
        ):
            self.db["candidates"].add_column(column, kind)
        self.db["llm_calls"].create(
            {
                "id": int,
                "run_id": str,
                "candidate_id": int,
                "purpose": str,
                "model": str,
                "attempt": int,
                "status": str,
                "error": str,
                "prompt_tokens": int,
                "completion_tokens": int,
                "cost_usd": float,
                "latency_s": float,
                "created_at": str,
            },
            pk="id",
            not_null={"purpose", "model", "status", "created_at"},
            foreign_keys=[("candidate_id", "candidates", "id")],
        )
        self.db["candidates"].create_index(["proposal_key"], unique=True)
        self.db["llm_calls"].create_index(["run_id"])
        self.db["llm_calls"].create_index(["candidate_id"])

    def _upgrade_to_v4(self) -> None:
        """Schema 4: human review. A paused run's candidates wait here for a person's decision; a
        trained candidate can be flagged afterwards. Full-text search over code and analyses."""
        self.db["reviews"].create(
            {
                "id": int,
                "run_id": str,
                "proposal_key": str,
                "interrupt_id": str,
                "candidate_id": int,
                "kind": str,
                "code": str,
                "intent": str,
                "parent_id": int,
                "status": str,
                "decision_code": str,
                "reason": str,
                "decided_by": str,
                "decided_at": str,
                "created_at": str,
            },
            pk="id",
            not_null={"kind", "status", "created_at"},
            foreign_keys=[("candidate_id", "candidates", "id"), ("run_id", "runs", "id")],
        )
        self.db["evaluations"].add_column("worker", str)
        self.db["reviews"].create_index(["status"])
        self.db["reviews"].create_index(["proposal_key"], unique=True)
        self.db["candidates"].enable_fts(["name", "code", "analysis"], create_triggers=True, tokenize="porter")

    def _upgrade_to_v5(self) -> None:
        """Schema 5: a review decision covers exactly the code it was shown, by sha256 (and the code a person
        wrote, when they edit), so one proposal is reviewed again whenever its code changes after a decision.
        And a mark for every sandbox job the agent loop starts, so that a candidate the orchestrator keeps
        dying under (killed for memory, a segfault) is recorded as failed on resume instead of replayed."""
        self.db["reviews"].add_column("code_sha256", str)
        self.db["reviews"].add_column("decision_code_sha256", str)
        for review_id, code, decision_code in self.db.execute("SELECT id, code, decision_code FROM reviews").fetchall():
            self.db["reviews"].update(
                review_id,
                {
                    "code_sha256": code_sha256(code) if code is not None else None,
                    "decision_code_sha256": code_sha256(decision_code) if decision_code is not None else None,
                },
            )
        self.db.execute("DROP INDEX IF EXISTS idx_reviews_proposal_key")
        self.db["reviews"].create_index(["proposal_key", "code_sha256"], unique=True)
        self.db["evaluation_starts"].create(
            {
                "run_id": str,
                "proposal_key": str,
                "code_sha256": str,
                "stage": str,
                "started": int,
                "finished": int,
                "updated_at": str,
            },
            pk=("run_id", "proposal_key", "code_sha256", "stage"),
            not_null={"started", "finished", "updated_at"},
        )

    def _upgrade_to_v6(self) -> None:
        """Schema 6: indexes for the browsing queries (agentarch.store.queries). The first answers SCORING_EVALUATION,
        the ranking key of every listing; the others serve runs' progress and run filters, the proposer picker
        (a task's proposers and models) and a candidate's review history. Before schema 6 `agentarch serve`
        created them when it started, under the same names, so an archive it served keeps the ones it has."""
        self.db["evaluations"].create_index(
            ["candidate_id", "status", DescIndex("fidelity"), DescIndex("val_accuracy"), "id"],
            index_name="idx_evaluations_scored",
            if_not_exists=True,
        )
        self.db["candidates"].create_index(["run_id", "status"], if_not_exists=True)
        self.db["candidates"].create_index(["task", "proposer"], if_not_exists=True)
        self.db["candidates"].create_index(["task", "model"], if_not_exists=True)
        self.db["reviews"].create_index(["candidate_id"], if_not_exists=True)

    def _upgrade_to_v7(self) -> None:
        """Schema 7: what each task's scores are. `val_accuracy` and `test_accuracy` hold the task's metric, whatever
        it is (an MSE, bits per byte), and a task from a task file may not be resolvable by name where the archive
        is read, so the archive keeps each task's metric and direction itself. An older archive's built-in tasks
        get their rows from the registry; a task it does not know keeps ranking as before (accuracy, higher is
        better)."""
        self.db["tasks"].create(
            {"name": str, "metric": str, "direction": str, "kind": str, "description": str, "created_at": str},
            pk="name",
            not_null={"metric", "direction", "created_at"},
        )
        known = self.db.execute("SELECT task FROM candidates UNION SELECT task FROM runs").fetchall()
        for (name,) in known:
            if name in TASKS:
                self._insert_task(TASKS[name])

    def _upgrade_to_v8(self) -> None:
        """Schema 8: search past one number and past rounds. An evaluation keeps what the smoke stage measured beyond
        parameters and FLOPs (latency in ms per batch on the training device, zero-cost proxy scores as JSON) and its
        stage (`explore`, or `verify` for a retraining of a run's best at a higher fidelity); a candidate keeps its
        island and, when a predictor screened it, the predicted validation score. `proposals` is a run's own
        ledger of what it started, one row per proposal key: the steady-state scheduler writes the plan before the
        proposal starts and its outcome when it ends, so a resumed run knows exactly what is in flight."""
        self.db["evaluations"].add_column("latency_ms", float)
        self.db["evaluations"].add_column("proxies", str)
        self.db["evaluations"].add_column("stage", str)
        self.db["candidates"].add_column("island", int)
        self.db["candidates"].add_column("prediction", float)
        self.db["proposals"].create(
            {
                "key": str,
                "run_id": str,
                "seq": int,
                "island": int,
                "plan": str,
                "outcome": str,
                "started_at": str,
                "ended_at": str,
            },
            pk="key",
            not_null={"run_id", "seq", "plan", "started_at"},
            foreign_keys=[("run_id", "runs", "id")],
        )
        self.db["proposals"].create_index(["run_id", "seq"], unique=True)

    def _upgrade_to_v9(self) -> None:
        """Schema 9: a run's notebook. Every k recorded candidates the analyst's notes are condensed into one short
        note (what worked, what failed, citing candidate ids) that later prompts of the run include."""
        self.db["notes"].create(
            {"id": int, "run_id": str, "task": str, "after": int, "text": str, "cites": str, "created_at": str},
            pk="id",
            not_null={"run_id", "after", "text", "created_at"},
            foreign_keys=[("run_id", "runs", "id")],
        )
        self.db["notes"].create_index(["run_id", "after"], unique=True)

    def _upgrade_to_v10(self) -> None:
        """Schema 10: screening decisions (`--screen K`). Each group of K proposals of a run trains one member; the
        decision (the winner, every member's predicted score, how the winner was chosen) is kept once, before
        anyone acts on it, so members resumed after a crash follow it and the choice can be audited."""
        self.db["screenings"].create(
            {"run_id": str, "grp": int, "winner": str, "how": str, "predictions": str, "created_at": str},
            pk=("run_id", "grp"),
            not_null={"winner", "how", "predictions", "created_at"},
            foreign_keys=[("run_id", "runs", "id")],
        )

    def _upgrade_to_v11(self) -> None:
        """Schema 11: how an LLM proposal got its code (`edit`): full, diff, diff-repaired, diff-fallback or
        diff-unanswered, so a run in diff or mixed edit mode accounts for every proposal."""
        self.db["candidates"].add_column("edit", str)

    def _upgrade_to_v12(self) -> None:
        """Schema 12: a candidate's structure signature from its smoke run (JSON: token -> count; agentarch/evaluation/novelty.py),
        so a later candidate can be stopped before training as a near-copy of a trained one (dedup level
        `structural`). Older candidates have none and are never matched."""
        self.db["candidates"].add_column("structure", str)

    def _insert_task(self, task: Task) -> None:
        self.db["tasks"].insert(
            {
                "name": task.name,
                "metric": task.metric,
                "direction": task.direction,
                "kind": task.kind,
                "description": task.description,
                "created_at": now(),
            }
        )

    # -- writes (each one transaction) ------------------------------------------------------

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
        row = {"created_at": now(), **{k: formats.cell(v) for k, v in candidate.items()}}
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
                        **{k: formats.cell(v) for k, v in evaluation.items()},
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
                        **{k: formats.cell(v) for k, v in evaluation.items()},
                    }
                )
                .last_pk
            )

    def record_llm_call(self, call: dict[str, Any]) -> int:
        """Append one LLM call (or failed attempt) to the ledger; returns its id."""
        with self._writing():
            return int(self.db["llm_calls"].insert({"created_at": now(), **call}).last_pk)

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

    # -- reads ----------------------------------------------------------------------------------

    def find_duplicate(self, task: str, level: DedupLevel, value: str) -> int | None:
        """The earliest candidate for `task` already holding this hash, or None."""
        column = _HASH_COLUMN[level]
        marks = ", ".join("?" for _ in _DEDUP_POOL)
        row = self.db.execute(
            f"SELECT id FROM candidates WHERE task = ? AND {column} = ? AND status IN ({marks}) ORDER BY id LIMIT 1",
            [task, value, *_DEDUP_POOL],
        ).fetchone()
        return int(row[0]) if row else None

    def functional_hashes(self, task: str) -> dict[str, int]:
        """Every functional hash already evaluated for `task`, with its earliest candidate (sent to workers)."""
        marks = ", ".join("?" for _ in _DEDUP_POOL)
        rows = self.db.execute(
            f"SELECT functional_hash, MIN(id) FROM candidates WHERE task = ? AND functional_hash IS NOT NULL "
            f"AND status IN ({marks}) GROUP BY functional_hash",
            [task, *_DEDUP_POOL],
        ).fetchall()
        return {h: int(i) for h, i in rows}

    def structures(self, task: str, limit: int = STRUCTURE_MEMBERS) -> list[tuple[int, dict[str, int]]]:
        """The structure signatures a new candidate for `task` is compared with (sent to workers): of the task's
        trained candidates, the best `limit // 2` by validation in the task's direction, then the most recent, at
        most `limit` in all, so a worker's request stays small: a ResNet's signature is about 1.5 KB (at most 256
        tokens of 120 characters)."""
        best = "WHERE c.task = ? AND c.status = 'trained' AND c.structure IS NOT NULL"
        ranked = [
            row["id"]
            for row in self.listing(
                f"{best} ORDER BY {sql_key('e.val_accuracy', 'task_row.direction')} DESC, c.id LIMIT ?",
                [task, limit // 2],
            )
        ]
        recent = self.db.execute(
            "SELECT id FROM candidates WHERE task = ? AND status = 'trained' AND structure IS NOT NULL "
            "ORDER BY id DESC LIMIT ?",
            [task, limit],
        ).fetchall()
        members = list(dict.fromkeys([*ranked, *(i for (i,) in recent)]))[:limit]
        if not members:
            return []
        marks = ", ".join("?" for _ in members)
        found = dict(self.db.execute(f"SELECT id, structure FROM candidates WHERE id IN ({marks})", members).fetchall())
        return [(member, json.loads(found[member])) for member in members]

    def candidate(self, candidate_id: int) -> dict[str, Any]:
        try:
            row = self.db["candidates"].get(candidate_id)
        except sqlite_utils.db.NotFoundError:
            raise ArchiveError(
                f"no candidate with id {candidate_id} in {self.path}; `agentarch archive ls` lists them"
            ) from None
        return _decode(row)

    def scored(self, candidate_id: int) -> dict[str, Any]:
        """One candidate's listing row: its fields with its best evaluation's scores (None where untrained)."""
        rows = list(self.listing("WHERE c.id = ?", [candidate_id]))
        if not rows:
            raise ArchiveError(f"no candidate with id {candidate_id} in {self.path}; `agentarch archive ls` lists them")
        return rows[0]

    def evaluations(self, candidate_id: int) -> list[dict[str, Any]]:
        return [
            _decode(r) for r in self.db["evaluations"].rows_where("candidate_id = ?", [candidate_id], order_by="id")
        ]

    def candidates(
        self, task: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Newest first, each with the scores of its highest-fidelity evaluation (None where not trained)."""
        where, args = _where({"c.task": task, "c.status": status})
        clause = f"WHERE {where}" if where else ""
        return list(self.listing(f"{clause} ORDER BY c.id DESC LIMIT ? OFFSET ?", [*args, limit, offset]))

    def top(
        self, task: str, limit: int | None = 10, by: str = "val_accuracy", proposers: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Best trained candidates for a task, ranked by the search signal (validation) unless told otherwise, in
        the task's direction (lowest first for an MSE); equal scores rank the earlier candidate first. `limit`
        None ranks them all.

        `proposers` narrows the ranking, e.g. to the baselines' finds when they seed a prompt.
        """
        if by not in ("val_accuracy", "test_accuracy"):
            raise ArchiveError(f"cannot rank by {by!r}; use val_accuracy or test_accuracy")
        only = f"AND c.proposer IN ({', '.join('?' for _ in proposers)})" if proposers else ""
        return list(
            self.listing(
                f"WHERE c.task = ? AND c.status = 'trained' {only} ORDER BY {sql_key('e.' + by, 'task_row.direction')} DESC, c.id LIMIT ?",
                [task, *proposers, -1 if limit is None else limit],
            )
        )

    def _task_row(self, name: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM tasks WHERE name = ?", [name]))
        return rows[0] if rows else None

    def task_info(self, name: str) -> dict[str, Any]:
        """What the archive keeps of a task: name, metric, direction, kind, description. A task it has no row for
        (nothing of it recorded through an evaluator) is what every task was before schema 7: accuracy, max."""
        return self._task_row(name) or {
            "name": name,
            "metric": DEFAULT_METRIC,
            "direction": "max",
            "kind": None,
            "description": None,
        }

    def direction(self, task: str) -> Direction:
        """Which way `task`'s scores are better, as every ranking in the archive applies it."""
        return self.task_info(task)["direction"]  # type: ignore[no-any-return]

    def find_arch(self, task: str, space: str, arch: str) -> dict[str, Any] | None:
        """The earliest evaluated candidate of this search-space architecture for `task`, with its scores."""
        marks = ", ".join("?" for _ in _DEDUP_POOL)
        rows = list(
            self.listing(
                f"WHERE c.task = ? AND c.space = ? AND c.arch = ? AND c.status IN ({marks}) ORDER BY c.id LIMIT 1",
                [task, space, arch, *_DEDUP_POOL],
            )
        )
        return rows[0] if rows else None

    # -- review ---------------------------------------------------------------------------------

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
                .insert({"created_at": now(), "kind": "gate", "status": "pending", **review, "code_sha256": digest})
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
                    "text": text,
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

    def link_review(self, proposal_key: str, candidate_id: int) -> None:
        with self._writing():
            self.db.execute("UPDATE reviews SET candidate_id = ? WHERE proposal_key = ?", [candidate_id, proposal_key])

    def runs(self, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Runs, newest first (all of them unless `limit`)."""
        return [_decode(r) for r in self.db["runs"].rows_where(order_by="started_at DESC", limit=limit, offset=offset)]

    def find_run(self, run_id: str) -> dict[str, Any] | None:
        """One run's row (config and summary decoded), or None when the archive has no such run."""
        try:
            return _decode(self.db["runs"].get(run_id))
        except sqlite_utils.db.NotFoundError:
            return None

    def export_rows(self) -> Iterator[dict[str, Any]]:
        yield from self.listing("ORDER BY c.id")

    def listing(
        self, tail: str = "", args: Sequence[Any] = (), source: str = "candidates c"
    ) -> Iterator[dict[str, Any]]:
        """Listing rows: each candidate's fields (not its code) with its scoring evaluation's scores, None where it
        has none. Its size (params, FLOPs) is its own, from the smoke run, else that evaluation's.

        The one place a listing row is built, for the reads here and in agentarch.store.queries: `source` is the
        FROM clause (a candidate aliased `c`), `tail` follows the join (WHERE, ORDER BY, LIMIT; the evaluation
        is `e`), and `args` fill their placeholders in that order.
        """
        for row in self.db.query(_LISTING.format(source=source, tail=tail), args):
            row["parents"] = json.loads(row["parents"]) if row["parents"] else []  # its one JSON column
            yield row

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


_JSON_FIELDS = (
    "parents",
    "hparams",
    "curve",
    "timings",
    "config",
    "summary",
    "examples",
    "prompt",
    "structure",
    "proxies",
)


def _where(conditions: dict[str, Any]) -> tuple[str | None, list[Any]]:
    """`column = ?` for each condition that is not None, joined with AND (None when there is none)."""
    given = {column: value for column, value in conditions.items() if value is not None}
    return " AND ".join(f"{column} = ?" for column in given) or None, list(given.values())


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {k: json.loads(v) if k in _JSON_FIELDS and isinstance(v, str) else v for k, v in row.items()}
