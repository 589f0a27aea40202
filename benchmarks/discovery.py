"""Does the LLM loop find better architectures than plain sampling and conventional NAS, at equal evaluations?

    .venv/bin/python benchmarks/discovery.py --task digits --budget 20 --seeds 3 \\
        --model openai/qwen2.5-coder --api-base http://127.0.0.1:8000/v1 --out benchmarks/discovery

Four methods, each seed in a fresh archive of its own (so no method learns from another's results), every
candidate through the same sandbox:

- `llm`: `agentarch run` (few-shot prompts from the run's archive, repairs, analyses, the notebook);
- `best-of-n`: the same model prompted from the seed architectures alone, with no feedback;
- `rea` and `random`: regularized evolution and random search over a declared space (`--space`).

The in-space mode (`--propose-in SPACE`) compares the loop whose model chooses architectures of SPACE
(`agentarch run --propose-in SPACE`: method `llm-space`) with `rea` and `random` over the same space, at equal
evaluations. On a NAS-Bench-201 table (`--task nb201-cifar10 --propose-in nb201`) every evaluation is one table
query: the loop's proposals are looked up in its `look_up` step, random search and REA run as `agentarch baseline`
does (`search_table`), scores in the table's percent; the table adds the model's valid answers and fallbacks.
`--real` serves SmolLM2-135M-Instruct with tests/real_model.py (one request at a time) and asks it:

    .venv/bin/python benchmarks/discovery.py --task nb201-cifar10 --propose-in nb201 --real --budget 50 --seeds 4 \\
        --out benchmarks/discovery_in_space

The table gives, per method, the mean over seeds (± standard error) of the best validation score found
within the budget and the test score of that candidate; the plot (`OUT.png`) the best-so-far validation
score by evaluation, mean and a 95% band over seeds. `--scripted` answers the LLM calls with a local test
server instead of a model (what CI runs, to show the benchmark works); its figures say nothing about LLMs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agentarch.config import Settings, load_settings  # noqa: E402
from agentarch.evaluation.evaluator import Evaluator  # noqa: E402
from agentarch.loop import run as run_lib  # noqa: E402
from agentarch.loop.baseline import PERCENT, SeedResult, Trial, search_table, search_trained  # noqa: E402
from agentarch.search.proposers.llm_space import IN_SPACE  # noqa: E402
from agentarch.search.spaces import get_space  # noqa: E402
from agentarch.store import ranking  # noqa: E402
from agentarch.store.archive import Archive  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402

METHODS = ("llm", "best-of-n", "rea", "random")
IN_SPACE_METHODS = (IN_SPACE, "rea", "random")
"""The in-space mode's methods: the loop asking its model for architectures of the space, REA, random search."""


@contextmanager
def scripted_server() -> Iterator[str]:
    """A 127.0.0.1 OpenAI-compatible server answering with MLPs of growing width (analyses and notes in prose)."""
    from tests.llm_server import ScriptedLLMServer
    from tests.scripted import fenced, kind, mlp

    widths, lock = itertools.count(16, 8), threading.Lock()

    def answer(request: dict) -> str:
        if kind(request) in ("analyze", "notebook"):
            return "What worked: width (#1). What failed: nothing yet."
        with lock:
            return fenced(mlp(next(widths)))

    with ScriptedLLMServer(default=answer) as server:
        yield server.url


@contextmanager
def scripted_space_server(space: str) -> Iterator[str]:
    """A 127.0.0.1 OpenAI-compatible server answering every in-space call with an architecture of `space` as the JSON
    of its fields, drawn uniformly (seeded), and every fifth with prose (an invalid answer, counted as a fallback)."""
    from tests.llm_server import ScriptedLLMServer

    chosen, rng, lock, calls = get_space(space), random.Random(0), threading.Lock(), itertools.count()

    def answer(request: dict) -> str:
        with lock:
            if next(calls) % 5 == 4:
                return "I would try a deeper network with more skip connections."
            return json.dumps(chosen.to_fields(chosen.sample(rng)))

    with ScriptedLLMServer(default=answer) as server:
        yield server.url


def one_seed(method: str, settings: Settings, space: str, budget: int, seed: int) -> tuple[SeedResult, dict | None]:
    """One method's search of `budget` evaluations with `seed`, in the archive `settings` names, and what its model's
    answers came to (the run summary's `in_space`, with `kinds`: where each evaluation's architecture came from, the
    model's answer or a fallback's reason; None for other methods). On a table, scores are in percent."""
    task = get_task(settings.task)
    if method in ("llm", IN_SPACE):
        inside = {"propose_in": space} if method == IN_SPACE else {}
        summary = run_lib.start(settings.model_copy(update={"budget": budget, "seed": seed, **inside}))
        ended = loop_outcomes(settings, summary["run_id"])
        trials = [Trial(o.get("arch") or "", o.get("val_accuracy"), o.get("test_accuracy"), o.get("id")) for o in ended]
        stats = summary.get("in_space")
        if stats is not None:
            stats = {**stats, "kinds": [(o.get("in_space") or {}).get("outcome") for o in ended]}
        return SeedResult(seed, trials, direction=task.direction), stats
    if method == "best-of-n":
        return run_lib.best_of_n(settings, budget, [seed])[1][0], None
    if task.kind == "tabular":
        options = {"population": settings.population, "sample_size": settings.sample_size} if method == "rea" else {}
        return search_table(method, get_space(space), task, budget, seed, **options), None
    with Archive(settings.archive) as archive:
        return search_trained(method, get_space(space), Evaluator(archive, settings), budget, seed), None


def loop_outcomes(settings: Settings, run_id: str) -> list[dict]:
    """A loop run's outcomes in proposal order, scores in the unit `agentarch baseline` reports (a table's percent;
    the archive keeps fractions)."""
    scale = PERCENT if get_task(settings.task).kind == "tabular" else 1.0
    with Archive(settings.archive) as archive:
        ended = sorted((p["outcome"] for p in archive.proposals(run_id)), key=lambda o: o["seq"])
    for o in ended:
        for key in ("val_accuracy", "test_accuracy"):
            if o.get(key) is not None:
                o[key] *= scale
    return ended


def where_from(results: list[SeedResult], stats: list[dict]) -> list[tuple[str, int, float, float]]:
    """The loop's evaluations by where their architecture came from (the model's answer, or a fallback's reason):
    (kind, how many, mean validation score, best validation score)."""
    by_kind: dict[str, list[float]] = {}
    for result, seed_stats in zip(results, stats):
        for trial, kind in zip(result.history, seed_stats.get("kinds") or []):
            if trial.val is not None:
                by_kind.setdefault(kind or "?", []).append(trial.val)
    return [(kind, len(v), statistics.fmean(v), max(v)) for kind, v in sorted(by_kind.items())]


def answers_line(stats: list[dict]) -> tuple[str, str]:
    """The model's valid answers of its calls and the queries that fell back, over a method's seeds."""
    if not stats:
        return "-", "-"
    asks, valid = sum(s["asks"] for s in stats), sum(s["valid"] for s in stats)
    queries, fell = sum(s["queries"] for s in stats), sum(s["fallbacks"] for s in stats)
    rate = f" ({valid / asks:.0%})" if asks else ""
    return f"{valid}/{asks}{rate}", f"{fell} of {queries}"


def best_so_far(result: SeedResult, budget: int) -> list[float | None]:
    """The best validation score among the first k evaluations, for k = 1..budget (None until one trained)."""
    best: float | None = None
    curve = []
    for k in range(budget):
        trial = result.history[k] if k < len(result.history) else None
        if trial is not None and trial.val is not None and trial.test is not None:
            better = best is None or ranking.key(trial.val, result.direction) > ranking.key(best, result.direction)
            best = trial.val if better else best
        curve.append(best)
    return curve


def mean_se(values: list[float]) -> tuple[float | None, float]:
    if not values:
        return None, 0.0
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def plot(curves: dict[str, list[list[float | None]]], metric: str, path: Path) -> None:
    """Best-so-far validation score by evaluation: the mean over seeds and a 95% band (normal approximation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for method, runs in curves.items():
        xs, means, lows, highs = [], [], [], []
        for k, column in enumerate(zip(*runs), start=1):
            values = [v for v in column if v is not None]
            if not values:
                continue
            mean, se = mean_se(values)
            xs.append(k)
            means.append(mean)
            lows.append(mean - 1.96 * se)
            highs.append(mean + 1.96 * se)
        ax.plot(xs, means, label=method)
        ax.fill_between(xs, lows, highs, alpha=0.2)
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"best validation {metric.replace('_', ' ')} so far")
    ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--budget", type=int, default=20, help="evaluations per method and seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--space", default="nb201", help="the search space of rea and random")
    parser.add_argument("--model", default="openai/scripted", help="litellm model string of the llm and best-of-n")
    parser.add_argument("--api-base", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--methods", default=None, help="default: every method of the mode")
    parser.add_argument(
        "--propose-in",
        default=None,
        metavar="SPACE",
        help=f"in-space mode: {', '.join(IN_SPACE_METHODS)} over SPACE (the loop's model chooses its architectures)",
    )
    parser.add_argument("--scripted", action="store_true", help="answer LLM calls with a local test server")
    parser.add_argument("--real", action="store_true", help="ask SmolLM2-135M-Instruct served by tests/real_model.py")
    parser.add_argument("--threads", type=int, default=None, help="with --real: the model server's CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.png (else print the table)")
    args = parser.parse_args(argv)
    known = IN_SPACE_METHODS if args.propose_in else METHODS
    methods = [m.strip() for m in (args.methods or ",".join(known)).split(",")]
    unknown = set(methods) - set(known)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(known)}")
    if args.scripted and args.real:
        parser.error("--scripted and --real each answer the LLM calls: give one")
    space = args.propose_in or args.space
    task = get_task(args.task)
    tabular = task.kind == "tabular"
    model = f"openai/{real_model_name()}" if args.real else args.model
    started = time.monotonic()
    results: dict[str, list[SeedResult]] = {m: [] for m in methods}
    answers: dict[str, list[dict]] = {m: [] for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    with server(args, space) as api_base, tempfile.TemporaryDirectory() as tmp:
        for seed, method in itertools.product(range(args.seeds), methods):
            settings = load_settings(
                task=args.task,
                model=model,
                api_base=api_base,
                epochs=args.epochs,
                archive=Path(tmp) / f"{method}-{seed}.db",
            )
            clock = time.monotonic()
            result, stats = one_seed(method, settings, space, args.budget, seed)
            seconds[method] += time.monotonic() - clock
            results[method].append(result)
            if stats is not None:
                answers[method].append(stats)
                shown = {k: v for k, v in stats.items() if k != "kinds"}
                print(f"{method} seed {seed}: {json.dumps(shown)}", file=sys.stderr, flush=True)
    digits = 2 if tabular else 4
    metric = f"{task.metric} (%)" if tabular else task.metric
    command = (
        f"`benchmarks/discovery.py --task {args.task} --budget {args.budget} --seeds {args.seeds} "
        + (f"--propose-in {args.propose_in}" if args.propose_in else f"--space {args.space}")
        + (" --scripted" if args.scripted else " --real" if args.real else f" --model {args.model}")
        + "`"
    )
    lines = [
        f"# Discovery: {', '.join(methods)} at {args.budget} evaluations\n",
        f"{command}, {time.strftime('%Y-%m-%d')}, {time.monotonic() - started:.0f} s on {platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPU cores (load average {os.getloadavg()[0]:.1f} at the end). "
        + (
            "The LLM is a scripted test server: these figures show the benchmark runs, not what an LLM finds.\n"
            if args.scripted
            else "\n"
        ),
        f"| method | seeds | best val {metric} (mean ± se) | its test {metric} (mean ± se) | trained |"
        + (" valid answers | fell back | seconds per evaluation |" if args.propose_in else ""),
        "| --- | --- | --- | --- | --- |" + (" --- | --- | --- |" if args.propose_in else ""),
    ]
    curves = {}
    for method in methods:
        bests = [b for b in (r.best(args.budget) for r in results[method]) if b is not None]
        val, val_se = mean_se([b.val for b in bests])
        test, test_se = mean_se([b.test for b in bests])
        trained = sum(1 for r in results[method] for t in r.history if t.val is not None)
        shown = "n/a" if val is None else f"{val:.{digits}f} ± {val_se:.{digits}f}"
        shown_test = "n/a" if test is None else f"{test:.{digits}f} ± {test_se:.{digits}f}"
        row = f"| {method} | {len(results[method])} | {shown} | {shown_test} | {trained} |"
        if args.propose_in:
            row += " {} | {} |".format(*answers_line(answers[method]))
            row += f" {seconds[method] / max(1, len(results[method]) * args.budget):.2f} |"
        lines.append(row)
        curves[method] = [best_so_far(r, args.budget) for r in results[method]]
    if args.propose_in:
        lines += [
            "\nPer seed, the test score of the best-by-validation candidate:\n",
            "| method | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " |",
            "| --- | " + " | ".join("---" for _ in range(args.seeds)) + " |",
        ]
        for method in methods:
            cells = [f"{b.test:.{digits}f}" if b is not None else "-" for b in (r.best() for r in results[method])]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        origins = [(m, where_from(results[m], answers[m])) for m in methods if answers[m]]
        if origins:
            lines += [
                "\nThe loop's evaluations by where their architecture came from (`answer`: the model's; otherwise "
                "a uniform sample after that kind of answer), with their validation scores:\n",
                "| method | from | evaluations | mean val | best val |",
                "| --- | --- | --- | --- | --- |",
            ]
            for method, rows in origins:
                for kind, n, mean, best in rows:
                    lines.append(f"| {method} | {kind} | {n} | {mean:.{digits}f} | {best:.{digits}f} |")
    text = "\n".join(lines) + "\n"
    if args.out is None:
        print(text)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, task.metric, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text(text + f"\n![best so far]({args.out.with_suffix('.png').name})\n")
    print(text)


def real_model_name() -> str:
    from tests import real_model

    return real_model.MODEL_NAME


def server(args: argparse.Namespace, space: str):
    """What answers the LLM calls: the scripted test server (module-writing or in-space), the real small model, or
    the `--api-base` given."""
    if args.scripted:
        return scripted_space_server(space) if args.propose_in else scripted_server()
    if args.real:
        from tests import real_model

        return real_model.serve(threads=args.threads)
    return nullcontext(args.api_base)


if __name__ == "__main__":
    main()
