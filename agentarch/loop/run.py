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

from agentarch.config import ModelArm, Settings, load_settings
from agentarch.errors import AgentarchError
from agentarch.llm import client as llm_client
from agentarch.loop import bandit
from agentarch.loop.baseline import SeedResult, Trial
from agentarch.loop.baseline import summarize as summarize_baseline
from agentarch.loop.context import RunContext, answered_by_table, in_space_of, index_knowledge
from agentarch.loop.events import Listener, RunEnded, RunStarted
from agentarch.loop.graph import build, open_checkpointer
from agentarch.loop.scheduler import Scheduler
from agentarch.loop.stopping import RunControl
from agentarch.loop.summary import mark_scoring, summarize
from agentarch.search.limits import Limits
from agentarch.search.objectives import Goals
from agentarch.search.proposers.base import BEST_OF_N
from agentarch.search.spaces import get_space, space_for
from agentarch.store import judgments
from agentarch.store.archive import Archive
from agentarch.tasks.registry import get_task
from agentarch.tasks.task import Task


class RunError(AgentarchError, RuntimeError):
    """A run cannot start or resume as asked; the message says what to do."""


def _stored_config(settings: Settings) -> dict[str, Any]:
    """The settings to keep with the run: everything but the key, paths as strings."""
    return json.loads(settings.model_dump_json(exclude={"api_key"}))


RESUMABLE = frozenset(
    {
        # budgets: how far the run goes
        "budget", "max_cost", "hours",
        # how fast and where it works: places, slots, executors
        "queue", "slots", "per_gpu", "executor", "ray_address", "threads", "review_poll_s",
        # how it talks to its models: servers, concurrency, timeouts, retries, answer sizes, the window
        "api_base", "llm_concurrency", "llm_stream", "llm_timeout_s", "llm_first_token_timeout_s",
        "llm_stall_timeout_s", "llm_min_tokens_per_s", "llm_retries", "max_tokens", "max_answer_bytes",
        "context_tokens",
        # how long a sandbox job may take, and how often its training is checkpointed
        "timeout_s", "smoke_timeout_s", "checkpoints", "checkpoint_s",
        # where data lives on this machine
        "cache_dir", "data_dir", "download",
    }
)  # fmt: skip
"""Settings a resume may change: they change how a run works, not what it is. Every other setting (the task, the
objectives and constraints, the search space, the seeds, the prompts' inputs, the models by name) stays as the run
was started; `--model` may name the same models at another server or concurrency."""


def check_overrides(stored: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides a resume takes (those in RESUMABLE, and the same models at other addresses); RunError naming
    every other one whose value differs from the run's (one given as it was stored is simply kept)."""
    kept, refused = {}, []
    for name, value in overrides.items():
        if value is None:
            continue
        if name in RESUMABLE:
            kept[name] = value
        elif name in ("model", "models"):
            if _model_names({**stored, name: value}) != _model_names(stored):
                refused.append(name)
            else:
                kept[name] = value
        elif _as_stored(value) != stored.get(name):
            refused.append(name)
    if refused:
        raise RunError(
            f"--resume cannot change {', '.join(sorted(refused))}: that would make it another run (resumable "
            f"settings: {', '.join(sorted(RESUMABLE))}; --model may name the run's models at another server); start "
            "a new run with `agentarch run` instead"
        )
    return kept


def _model_names(config: dict[str, Any]) -> list[str]:
    specs = config.get("models") or ([config["model"]] if config.get("model") else [])
    try:
        return sorted(ModelArm.parse(spec).name for spec in specs)
    except AgentarchError:
        return ["?"]


def _as_stored(value: Any) -> Any:
    """A flag's value as the run's stored config (JSON) holds it: paths as strings, tuples as lists."""
    return json.loads(json.dumps(value, default=str))


def within_limits(settings: Settings, task: Task) -> None:
    """Refuse, before a run is opened, a space whose networks cannot keep to the task's max_params and the run's
    constraints (agentarch.search.limits): the space offline evolution or --propose-in searches."""
    space = settings.propose_in
    if space is None and settings.model is None:
        try:
            space = space_for(task.kind, settings.offline_space)
        except AgentarchError:
            return  # no space builds this kind: the run says so where it plans
    if space is not None:
        goals = Goals.parse(settings.objectives, settings.constraints, task.direction, task.metric)
        Limits.of(get_space(space), task, goals).check()


def start(
    settings: Settings,
    on_outcome: Callable[[dict[str, Any]], None] | None = None,
    on_waiting: Callable[[list[dict[str, Any]]], None] | None = None,
    on_event: Listener | None = None,
    control: RunControl | None = None,
) -> dict[str, Any]:
    """Open a new run in the archive and drive it to the end of its budget; returns the summary.

    `on_event` hears what the run does as it does it (agentarch.loop.events); `control` lets the caller stop it
    (agentarch.loop.stopping: the run is then `interrupted` and `resume` goes on with it). Settings that cannot make
    a run (a --propose-in space that does not fit the task, a model asked to write modules for a table) are refused
    before the run is opened. On a table task (nb201-*) each proposal is looked up in the table, not trained."""
    the_task = get_task(settings.task)
    if settings.search_recipe and (settings.model or the_task.kind == "tabular"):
        raise RunError(
            "--search-recipe is the offline evolution's, on a trainable task: a model declares each candidate's "
            "RECIPE in its code (the prompt shows the task's bounds); leave out --model or --search-recipe"
        )
    in_space_of(settings, the_task)
    answered_by_table(settings, the_task)
    within_limits(settings, the_task)
    with Archive(settings.archive) as archive:
        kind = "offline" if not settings.model else "llm" if settings.feedback else "baseline"
        task = the_task.name  # a task file's name, not its path: the archive's rows say names
        proposer = settings.model or "rea" if settings.feedback else BEST_OF_N
        index_knowledge(settings, archive)  # --knowledge: indexed now, or refused before the run opens
        run_id = archive.start_run(kind, task, proposer, _stored_config(settings))
    return _drive(settings, run_id, time.time(), True, on_outcome, on_waiting, on_event, control)


def best_of_n(
    settings: Settings,
    evaluations: int,
    seeds: list[int],
    on_outcome: Callable[[dict[str, Any]], None] | None = None,
    on_event: Listener | None = None,
    control: RunControl | None = None,
) -> tuple[dict[str, Any], list[SeedResult]]:
    """The control that answers "does the loop help?": per seed, one run of `evaluations` proposals the LLM writes
    from the seed architectures alone (no parent, no archive feedback), through the same sandbox and archive.

    Returns the baseline summary over seeds (each seed's best-by-validation candidate, its test score) and the
    per-seed results, as `agentarch baseline` reports for every algorithm. A seed's run stopped by `control` ends the
    seeds there (it is `interrupted`, and `agentarch run --resume` finishes it); the summary is over the seeds done."""
    if not settings.model:
        raise RunError("best-of-n samples an LLM: give --model (and --api-base for a local server)")
    task = get_task(settings.task)
    results = []
    for seed in seeds:
        if control is not None and control.stopping:
            break
        summary = start(
            settings.model_copy(update={"feedback": False, "budget": evaluations, "seed": seed}),
            on_outcome,
            on_event=on_event,
            control=control,
        )
        if summary["status"] == "interrupted":
            break
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
    on_event: Listener | None = None,
    control: RunControl | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Continue a stopped run (killed, or `interrupted` by a signal) from its last checkpoint, with its stored
    settings (and a fresh key from the env); `overrides` may change what `check_overrides` allows."""
    with Archive(archive_path) as archive:
        row = archive.find_run(run_id)
    if row is None:
        raise RunError(f"no run {run_id!r} in {archive_path}; `agentarch archive runs` lists them")
    if row["status"] == "finished":
        raise RunError(
            f"run {run_id} already finished ({json.dumps(row['summary'])}); start a new one with `agentarch run`"
        )
    stored = row["config"]
    settings = load_settings(**{**stored, "archive": str(archive_path), **check_overrides(stored, overrides)})
    started = datetime.fromisoformat(row["started_at"]).timestamp()
    return _drive(settings, run_id, started, False, on_outcome, on_waiting, on_event, control)


def _drive(
    settings: Settings,
    run_id: str,
    started_at: float,
    fresh: bool,
    on_outcome: Callable[[dict[str, Any]], None] | None,
    on_waiting: Callable[[list[dict[str, Any]]], None] | None = None,
    on_event: Listener | None = None,
    control: RunControl | None = None,
) -> dict[str, Any]:
    ctx = RunContext(settings, run_id, started_at, on_outcome, on_event)
    checkpointer = open_checkpointer(settings.archive)
    if not fresh:
        _refuse_round_checkpoints(checkpointer, run_id)
        with Archive(settings.archive) as archive:
            archive.reopen_run(run_id)
    scheduler = Scheduler(ctx, build(ctx, checkpointer), on_waiting)
    status = "interrupted"
    _announce(ctx, fresh)
    if control is not None:
        control.attach(ctx.stop, lambda: _finish(ctx, scheduler, "interrupted"))
    try:
        scheduler.run()
        status = "interrupted" if ctx.stopping.is_set() else "finished"
    finally:
        if control is not None:
            control.detach()
        try:
            summary = _finish(ctx, scheduler, status)
        finally:
            checkpointer.conn.close()
            ctx.executor.close()
            if ctx.stopping.is_set():
                llm_client.resume()  # the cancellation was this run's: later calls of this process go through
    ctx.emit(RunEnded(run_id, status, summary["stopped_by"]))
    return summary


def _announce(ctx: RunContext, fresh: bool) -> None:
    """Say the run is open (its id first, so a watcher can say how to resume it before anything happens)."""
    if not ctx.emit.wanted:
        return
    s = ctx.settings
    with Archive(s.archive) as archive:
        ledger = archive.proposals(ctx.run_id) if not fresh else []
    started = RunStarted(
        ctx.run_id,
        str(s.archive),
        ctx.task.name,
        [arm.name for arm in ctx.arms],
        not fresh,
        s.budget,
        len(ledger),
        sum(1 for p in ledger if p["outcome"] is not None),
        ctx.executor.capacity,
        s.queue,
    )
    ctx.emit(started)


def _finish(ctx: RunContext, scheduler: Scheduler, status: str) -> dict[str, Any]:
    """The run's summary, written to the archive with its status (finished or interrupted)."""
    run_id = ctx.run_id
    with Archive(ctx.settings.archive) as archive:
        summary = summarize(
            run_id,
            status,
            list(scheduler.outcomes),
            scheduler.stopped_by,
            direction=ctx.task.direction,
            metric=ctx.task.metric,
            goals=ctx.goals,
            verified=archive.verified(run_id),
            llm_seconds=archive.llm_seconds(run_id),
        )
        ended = [o["id"] for o in scheduler.outcomes if o.get("id") is not None]
        mark_scoring(summary, list(scheduler.outcomes), archive.scoring_kinds(ended), ctx.task.direction)
        summary["llm_faults"] = archive.llm_faults(run_id)
        if ctx.judge_arm is not None:  # what the judge came to: rated, failed, and its cost (counted in max_cost too)
            summary["judge"] = judgments.of_run(archive, run_id)
        if len(ctx.arms) > 1:
            history = bandit.history_from_archive(archive, run_id, ctx.task.name)
            summary["models"] = bandit.summary(ctx.arms, history)
        archive.finish_run(run_id, status, summary)
    return summary


def _refuse_round_checkpoints(checkpointer: Any, run_id: str) -> None:
    """A run started before the scheduler (one LangGraph thread per run, in rounds) cannot be resumed by it."""
    if checkpointer.get_tuple({"configurable": {"thread_id": run_id}}) is not None:
        raise RunError(
            f"run {run_id} was started by an older agentarch (one checkpoint thread per run, in rounds) and cannot be "
            "resumed by this one; its recorded candidates stay in the archive: start a new run with `agentarch run`"
        )
