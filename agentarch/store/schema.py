"""The archive's schema: its version, the first tables, and every versioned migration since.

An archive file outlives the agentarch that wrote it, so the schema is versioned in `meta`: opening a file brings
an older one up to `SCHEMA_VERSION` in one write transaction, migration by migration, and refuses a newer one
rather than misread it. Each migration's docstring says what its version added and why. Its own module because
the history of the file's layout is one story, read (and extended) start to end.
"""

from __future__ import annotations

from sqlite_utils.db import DescIndex

from agentarch.store.decisions import code_sha256
from agentarch.store.handle import ArchiveError, Handle, now
from agentarch.tasks.builtin import TASKS
from agentarch.tasks.task import Task

SCHEMA_VERSION = 17


class Schema(Handle):
    """The part of `Archive` that creates and migrates the file's tables (`_migrate`, called when it opens)."""

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
            if version < 13:
                self._upgrade_to_v13()
            if version < 14:
                self._upgrade_to_v14()
            if version < 15:
                self._upgrade_to_v15()
            if version < 16:
                self._upgrade_to_v16()
            if version < 17:
                self._upgrade_to_v17()
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
        """Schema 6: indexes for the browsing queries (agentarch.store.browse and its neighbours). The first answers
        SCORING_EVALUATION, the ranking key of every listing; the others serve runs' progress and run filters, the
        proposer picker (a task's proposers and models) and a candidate's review history. Before schema 6 `agentarch serve`
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

    def _upgrade_to_v13(self) -> None:
        """Schema 13: what an LLM proposal's prompt left out to fit the model's context window (`prompt_left_out`,
        JSON: the window, the examples dropped, the lines cut; agentarch/llm/prompts.py's LeftOut), so a person can
        tell a proposal that saw every example from one that saw a shortened prompt. Null: nothing was left out."""
        self.db["candidates"].add_column("prompt_left_out", str)

    def _upgrade_to_v14(self) -> None:
        """Schema 14: each trained candidate's graph, taken home (issue 25). A graph-scored evaluation keeps the sha256
        of its exported ONNX file (`graph_sha256`); the file itself lies beside the archive, content-addressed
        (`<archive>.graphs/<sha256>.onnx`, agentarch/store/graphs.py), and may be dropped by the retention policy
        while the hash stays. `graph_pins` holds the graphs a person asked to keep (`agentarch export`), which the
        policy never drops. Older evaluations, and trusted ones, have no graph."""
        self.db["evaluations"].add_column("graph_sha256", str)
        self.db["evaluations"].create_index(["graph_sha256"], if_not_exists=True)
        self.db["graph_pins"].create(
            {"sha256": str, "candidate_id": int, "reason": str, "created_at": str},
            pk="sha256",
            not_null={"reason", "created_at"},
        )

    def _upgrade_to_v15(self) -> None:
        """Schema 15: a knowledge base the proposals read from (issue 28; agentarch/store/knowledge.py). Notes in a folder
        (Markdown, text) are split into entries and indexed with FTS5 here, in the archive, so the index needs no
        service and survives a resume. `knowledge_roots` are the folders and files added; `knowledge_files` each file's
        size, mtime and sha256, so a refresh reads again only what changed and drops what was removed;
        `knowledge_entries` the entries (title, text, sha256) with their FTS5 index. A candidate keeps the entries its
        prompt showed (`knowledge`, JSON: source, title and sha256 of each), as they were when it was proposed."""
        self.db["knowledge_roots"].create({"path": str, "added_at": str, "refreshed_at": str}, pk="path")
        self.db["knowledge_files"].create(
            {"path": str, "sha256": str, "size": int, "mtime_ns": int, "entries": int, "indexed_at": str},
            pk="path",
            not_null={"sha256", "size", "mtime_ns", "entries", "indexed_at"},
        )
        self.db["knowledge_entries"].create(
            {"id": int, "path": str, "seq": int, "title": str, "text": str, "sha256": str},
            pk="id",
            not_null={"path", "seq", "title", "text", "sha256"},
            foreign_keys=[("path", "knowledge_files", "path")],
        )
        self.db["knowledge_entries"].create_index(["path", "seq"], unique=True)
        self.db["knowledge_entries"].enable_fts(["title", "text"], create_triggers=True, tokenize="porter")
        self.db["candidates"].add_column("knowledge", str)

    def _upgrade_to_v16(self) -> None:
        """Schema 16: a judge's ratings beside the measured scores (issue 28, `--judge MODEL`;
        agentarch/store/judgments.py). A table of its own, not candidate columns, because a rating is an opinion about a
        candidate, never one of its measures: it is kept apart so no reading of scores can mistake one for the other.
        One row per candidate (its trained evaluation is rated once): `status` judged (novelty, soundness and
        complexity as integers 1-10, their `score`, the justification) or failed (`error`: why nothing was rated); the
        judge's model, its LLM calls (`call_ids`, JSON), tokens and cost, which the run's budget also counts."""
        self.db["judgments"].create(
            {
                "id": int,
                "candidate_id": int,
                "run_id": str,
                "model": str,
                "status": str,
                "novelty": int,
                "soundness": int,
                "complexity": int,
                "score": float,
                "justification": str,
                "error": str,
                "call_ids": str,
                "prompt_tokens": int,
                "completion_tokens": int,
                "cost_usd": float,
                "created_at": str,
            },
            pk="id",
            not_null={"candidate_id", "model", "status", "created_at"},
            foreign_keys=[("candidate_id", "candidates", "id")],
        )
        self.db["judgments"].create_index(["candidate_id"], unique=True)

    def _upgrade_to_v17(self) -> None:
        """Schema 17: training recipes (issue 27; agentarch/tasks/recipes.py). A candidate keeps the RECIPE its code
        declares (canonical JSON; NULL: none, the task's default), which dedup compares beside its function: the same
        network trained another way is a new candidate. Each evaluation keeps the whole recipe it trained with, the
        task's defaults filled in, so a score always says how it was reached; rows from before hold NULL (the default)."""
        self.db["candidates"].add_column("recipe", str)
        self.db["evaluations"].add_column("recipe", str)

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
