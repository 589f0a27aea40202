"""Random search against regularized evolution (REA) in the gnn spaces on the built-in graph tasks, at equal
evaluations: node classification (sbm-nodes, the gnn space) or graph classification (sbm-graphs, gnnpool).

Run from the repository root (about 3 s an evaluation on sbm-nodes on a quiet 2-core machine; a training on
sbm-graphs took about 22 s at a load average of 6 to 10); benchmarks/gnn_search.md holds both tasks' tables and a
reading of each:

    .venv/bin/python benchmarks/gnn_search.py --seeds 3 --budget 12 --population 6
    .venv/bin/python benchmarks/gnn_search.py --task sbm-graphs --seeds 3 --budget 4 --population 2

Both searches run through `search_trained`, the path of `agentarch baseline --task TASK --scoring trusted` (graph
tasks are scored trusted for now), in the space `agentarch baseline` picks for the task's kind: every proposal is
rendered from the gnn template and trained in the real sandbox for the task's epochs, proposals are distinct within
a seed, and both keep to the task's max_params before proposing. Each seed's result is its best-by-validation
network's validation accuracy and the test accuracy of that same network (the test split never chooses), reported
as mean ± standard error over seeds at several budgets. REA runs with `agentarch baseline`'s defaults for these
tasks scaled to the budget: a population of `--population` (its first evaluations are uniform samples), tournaments
of 3.

All searches share one archive: a network that another seed or the other search already trained is not trained
again, and the search observes the recorded scores, as `agentarch baseline` does across runs. Training is seeded
(the run's seed, 0), so a retraining would give the same scores; sharing only saves time. The table says how many
of each search's evaluations were trainings of its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentarch.config import load_settings  # noqa: E402
from agentarch.evaluation.evaluator import EvalResult, Evaluator  # noqa: E402
from agentarch.loop.baseline import SeedResult, search_trained  # noqa: E402
from agentarch.search.proposers.base import Proposal  # noqa: E402
from agentarch.search.spaces import get_space, space_for  # noqa: E402
from agentarch.store.archive import Archive  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402

TASKS = ("sbm-nodes", "sbm-graphs")
ALGOS = ("random", "rea")
SAMPLE_SIZE = 3  # agentarch's default tournament size


def mean_se(values: list[float]) -> str:
    """Percent, mean ± standard error over seeds."""
    if not values:
        return "-"
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * se:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=TASKS, default=TASKS[0], help="the built-in graph task searched")
    parser.add_argument("--seeds", type=int, default=3, help="independent seeds 0..N-1 per search")
    parser.add_argument("--budget", type=int, default=12, help="evaluations per seed")
    parser.add_argument("--population", type=int, default=6, help="REA's population (its initial random samples)")
    args = parser.parse_args()
    task = get_task(args.task)
    space = get_space(space_for(task.kind))
    results: dict[str, list[SeedResult]] = {algo: [] for algo in ALGOS}
    trainings: dict[str, int] = dict.fromkeys(ALGOS, 0)
    seconds: dict[str, float] = dict.fromkeys(ALGOS, 0.0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(task=task.name, archive=Path(tmp) / "gnn.db", scoring="trusted")
        with Archive(settings.archive) as db:
            evaluator = Evaluator(db, settings)
            for seed in range(args.seeds):
                for algo in ALGOS:

                    def count(proposal: Proposal, outcome: EvalResult, algo: str = algo) -> None:
                        trainings[algo] += outcome.status == "trained"

                    tournament = min(SAMPLE_SIZE, args.population)
                    options = {"population": args.population, "sample_size": tournament} if algo == "rea" else {}
                    begun = time.perf_counter()
                    result = search_trained(algo, space, evaluator, args.budget, seed, on_result=count, **options)
                    seconds[algo] += time.perf_counter() - begun
                    results[algo].append(result)
                    print(f"seed {seed} {algo}: best {result.best()}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - started
    evaluations = args.seeds * args.budget
    budgets = sorted({b for b in (args.population, args.budget // 2, args.budget) if 0 < b <= args.budget})

    epochs = "full-batch epochs" if task.kind == "graph" else f"epochs of {task.batch_size}-graph mini-batches"
    print(f"# Random search against REA in the {space.name} space on {task.name}\n")
    print(
        f"`.venv/bin/python benchmarks/gnn_search.py --task {task.name} --seeds {args.seeds} --budget {args.budget} "
        f"--population {args.population}` on {platform.machine()}, {len(os.sched_getaffinity(0))} CPU cores "
        f"(load average {os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}; "
        f"{wall / 60:.1f} minutes in all. {task.name}: {task.epochs} {epochs} per training, scoring trusted, "
        f"max_params {task.max_params:,}; the {space.name} space holds {sum(1 for _ in space.archs()):,} networks. "
        f"{args.budget} evaluations per seed, seeds 0-{args.seeds - 1} for both searches; REA population "
        f"{args.population}, tournaments of {SAMPLE_SIZE}. Accuracy (%) of each seed's best-by-validation network, "
        "mean ± standard error over seeds.\n"
    )
    print("| search | evaluations | best val | its test | own trainings | seconds per evaluation |")
    print("| --- | --- | --- | --- | --- | --- |")
    for budget in budgets:
        for algo in ALGOS:
            found = [b for b in (r.best(budget) for r in results[algo]) if b is not None]
            vals = [b.val for b in found if b.val is not None]
            tests = [b.test for b in found if b.test is not None]
            own = f"{trainings[algo]} of {evaluations}" if budget == args.budget else ""
            pace = f"{seconds[algo] / evaluations:.1f}" if budget == args.budget else ""
            print(f"| {algo} | {budget} | {mean_se(vals)} | {mean_se(tests)} | {own} | {pace} |")
    print("\nPer seed, at the full budget (best-by-validation network: val / test, %):\n")
    print("| search | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " |")
    print("| --- |" + " --- |" * args.seeds)
    for algo in ALGOS:
        cells = []
        for r in results[algo]:
            best = r.best()
            cells.append("-" if best is None else f"`{best.arch}` {100 * best.val:.1f} / {100 * best.test:.1f}")
        print(f"| {algo} | " + " | ".join(cells) + " |")
    failed = {algo: sum(t.val is None for r in results[algo] for t in r.history) for algo in ALGOS}
    print(f"\nEvaluations without a score (failed, timed out): {failed}.")


if __name__ == "__main__":
    main()
