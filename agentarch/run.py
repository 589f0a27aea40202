"""Start, resume and finish an agent-loop run: the library behind `agentarch run`.

A run's settings (never its API key) are stored with the run, so `--resume RUN_ID` goes on with the
same task, model and budgets after a crash, a reboot or Ctrl-C; LangGraph's checkpoints (next to the
archive) know which step each candidate had reached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from langgraph.types import Command

from agentarch.archive import Archive
from agentarch.config import Settings, load_settings
from agentarch.errors import AgentarchError
from agentarch.graph import RunContext, build, open_checkpointer, summarize
from agentarch.tasks import get_task

RECURSION_LIMIT = 100_000
"""LangGraph's cap on steps per invoke; a run's length is bounded by its budgets instead."""


class RunError(AgentarchError, RuntimeError):
    """A run cannot start or resume as asked; the message says what to do."""


def _stored_config(settings: Settings) -> dict[str, Any]:
    """The settings to keep with the run: everything but the key, paths as strings."""
    return json.loads(settings.model_dump_json(exclude={"api_key"}))


def start(
    settings: Settings,
    on_outcome: Callable[[dict[str, Any]], None] | None = None,
    on_waiting: Callable[[list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Open a new run in the archive and drive it to the end of its budget; returns the summary."""
    with Archive(settings.archive) as archive:
        kind = "llm" if settings.model else "offline"
        task = get_task(settings.task).name  # a task file's name, not its path: the archive's rows say names
        run_id = archive.start_run(kind, task, settings.model or "rea", _stored_config(settings))
    return _drive(settings, run_id, time.time(), fresh=True, on_outcome=on_outcome, on_waiting=on_waiting)


def resume(
    run_id: str,
    archive_path: Any,
    on_outcome: Callable[[dict[str, Any]], None] | None = None,
    on_waiting: Callable[[list[dict[str, Any]]], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Continue a stopped run from its last checkpoint, with its stored settings (and a fresh key from the env)."""
    with Archive(archive_path) as archive:
        row = archive.find_run(run_id)
    if row is None:
        raise RunError(f"no run {run_id!r} in {archive_path}; `agentarch archive runs` lists them")
    if row["status"] == "finished":
        raise RunError(
            f"run {run_id} already finished ({json.dumps(row['summary'])}); start a new one with `agentarch run`"
        )
    stored = row["config"]
    settings = load_settings(**{**stored, "archive": str(archive_path), **overrides})
    started = datetime.fromisoformat(row["started_at"]).timestamp()
    return _drive(settings, run_id, started, fresh=False, on_outcome=on_outcome, on_waiting=on_waiting)


def _await_review(
    graph: Any,
    config: dict[str, Any],
    settings: Settings,
    run_id: str,
    on_waiting: Callable[[list[dict[str, Any]]], None] | None,
) -> Command:
    """Queue the paused candidates for review and wait until a person decides at least one of them.

    Decisions arrive through the archive (`agentarch review`, the web UI), so the reviewer may be
    another process or another machine; the run resumes as soon as any decision is in. Each pause
    is matched to the review of its proposal and exact code (by sha256), never to an earlier decision
    on code the candidate no longer has.
    """
    pauses = graph.get_state(config).interrupts
    with Archive(settings.archive) as archive:
        waiting = {
            archive.request_review(
                {
                    "run_id": run_id,
                    "proposal_key": p.value["proposal_key"],
                    "interrupt_id": p.id,
                    "code": p.value["code"],
                    "intent": p.value["intent"],
                    "parent_id": p.value["parent_id"],
                }
            ): p
            for p in pauses
        }
        if on_waiting is not None:
            on_waiting(archive.reviews(status="pending", run_id=run_id))
        while True:
            decided = [r for r in map(archive.review, waiting) if r["status"] != "pending"]
            if decided:
                return Command(
                    resume={
                        waiting[r["id"]].id: {
                            "status": r["status"],
                            "reason": r["reason"],
                            "code": r["decision_code"],
                            "by": r["decided_by"],
                            "code_sha256": r["code_sha256"],
                        }
                        for r in decided
                    }
                )
            time.sleep(settings.review_poll_s)


def _drive(
    settings: Settings,
    run_id: str,
    started_at: float,
    fresh: bool,
    on_outcome: Callable[[dict[str, Any]], None] | None,
    on_waiting: Callable[[list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    ctx = RunContext(settings, run_id, started_at, on_outcome)
    config = {
        "configurable": {"thread_id": run_id},
        "recursion_limit": RECURSION_LIMIT,
        # room for every branch that may hold a queue place, plus those waiting for one
        "max_concurrency": settings.slots + settings.queue + 2,
    }
    checkpointer = open_checkpointer(settings.archive)
    graph = build(ctx, checkpointer)
    status, final = "interrupted", None
    try:
        command: Any = {"round": 0, "outcomes": []} if fresh else None
        if not fresh and graph.get_state(config).interrupts:  # it stopped while waiting for a person
            command = _await_review(graph, config, settings, run_id, on_waiting)
        while True:
            final = graph.invoke(command, config, durability="sync")
            if not graph.get_state(config).interrupts:
                break
            command = _await_review(graph, config, settings, run_id, on_waiting)
        status = "finished"
    finally:
        values = final if status == "finished" else graph.get_state(config).values
        summary = summarize(
            run_id,
            status,
            values.get("outcomes", []),
            values.get("stopped_by"),
            direction=ctx.task.direction,
            metric=ctx.task.metric,
        )
        with Archive(settings.archive) as archive:
            summary["llm_faults"] = archive.llm_faults(run_id)
            archive.finish_run(run_id, status, summary)
        checkpointer.conn.close()
        ctx.executor.close()
    return summary
