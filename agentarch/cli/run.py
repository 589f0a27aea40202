"""`agentarch run` and `agentarch prompt`: start or resume the discovery loop and print its outcomes, or show the
prompt its next proposal would send.

Its own module because the loop's command has the most options and its own printing (outcomes, the waiting
notice, the summary line).
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from agentarch import formats
from agentarch.cli.common import (
    ArchiveOpt,
    ContextTokensOpt,
    EpochsOpt,
    FirstTokenTimeoutOpt,
    IsolationOpt,
    LLMConcurrencyOpt,
    LLMRetriesOpt,
    LLMStreamOpt,
    LLMTimeoutOpt,
    MaxAnswerBytesOpt,
    MaxTokensOpt,
    MinTokensOpt,
    NoveltyOpt,
    QueueOpt,
    ScoringOpt,
    StallTimeoutOpt,
    TaskOpt,
    TimeoutOpt,
    err,
    evaluating_settings,
    open_archive,
    out,
    outcome_printer,
    setting,
    settings_or_exit,
    warn_if_weak,
)
from agentarch.cli.progress import Watcher, exit_code, mode_for, resume_command, stop_on_signals
from agentarch.loop.stopping import RunControl
from agentarch.store import knowledge as knowledge_base
from agentarch.store.scoring import TRUSTED, UNVERIFIED_WHY
from agentarch.tasks.registry import get_task

KnowledgeOpt = Annotated[Optional[Path], setting("knowledge", "--knowledge", metavar="DIR")]
KnowledgeEntriesOpt = Annotated[Optional[int], setting("knowledge_entries", "--knowledge-entries")]


def run_command(
    task: TaskOpt = None,
    model: Annotated[
        Optional[list[str]],
        setting(
            "model",
            "--model",
            note="; give it more than once for several models, each MODEL[@API_BASE][#KEY_VARIABLE], chosen per "
            "proposal by a cost-aware bandit",
        ),
    ] = None,
    api_base: Annotated[Optional[str], setting("api_base", "--api-base")] = None,
    propose_in: Annotated[Optional[str], setting("propose_in", "--propose-in", metavar="SPACE")] = None,
    search_recipe: Annotated[
        Optional[bool],
        setting(
            "search_recipe",
            "--search-recipe/--no-search-recipe",
            note="; in a run, the offline evolution's (a model declares each candidate's RECIPE in its code)",
        ),
    ] = None,
    budget: Annotated[Optional[int], setting("budget", "--budget", "--max-candidates")] = None,
    max_cost: Annotated[Optional[float], setting("max_cost", "--max-cost")] = None,
    hours: Annotated[Optional[float], setting("hours", "--hours")] = None,
    schedule: Annotated[Optional[str], setting("schedule", "--schedule")] = None,
    batch: Annotated[Optional[int], setting("batch", "--batch")] = None,
    objectives: Annotated[Optional[list[str]], setting("objectives", "--objective", metavar="METRIC:max|min")] = None,
    constraints: Annotated[Optional[list[str]], setting("constraints", "--constraint", metavar="METRIC<=VALUE")] = None,
    islands: Annotated[Optional[int], setting("islands", "--islands")] = None,
    migrate_every: Annotated[Optional[int], setting("migrate_every", "--migrate-every")] = None,
    verify_top: Annotated[Optional[int], setting("verify_top", "--verify-top")] = None,
    verify_epochs: Annotated[Optional[int], setting("verify_epochs", "--verify-epochs")] = None,
    screen: Annotated[Optional[int], setting("screen", "--screen")] = None,
    screen_explore: Annotated[Optional[float], setting("screen_explore", "--screen-explore")] = None,
    edit_mode: Annotated[Optional[str], setting("edit_mode", "--edit-mode")] = None,
    edit_rate: Annotated[Optional[float], setting("edit_rate", "--edit-rate")] = None,
    notebook_every: Annotated[Optional[int], setting("notebook_every", "--notebook-every")] = None,
    knowledge: KnowledgeOpt = None,
    knowledge_entries: KnowledgeEntriesOpt = None,
    judge: Annotated[Optional[str], setting("judge", "--judge", metavar="MODEL")] = None,
    examples: Annotated[Optional[int], setting("examples", "--examples")] = None,
    parent_strategy: Annotated[Optional[str], setting("parent_strategy", "--parent-strategy")] = None,
    repair_tries: Annotated[Optional[int], setting("repair_tries", "--repair-tries")] = None,
    epochs: EpochsOpt = None,
    resume: Annotated[
        Optional[str],
        typer.Option(
            help="continue the run with this id where it stopped (killed or interrupted); flags that change how it "
            "works (budgets, queue, slots, LLM concurrency, timeouts, retries, max tokens and answer bytes, the "
            "model's server) apply, and one that would make it another run (task, objectives, models, space, seed) "
            "is refused"
        ),
    ] = None,
    queue: QueueOpt = None,
    llm_concurrency: LLMConcurrencyOpt = None,
    llm_stream: LLMStreamOpt = None,
    llm_timeout_s: LLMTimeoutOpt = None,
    llm_first_token_timeout_s: FirstTokenTimeoutOpt = None,
    llm_stall_timeout_s: StallTimeoutOpt = None,
    llm_min_tokens_per_s: MinTokensOpt = None,
    llm_retries: LLMRetriesOpt = None,
    max_tokens: MaxTokensOpt = None,
    max_answer_bytes: MaxAnswerBytesOpt = None,
    context_tokens: ContextTokensOpt = None,
    slots: Annotated[Optional[int], setting("slots", "--slots")] = None,
    executor: Annotated[Optional[str], setting("executor", "--executor")] = None,
    per_gpu: Annotated[Optional[int], setting("per_gpu", "--per-gpu")] = None,
    ray_address: Annotated[Optional[str], setting("ray_address", "--ray-address")] = None,
    review: Annotated[Optional[bool], setting("review", "--review")] = None,
    archive: ArchiveOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print a JSON line per event as it happens, and the summary object last")
    ] = False,
    isolation: IsolationOpt = None,
    scoring: ScoringOpt = None,
    timeout_s: TimeoutOpt = None,
    novelty_threshold: NoveltyOpt = None,
) -> None:
    """Run the discovery loop: propose, check, dedup, smoke, repair, train, analyze, record, repeat.

    With --model, an LLM proposes PyTorch code from few-shot examples drawn from the archive; keys
    come from the provider's environment variable (e.g. OPENAI_API_KEY) or agentarch.toml, never
    from flags, and never reach the sandbox. Without a model the run says so and goes on offline
    with regularized evolution through the same graph. Every step is checkpointed: after a crash,
    `agentarch run --resume RUN_ID` continues where it stopped.

    On a terminal a live view shows each proposal in flight (its step and the seconds in it, its
    LLM call's state); otherwise a line per event, or with --json a JSON line per event. Ctrl-C
    (or SIGTERM) stops it at its checkpoints and marks it interrupted; a second Ctrl-C stops at
    once; both print the command that resumes it. Examples:

        agentarch run --task digits --budget 10

        agentarch run --task digits --model openai/gpt-4o-mini --max-cost 2 --hours 8

        agentarch run --task mqar --model openai/qwen2.5-coder --api-base http://127.0.0.1:8000/v1

    With --propose-in SPACE the model chooses each candidate's architecture of that search space
    (a JSON object of its fields) instead of writing a module, for a model too small to write one:

        agentarch run --task digits --propose-in macro --model openai/smollm2 --api-base http://127.0.0.1:8080/v1

    On a NAS-Bench-201 table (nb201-cifar10, nb201-cifar100, nb201-imagenet16) each proposal is looked up in the
    table instead of trained: the model chooses cells with --propose-in nb201, or offline evolution proposes them:

        agentarch run --task nb201-cifar10 --propose-in nb201 --model openai/smollm2 --api-base http://127.0.0.1:8080/v1

    With --knowledge DIR each prompt also shows the notes of DIR most relevant to the parent, its analysis and the
    notebook (see `agentarch knowledge --help`; 'starter' names the notes shipped with agentarch):

        agentarch run --task digits --model openai/gpt-4o-mini --knowledge starter

    With --judge MODEL a model rates each trained candidate's novelty, soundness and complexity beside its scores
    (`agentarch archive show ID`); --objective judge:max ranks by its score:

        agentarch run --task digits --model openai/gpt-4o-mini --judge openai/gpt-4o --objective val:max --objective judge:max
    """
    from agentarch.evaluation.evaluator import Evaluator
    from agentarch.isolation.policy import resolve_isolation
    from agentarch.loop import run as run_lib
    from agentarch.loop.context import answered_by_table

    flags = dict(
        task=task,
        model=model[0] if model and len(model) == 1 else None,
        models=model if model and len(model) > 1 else None,
        api_base=api_base,
        propose_in=propose_in,
        search_recipe=search_recipe,
        budget=budget,
        max_cost=max_cost,
        hours=hours,
        schedule=schedule,
        batch=batch,
        objectives=objectives or None,
        constraints=constraints or None,
        islands=islands,
        migrate_every=migrate_every,
        verify_top=verify_top,
        verify_epochs=verify_epochs,
        screen=screen,
        screen_explore=screen_explore,
        edit_mode=edit_mode,
        edit_rate=edit_rate,
        notebook_every=notebook_every,
        knowledge=knowledge,
        knowledge_entries=knowledge_entries,
        judge=judge,
        examples=examples,
        parent_strategy=parent_strategy,
        repair_tries=repair_tries,
        epochs=epochs,
        isolation=isolation,
        scoring=scoring,
        timeout_s=timeout_s,
        novelty_threshold=novelty_threshold,
        review=review,
        slots=slots,
        executor=executor,
        ray_address=ray_address,
        per_gpu=per_gpu,
        queue=queue,
        llm_concurrency=llm_concurrency,
        llm_stream=llm_stream,
        llm_timeout_s=llm_timeout_s,
        llm_first_token_timeout_s=llm_first_token_timeout_s,
        llm_stall_timeout_s=llm_stall_timeout_s,
        llm_min_tokens_per_s=llm_min_tokens_per_s,
        llm_retries=llm_retries,
        max_tokens=max_tokens,
        max_answer_bytes=max_answer_bytes,
        context_tokens=context_tokens,
    )
    settings = evaluating_settings(archive=archive, **flags)
    printer = outcome_printer(as_json)
    control = RunControl()
    watcher = Watcher(mode_for(as_json, out, err), err)
    watching = dict(on_outcome=printer, on_waiting=_waiting_notice, on_event=watcher, control=control)
    if resume:
        given = {k: v for k, v in flags.items() if v is not None}
        err.print(formats.line("resuming run ", resume), soft_wrap=True)
        with stop_on_signals(control, watcher), watcher:
            summary = run_lib.resume(resume, settings.archive, **watching, **given)
    else:
        if "batch" in settings.model_fields_set and settings.schedule == "steady":  # a flag, AGENTARCH_BATCH or a file
            err.print(
                formats.line(
                    ("note: ", "bold yellow"),
                    f"--batch {settings.batch} sizes the rounds of --schedule rounds, and this run's schedule is "
                    "steady, which ignores it: --slots sets how many candidates train at once, --queue how many wait "
                    "ready",
                ),
                soft_wrap=True,
            )
        the_task = get_task(settings.task)
        table = answered_by_table(settings, the_task)  # a table's proposals are looked up: no data, no sandbox
        if not table:
            with open_archive(settings.archive) as db:
                Evaluator(db, settings).prepared  # fail early on a task, its data or a sandbox that cannot work
        if settings.knowledge is not None:
            _index_knowledge(settings.knowledge, settings.archive)
        if settings.model is None:
            err.print(
                formats.line(
                    ("No LLM configured", "bold yellow"),
                    " (--model, AGENTARCH_MODEL or agentarch.toml): running offline "
                    "with the regularized-evolution baseline through the same loop.",
                ),
                soft_wrap=True,
            )
        else:
            models = ", ".join(settings.models) if settings.models else settings.model
            where = f" at {settings.api_base}" if settings.api_base else ""
            inside = f", architectures of the {settings.propose_in} space" if settings.propose_in else ""
            err.print(formats.line(f"proposing with {models}{where}{inside}"), soft_wrap=True)
        if table:
            err.print(
                formats.line(f"{the_task.name} is a table: each proposal is looked up in it, nothing trains"),
                soft_wrap=True,
            )
        else:
            warn_if_weak(resolve_isolation(settings.isolation))
        with stop_on_signals(control, watcher), watcher:
            summary = run_lib.start(settings, **watching)
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        out.print(run_summary_line(summary), soft_wrap=True)  # the run's last line, grepped in its log
    if summary.get("status") == "interrupted" and control.stopping:
        err.print(
            formats.line(
                ("interrupted", "bold yellow"),
                f" ({control.reason}); to go on: ",
                (resume_command(summary["run_id"], settings.archive), "bold"),
            ),
            soft_wrap=True,
        )
        # Everything is recorded and said: end here rather than in the interpreter's shutdown, where Python puts the
        # default handlers back and a second Ctrl-C would kill the process without a word (status -2, not 130).
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(exit_code(control))


def run_summary_line(summary: dict[str, Any]) -> Text:
    """The last line of `agentarch run`: every outcome counted (rejections by a reviewer too), then the best.

    Text, not markup: a resumed run's summary comes back from the archive, and every part of it is shown as the
    characters it holds."""
    kinds = ("proposed", "trained", "invalid", "duplicate", "failed", "rejected", "screened")
    counts = ", ".join(f"{summary[k]} {k}" for k in kinds if k in summary)
    if "repaired" in summary:
        tried = f" of {summary['repair_attempts']} repair attempts" if "repair_attempts" in summary else ""
        counts += f", {summary['repaired']} repaired{tried}"
    best = summary["best"]
    outcome = (
        f"best #{best['id']} {formats.scored('test', best['test_accuracy'], summary['metric'])}"
        + _unverified_said(summary, best)
        if best
        else "nothing trained; see `agentarch archive ls`"
    )
    extras = []
    if "front" in summary:
        extras.append(
            f"Pareto front of {len(summary['front'])} ({', '.join(summary['objectives']['objectives'])}), "
            f"hypervolume {summary['hypervolume']:.4g}"
        )
    if summary.get("verified"):
        top = summary["verified"][0]
        extras.append(
            f"{len(summary['verified'])} verified, best #{top['id']} "
            f"{formats.scored('test', top['test_accuracy'], summary['metric'])} at {top['epochs']} epochs"
            + _unverified_said(summary, top, run_wide=False)
        )
    if summary.get("edits"):
        extras.append("edits: " + ", ".join(f"{n} {kind}" for kind, n in sorted(summary["edits"].items())))
    if summary.get("in_space"):
        extras.append(in_space_line(summary["in_space"]))
    if summary.get("judge"):
        judged = summary["judge"]
        extras.append(f"judge: {judged['judged']} rated, {judged['failed']} failed, ${judged['cost_usd']:.4f}")
    return formats.line(
        (f"run {summary['run_id']} {summary['status']}", "bold"),
        f" (stopped by {summary['stopped_by']}): {counts}; {outcome}; "
        + "".join(f"{extra}; " for extra in extras)
        + f"cost {formats.usd(summary['cost_usd'])}"
        + (f" and {formats.seconds(summary['llm_seconds'])} of LLM time" if summary.get("llm_seconds") else ""),
    )


def _unverified_said(summary: dict[str, Any], pick: dict[str, Any], run_wide: bool = True) -> str:
    """What follows a best-of-run pick scored in its own process (`loop.summary.mark_scoring` marked it): the mark,
    why, how many of the run's scores are such, and the best verified one when there is one; "" for a verified pick."""
    if pick.get("scoring") != TRUSTED:
        return ""
    said = f" [⚠ unverified: {UNVERIFIED_WHY}"
    if run_wide and summary.get("unverified"):
        said += f"; {summary['unverified']} of {summary['trained']} trained unverified"
    checked = summary.get("best_verified") if run_wide else None
    if checked:
        said += (
            f"; best verified #{checked['id']} {formats.scored('test', checked['test_accuracy'], summary['metric'])}"
        )
    return said + "]"


def in_space_line(stats: dict[str, Any]) -> str:
    """What a --propose-in run's queries came to: the model's valid answers of its calls, and the fallbacks."""
    rate = "" if stats.get("valid_rate") is None else f" ({stats['valid_rate']:.0%})"
    why = ", ".join(f"{n} {kind}" for kind, n in sorted((stats.get("fallback_reasons") or {}).items()))
    return (
        f"in space: {stats['valid']} valid answers of {stats['asks']} calls{rate}, "
        f"{stats['fallbacks']} of {stats['queries']} proposals fell back to a uniform sample"
        + (f" ({why})" if why else "")
    )


def _index_knowledge(path: Path, archive: Path) -> None:
    """Index the run's knowledge base before it opens, and say what it holds (and what it skipped)."""
    with open_archive(archive) as db:
        done = knowledge_base.add(db, path)
    err.print(
        formats.line(f"knowledge base {done.root.name}: {done.entries} entries from {done.files} files"), soft_wrap=True
    )
    for skipped, why in done.skipped:
        err.print(formats.line(("skipped ", "yellow"), skipped, f": {why}"), soft_wrap=True)


def _waiting_notice(pending: list[dict[str, Any]]) -> None:
    if not pending:  # the run looked again after a decision and nothing else waits: nothing to say
        return
    err.print(
        formats.line(
            ("paused:", "bold cyan"),
            f" {len(pending)} candidate(s) wait for review (reviews {', '.join(str(r['id']) for r in pending)}); "
            "decide with `agentarch review` or in `agentarch serve`, and the run goes on by itself",
        )
    )


def prompt_command(
    task: TaskOpt = None,
    archive: ArchiveOpt = None,
    examples: Annotated[Optional[int], setting("examples", "--examples")] = None,
    parent_strategy: Annotated[Optional[str], setting("parent_strategy", "--parent-strategy")] = None,
    knowledge: KnowledgeOpt = None,
    knowledge_entries: KnowledgeEntriesOpt = None,
    choice_seed: Annotated[int, typer.Option("--seed", help="seed of the parent and example choice")] = 0,
) -> None:
    """Print exactly what the LLM would see for the next proposal on a task (system and user messages), with
    --knowledge DIR the knowledge entries it would be shown too."""
    from agentarch.llm import fewshot, prompts

    settings = settings_or_exit(
        task=task,
        archive=archive,
        examples=examples,
        parent_strategy=parent_strategy,
        knowledge=knowledge,
        knowledge_entries=knowledge_entries,
    )
    the_task = get_task(settings.task)
    with open_archive(settings.archive) as db:
        shot = fewshot.select(
            db, the_task.name, n=settings.examples, strategy=settings.parent_strategy, rng=random.Random(choice_seed)
        )
        entries: list[dict[str, Any]] = []
        if settings.knowledge is not None:
            root = knowledge_base.add(db, settings.knowledge).root
            about = f"{the_task.name} {the_task.kind} {the_task.description}"
            entries = knowledge_base.for_proposal(db, root, settings.knowledge_entries, shot.parent, None, about)
    messages = prompts.propose_messages(the_task, shot, knowledge=entries)
    for message in messages:
        out.rule(formats.untrusted(message["role"], style="bold"))
        out.print(formats.untrusted(message["content"]))
