"""REA with and without `--search-recipe`, at equal evaluations, on digits and on digits-sr2 (the built-in dense task).

Run from the repository root:

    .venv/bin/python benchmarks/recipe_search.py --seeds 3 --budget 5 --epochs 3 > benchmarks/recipe_search.md

Each (task, mode, seed) is one `search_trained` (the path of `agentarch baseline --algo rea`) in a fresh archive of its
own, so no search sees another's results through dedup; the task data's preparation cache is shared. Both modes
search the same space (macro on digits, restore on digits-sr2) with the same REA settings, seeds and epochs; with the
recipe on, every proposal also carries a RECIPE, sampled near the task's default and mutated one step at a time
inside the task's bounds (agentarch/search/recipes.py), which the host checks and the sandbox trains with. A seed's result is its best candidate by validation score and that
candidate's test score; reported as mean ± standard error over seeds. Sized for a loaded 2-core machine, where one
evaluation's fixed cost (sandbox start, smoke stage, graph export and scoring) is most of its time: a few seeds, a
handful of evaluations each, few epochs; the wall time is printed with the table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentarch.config import load_settings  # noqa: E402
from agentarch.evaluation.evaluator import Evaluator  # noqa: E402
from agentarch.loop.baseline import SeedResult, search_trained  # noqa: E402
from agentarch.search.recipes import RecipeSpace  # noqa: E402
from agentarch.search.spaces import get_space  # noqa: E402
from agentarch.store.archive import Archive  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402

TASKS = (("digits", "macro"), ("digits-sr2", "restore"))


def mean_se(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {se:.{digits}f}"


def one_search(
    task_name: str, space_name: str, recipe: bool, seed: int, budget: int, epochs: int, folder: Path, args
) -> SeedResult:
    archive = folder / f"{task_name}-{'recipe' if recipe else 'plain'}-{seed}.db"
    settings = load_settings(
        task=task_name, archive=archive, epochs=epochs, population=args.population, sample_size=args.sample_size
    )
    task = get_task(task_name)
    space = RecipeSpace(get_space(space_name), task) if recipe else get_space(space_name)
    with Archive(archive) as db:
        evaluator = Evaluator(db, settings)
        return search_trained(
            "rea", space, evaluator, budget, seed, population=args.population, sample_size=args.sample_size
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--population", type=int, default=3)
    parser.add_argument("--sample-size", type=int, default=2)
    parser.add_argument("--tasks", default=",".join(name for name, _ in TASKS), help="comma-separated: a part of a run")
    parser.add_argument("--modes", default="plain,recipe", help="comma-separated among plain, recipe")
    args = parser.parse_args()
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task_name, space_name in (t for t in TASKS if t[0] in args.tasks.split(",")):
            metric = get_task(task_name).metric
            for recipe in (mode == "recipe" for mode in args.modes.split(",")):
                began = time.monotonic()
                results = [
                    one_search(task_name, space_name, recipe, seed, args.budget, args.epochs, Path(tmp), args)
                    for seed in range(args.seeds)
                ]
                bests = [r.best() for r in results]
                vals = [b.val for b in bests if b is not None and b.val is not None]
                tests = [b.test for b in bests if b is not None and b.test is not None]
                failed = sum(1 for r in results for t in r.history if t.val is None)
                digits = 2 if metric == "psnr" else 3
                rows.append(
                    (
                        task_name,
                        metric,
                        "REA --search-recipe" if recipe else "REA",
                        mean_se(vals, digits),
                        mean_se(tests, digits),
                        f"{failed}/{sum(len(r.history) for r in results)}",
                        f"{time.monotonic() - began:.0f}",
                    )
                )
                print(f"{rows[-1]}", file=sys.stderr, flush=True)
    print("# REA with and without --search-recipe (issue 27)\n")
    print(
        f"`{' '.join(sys.argv)}`: {args.seeds} seeds (0..{args.seeds - 1}), {args.budget} evaluations a seed, "
        f"{args.epochs} epochs each, REA population {args.population}, sample size {args.sample_size}; graph scoring "
        f"(the default); {platform.machine()} CPU, Python {platform.python_version()}, "
        f"{time.monotonic() - started:.0f} s in all.\n"
    )
    print("| task | metric | search | best validation | its test | untrained | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
