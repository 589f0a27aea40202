"""What does a candidate's evaluation cost on Ray beyond its training, next to the local slots, cold and warm?

Run from the repository root:  nice -n 19 .venv/bin/python benchmarks/ray_overhead.py > benchmarks/ray_overhead.md

The same digits candidates (small MLPs, a few epochs, one CPU thread) go one at a time through a local slot
(`LocalExecutor`) and through agentarch's own one-node Ray (`RayExecutor`, one actor each), each cold and with warm
sandboxes (`warm=True`: the slot's, or the actor's, next sandbox started while its job runs), so all four see the same
machine load, in two orders:

- alternating: the four in turn, so a warm executor's next sandbox had three other candidates' time to start (its
  start is hidden entirely: the best case, a slot whose jobs are far apart);
- back to back: two candidates on each executor in turn, and the second one's figures: its sandbox started during
  the first candidate alone (smoke run, training, scoring), as in a run whose slots are always busy.

Per candidate, from the caller's start to its final result:

- overhead = that wall − the host's measured training seconds (sandbox start, smoke run, scoring, and on Ray the
  job's way to its actor, the data's trip through the object store and the results' way back);
- of which outside the job = that wall − the job's own wall (`RunResult.wall_seconds`, measured inside the job from
  its sandbox's hand-off: a warm job's start is not in it).

Each executor's first candidate also pays for what a run pays once: on Ray, starting the actor's worker process and
preparing the node's copy of the data from the object store; warm, a first job that starts cold. It is shown apart,
and the medians are over the later candidates.
"""

from __future__ import annotations

import os
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
from agentarch.evaluation.stages import RunRequest  # noqa: E402
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


Row = tuple[float, float, float, bool]  # wall, overhead (wall - training), outside the job, warm start


def measured(executor: LocalExecutor | RayExecutor, request: RunRequest, kind: str) -> Row:
    began = time.perf_counter()
    result = executor.start(request).result()
    wall = time.perf_counter() - began
    if result.status != "trained":
        raise SystemExit(f"{kind}: {result.status} {result.reason}")
    host = result.trained["host"]
    return wall, wall - host["train_seconds"], wall - result.wall_seconds, host["warm_start"]


def main() -> None:
    cache = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    prepare(get_task("digits"), cache)
    train = {"epochs": EPOCHS, "batch_size": 64, "lr": 0.003, "weight_decay": 0.0, "seed": 0}

    def request(width: int) -> RunRequest:
        return RunRequest(code(width), "digits", train, Limits(threads=1), "bubblewrap", cache, None, 0)

    executors: dict[str, LocalExecutor | RayExecutor] = {
        "local cold": LocalExecutor(1),
        "local warm": LocalExecutor(1, warm=True),
        "ray cold": RayExecutor(num_cpus=2, slots=1),  # one Ray, one CPU for each executor's actor
        "ray warm": RayExecutor(slots=1, warm=True),
    }
    alternating: dict[str, list[Row]] = {kind: [] for kind in executors}
    back_to_back: dict[str, list[Row]] = {kind: [] for kind in executors}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    for i in range(CANDIDATES):  # each executor's next sandbox had the other three's candidates' time to start
        for kind, executor in executors.items():
            alternating[kind].append(measured(executor, request(32 + 8 * i), kind))
    for i in range(CANDIDATES):  # a pair on each executor in turn: the second's sandbox started during the first
        for kind, executor in executors.items():
            measured(executor, request(80 + 16 * i), kind)
            back_to_back[kind].append(measured(executor, request(88 + 16 * i), kind))
    total = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    executors["local warm"].close()
    executors["ray warm"].close()  # leaves Ray: the cold one's actor goes with it
    print("# Ray's overhead per candidate, next to the local slots, cold and warm\n")
    print(
        f"`nice -n 19 .venv/bin/python benchmarks/ray_overhead.py` on {platform.machine()}, {os.cpu_count()} CPU "
        f"cores shared with other work (load average {load_before:.1f} at the start, {load_after:.1f} at the end), "
        f"{date.today()}. Digits MLPs, {EPOCHS} epochs, one thread, bubblewrap, one at a time. The whole benchmark "
        f"took {total:.0f} s.\n"
    )
    print(f"## Alternating: the four executors in turn, {CANDIDATES} candidates each\n")
    table(alternating)
    median = medians(alternating, skip=1)
    print(f"\nMedians over candidates 2–{CANDIDATES} (the first pays the actor's start, and starts cold):\n")
    summary(median, medians(alternating, skip=1, column=2))
    print(f"\n## Back to back: {CANDIDATES} times, two candidates on each executor in turn; the second's row\n")
    table(back_to_back)
    print(f"\nMedians over the {CANDIDATES} second candidates:\n")
    summary(medians(back_to_back), medians(back_to_back, column=2))


def table(rows: dict[str, list[Row]]) -> None:
    print("| executor | candidate | warm start | wall s | overhead s (wall − training) | of it outside the job s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, measured in rows.items():
        for i, (wall, overhead, outside, warm) in enumerate(measured):
            print(f"| {kind} | {i + 1} | {'yes' if warm else 'no'} | {wall:.2f} | {overhead:.2f} | {outside:.2f} |")


def medians(rows: dict[str, list[Row]], skip: int = 0, column: int = 1) -> dict[str, float]:
    return {kind: statistics.median(row[column] for row in measured[skip:]) for kind, measured in rows.items()}


def summary(overhead: dict[str, float], outside: dict[str, float]) -> None:
    print("| executor | overhead s | of it outside the job s | overhead / local cold |")
    print("| --- | --- | --- | --- |")
    for kind in overhead:
        print(
            f"| {kind} | {overhead[kind]:.2f} | {outside[kind]:.2f} | {overhead[kind] / overhead['local cold']:.2f}x |"
        )
    print(
        f"\nRay / local, both warm: {overhead['ray warm'] / overhead['local warm']:.2f}x; both cold: "
        f"{overhead['ray cold'] / overhead['local cold']:.2f}x. Warm / cold: Ray {overhead['ray warm'] / overhead['ray cold']:.2f}x, "
        f"local {overhead['local warm'] / overhead['local cold']:.2f}x."
    )


if __name__ == "__main__":
    main()
