"""What does a candidate's evaluation cost on Ray beyond its training, next to the local slots?

Run from the repository root:  .venv/bin/python benchmarks/ray_overhead.py > benchmarks/ray_overhead.md

The same digits candidates (small MLPs, a few epochs, one CPU thread) go one at a time through a local slot
(`LocalExecutor`) and through agentarch's own one-node Ray (`RayExecutor`), alternating, so both see the same
machine load. Per candidate, from the caller's start to its final result:

- overhead = that wall − the host's measured training seconds (sandbox start, smoke run, scoring, and on Ray the
  task's scheduling, the data's trip through the object store and the results' way back);
- of which Ray's own = that wall − the job's own wall (`RunResult.wall_seconds`, measured inside the job).

Ray's first candidate also pays for starting a worker process and preparing the node's copy of the data from
the object store; it is shown apart, and the medians are over the later candidates.
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agentarch.evaluation.executors import LocalExecutor  # noqa: E402
from agentarch.evaluation.ray_executor import RayExecutor  # noqa: E402
from agentarch.evaluation.stages import RunRequest, RunResult  # noqa: E402
from agentarch.isolation.policy import Limits  # noqa: E402
from agentarch.tasks.preparation import prepare  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402

CANDIDATES, EPOCHS = 5, 5


def code(width: int) -> str:
    return f"""import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.a = nn.Linear(64, {width})
        self.out = nn.Linear({width}, num_classes)

    def forward(self, x):
        return self.out(torch.relu(self.a(x.flatten(1))))
"""


def timed(executor: LocalExecutor | RayExecutor, request: RunRequest) -> tuple[float, RunResult]:
    began = time.perf_counter()
    result = executor.start(request).result()
    return time.perf_counter() - began, result


def main() -> None:
    cache = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    prepare(get_task("digits"), cache)
    train = {"epochs": EPOCHS, "batch_size": 64, "lr": 0.003, "weight_decay": 0.0, "seed": 0}
    executors = {"local": LocalExecutor(1), "ray": RayExecutor(num_cpus=1)}
    rows: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in executors}
    started = time.perf_counter()
    for i in range(CANDIDATES):
        for kind, executor in executors.items():
            request = RunRequest(code(32 + 8 * i), "digits", train, Limits(threads=1), "bubblewrap", cache, None, 0)
            wall, result = timed(executor, request)
            if result.status != "trained":
                raise SystemExit(f"{kind} candidate {i}: {result.status} {result.reason}")
            training = result.trained["host"]["train_seconds"]
            rows[kind].append((wall, wall - training, wall - result.wall_seconds))
    total = time.perf_counter() - started
    executors["ray"].close()
    print("# Ray's overhead per candidate, next to the local slots\n")
    print(
        f"`.venv/bin/python benchmarks/ray_overhead.py` on {platform.machine()}, 2 CPU cores shared with other "
        f"work, {date.today()}. {CANDIDATES} digits MLPs, {EPOCHS} epochs, one thread, bubblewrap; one at a time, "
        f"local and Ray alternating. The whole benchmark took {total:.0f} s.\n"
    )
    print("| executor | candidate | wall s | overhead s (wall − training) | of it outside the job s |")
    print("| --- | --- | --- | --- | --- |")
    for kind, measured in rows.items():
        for i, (wall, overhead, outside) in enumerate(measured):
            print(f"| {kind} | {i + 1} | {wall:.2f} | {overhead:.2f} | {outside:.2f} |")
    local = statistics.median(o for _, o, _ in rows["local"][1:])
    ray = statistics.median(o for _, o, _ in rows["ray"][1:])
    outside = statistics.median(x for _, _, x in rows["ray"][1:])
    print(
        f"\nMedian overhead over candidates 2–{CANDIDATES}: local {local:.2f} s, Ray {ray:.2f} s "
        f"(Ray / local {ray / local:.2f}x; {outside:.2f} s of Ray's outside the job)."
    )


if __name__ == "__main__":
    main()
