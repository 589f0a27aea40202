"""Predictor-guided REA against plain REA and random search on the NAS-Bench-201 tables, at equal query budgets.

Run from the repository root:  nice .venv/bin/python benchmarks/nb201_predictor.py > benchmarks/nb201_predictor.md
(the whole protocol: 200 seeds, three datasets, budget 200, K=4 and K=10; several CPU-hours, nearly all of it
fitting and querying the predictor). A smaller run names what it keeps, e.g.
`--datasets cifar10 --budget 100 --screens 4`; the .md says which ran.

Every search is one `search_table` run of `--budget` queries per seed; smaller budgets are its prefixes (none of
the searches looks at the budget, and the guide's refit schedule depends only on how many cells it has seen).
A guided search asks REA (P=10, S=3) for K candidates per query, a predictor fitted on the seed's queries so far
picks one (a random one with probability 0.1, and until 8 are evaluated), the rest are withdrawn unevaluated
(`agentarch.search.guided`). Reported as the other NAS-Bench-201 benchmarks here: the test accuracy of each seed's
best-by-validation cell, mean ± std over seeds, and the standard error of the mean (std / sqrt(seeds)).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one process per core; the predictor fits on one thread anyway
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentarch.loop.baseline import search_table  # noqa: E402
from agentarch.search.guided import REFIT  # noqa: E402
from agentarch.search.spaces import get_space  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402
from agentarch.tasks.tabular import DATASETS, nb201_table  # noqa: E402

BUDGETS = (50, 100, 200)
EXPLORE = 0.1
PAPER = {"cifar10": {"random search": "93.70 ± 0.36", "REA": "93.92 ± 0.30"}}
"""NAS-Bench-201 (Dong & Yang, ICLR 2020), Table 5, CIFAR-10 test accuracy (see ../shared/data/README.md)."""


@dataclass(frozen=True)
class Search:
    """One row of the tables: a baseline, guided with K candidates per query when `screen` > 1."""

    label: str
    algo: str
    screen: int = 1


def one_seed(job: tuple[Search, str, int, int]) -> dict[int, tuple[float, float]]:
    """Per budget, the validation and test accuracy of the seed's best-by-validation cell."""
    search, task, budget, seed = job
    options = {"population": 10, "sample_size": 3} if search.algo == "rea" else {}
    result = search_table(
        search.algo, get_space("nb201"), get_task(task), budget, seed, screen=search.screen, explore=EXPLORE, **options
    )
    best = {}
    for b in BUDGETS:
        trial = result.best(b)
        if b <= budget and trial is not None and trial.val is not None and trial.test is not None:
            best[b] = (trial.val, trial.test)
    return best


def stats(values: list[float]) -> tuple[float, float, float]:
    """Mean, population std (as the other NAS-Bench-201 tables here) and standard error of the mean."""
    std = statistics.pstdev(values)
    return statistics.fmean(values), std, std / math.sqrt(len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--budget", type=int, default=max(BUDGETS), choices=BUDGETS)
    parser.add_argument("--screens", default="4,10", help="K of each guided search, comma-separated")
    args = parser.parse_args()
    searches = [Search("random search", "random"), Search("REA", "rea")] + [
        Search(f"REA guided, K={k}", "rea", int(k)) for k in args.screens.split(",")
    ]
    budgets = [b for b in BUDGETS if b <= args.budget]
    workers = len(os.sched_getaffinity(0))
    print("# Predictor-guided search on NAS-Bench-201\n")
    print(
        f"`nice .venv/bin/python benchmarks/nb201_predictor.py --seeds {args.seeds} --datasets {args.datasets} "
        f"--budget {args.budget} --screens {args.screens}` on {platform.machine()}, {workers} CPU cores (one process "
        f"each, shared with other work), Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. "
        f"{args.seeds} seeds per search and dataset, budgets in table queries (evaluations); REA with P=10, S=3; "
        f"guided: K candidates per query, exploration {EXPLORE}, refit when the seed's queries have grown by "
        f"{REFIT:.0%}. Test accuracy (%) of each seed's best-by-validation cell: mean ± std over seeds [standard "
        "error]; in brackets the mean validation accuracy the search saw.\n"
    )
    table = nb201_table()
    comparisons: list[str] = []
    with Pool(workers) as pool:
        for dataset in args.datasets.split(","):
            task = f"nb201-{dataset}"
            print(f"## {task} (best cell in the table: {table.optimum(dataset).test_accuracy:.2f} test)\n")
            header = " | ".join(f"budget {b}" for b in budgets)
            print(f"| search | {header} | paper (budget ~100) | seconds |")
            print("| --- |" + " --- |" * (len(budgets) + 2))
            tests: dict[str, dict[int, list[float]]] = {}
            for search in searches:
                t0 = time.perf_counter()
                jobs = [(search, task, args.budget, seed) for seed in range(args.seeds)]
                outcomes = pool.map(one_seed, jobs, chunksize=max(1, args.seeds // (4 * workers)))
                seconds = time.perf_counter() - t0
                tests[search.label] = {b: [o[b][1] for o in outcomes] for b in budgets}
                cells = []
                for b in budgets:
                    mean, std, se = stats(tests[search.label][b])
                    val = statistics.fmean(o[b][0] for o in outcomes)
                    cells.append(f"{mean:.2f} ± {std:.2f} [{se:.3f}] ({val:.2f})")
                paper = PAPER.get(dataset, {}).get(search.label, "-")
                print(f"| {search.label} | " + " | ".join(cells) + f" | {paper} | {seconds:.0f} |", flush=True)
            print()
            for search in searches[2:]:
                for b in budgets:
                    guided, plain = tests[search.label][b], tests["REA"][b]
                    diff = statistics.fmean(guided) - statistics.fmean(plain)
                    se_rea, se_both = stats(plain)[2], math.hypot(stats(guided)[2], stats(plain)[2])
                    verdict = "yes" if diff > se_rea else "no"
                    comparisons.append(
                        f"| {task} | {search.label} | {b} | {diff:+.3f} | {se_rea:.3f} | {se_both:.3f} | {verdict} |"
                    )
    print("## Guided minus plain REA (test accuracy, percentage points)\n")
    print(
        "| task | search | budget | difference of means | REA's standard error | s.e. of the difference "
        "| beats REA by > 1 s.e. |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(comparisons))


if __name__ == "__main__":
    main()
