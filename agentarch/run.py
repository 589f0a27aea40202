"""Start, resume and finish an agent-loop run: the library behind `agentarch run`.

A run's settings (never its API key) are stored with the run, so `--resume RUN_ID` goes on with the
same task, model and budgets after a crash, a reboot or Ctrl-C; the archive's proposals ledger knows which
proposals were in flight and LangGraph's checkpoints (next to the archive) which step each had reached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agentarch.archive import Archive
from agentarch.config import Settings, load_settings
from agentarch.errors import AgentarchError
from agentarch.graph import RunContext, build, open_checkpointer, summarize
from agentarch.scheduler import Scheduler
from agentarch.tasks import get_task


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


def _drive(
    settings: Settings,
    run_id: str,
    started_at: float,
    fresh: bool,
    on_outcome: Callable[[dict[str, Any]], None] | None,
    on_waiting: Callable[[list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    ctx = RunContext(settings, run_id, started_at, on_outcome)
    checkpointer = open_checkpointer(settings.archive)
    if not fresh:
        _refuse_round_checkpoints(checkpointer, run_id)
    scheduler = Scheduler(ctx, build(ctx, checkpointer), on_waiting)
    status = "interrupted"
    try:
        scheduler.run()
        status = "finished"
    finally:
        with Archive(settings.archive) as archive:
            summary = summarize(
                run_id,
                status,
                scheduler.outcomes,
                scheduler.stopped_by,
                direction=ctx.task.direction,
                metric=ctx.task.metric,
                goals=ctx.goals,
                verified=archive.verified(run_id),
            )
            summary["llm_faults"] = archive.llm_faults(run_id)
            archive.finish_run(run_id, status, summary)
        checkpointer.conn.close()
        ctx.executor.close()
    return summary


def _refuse_round_checkpoints(checkpointer: Any, run_id: str) -> None:
    """A run started before the scheduler (one LangGraph thread per run, in rounds) cannot be resumed by it."""
    if checkpointer.get_tuple({"configurable": {"thread_id": run_id}}) is not None:
        raise RunError(
            f"run {run_id} was started by an older agentarch (one checkpoint thread per run, in rounds) and cannot be "
            "resumed by this one; its recorded candidates stay in the archive: start a new run with `agentarch run`"
        )
