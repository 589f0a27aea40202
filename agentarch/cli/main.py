"""The `agentarch` command line: a thin Typer layer over the library (evaluate, archive, tasks, sandbox)."""

from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import Progress, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from agentarch import formats, web
from agentarch.config import ConfigError, Settings, field_doc, load_settings
from agentarch.errors import AgentarchError
from agentarch.evaluation.evaluator import EvalResult, Evaluator, eval_summary
from agentarch.evaluation.fidelity import rung_budgets, successive_halving
from agentarch.isolation.sandbox import (
    CANDIDATE_UID,
    FALLBACK_WARNING,
    bubblewrap_problem,
    process_mode_gaps,
    resolve_isolation,
)
from agentarch.llm import fewshot, prompts
from agentarch.loop import review as review_lib
from agentarch.loop import run as run_lib
from agentarch.loop.baseline import (
    SeedResult,
    check_screen,
    parse_seeds,
    record_table_best,
    search_table,
    search_trained,
    summarize,
)
from agentarch.loop.graph import BEST_OF_N
from agentarch.search import predictor as predictor_lib
from agentarch.search.objectives import Goals
from agentarch.search.proposers.base import Proposal
from agentarch.search.proposers.baselines import ALGOS, make_proposer
from agentarch.search.spaces import SPACES, SearchSpace, get_space
from agentarch.store.archive import Archive, ArchiveError
from agentarch.tasks import taskfiles
from agentarch.tasks.registry import TASKS, Task, get_task
from agentarch.web.report import write_report


class App(typer.Typer):
    """A Typer app whose every command turns an AgentarchError into its message and exit code 2.

    One handler for every command: a problem the user can fix is a usage error that says what to do,
    and anything else (a bug) stays a traceback instead of posing as one.
    """

    def command(self, *args: Any, **kwargs: Any) -> Any:
        register = super().command(*args, **kwargs)

        def decorator(function: Any) -> Any:
            @functools.wraps(function)
            def handled(*call_args: Any, **call_kwargs: Any) -> Any:
                try:
                    return function(*call_args, **call_kwargs)
                except AgentarchError as e:
                    raise fail(str(e)) from None

            register(handled)
            return function

        return decorator


app = App(
    help="LLM-driven neural architecture discovery: propose, sandbox, train, archive.\n\n"
    "Every option that shows a setting's default can also be set in agentarch.toml (or the file in "
    "AGENTARCH_CONFIG) or as an AGENTARCH_<NAME> variable; the variable beats the file, the flag beats both.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
archive_app = App(help="Browse and export the archive (candidates, evaluations, runs).", no_args_is_help=True)
app.add_typer(archive_app, name="archive")

err = Console(stderr=True)
out = Console()


def print_table(table: Table) -> None:
    """A table on stdout: within the terminal's width on a terminal (cells fold), as wide as its contents when piped,
    so a file, grep or less gets each row on one line instead of rows folded at Rich's default 80 columns."""
    if out.is_terminal:
        out.print(table)
        return
    width = Measurement.get(out, out.options.update(width=100_000), table).maximum
    Console(width=max(width, out.width)).print(table)


def setting(name: str, *flags: str, note: str = "", metavar: str | None = None) -> Any:
    """The Typer option for the Settings field `name`: its help, shown default, bounds and choices come from the field.

    The command's parameter is named like the field and defaults to None, so a flag that is not given
    falls through to agentarch.toml, AGENTARCH_* and the field's default (`load_settings` drops Nones).
    `note` adds what only a command line needs (the known tasks). The text is escaped because Typer
    reads help as Rich markup, which would swallow "[default: ...]" as a tag.
    """
    doc = field_doc(name)
    extras = "; ".join(part for part in (f"default: {doc.default}", doc.bounds) if part)
    return typer.Option(
        *flags,
        help=escape(f"{doc.description}{note} [{extras}]"),
        metavar=f"[{'|'.join(doc.choices)}]" if doc.choices else metavar,
        show_default=False,
    )


ArchiveOpt = Annotated[Optional[Path], setting("archive", "--archive")]
TaskOpt = Annotated[
    Optional[str], setting("task", "--task", "-t", note=f": {', '.join(TASKS)}, or a task file (path/to/task.toml)")
]
EpochsOpt = Annotated[Optional[int], setting("epochs", "--epochs")]
DataDirOpt = Annotated[Optional[Path], setting("data_dir", "--data-dir")]
IsolationOpt = Annotated[Optional[str], setting("isolation", "--isolation")]
TimeoutOpt = Annotated[Optional[float], setting("timeout_s", "--timeout")]
NoveltyOpt = Annotated[Optional[float], setting("novelty_threshold", "--novelty-threshold")]


def fail(message: str) -> typer.Exit:
    """Print a usage problem and return the exit to raise (exit code 2, like other usage errors)."""
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def _warn_if_weak(isolation: str) -> None:
    """Say, on every command that runs candidates without bubblewrap, what the process mode does and lacks."""
    if isolation == "process":
        why = bubblewrap_problem() or "isolation=process was asked for"
        err.print(f"[bold yellow]{FALLBACK_WARNING.format(why=why)}[/]")


def settings_or_exit(**flags: Any) -> Settings:
    try:
        return load_settings(**flags)
    except ConfigError as e:
        raise fail(str(e)) from None


def open_archive(path: Path) -> Archive:
    try:
        return Archive(path)
    except ArchiveError as e:
        raise fail(str(e)) from None


@app.command("eval")
def eval_command(
    paths: Annotated[list[Path], typer.Argument(help="candidate .py files, each defining `class Net(nn.Module)`")],
    task: TaskOpt = None,
    archive: ArchiveOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object per file, one per line")] = False,
    epochs: EpochsOpt = None,
    seed: Annotated[Optional[int], setting("seed", "--seed")] = None,
    data_dir: DataDirOpt = None,
    download: Annotated[Optional[bool], setting("download", "--download")] = None,
    isolation: IsolationOpt = None,
    timeout_s: TimeoutOpt = None,
    novelty_threshold: NoveltyOpt = None,
) -> None:
    """Check, dedup, train and record each candidate file.

    A bad candidate is a result (invalid, duplicate, failed, timeout), not an error: the exit code
    is 0 once every file was recorded. Example:

        agentarch eval archive/seeds/image/*.py --task digits --json
    """
    settings = settings_or_exit(
        task=task,
        archive=archive,
        epochs=epochs,
        seed=seed,
        data_dir=data_dir,
        download=download,
        isolation=isolation,
        timeout_s=timeout_s,
        novelty_threshold=novelty_threshold,
    )
    get_task(settings.task)  # an unknown task or a bad task file stops here, before the archive is opened
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise fail(f"no such file: {', '.join(missing)}")
    with open_archive(settings.archive) as db:
        evaluator = Evaluator(db, settings)
        _warn_if_weak(evaluator.isolation)
        config = {"paths": [str(p) for p in paths], "epochs": settings.epochs, "seed": settings.seed}
        results: list[EvalResult] = []
        with db.run(
            "eval",
            evaluator.task.name,
            "user",
            {**config, "isolation": evaluator.isolation},
            lambda: eval_summary(results),
        ) as run_id:
            evaluator.run_id = run_id
            for path in paths:
                with err.status(f"evaluating {path.name} on {settings.task} ({evaluator.isolation} sandbox)"):
                    result = _evaluate_file(evaluator, path)
                results.append(result)
                if as_json:
                    print(json.dumps(result.to_json()), flush=True)
                else:
                    _print_result(result, evaluator.task.metric)


def _evaluate_file(evaluator: Evaluator, path: Path) -> EvalResult:
    raw = path.read_bytes()
    try:
        code = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        code = raw.decode("utf-8", errors="replace")
        return evaluator.reject(
            code, path.name, f"[encoding] not UTF-8 text (byte {e.start}); save the file as UTF-8 Python source"
        )
    return evaluator.evaluate(code, path.name)


def _print_result(r: EvalResult, metric: str) -> None:
    m = r.metrics
    color = {"trained": "green", "duplicate": "yellow"}.get(r.status, "red")
    line = f"[bold]#{r.id}[/] {r.name}: [{color}]{r.status}[/]"
    if r.status == "trained":
        line += (
            f"  {formats.scored('val', m['val_accuracy'], metric)}  {formats.scored('test', m['test_accuracy'], metric)}  "
            f"params {formats.count(m['params'])}  flops {formats.count(m['flops'])}  "
            f"train {formats.seconds(m['train_seconds'])}"
        )
    if r.reason:
        line += f"\n    {r.reason}"
    out.print(line, highlight=False)


# -- run ----------------------------------------------------------------------------------------


@app.command("run")
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
    examples: Annotated[Optional[int], setting("examples", "--examples")] = None,
    parent_strategy: Annotated[Optional[str], setting("parent_strategy", "--parent-strategy")] = None,
    repair_tries: Annotated[Optional[int], setting("repair_tries", "--repair-tries")] = None,
    epochs: EpochsOpt = None,
    resume: Annotated[Optional[str], typer.Option(help="continue the run with this id where it stopped")] = None,
    slots: Annotated[Optional[int], setting("slots", "--slots")] = None,
    executor: Annotated[Optional[str], setting("executor", "--executor")] = None,
    per_gpu: Annotated[Optional[int], setting("per_gpu", "--per-gpu")] = None,
    ray_address: Annotated[Optional[str], setting("ray_address", "--ray-address")] = None,
    review: Annotated[Optional[bool], setting("review", "--review")] = None,
    archive: ArchiveOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON summary object at the end")] = False,
    isolation: IsolationOpt = None,
    timeout_s: TimeoutOpt = None,
    novelty_threshold: NoveltyOpt = None,
) -> None:
    """Run the discovery loop: propose, check, dedup, smoke, repair, train, analyze, record, repeat.

    With --model, an LLM proposes PyTorch code from few-shot examples drawn from the archive; keys
    come from the provider's environment variable (e.g. OPENAI_API_KEY) or agentarch.toml, never
    from flags, and never reach the sandbox. Without a model the run says so and goes on offline
    with regularized evolution through the same graph. Every step is checkpointed: after a crash,
    `agentarch run --resume RUN_ID` continues where it stopped. Examples:

        agentarch run --task digits --budget 10

        agentarch run --task digits --model openai/gpt-4o-mini --max-cost 2 --hours 8

        agentarch run --task mqar --model openai/qwen2.5-coder --api-base http://127.0.0.1:8000/v1
    """
    flags = dict(
        task=task,
        model=model[0] if model and len(model) == 1 else None,
        models=model if model and len(model) > 1 else None,
        api_base=api_base,
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
        examples=examples,
        parent_strategy=parent_strategy,
        repair_tries=repair_tries,
        epochs=epochs,
        isolation=isolation,
        timeout_s=timeout_s,
        novelty_threshold=novelty_threshold,
        review=review,
        slots=slots,
        executor=executor,
        ray_address=ray_address,
        per_gpu=per_gpu,
    )
    settings = settings_or_exit(archive=archive, **flags)
    printer = _outcome_printer(as_json)
    if resume:
        given = {k: v for k, v in flags.items() if v is not None and k in ("budget", "max_cost", "hours", "models")}
        err.print(f"resuming run {resume}")
        summary = run_lib.resume(resume, settings.archive, on_outcome=printer, on_waiting=_waiting_notice, **given)
    else:
        the_task = get_task(settings.task)
        if the_task.kind == "tabular":
            raise fail(
                f"{the_task.name} is a table, not a training task; use `agentarch baseline --task {the_task.name}`"
            )
        with open_archive(settings.archive) as db:
            Evaluator(db, settings).prepared  # fail early on a task, its data or a sandbox that cannot work
        if settings.model is None:
            err.print(
                "[bold yellow]No LLM configured[/] (--model, AGENTARCH_MODEL or agentarch.toml): running offline "
                "with the regularized-evolution baseline through the same loop."
            )
        else:
            models = ", ".join(settings.models) if settings.models else settings.model
            err.print(f"proposing with {models}" + (f" at {settings.api_base}" if settings.api_base else ""))
        _warn_if_weak(resolve_isolation(settings.isolation))
        summary = run_lib.start(settings, on_outcome=printer, on_waiting=_waiting_notice)
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        out.print(run_summary_line(summary))


def run_summary_line(summary: dict[str, Any]) -> str:
    """The last line of `agentarch run`: every outcome counted (rejections by a reviewer too), then the best."""
    kinds = ("proposed", "trained", "invalid", "duplicate", "failed", "rejected", "screened", "repaired")
    counts = ", ".join(f"{summary[k]} {k}" for k in kinds if k in summary)
    best = summary["best"]
    outcome = (
        f"best #{best['id']} {formats.scored('test', best['test_accuracy'], summary['metric'])}"
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
        )
    if summary.get("edits"):
        extras.append("edits: " + ", ".join(f"{n} {kind}" for kind, n in sorted(summary["edits"].items())))
    return (
        f"[bold]run {summary['run_id']} {summary['status']}[/] (stopped by {summary['stopped_by']}): {counts}; "
        f"{outcome}; " + "".join(f"{extra}; " for extra in extras) + f"cost {formats.usd(summary['cost_usd'])}"
    )


def _waiting_notice(pending: list[dict[str, Any]]) -> None:
    if not pending:  # the run looked again after a decision and nothing else waits: nothing to say
        return
    err.print(
        f"[bold cyan]paused:[/] {len(pending)} candidate(s) wait for review "
        f"(reviews {', '.join(str(r['id']) for r in pending)}); decide with `agentarch review` or in "
        "`agentarch serve`, and the run goes on by itself"
    )


def _outcome_printer(as_json: bool) -> Any:
    def show(outcome: dict[str, Any]) -> None:
        if as_json:
            return
        color = {"trained": "green", "duplicate": "yellow"}.get(outcome["status"], "red")
        line = f"#{outcome['id'] or '-'} [{color}]{outcome['status']}[/]"
        if outcome["status"] == "trained":
            line += f"  {formats.scored('val', outcome['val_accuracy'], outcome.get('metric', 'accuracy'))}" + (
                "  (repaired)" if outcome["repaired"] else ""
            )
        elif outcome["reason"]:
            line += f"  {str(outcome['reason'])[:160]}"
        err.print(line, highlight=False)

    return show


@app.command("prompt")
def prompt_command(
    task: TaskOpt = None,
    archive: ArchiveOpt = None,
    examples: Annotated[Optional[int], setting("examples", "--examples")] = None,
    parent_strategy: Annotated[Optional[str], setting("parent_strategy", "--parent-strategy")] = None,
    choice_seed: Annotated[int, typer.Option("--seed", help="seed of the parent and example choice")] = 0,
) -> None:
    """Print exactly what the LLM would see for the next proposal on a task (system and user messages)."""
    settings = settings_or_exit(task=task, archive=archive, examples=examples, parent_strategy=parent_strategy)
    the_task = get_task(settings.task)
    with open_archive(settings.archive) as db:
        shot = fewshot.select(
            db, the_task.name, n=settings.examples, strategy=settings.parent_strategy, rng=random.Random(choice_seed)
        )
    messages = prompts.propose_messages(the_task, shot)
    for message in messages:
        out.rule(f"[bold]{message['role']}[/]")
        out.print(message["content"], markup=False, highlight=False)


@app.command("halve")
def halve_command(
    paths: Annotated[list[Path], typer.Argument(help="candidate .py files")],
    task: TaskOpt = None,
    archive: ArchiveOpt = None,
    min_epochs: Annotated[int, typer.Option(help="the first rung's training budget")] = 3,
    max_epochs: Annotated[
        Optional[int], typer.Option(help=escape("the full budget [default: the task's epochs]"))
    ] = None,
    eta: Annotated[int, typer.Option(help="keep the best 1/eta at each rung; budgets grow eta-fold")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print the rungs and the best as one JSON object")] = False,
) -> None:
    """Successive halving over candidate files: short budgets for all, longer ones for the best.

    Each rung's scores are recorded as evaluations at that fidelity (epochs), so the leaderboard says
    which budget a score is from. Example:

        agentarch halve archive/seeds/image/*.py --task digits --min-epochs 3 --max-epochs 27
    """
    settings = settings_or_exit(task=task, archive=archive)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise fail(f"no such file: {', '.join(missing)}")
    full = max_epochs or get_task(settings.task).epochs
    rung_budgets(min_epochs, full, eta)
    with open_archive(settings.archive) as db:
        evaluator = Evaluator(db, settings.model_copy(update={"epochs": full}))
        config = {"paths": [str(p) for p in paths], "min_epochs": min_epochs, "max_epochs": full, "eta": eta}
        done: list[Any] = []  # the search's result, for the run's summary
        with db.run(
            "halving", evaluator.task.name, "user", config, lambda: done[0].summary() if done else {}
        ) as run_id:
            evaluator.run_id = run_id
            done.append(
                successive_halving(
                    evaluator,
                    [(p.name, p.read_text()) for p in paths],
                    min_epochs,
                    full,
                    eta,
                    on_result=lambda epochs, r: (
                        None
                        if as_json
                        else out.print(
                            f"{epochs:>4} epochs  #{r.id} {r.name}: {r.status}  "
                            f"{formats.scored('val', r.metrics['val_accuracy'], evaluator.task.metric)}",
                            highlight=False,
                        )
                    ),
                )
            )
    result = done[0]
    if as_json:
        print(json.dumps(result.summary()))
    elif result.best:
        out.print(
            f"[bold]best:[/] #{result.best.id} {result.best.name} "
            f"{formats.scored('val', result.best.metrics['val_accuracy'], evaluator.task.metric)} "
            f"at {full} epochs; {result.epochs_spent} epochs trained in all ({len(paths) * full} for full budgets)"
        )


# -- review -------------------------------------------------------------------------------------


@app.command("review")
def review_command(
    archive: ArchiveOpt = None,
    list_only: Annotated[bool, typer.Option("--list", help="list pending reviews and exit")] = False,
    approve: Annotated[Optional[int], typer.Option(help="approve this review id")] = None,
    reject: Annotated[Optional[int], typer.Option(help="reject this review id (needs --reason)")] = None,
    edit: Annotated[Optional[int], typer.Option(help="replace this review's code with --file (or $EDITOR)")] = None,
    flag: Annotated[
        Optional[int], typer.Option(help="flag this recorded candidate id after the fact (needs --reason)")
    ] = None,
    reason: Annotated[Optional[str], typer.Option(help="why (required to reject or flag)")] = None,
    file: Annotated[Optional[Path], typer.Option(help="edited code for --edit")] = None,
    by: Annotated[
        Optional[str],
        typer.Option(help=escape("who decides, kept with the decision [default: AGENTARCH_REVIEWER, else your login]")),
    ] = None,
) -> None:
    """Review paused candidates of `agentarch run --review`: approve, reject with a reason, or edit.

    With no option it walks the queue interactively: each candidate's intent, its diff against its
    parent and its code, then \\[a]pprove, \\[r]eject, \\[e]dit in $EDITOR, \\[s]kip or \\[q]uit. Edited code
    goes back through the checks and dedup. The paused run picks decisions up by itself. Examples:

        agentarch review

        agentarch review --reject 3 --reason "copies the parent with a renamed layer"
    """
    who = by or review_lib.reviewer()
    with open_archive(_archive_path(archive)) as db:
        try:
            if flag is not None:
                db.flag(flag, who, reason or "")
                out.print(f"flagged candidate {flag}")
            elif approve is not None:
                db.decide(approve, "approved", who)
                out.print(f"approved review {approve}")
            elif reject is not None:
                db.decide(reject, "rejected", who, reason=reason)
                out.print(f"rejected review {reject}")
            elif edit is not None:
                code = file.read_text() if file else review_lib.edit_in_editor(db.review(edit)["code"] or "")
                db.decide(edit, "edited", who, reason=reason, code=code)
                out.print(f"edited review {edit}; the new code goes back through the checks")
            else:
                _review_queue(db, who, list_only)
        except (ArchiveError, OSError, subprocess.CalledProcessError) as e:
            raise fail(str(e)) from None


def _review_queue(db: Archive, who: str, list_only: bool) -> None:
    pending = db.reviews(status="pending")
    if not pending:
        out.print("no candidate waits for review")
        return
    if list_only:
        table = Table(title="pending reviews")
        for header in ("review", "run", "parent", "intent"):
            table.add_column(header)
        for r in pending:
            table.add_row(str(r["id"]), r["run_id"] or "-", formats.text(r["parent_id"]), (r["intent"] or "")[:80])
        print_table(table)
        return
    for row in pending:
        shown = review_lib.view(db, row)
        out.rule(f"[bold]review {shown.review_id}[/] (run {shown.run_id})")
        out.print(f"intent: {shown.intent or '(none given)'}", highlight=False, markup=False)
        if shown.diff:
            out.print(Syntax(shown.diff, "diff"))
        out.print(Syntax(shown.code, "python", line_numbers=True))
        choice = typer.prompt("[a]pprove, [r]eject, [e]dit, [s]kip, [q]uit", default="s").strip().lower()[:1]
        if choice == "q":
            return
        if choice == "a":
            db.decide(shown.review_id, "approved", who)
        elif choice == "r":
            db.decide(shown.review_id, "rejected", who, reason=typer.prompt("why"))
        elif choice == "e":
            db.decide(shown.review_id, "edited", who, code=review_lib.edit_in_editor(shown.code))


# -- baseline -----------------------------------------------------------------------------------


@app.command("baseline")
def baseline_command(
    algo: Annotated[
        str,
        typer.Option(
            help=f"search algorithm: {', '.join(ALGOS)}, or {BEST_OF_N} (the LLM sampled from the seeds with no "
            "archive feedback, the control for `agentarch run`; needs --model)"
        ),
    ] = "rea",
    model: Annotated[Optional[str], setting("model", "--model", note="; for --algo best-of-n")] = None,
    api_base: Annotated[Optional[str], setting("api_base", "--api-base")] = None,
    space: Annotated[
        str,
        typer.Option(
            help="search space: " + ", ".join(f"{s.name} ({'/'.join(s.kinds)} tasks)" for s in SPACES.values())
        ),
    ] = "nb201",
    task: TaskOpt = None,
    evaluations: Annotated[
        int, typer.Option("--budget", min=1, help="evaluations per seed (table queries or trainings)")
    ] = 100,
    seeds: Annotated[str, typer.Option(help="seeds to run independently: 0-99, 7 or 1,4,9")] = "0",
    archive: ArchiveOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON lines: one per evaluation (or per seed on a table), the summary last")
    ] = False,
    population: Annotated[Optional[int], setting("population", "--population")] = None,
    sample_size: Annotated[Optional[int], setting("sample_size", "--sample-size")] = None,
    objectives: Annotated[Optional[list[str]], setting("objectives", "--objective", metavar="METRIC:max|min")] = None,
    constraints: Annotated[Optional[list[str]], setting("constraints", "--constraint", metavar="METRIC<=VALUE")] = None,
    screen: Annotated[Optional[int], setting("screen", "--screen", note="; table tasks only")] = None,
    screen_explore: Annotated[Optional[float], setting("screen_explore", "--screen-explore")] = None,
    epochs: EpochsOpt = None,
    data_dir: DataDirOpt = None,
    isolation: IsolationOpt = None,
    timeout_s: TimeoutOpt = None,
) -> None:
    """Run a conventional NAS baseline through the same sandbox and archive as the LLM loop.

    On a trainable task every proposal is rendered from the space, trained in the sandbox and
    recorded with its lineage (a mutant's parent id). On a NAS-Bench-201 table task (nb201-cifar10,
    nb201-cifar100, nb201-imagenet16) each proposal is one table query, accuracies are in percent as
    the benchmark reports them, and each seed's best cell is recorded once; with --screen K each query
    is the pick of K proposals by a predictor fitted on the seed's queries so far. Each seed searches on
    validation accuracy; the summary is the mean and std over seeds of the test accuracy of each
    seed's best-by-validation candidate. Examples:

        agentarch baseline --algo rea --space nb201 --task digits --budget 12

        agentarch baseline --algo random --task nb201-cifar10 --budget 100 --seeds 0-499 --json

        agentarch baseline --algo rea --task nb201-cifar10 --screen 4 --seeds 0-99
    """
    settings = settings_or_exit(
        task=task,
        archive=archive,
        epochs=epochs,
        data_dir=data_dir,
        isolation=isolation,
        timeout_s=timeout_s,
        population=population,
        sample_size=sample_size,
        model=model,
        api_base=api_base,
        objectives=objectives or None,
        constraints=constraints or None,
        screen=screen,
        screen_explore=screen_explore,
    )
    seed_list = parse_seeds(seeds)
    if (screen or 1) > 1 and (algo == BEST_OF_N or get_task(settings.task).kind != "tabular"):
        raise fail(
            "agentarch baseline screens table searches only (nb201-*); to screen trained proposals use "
            "`agentarch run --screen K` (it runs REA offline when no model is configured)"
        )
    if algo == BEST_OF_N:
        _warn_if_weak(resolve_isolation(settings.isolation))
        summary, results = run_lib.best_of_n(settings, evaluations, seed_list, on_outcome=_outcome_printer(as_json))
        if as_json:
            print(json.dumps(summary), flush=True)
        else:
            _print_baseline_summary(summary, results, get_task(settings.task))
        return
    chosen = get_space(space)
    the_task = get_task(settings.task)
    chosen.check_fit(the_task)
    goals = Goals.parse(settings.objectives, settings.constraints, the_task.direction, the_task.metric)
    make_proposer(algo, chosen, 0, population=settings.population, sample_size=settings.sample_size, goals=goals)
    options: dict[str, Any] = (
        {"population": settings.population, "sample_size": settings.sample_size} if algo == "rea" else {}
    )
    config = {"algo": algo, "space": space, "budget": evaluations, "seeds": seeds, **options, "epochs": settings.epochs}
    if settings.objectives or settings.constraints:
        config.update(goals.describe())
    options["goals"] = goals
    if the_task.kind == "tabular" and settings.screen > 1:
        config.update(screen=settings.screen, screen_explore=settings.screen_explore)
        options.update(screen=settings.screen, explore=settings.screen_explore)
        check_screen(settings.screen, goals)
    results: list[SeedResult] = []
    with (
        open_archive(settings.archive) as db,
        db.run(
            "baseline", the_task.name, algo, config, lambda: summarize(algo, the_task.name, evaluations, results)
        ) as run_id,
    ):
        if the_task.kind == "tabular":
            _baseline_on_table(db, run_id, algo, chosen, the_task, evaluations, seed_list, options, as_json, results)
        else:
            evaluator = Evaluator(db, settings, run_id)
            _warn_if_weak(evaluator.isolation)
            for seed in seed_list:
                results.append(
                    search_trained(
                        algo,
                        chosen,
                        evaluator,
                        evaluations,
                        seed,
                        on_result=_candidate_printer(seed, as_json, the_task.metric),
                        **options,
                    )
                )
    summary = summarize(algo, the_task.name, evaluations, results)
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        _print_baseline_summary(summary, results, the_task)


def _baseline_on_table(
    db: Archive,
    run_id: str,
    algo: str,
    space: SearchSpace,
    task: Any,
    budget: int,
    seeds: list[int],
    options: dict[str, Any],
    as_json: bool,
    results: list[SeedResult],
) -> None:
    with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=err, disable=as_json) as progress:
        bar = progress.add_task(f"{algo} on {task.name}, {budget} queries per seed", total=len(seeds))
        for seed in seeds:
            result = search_table(algo, space, task, budget, seed, **options)
            results.append(result)
            candidate_id = record_table_best(db, run_id, algo, space, task, result)
            best = result.best()
            if as_json and best is not None:
                print(
                    json.dumps(
                        {
                            "seed": seed,
                            "best_arch": best.arch,
                            "best_val": best.val,
                            "best_test": best.test,
                            "candidate_id": candidate_id,
                            **(result.front_report() if result.goals is not None and result.goals.multi else {}),
                        }
                    ),
                    flush=True,
                )
            progress.advance(bar)


def _candidate_printer(seed: int, as_json: bool, metric: str) -> Any:
    def show(proposal: Proposal, result: EvalResult) -> None:
        if as_json:
            print(
                json.dumps({**result.to_json(), "seed": seed, "arch": proposal.arch, "parents": proposal.parents}),
                flush=True,
            )
        else:
            _print_result(result, metric)

    return show


def _print_baseline_summary(summary: dict[str, Any], results: list[SeedResult], task: Task) -> None:
    """Each seed's best by validation, then the mean over seeds; scores as the task's metric reads them (NAS-Bench-201
    answers in the paper's percent)."""
    tabular = task.kind == "tabular"

    def number(value: float | None) -> str:
        return formats.accuracy(value, in_percent=True) if tabular else formats.score(value, task.metric)

    val, test = (split if task.metric == "accuracy" else f"{split} {task.metric}" for split in ("val", "test"))
    table = Table(title=f"{summary['algo']} on {summary['task']}: best-by-validation per seed")
    for header in ("seed", "best architecture", val, test, "candidate"):
        table.add_column(header, justify="left" if header == "best architecture" else "right")
    for result in results[:20]:
        best = result.best()
        if best is None:
            table.add_row(str(result.seed), "(nothing trained)", "-", "-", "-")
        else:
            table.add_row(
                str(result.seed),
                best.arch,
                number(best.val),
                number(best.test),
                formats.text(best.candidate_id),
            )
    print_table(table)
    if len(results) > 20:
        out.print(f"... and {len(results) - 20} more seeds")
    if summary["mean_test"] is not None:
        out.print(
            f"[bold]{summary['seeds']} seed(s), budget {summary['budget']}:[/] {test} "
            f"{number(summary['mean_test'])} ± {number(summary['std_test'])}, {val} {number(summary['mean_val'])}"
        )
    if "mean_hypervolume" in summary:
        out.print(
            f"hypervolume ({', '.join(summary['objectives'])}; validation front scored on test, normalised): "
            f"{summary['mean_hypervolume']:.4f} ± {summary['std_hypervolume']:.4f}, {summary['mean_front']:.1f} cells on a front"
        )


# -- browsing ----------------------------------------------------------------------------------


@app.command("serve")
def serve_command(
    archive: ArchiveOpt = None,
    host: Annotated[
        str, typer.Option(help="address to bind; anything but 127.0.0.1/localhost needs --token")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    token: Annotated[
        Optional[str],
        typer.Option(envvar="AGENTARCH_WEB_TOKEN", help="required on every request when set (AGENTARCH_WEB_TOKEN)"),
    ] = None,
) -> None:
    """Browse the archive in a web browser: leaderboards, candidates, lineage, diffs, runs, the review queue.

    Bound to 127.0.0.1 by default; to share it on a network give a token, and open the printed address.
    The archive also opens in Datasette for ad-hoc SQL (see docs/archive.md). Example:

        agentarch serve --archive archive/archive.db --port 8000
    """
    path = _archive_path(archive)
    if not path.is_file():  # opening it would create an empty archive and serve that, hiding a mistyped path
        raise fail(f"no archive at {path}; pass an existing one with --archive (a run, eval or baseline makes one)")
    open_archive(path).close()
    address = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    err.print(f"serving {path} at {address} (Ctrl-C stops)")
    web.serve(path, host=host, port=port, token=token)


@app.command("report")
def report_command(
    run_id: Annotated[str, typer.Argument(help="the run, as `agentarch archive runs` lists it")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for index.html and the plots")] = Path("report"),
    archive: ArchiveOpt = None,
) -> None:
    """Write a static HTML report of one run (summary, top candidates, plots as PNG) to share."""
    index = write_report(_archive_path(archive), run_id, out_dir)
    out.print(f"wrote {index}")


# -- archive ----------------------------------------------------------------------------------

ROW_COLUMNS = [
    ("id", "id", formats.text),
    ("task", "task", formats.text),
    ("name", "name", formats.text),
    ("proposer", "proposer", formats.text),
    ("status", "status", formats.text),
    ("val", "val_accuracy", formats.score),
    ("test", "test_accuracy", formats.score),
    ("params", "params", formats.count),
    ("epochs", "fidelity", formats.text),
    ("train", "train_seconds", formats.seconds),
]
"""The columns of a candidate listing: header, row key, and how the value is written (measures right-aligned)."""


def _rows_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for header, _, write in ROW_COLUMNS:
        # names and statuses fold rather than vanish into "…" on a narrow terminal
        table.add_column(
            header,
            justify="left" if write is formats.text else "right",
            min_width=8 if header in ("name", "status") else None,
        )
    for row in rows:
        table.add_row(*(_cell(row, key, write) for _, key, write in ROW_COLUMNS))
    return table


def _cell(row: dict[str, Any], key: str, write: Callable[..., str]) -> str:
    """One listing cell; a score is written as its task's metric reads (the row says which)."""
    if write is formats.score:
        return formats.score(row.get(key), row.get("metric") or "accuracy")
    return write(row.get(key))


def _archive_path(archive: Optional[Path]) -> Path:
    return settings_or_exit(archive=archive).archive


@archive_app.command("ls")
def archive_ls(
    archive: ArchiveOpt = None,
    only_task: Annotated[Optional[str], typer.Option("--task", "-t", help="only this task")] = None,
    status: Annotated[
        Optional[str], typer.Option(help="only this status: trained, invalid, duplicate, failed, timeout")
    ] = None,
    limit: Annotated[int, typer.Option(help="rows per page")] = 50,
    page: Annotated[int, typer.Option(help="page number, from 1")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List candidates, newest first, with their best evaluation."""
    with open_archive(_archive_path(archive)) as db:
        rows = db.candidates(task=only_task, status=status, limit=limit, offset=(max(page, 1) - 1) * limit)
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(_rows_table(rows, f"candidates (page {page})"))


@archive_app.command("show")
def archive_show(
    candidate_id: Annotated[int, typer.Argument(help="candidate id, as `archive ls` shows it")],
    archive: ArchiveOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="the full record as JSON")] = False,
) -> None:
    """Show one candidate: code, hashes, lineage, and every evaluation."""
    with open_archive(_archive_path(archive)) as db:
        cand = db.candidate(candidate_id)
        evals = db.evaluations(candidate_id)
        calls = db.llm_calls(candidate_id=candidate_id)
        metric = db.task_info(cand["task"])["metric"]
    if as_json:
        print(json.dumps({**cand, "evaluations": evals, "llm_calls": calls}))
        return
    out.print(
        f"[bold]candidate {cand['id']}[/] {cand['name'] or ''}  task={cand['task']}  proposer={cand['proposer']}  "
        f"status={cand['status']}  parents={cand['parents']}  run={cand['run_id']}",
        highlight=False,
    )
    if cand["reason"]:
        out.print(f"reason: {cand['reason']}", highlight=False)
    if cand.get("arch"):
        out.print(f"search space {cand['space']}: {cand['arch']}", highlight=False)
    if cand.get("model"):
        out.print(
            f"LLM: {cand['model']}  few-shot examples={cand['examples']}  repairs={cand['repairs']}  "
            f"tokens={cand['prompt_tokens']}+{cand['completion_tokens']}  cost={formats.usd(cand['cost_usd'] or 0)}  "
            f"calls={[(c['purpose'], c['status']) for c in calls]}",
            highlight=False,
        )
        if cand.get("analysis"):
            out.print(f"analysis: {cand['analysis']}", highlight=False, markup=False)
        if cand.get("prompt"):
            out.rule("prompt (last message)")
            out.print(cand["prompt"][-1]["content"], highlight=False, markup=False)
            out.rule("response")
            out.print(cand["response"] or "", highlight=False, markup=False)
            out.rule("code")
    out.print(
        f"hashes: whitespace={(cand['text_hash'] or '')[:12]} ast={(cand['ast_hash'] or '')[:12]} "
        f"functional={(cand['functional_hash'] or '')[:12]}",
        highlight=False,
    )
    out.print(Syntax(cand["code"], "python", line_numbers=True))
    for e in evals:
        out.print(
            f"evaluation {e['id']}: {e['status']} fidelity={e['fidelity']} seed={e['seed']} "
            f"{formats.scored('val', e['val_accuracy'], metric)} {formats.scored('test', e['test_accuracy'], metric)} "
            f"train={formats.seconds(e['train_seconds'])} device={e['device']} isolation={e['isolation']}",
            highlight=False,
        )
        if e["error"]:
            out.print(e["error"], highlight=False, markup=False)


@archive_app.command("runs")
def archive_runs(
    archive: ArchiveOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List runs (eval, baseline, llm, offline), newest first, with their status and summary."""
    with open_archive(_archive_path(archive)) as db:
        rows = db.runs()
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = Table(title="runs")
    for header in ("id", "kind", "task", "proposer", "status", "started", "summary"):
        table.add_column(header)
    for row in rows:
        summary = row["summary"] or {}
        brief = ", ".join(
            f"{k}={summary[k]}" for k in ("proposed", "trained", "stopped_by", "mean_test") if k in summary
        )
        table.add_row(
            row["id"], row["kind"], row["task"], row["proposer"], row["status"], row["started_at"][:19], brief
        )
    print_table(table)


@archive_app.command("top")
def archive_top(
    ranked_task: Annotated[str, typer.Option("--task", "-t", help="the task to rank")],
    archive: ArchiveOpt = None,
    limit: Annotated[int, typer.Option(help="how many")] = 10,
    by: Annotated[str, typer.Option(help="val_accuracy (the search signal) or test_accuracy")] = "val_accuracy",
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """The best trained candidates of a task."""
    with open_archive(_archive_path(archive)) as db:
        rows = db.top(ranked_task, limit=limit, by=by)
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(_rows_table(rows, f"top {limit} on {ranked_task} by {by}"))


@archive_app.command("export")
def archive_export(
    archive: ArchiveOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    output: Annotated[
        Optional[Path], typer.Option("--out", "-o", help=escape("file to write [default: stdout]"))
    ] = None,
) -> None:
    """Export every candidate with its best evaluation, as CSV or a JSON array."""
    if fmt not in ("csv", "json"):
        raise fail(f"unknown format {fmt!r}; use --format csv or --format json")
    with open_archive(_archive_path(archive)) as db:
        rows = list(db.export_rows())
    stream = output.open("w", newline="") if output else sys.stdout
    try:
        if fmt == "json":
            json.dump(rows, stream, indent=1)
            stream.write("\n")
        else:
            formats.write_csv(stream, rows, list(rows[0]) if rows else ["id"])
    finally:
        if output:
            stream.close()


@app.command("predict")
def predict_command(
    predicted_task: Annotated[str, typer.Option("--task", "-t", help="the task whose predictor to assess")],
    archive: ArchiveOpt = None,
    folds: Annotated[int, typer.Option(min=2, help="cross-validation folds")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object instead of tables")] = False,
) -> None:
    """How well the archive's predictor ranks a task's candidates before they train: the Spearman and Kendall rank
    correlations of its held-out predictions (k-fold) with the true validation scores, how many trained candidates
    it learns from, and its features; or why it cannot be fitted yet. Example:

        agentarch predict --task digits
    """
    with open_archive(_archive_path(archive)) as db:
        found = predictor_lib.examples(db, predicted_task)
        reason = predictor_lib.shortfall(found, predicted_task)
        scores = (
            None if reason else predictor_lib.cross_validate(found, predicted_task, db.direction(predicted_task), folds)
        )
    if as_json:
        print(
            json.dumps(
                {"fitted": False, "task": predicted_task, "n": len(found), "reason": reason}
                if scores is None
                else {"fitted": True, **scores}
            )
        )
        return
    if scores is None:
        out.print(f"no predictor for {predicted_task} yet: {reason}", highlight=False)
        return
    held_out = Table(title=f"predictor for {predicted_task}: held-out rank correlation ({scores['folds']}-fold)")
    for header in ("trained candidates", "Spearman", "Kendall"):
        held_out.add_column(header, justify="right")
    held_out.add_row(
        str(scores["n"]),
        *(formats.text(None if v is None else f"{v:.3f}") for v in (scores["spearman"], scores["kendall"])),
    )
    out.print(held_out)
    features = Table(title="features (missing where a candidate lacks one)")
    features.add_column("feature")
    features.add_column("candidates with it", justify="right")
    for name in scores["features"]:
        features.add_row(name, f"{sum(name in e.features for e in found)}/{len(found)}")
    out.print(features)


# -- environment --------------------------------------------------------------------------------


tasks_app = App(help="The tasks: built-in ones, task files in ./tasks/, and tasks installed packages publish.")
app.add_typer(tasks_app, name="tasks")


@tasks_app.callback(invoke_without_command=True)
def tasks_command(ctx: typer.Context) -> None:
    """List the tasks, with their input shapes and default budgets (`agentarch tasks check FILE` checks a task file)."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table(title="tasks")
    for col in ("name", "kind", "in_shape", "classes", "metric", "epochs", "max params", "needs --data-dir"):
        table.add_column(col, overflow="fold")  # a narrow terminal folds a cell; it never cuts one to "…"
    found: list[Task | str] = [*TASKS.values(), *taskfiles.entry_point_names(), *map(str, taskfiles.listed_files())]
    for entry in found:
        try:
            t = entry if isinstance(entry, Task) else get_task(entry)
        except AgentarchError as e:  # one broken file must not hide the others
            table.add_row(escape(str(entry)), "[red]error[/]", escape(str(e).splitlines()[0]))
            continue
        table.add_row(
            t.name if isinstance(entry, Task) else f"{t.name} ({escape(str(entry))})",
            t.kind,
            str(t.in_shape),
            str(t.num_classes),
            t.metric,
            str(t.epochs),
            formats.count(t.max_params),
            "yes" if t.needs_data_dir else "no",
        )
    print_table(table)


@tasks_app.command("check")
def tasks_check_command(
    path: Annotated[Path, typer.Argument(help="the task file (TOML)", show_default=False)],
    cache_dir: Annotated[Optional[Path], setting("cache_dir", "--cache-dir")] = None,
    split_seed: Annotated[Optional[int], setting("split_seed", "--split-seed")] = None,
) -> None:
    """Validate a task file, prepare its data, and say what a candidate will get; trains nothing.

    agentarch tasks check examples/shapes/task.toml
    """
    settings = settings_or_exit(cache_dir=cache_dir, split_seed=split_seed)
    if not path.is_file():
        raise fail(f"no such file: {path}")
    for key, value in taskfiles.check(path, settings.cache_dir, settings.split_seed):
        out.print(f"[bold]{key}[/]: {escape(value)}", soft_wrap=True)


@app.command("doctor")
def doctor_command() -> None:
    """Say how candidate code will be isolated here, and what to install for more."""
    problem = bubblewrap_problem()
    if problem is None:
        out.print(
            "[green]bubblewrap works[/]: candidates run with no network, a read-only view of the runtime "
            "(torch, numpy, einops and the standard library), a scratch dir and a seccomp allowlist"
            + (f", as uid {CANDIDATE_UID}" if os.geteuid() == 0 else "")
            + "."
        )
    else:
        out.print(f"[yellow]{FALLBACK_WARNING.format(why=problem)}[/]")
        gaps = process_mode_gaps()
        out.print(
            "[green]The process mode holds on this kernel[/] (Landlock ABI 6 or later)."
            if not gaps
            else "[red]The process mode has gaps here[/]: " + "; ".join(gaps) + ". LLM answers and your own files "
            "are refused unless weak_sandbox_ok is set; search-space baselines still run."
        )
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:
        gpus = 0
    out.print(f"GPUs visible: {gpus}" + ("" if gpus else " (training runs on the CPU)"))


if __name__ == "__main__":
    app()
