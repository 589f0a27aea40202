"""Multi-objective search on the NAS-Bench-201 tables: accuracy against parameters, single- vs multi-objective.

Run from the repository root:  nice .venv/bin/python benchmarks/nb201_moo.py > benchmarks/nb201_moo.md
(about 10 minutes on 2 busy cores, nearly all of it TPE; the .md's last section is written by hand).

Every search is a `search_table` run of 200 queries (the results at budgets 50 and 100 are prefixes of it, as in
benchmarks/nb201.py). Single-objective searches rank by validation accuracy alone; multi-objective ones by
`val:max` and `params:min` (REA's tournament by Pareto front and crowding; Optuna's multi-objective TPE). Every
search, whatever it optimised, is then measured the same way (`SeedResult.hypervolume`): the Pareto front of
the cells it evaluated, by validation accuracy and parameters (what the search saw, so the test split never
chooses a cell, as in the single-objective NAS-Bench-201 protocol), scored by those cells' test accuracy and
parameters. Accuracy is divided by 100 and parameters by the space's largest cell's, and the reference point
is (0 accuracy, the largest cell's parameters): hypervolumes lie in [0, 1] and compare across searches.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentarch.loop.baseline import SeedResult, TableScales, Trial, search_table  # noqa: E402
from agentarch.search.objectives import Goals  # noqa: E402
from agentarch.search.spaces import get_space  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402
from agentarch.tasks.tabular import DATASETS, nb201_table  # noqa: E402

SEEDS = 200
BUDGETS = (50, 100, 200)
OBJECTIVES = ("val:max", "params:min")
MEASURED = Goals.parse(OBJECTIVES)
TPE_DATASETS = ("cifar10",)
"""TPE costs about 1 s (multi-objective: 1.5 s) per 200-query search, so it runs on CIFAR-10 only."""


@dataclass(frozen=True)
class Search:
    """One row of the tables: an algorithm and the objectives it searched by."""

    label: str
    algo: str
    multi: bool

    def run(self, task: str, seed: int) -> SeedResult:
        options = {"population": 10, "sample_size": 3} if self.algo == "rea" else {}
        goals = MEASURED if self.multi else None
        result = search_table(self.algo, get_space("nb201"), get_task(task), max(BUDGETS), seed, goals, **options)
        return replace(result, goals=MEASURED)  # measured alike, whatever it searched by


SEARCHES = (
    Search("random search", "random", False),
    Search("REA, accuracy only", "rea", False),
    Search("REA, accuracy and params", "rea", True),
    Search("TPE, accuracy only", "tpe", False),
    Search("TPE, accuracy and params", "tpe", True),
)


def one_seed(job: tuple[Search, str, int]) -> tuple[list[float], list[float]]:
    """(hypervolume, best-by-validation test accuracy) at each budget."""
    search, task, seed = job
    result = search.run(task, seed)
    return [result.hypervolume(b) for b in BUDGETS], [result.best(b).test for b in BUDGETS]  # type: ignore[union-attr]


def mean_sd(values: list[float], digits: int) -> str:
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f}"


def ceilings(dataset: str) -> tuple[float, float]:
    """The hypervolume of the whole table's front by validation scored on test (the protocol's ceiling), and of
    its front by test (the space's own)."""
    table = nb201_table()
    everything = SeedResult(0, goals=MEASURED, scales=TableScales.of(table, dataset))
    for arch in table.archs:
        score = table.query(dataset, arch)
        everything.history.append(Trial(arch, score.val_accuracy, score.test_accuracy, measures=score.measures()))
    by_test = replace(everything, history=[replace(t, val=t.test) for t in everything.history])
    return everything.hypervolume(), by_test.hypervolume()


def main() -> None:
    workers = len(os.sched_getaffinity(0))
    print("# Multi-objective search on NAS-Bench-201: accuracy against parameters\n")
    print(
        f"`nice .venv/bin/python benchmarks/nb201_moo.py` on {platform.machine()}, {workers} CPU cores (one process "
        f"each), Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. {SEEDS} seeds per search and "
        "dataset, 200 queries each (budgets 50 and 100 are prefixes); REA with P=10, S=3; TPE is Optuna's "
        f"TPESampler with its defaults (multi-objective: one direction per objective), on {', '.join(TPE_DATASETS)} "
        "only. Objectives of the multi-objective searches: " + ", ".join(OBJECTIVES) + ".\n"
    )
    print(
        "**Protocol.** Each search's front is the Pareto front of the cells it evaluated by *validation* accuracy "
        "and parameters (what the search saw); its hypervolume is computed on those cells' *test* accuracy and "
        "parameters. This is the single-objective NAS-Bench-201 protocol (choose by validation, report test) "
        "carried over to fronts: choosing the front by test accuracy would let the test split pick the cells. "
        "Accuracy is divided by 100 and parameters by the largest cell's (all-conv3x3), the reference point is "
        "(0 % accuracy, the largest cell's parameters), so a hypervolume is the area under the front's "
        "accuracy-vs-parameters staircase in the unit box. Every search is measured this way, whatever it "
        "optimised. Mean ± std over seeds; the standard error of a mean is std / √200.\n"
    )
    started = time.perf_counter()
    with Pool(workers) as pool:
        for dataset in DATASETS:
            task = f"nb201-{dataset}"
            protocol, own = ceilings(dataset)
            print(f"## {task}\n")
            print(
                f"Ceilings: the whole table's validation front scored on test has hypervolume {protocol:.4f}; "
                f"its test front {own:.4f}.\n"
            )
            header = ["search", *(f"HV at {b}" for b in BUDGETS), *(f"best test at {b}" for b in BUDGETS), "seconds"]
            print("| " + " | ".join(header) + " |")
            print("| --- |" + " --- |" * (2 * len(BUDGETS) + 1))
            volumes: dict[str, list[float]] = {}
            for search in SEARCHES:
                if search.algo == "tpe" and dataset not in TPE_DATASETS:
                    continue
                t0 = time.perf_counter()
                runs = pool.map(one_seed, [(search, task, seed) for seed in range(SEEDS)], chunksize=5)
                seconds = time.perf_counter() - t0
                hv = [[r[0][i] for r in runs] for i in range(len(BUDGETS))]
                best = [[r[1][i] for r in runs] for i in range(len(BUDGETS))]
                volumes[search.label] = hv[BUDGETS.index(100)]
                cells = [mean_sd(v, 4) for v in hv] + [mean_sd(v, 2) for v in best]
                print(f"| {search.label} | " + " | ".join(cells) + f" | {seconds:.1f} |", flush=True)
            print()
            for algo in ("REA", "TPE"):
                single, multi = volumes.get(f"{algo}, accuracy only"), volumes.get(f"{algo}, accuracy and params")
                if single is None or multi is None:
                    continue
                diff = statistics.fmean(multi) - statistics.fmean(single)
                se = (statistics.pvariance(multi) / len(multi) + statistics.pvariance(single) / len(single)) ** 0.5
                verdict = "beats" if diff > 2 * se else "does not beat"
                print(
                    f"- {algo} at budget 100: multi-objective minus single-objective hypervolume = {diff:+.4f} "
                    f"(standard error {se:.4f}, {diff / se:+.1f} SE): multi-objective {algo} {verdict} "
                    "single-objective at two standard errors."
                )
            print()
    print(f"All searches in {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
