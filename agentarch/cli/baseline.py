"""`agentarch baseline`: conventional NAS (random, REA, TPE, best-of-n) through the same sandbox and archive, on
trained tasks and NAS-Bench-201 tables, with per-seed and mean-over-seeds results.

Its own module because the baselines have their own flags, their table path and their seed summary.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import Progress, TimeElapsedColumn
from rich.table import Table

from agentarch import formats
from agentarch.cli.common import (
    ArchiveOpt,
    ContextTokensOpt,
    DataDirOpt,
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
    QueueOpt,
    ScoringOpt,
    StallTimeoutOpt,
    TaskOpt,
    TimeoutOpt,
    err,
    evaluating_settings,
    fail,
    open_archive,
    out,
    outcome_printer,
    print_result,
    print_table,
    setting,
    warn_if_weak,
)
from agentarch.cli.progress import Watcher, exit_code, mode_for, resume_command, stop_on_signals
from agentarch.loop.stopping import RunControl
from agentarch.search.objectives import JUDGE_MEASURE, Goals
from agentarch.search.proposers.base import BEST_OF_N, IN_SPACE, Proposal
from agentarch.search.proposers.baselines import ALGOS, make_proposer
from agentarch.search.recipes import RecipeSpace
from agentarch.search.spaces import SPACES, SearchSpace, get_space, space_for
from agentarch.tasks.registry import get_task

if TYPE_CHECKING:
    from agentarch.evaluation.evaluator import EvalResult
    from agentarch.loop.baseline import SeedResult
    from agentarch.store.archive import Archive
    from agentarch.tasks.task import Task


def baseline_command(
    algo: Annotated[
        str,
        typer.Option(
            help=f"search algorithm: {', '.join(ALGOS)}, {IN_SPACE} (alias llm: --model picks architectures of --space, "
            f"answering the space's JSON schema), or {BEST_OF_N} (the LLM sampled from the seeds with no "
            "archive feedback, the control for `agentarch run`; needs --model)"
        ),
    ] = "rea",
    model: Annotated[Optional[str], setting("model", "--model", note="; for --algo best-of-n")] = None,
    api_base: Annotated[Optional[str], setting("api_base", "--api-base")] = None,
    space: Annotated[
        Optional[str],
        typer.Option(
            help="search space: "
            + ", ".join(f"{s.name} ({'/'.join(s.kinds)} tasks)" for s in SPACES.values())
            + "; default: nb201, or the first space that builds the task's kind",
            show_default=False,
        ),
    ] = None,
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
    search_recipe: Annotated[Optional[bool], setting("search_recipe", "--search-recipe/--no-search-recipe")] = None,
    epochs: EpochsOpt = None,
    data_dir: DataDirOpt = None,
    isolation: IsolationOpt = None,
    scoring: ScoringOpt = None,
    timeout_s: TimeoutOpt = None,
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

        agentarch baseline --algo rea --space macro --task digits --budget 12 --search-recipe
    """
    from agentarch.evaluation.evaluator import Evaluator
    from agentarch.evaluation.executors import executor_for
    from agentarch.isolation.policy import resolve_isolation
    from agentarch.loop import run as run_lib
    from agentarch.loop.baseline import check_screen, parse_seeds, search_trained
    from agentarch.search.proposers.llm_space import canonical_algo, in_space_model

    settings = evaluating_settings(
        task=task,
        archive=archive,
        epochs=epochs,
        data_dir=data_dir,
        isolation=isolation,
        scoring=scoring,
        timeout_s=timeout_s,
        population=population,
        sample_size=sample_size,
        model=model,
        api_base=api_base,
        objectives=objectives or None,
        constraints=constraints or None,
        screen=screen,
        screen_explore=screen_explore,
        search_recipe=search_recipe,
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
    seed_list = parse_seeds(seeds)
    if (screen or 1) > 1 and (algo == BEST_OF_N or get_task(settings.task).kind != "tabular"):
        raise fail(
            "agentarch baseline screens table searches only (nb201-*); to screen trained proposals use "
            "`agentarch run --screen K` (it runs REA offline when no model is configured)"
        )
    if algo == BEST_OF_N:
        warn_if_weak(resolve_isolation(settings.isolation))
        control = RunControl()
        # --json keeps its lines one per evaluation; a terminal or a log still sees each proposal's steps
        watcher = Watcher("quiet" if as_json else mode_for(False, out, err), err)
        with stop_on_signals(control, watcher), watcher:
            summary, results = run_lib.best_of_n(
                settings,
                evaluations,
                seed_list,
                on_outcome=outcome_printer(as_json),
                on_event=watcher,
                control=control,
            )
        if as_json:
            print(json.dumps(summary), flush=True)
        else:
            _print_baseline_summary(summary, results, get_task(settings.task))
        if control.stopping and watcher.run_id:
            err.print(
                formats.line(
                    ("interrupted", "bold yellow"),
                    f" ({control.reason}) after {len(results)} of {len(seed_list)} seed(s); the stopped seed's run goes "
                    "on with: ",
                    (resume_command(watcher.run_id, settings.archive), "bold"),
                ),
                soft_wrap=True,
            )
            raise typer.Exit(exit_code(control))
        return
    the_task = get_task(settings.task)
    space = space or space_for(the_task.kind, "nb201")
    algo, chosen = canonical_algo(algo), get_space(space)
    chosen.check_fit(the_task)
    if settings.search_recipe:
        if the_task.kind == "tabular" or algo == IN_SPACE:
            raise fail(
                "--search-recipe searches how candidates are trained: it needs a trainable task (not a nb201-* table) "
                f"and an offline proposer ({', '.join(ALGOS)})"
            )
        chosen = RecipeSpace(chosen, the_task)
    goals = Goals.parse(settings.objectives, settings.constraints, the_task.direction, the_task.metric)
    if goals.names(JUDGE_MEASURE):  # nothing here would ever be rated: refused rather than ranked by a missing value
        raise fail(
            "a baseline runs no judge, so it cannot rank or filter by `judge`; drop that objective or constraint "
            "(`agentarch run --judge MODEL` rates candidates)"
        )
    make_proposer(
        algo, chosen, 0, population=settings.population, sample_size=settings.sample_size, goals=goals, task=the_task
    )
    options: dict[str, Any] = (
        {"population": settings.population, "sample_size": settings.sample_size} if algo == "rea" else {}
    )
    config = {"algo": algo, "space": space, "budget": evaluations, "seeds": seeds, **options, "epochs": settings.epochs}
    if settings.search_recipe:
        config["search_recipe"] = True
    if settings.objectives or settings.constraints:
        config.update(goals.describe())
    options["goals"] = goals
    if algo == IN_SPACE:  # the model the in-space search asks; an error without --model
        options["model"] = in_space_model(settings, the_task, None, None)
        config.update(model=settings.model)
    if the_task.kind == "tabular" and settings.screen > 1:
        config.update(screen=settings.screen, screen_explore=settings.screen_explore)
        options.update(screen=settings.screen, explore=settings.screen_explore)
        check_screen(settings.screen, goals)
    results: list[SeedResult] = []
    with (
        open_archive(settings.archive) as db,
        db.run(
            "baseline",
            the_task.name,
            algo,
            config,
            lambda: _summary(algo, the_task.name, evaluations, results, options),
        ) as run_id,
    ):
        if "model" in options:
            options["model"].bind(db, run_id)
        if the_task.kind == "tabular":
            _baseline_on_table(db, run_id, algo, chosen, the_task, evaluations, seed_list, options, as_json, results)
        else:
            executor = executor_for(settings)  # the settings' executor, warm sandboxes and all, as `agentarch run`'s
            try:
                evaluator = Evaluator(db, settings, run_id, executor)
                warn_if_weak(evaluator.isolation)
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
            finally:
                executor.close()  # the sandboxes started ahead and never used
    summary = _summary(algo, the_task.name, evaluations, results, options)
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        _print_baseline_summary(summary, results, the_task)
        if "model" in options:
            out.print(formats.untrusted(options["model"].line()))


def _summary(algo: str, task: str, budget: int, results: list[SeedResult], options: dict[str, Any]) -> dict[str, Any]:
    """The summary line, with an in-space search's answers counted (`InSpaceModel.report`)."""
    from agentarch.loop.baseline import summarize

    summary = summarize(algo, task, budget, results)
    return {**summary, "in_space": options["model"].report()} if "model" in options else summary


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
    from agentarch.loop.baseline import record_table_best, search_table

    with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=err, disable=as_json) as progress:
        # a progress description is markup: the task's name is escaped into it as text
        bar = progress.add_task(
            escape(formats.printable(f"{algo} on {task.name}, {budget} queries per seed")), total=len(seeds)
        )
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
            print_result(result, metric)

    return show


def _print_baseline_summary(summary: dict[str, Any], results: list[SeedResult], task: Task) -> None:
    """Each seed's best by validation, then the mean over seeds; scores as the task's metric reads them (NAS-Bench-201
    answers in the paper's percent)."""
    tabular = task.kind == "tabular"

    def number(value: float | None) -> str:
        return formats.accuracy(value, in_percent=True) if tabular else formats.score(value, task.metric)

    val, test = (split if task.metric == "accuracy" else f"{split} {task.metric}" for split in ("val", "test"))
    table = Table(title=formats.untrusted(f"{summary['algo']} on {summary['task']}: best-by-validation per seed"))
    for header in ("seed", "best architecture", val, test, "candidate"):
        table.add_column(header, justify="left" if header == "best architecture" else "right")
    for result in results[:20]:
        best = result.best()
        if best is None:
            table.add_row(str(result.seed), "(nothing trained)", "-", "-", "-")
        else:
            table.add_row(
                *map(
                    formats.untrusted,
                    (result.seed, best.arch, number(best.val), number(best.test), formats.text(best.candidate_id)),
                )
            )
    print_table(table)
    if len(results) > 20:
        out.print(f"... and {len(results) - 20} more seeds")
    if summary["mean_test"] is not None:
        out.print(
            formats.line(
                (f"{summary['seeds']} seed(s), budget {summary['budget']}:", "bold"),
                f" {test} {number(summary['mean_test'])} ± {number(summary['std_test'])}, "
                f"{val} {number(summary['mean_val'])}",
            ),
            soft_wrap=True,
        )
    if "mean_hypervolume" in summary:
        out.print(
            formats.line(
                f"hypervolume ({', '.join(summary['objectives'])}; validation front scored on test, normalised): "
                f"{summary['mean_hypervolume']:.4f} ± {summary['std_hypervolume']:.4f}, "
                f"{summary['mean_front']:.1f} cells on a front"
            ),
            soft_wrap=True,
        )
