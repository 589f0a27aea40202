"""The baselines on the NAS-Bench-201 tables, against the paper's published numbers.

Run from the repository root:  .venv/bin/python benchmarks/nb201.py > benchmarks/nb201.md

Each seed runs one search of 200 queries; the results at budgets 50 and 100 are the best-by-validation
cell among the first 50 and 100 queries of the same search (none of the algorithms looks at the
budget, so a prefix is exactly the shorter search). Reported: mean ± std over seeds of the test
accuracy of each seed's best-by-validation cell (the NAS-Bench-201 protocol), in percent.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentarch.loop.baseline import SeedResult, search_table, summarize  # noqa: E402
from agentarch.search.proposers.baselines import ALGOS  # noqa: E402
from agentarch.search.spaces import get_space  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402
from agentarch.tasks.tabular import DATASETS, nb201_table  # noqa: E402

SEEDS = 500
BUDGETS = (50, 100, 200)
PAPER_CIFAR10 = {"random": "93.70 ± 0.36", "rea": "93.92 ± 0.30"}
"""NAS-Bench-201 (Dong & Yang, ICLR 2020), Table 5, CIFAR-10 test accuracy."""


def one_seed(job: tuple[str, str, int]) -> SeedResult:
    algo, task, seed = job
    options = {"population": 10, "sample_size": 3} if algo == "rea" else {}
    return search_table(algo, get_space("nb201"), get_task(task), max(BUDGETS), seed, **options)


def timings() -> list[str]:
    table = nb201_table()
    archs = table.archs[:1000]
    start = time.perf_counter()
    for arch in archs:
        table.query("cifar10", arch)
    lookup = time.perf_counter() - start
    rows = ["| what | 1,000 queries |", "| --- | --- |", f"| table lookups alone | {lookup * 1e3:.1f} ms |"]
    for algo in ALGOS:
        start = time.perf_counter()
        search_table(algo, get_space("nb201"), get_task("nb201-cifar10"), 1000, 0)
        rows.append(f"| {algo}: propose + query + observe | {time.perf_counter() - start:.2f} s |")
    return rows


def main() -> None:
    workers = len(os.sched_getaffinity(0))
    print("# Baselines on NAS-Bench-201\n")
    print(
        f"`.venv/bin/python benchmarks/nb201.py` on {platform.machine()}, {workers} CPU cores "
        f"(one process each), Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. "
        f"{SEEDS} seeds per algorithm and dataset; REA with P=10, S=3; TPE is Optuna's TPESampler "
        "with its defaults. Test accuracy (%) of each seed's best-by-validation cell, mean ± std over seeds; "
        "in brackets the mean validation accuracy the search saw.\n"
    )
    table = nb201_table()
    started = time.perf_counter()
    with Pool(workers) as pool:
        for dataset in DATASETS:
            task = f"nb201-{dataset}"
            optimum = table.optimum(dataset)
            print(f"## {task} (best cell in the table: {optimum.test_accuracy:.2f} test)\n")
            print("| algorithm | " + " | ".join(f"budget {b}" for b in BUDGETS) + " | paper (budget ~100) | seconds |")
            print("| --- |" + " --- |" * (len(BUDGETS) + 2))
            for algo in ALGOS:
                t0 = time.perf_counter()
                results = pool.map(one_seed, [(algo, task, seed) for seed in range(SEEDS)], chunksize=10)
                seconds = time.perf_counter() - t0
                cells = []
                for budget in BUDGETS:
                    s = summarize(algo, task, budget, results)
                    cells.append(f"{s['mean_test']:.2f} ± {s['std_test']:.2f} ({s['mean_val']:.2f})")
                paper = PAPER_CIFAR10.get(algo, "-") if dataset == "cifar10" else "-"
                print(f"| {algo} | " + " | ".join(cells) + f" | {paper} | {seconds:.1f} |", flush=True)
            print()
    print(f"All {len(DATASETS) * len(ALGOS) * SEEDS:,} searches in {time.perf_counter() - started:.0f} s.\n")
    print("## Time for 1,000 tabular queries (one process)\n")
    print("\n".join(timings()))


if __name__ == "__main__":
    main()
