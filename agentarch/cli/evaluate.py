"""`agentarch eval` and `agentarch halve`: train and record candidate files a person wrote, each at the full budget
or by successive halving.

Its own module because these two commands take files from the user, where run and baseline make their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape

from agentarch import formats
from agentarch.cli.common import (
    ArchiveOpt,
    DataDirOpt,
    EpochsOpt,
    IsolationOpt,
    NoveltyOpt,
    ScoringOpt,
    TaskOpt,
    TimeoutOpt,
    err,
    evaluating_settings,
    fail,
    open_archive,
    out,
    print_result,
    setting,
    settings_or_exit,
    warn_if_weak,
)
from agentarch.store.scoring import TRUSTED, UNVERIFIED_WHY, scoring_kind
from agentarch.tasks.registry import get_task

if TYPE_CHECKING:
    from agentarch.evaluation.evaluator import EvalResult, Evaluator
    from agentarch.store.archive import Archive


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
    scoring: ScoringOpt = None,
    timeout_s: TimeoutOpt = None,
    novelty_threshold: NoveltyOpt = None,
) -> None:
    """Check, dedup, train and record each candidate file.

    A bad candidate is a result (invalid, duplicate, failed, timeout), not an error: the exit code
    is 0 once every file was recorded. A result scored with `--scoring trusted` is marked unverified (its
    line says why; `--json` has `scoring` and `unverified`), as `agentarch archive ls` marks it. Example:

        agentarch eval archive/seeds/image/*.py --task digits --json
    """
    from agentarch.evaluation.evaluator import Evaluator, eval_summary

    settings = evaluating_settings(
        task=task,
        archive=archive,
        epochs=epochs,
        seed=seed,
        data_dir=data_dir,
        download=download,
        isolation=isolation,
        scoring=scoring,
        timeout_s=timeout_s,
        novelty_threshold=novelty_threshold,
    )
    get_task(settings.task)  # an unknown task or a bad task file stops here, before the archive is opened
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise fail(f"no such file: {', '.join(missing)}")
    with open_archive(settings.archive) as db:
        evaluator = Evaluator(db, settings)
        warn_if_weak(evaluator.isolation)
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
                with err.status(
                    formats.line(f"evaluating {path.name} on {settings.task} ({evaluator.isolation} sandbox)")
                ):
                    result = _evaluate_file(evaluator, path)
                results.append(result)
                kind = _scoring(db, result)
                if as_json:
                    print(json.dumps({**result.to_json(), "scoring": kind, "unverified": kind == TRUSTED}), flush=True)
                else:
                    print_result(result, evaluator.task.metric)
                    if kind == TRUSTED:
                        out.print(formats.line("    ", ("⚠ unverified", "bold red"), f": {UNVERIFIED_WHY}"))


def _scoring(db: Archive, result: EvalResult) -> str | None:
    """How a trained result's scores were computed (`scoring_kind`: graph, or trusted and so unverified), read back
    from the evaluation just recorded, the same rule `agentarch archive ls` marks its rows by; None without scores.
    Each file is a new candidate with one evaluation (a repeat is a duplicate), so its only one is this result's."""
    if result.status != "trained":
        return None
    evaluations = db.evaluations(result.id)
    return scoring_kind(evaluations[-1]) if evaluations else None


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
    from agentarch.evaluation.evaluator import Evaluator
    from agentarch.evaluation.fidelity import rung_budgets, successive_halving

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
                            formats.line(
                                f"{epochs:>4} epochs  #{r.id} {r.name}: {r.status}  "
                                f"{formats.scored('val', r.metrics['val_accuracy'], evaluator.task.metric)}"
                            ),
                            soft_wrap=True,
                        )
                    ),
                )
            )
    result = done[0]
    if as_json:
        print(json.dumps(result.summary()))
    elif result.best:
        out.print(
            formats.line(
                ("best:", "bold"),
                f" #{result.best.id} {result.best.name} "
                f"{formats.scored('val', result.best.metrics['val_accuracy'], evaluator.task.metric)} "
                f"at {full} epochs; {result.epochs_spent} epochs trained in all ({len(paths) * full} for full budgets)",
            ),
            soft_wrap=True,
        )
