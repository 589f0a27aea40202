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

from agentarch.config import Settings, load_settings
from agentarch.errors import AgentarchError
from agentarch.loop import bandit
from agentarch.loop.baseline import SeedResult, Trial
from agentarch.loop.baseline import summarize as summarize_baseline
from agentarch.loop.context import BEST_OF_N, RunContext
from agentarch.loop.graph import build, open_checkpointer
from agentarch.loop.scheduler import Scheduler
from agentarch.loop.summary import summarize
from agentarch.store.archive import Archive
from agentarch.tasks.registry import get_task


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
        kind = "offline" if not settings.model else "llm" if settings.feedback else "baseline"
        task = get_task(settings.task).name  # a task file's name, not its path: the archive's rows say names
        proposer = settings.model or "rea" if settings.feedback else BEST_OF_N
        run_id = archive.start_run(kind, task, proposer, _stored_config(settings))
    return _drive(settings, run_id, time.time(), fresh=True, on_outcome=on_outcome, on_waiting=on_waiting)


def best_of_n(
    settings: Settings,
    evaluations: int,
    seeds: list[int],
    on_outcome: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], list[SeedResult]]:
    """The control that answers "does the loop help?": per seed, one run of `evaluations` proposals the LLM writes
    from the seed architectures alone (no parent, no archive feedback), through the same sandbox and archive.

    Returns the baseline summary over seeds (each seed's best-by-validation candidate, its test score) and the
    per-seed results, as `agentarch baseline` reports for every algorithm."""
    if not settings.model:
        raise RunError("best-of-n samples an LLM: give --model (and --api-base for a local server)")
    task = get_task(settings.task)
    results = []
    for seed in seeds:
        summary = start(
            settings.model_copy(update={"feedback": False, "budget": evaluations, "seed": seed}), on_outcome
        )
        with Archive(settings.archive) as archive:
            ended = sorted(
                (p["outcome"] for p in archive.proposals(summary["run_id"]) if p["outcome"]), key=lambda o: o["seq"]
            )
        history = [Trial("", o.get("val_accuracy"), o.get("test_accuracy"), o.get("id")) for o in ended]
        results.append(SeedResult(seed, history, direction=task.direction))
    return summarize_baseline(BEST_OF_N, task.name, evaluations, results), results


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
            if len(ctx.arms) > 1:
                history = bandit.history_from_archive(archive, run_id, ctx.task.name)
                summary["models"] = bandit.summary(ctx.arms, history)
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
