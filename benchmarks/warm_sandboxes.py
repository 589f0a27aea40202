"""Warm sandboxes against cold starts (issue 26): per-candidate overhead and training share of the wall time.

Run from the repository root:  .venv/bin/python benchmarks/warm_sandboxes.py [--candidates 6] [--epochs 10]

N candidates (the image seeds in turn, each a fresh network) run one after another through one local executor slot,
as the README's main job runs them (digits, graph scoring, the host's training budget on, every core), once with
warm sandboxes and once without, the two passes alternating `--repeats` times in one process so both see the same
load. Per candidate: the job's wall time (`wall_seconds`, from the slot's hand-off to the final result), the host's
training seconds (`train_seconds`, from the word to train to the `trained` event) and what is left, the overhead
(start, smoke, the host's checks of the smoke graph, export, scoring by the clean evaluator). Per pass: the wall time
from the first job's start to the last one's result, and the training share of it; and the score stage on the
critical path after training: the clean evaluator's start (its sandbox, the interpreter, ONNX Runtime's import; in a
warm pass started while the candidate trained, so only what was left of it) and the whole score stage, start
included. The 1-minute load average is recorded at the start and end of each pass (the machine is shared).
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
from typing import Any

from agentarch.evaluation.executors import LocalExecutor
from agentarch.evaluation.stages import RunRequest
from agentarch.isolation.policy import Limits, resolve_isolation

REPO = Path(__file__).resolve().parent.parent
SEEDS = [REPO / "archive" / "seeds" / "image" / f"{name}.py" for name in ("mlp", "cnn", "resnet")]


def requests(count: int, epochs: int, cache: Path) -> list[RunRequest]:
    """`count` candidates, the seeds in turn, as the run's evaluator would ask for them (graph scoring, budget on)."""
    limits = Limits(timeout_s=900, smoke_timeout_s=120, threads=os.cpu_count() or 1)
    return [
        RunRequest(
            code=SEEDS[i % len(SEEDS)].read_text(),
            task="digits",
            train={"epochs": epochs, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0, "seed": i},
            limits=limits,
            isolation=resolve_isolation("auto"),
            cache_dir=cache,
            data_dir=None,
            split_seed=0,
            scoring="graph",
            budget_slack=4.0,
        )
        for i in range(count)
    ]


def one_pass(batch: list[RunRequest], warm: bool) -> dict[str, Any]:
    """Run `batch` through one slot, each job starting when the one before has its result."""
    executor = LocalExecutor(1, warm=warm)
    load = os.getloadavg()[0]
    rows = []
    began = time.perf_counter()
    try:
        for request in batch:
            result = executor.run(request)
            if result.status != "trained":
                raise SystemExit(f"a seed did not train: {result.status} {result.reason}")
            trained = result.trained or {}
            host, graph = trained["host"], trained["graph"]
            rows.append(
                {
                    "wall": result.wall_seconds,
                    "train": host["train_seconds"],
                    "warm": host["warm_start"],
                    "evaluator_warm": host.get("evaluator_warm_start", False),
                    "smoke": (result.smoke or {})["seconds"],
                    "export": graph["export_seconds"],
                    "evaluator_start": graph["evaluator_start_seconds"],
                    "evaluator": graph["evaluator_wall_seconds"],
                }
            )
        wall = time.perf_counter() - began
    finally:
        executor.close()
    return {"rows": rows, "wall": wall, "load": (load, os.getloadavg()[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        batch = requests(args.candidates, args.epochs, Path(tmp))
        one_pass(batch[:1], warm=False)  # prepares the data and measures the budget's reference job once
        passes: list[tuple[str, dict[str, Any]]] = []
        for _ in range(args.repeats):
            for name, warm in (("cold", False), ("warm", True)):
                passes.append((name, one_pass(batch, warm)))
    print("# Warm sandboxes against cold starts\n")
    print(
        f"{args.candidates} digits candidates (the image seeds mlp, cnn, resnet in turn, {args.epochs} epochs, graph "
        f"scoring, budget on, {os.cpu_count()} threads) through one local slot on {platform.node()}: "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; cold and warm passes alternating in one process "
        f"({time.perf_counter() - began:.0f} s in all).\n"
    )
    print(
        "| pass | load at start, end | wall (s) | Σ training (s) | training share | overhead per candidate (s), "
        "mean | median | jobs started warm |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, run in passes:
        rows = run["rows"]
        train = sum(r["train"] for r in rows)
        overheads = [r["wall"] - r["train"] for r in rows]
        print(
            f"| {name} | {run['load'][0]:.2f}, {run['load'][1]:.2f} | {run['wall']:.1f} | {train:.1f} "
            f"| {train / run['wall']:.2f} | {statistics.mean(overheads):.2f} | {statistics.median(overheads):.2f} "
            f"| {sum(r['warm'] for r in rows)} of {len(rows)} |"
        )
    print(
        "\nThe score stage on the critical path, per candidate (s): the clean evaluator's start (sandbox, interpreter, "
        "ONNX Runtime's import; warm: what was left of it when scoring came) and the whole score stage, start "
        "included.\n"
    )
    print(
        "| pass | evaluator start, mean | median | max | score stage, mean | median | max | evaluators started warm |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, run in passes:
        rows = run["rows"]
        starts, stages = [r["evaluator_start"] for r in rows], [r["evaluator"] for r in rows]
        print(
            f"| {name} | {statistics.mean(starts):.3f} | {statistics.median(starts):.3f} | {max(starts):.3f} "
            f"| {statistics.mean(stages):.3f} | {statistics.median(stages):.3f} | {max(stages):.3f} "
            f"| {sum(r['evaluator_warm'] for r in rows)} of {len(rows)} |"
        )
    print(
        "\nPer candidate (s): the overhead (wall - training), the host's training seconds, and parts of the overhead: "
        "the runner's smoke stage, its export of the trained network, the clean evaluator's start and its whole "
        "scoring (start included).\n"
    )
    print(
        "| pass | candidate | overhead | training | smoke | export | evaluator start | evaluator in all "
        "| evaluator warm |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, run in passes:
        for i, r in enumerate(run["rows"]):
            print(
                f"| {name} | {i + 1} {SEEDS[i % len(SEEDS)].stem} | {r['wall'] - r['train']:.2f} | {r['train']:.2f} "
                f"| {r['smoke']:.2f} | {r['export']:.2f} | {r['evaluator_start']:.3f} | {r['evaluator']:.3f} "
                f"| {'yes' if r['evaluator_warm'] else 'no'} |"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
