"""Does the LLM loop find better architectures than plain sampling and conventional NAS, at equal evaluations?

    .venv/bin/python benchmarks/discovery.py --task digits --budget 20 --seeds 3 \\
        --model openai/qwen2.5-coder --api-base http://127.0.0.1:8000/v1 --out benchmarks/discovery

Four methods, each seed in a fresh archive of its own (so no method learns from another's results), every
candidate through the same sandbox:

- `llm`: `agentarch run` (few-shot prompts from the run's archive, repairs, analyses, the notebook);
- `best-of-n`: the same model prompted from the seed architectures alone, with no feedback;
- `rea` and `random`: regularized evolution and random search over a declared space (`--space`).

The table gives, per method, the mean over seeds (± standard error) of the best validation score found
within the budget and the test score of that candidate; the plot (`OUT.png`) the best-so-far validation
score by evaluation, mean and a 95% band over seeds. `--scripted` answers the LLM calls with a local test
server instead of a model (what CI runs, to show the benchmark works); its figures say nothing about LLMs.
"""

from __future__ import annotations

import argparse
import itertools
import math
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
from agentarch.loop.baseline import SeedResult, Trial, search_trained  # noqa: E402
from agentarch.search.spaces import get_space  # noqa: E402
from agentarch.store import ranking  # noqa: E402
from agentarch.store.archive import Archive  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402

METHODS = ("llm", "best-of-n", "rea", "random")


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


def one_seed(method: str, settings: Settings, space: str, budget: int, seed: int) -> SeedResult:
    """One method's search of `budget` evaluations with `seed`, in the archive `settings` names."""
    task = get_task(settings.task)
    if method == "llm":
        summary = run_lib.start(settings.model_copy(update={"budget": budget, "seed": seed}))
        with Archive(settings.archive) as archive:
            ended = sorted((p["outcome"] for p in archive.proposals(summary["run_id"])), key=lambda o: o["seq"])
        trials = [Trial("", o.get("val_accuracy"), o.get("test_accuracy"), o.get("id")) for o in ended]
        return SeedResult(seed, trials, direction=task.direction)
    if method == "best-of-n":
        return run_lib.best_of_n(settings, budget, [seed])[1][0]
    with Archive(settings.archive) as archive:
        return search_trained(method, get_space(space), Evaluator(archive, settings), budget, seed)


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
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--scripted", action="store_true", help="answer LLM calls with a local test server")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.png (else print the table)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    task = get_task(args.task)
    started = time.monotonic()
    results: dict[str, list[SeedResult]] = {m: [] for m in methods}
    with (
        scripted_server() if args.scripted else nullcontext(args.api_base) as api_base,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for seed, method in itertools.product(range(args.seeds), methods):
            settings = load_settings(
                task=args.task,
                model=args.model,
                api_base=api_base,
                epochs=args.epochs,
                archive=Path(tmp) / f"{method}-{seed}.db",
            )
            results[method].append(one_seed(method, settings, args.space, args.budget, seed))
    lines = [
        f"# Discovery: {', '.join(methods)} at {args.budget} evaluations\n",
        f"`benchmarks/discovery.py --task {args.task} --budget {args.budget} --seeds {args.seeds} --space {args.space}"
        f"{' --scripted' if args.scripted else f' --model {args.model}'}`, {time.strftime('%Y-%m-%d')}, "
        f"{time.monotonic() - started:.0f} s. "
        + (
            "The LLM is a scripted test server: these figures show the benchmark runs, not what an LLM finds.\n"
            if args.scripted
            else "\n"
        ),
        f"| method | seeds | best val {task.metric} (mean ± se) | its test {task.metric} (mean ± se) | trained |",
        "| --- | --- | --- | --- | --- |",
    ]
    curves = {}
    for method in methods:
        bests = [b for b in (r.best(args.budget) for r in results[method]) if b is not None]
        val, val_se = mean_se([b.val for b in bests])
        test, test_se = mean_se([b.test for b in bests])
        trained = sum(1 for r in results[method] for t in r.history if t.val is not None)
        shown = "n/a" if val is None else f"{val:.4f} ± {val_se:.4f}"
        shown_test = "n/a" if test is None else f"{test:.4f} ± {test_se:.4f}"
        lines.append(f"| {method} | {len(results[method])} | {shown} | {shown_test} | {trained} |")
        curves[method] = [best_so_far(r, args.budget) for r in results[method]]
    text = "\n".join(lines) + "\n"
    if args.out is None:
        print(text)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, task.metric, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text(text + f"\n![best so far]({args.out.with_suffix('.png').name})\n")
    print(text)


if __name__ == "__main__":
    main()
