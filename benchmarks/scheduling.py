"""Rounds against steady state: how busy do the training slots stay when candidates differ in training time?

Run from the repository root (on a quiet machine):  .venv/bin/python benchmarks/scheduling.py > benchmarks/scheduling.md

A 127.0.0.1 server speaking the OpenAI API answers every call after LATENCY_S; the k-th proposal it is asked
for is always the same CNN (the seed at width 16 + k, so none is a duplicate) with HPARAMS epochs from EPOCHS,
a cycle that spreads training times about 10x. Each scenario runs the same candidates twice, once per
schedule, alternately in one process: `rounds` (batch proposals, then wait for the slowest) and `steady`
(a proposal starts whenever a place among slots + queue frees).

Slot utilisation = time a sandbox job ran on a slot / (slots x a window that starts at the first slot use).
Two windows are reported: up to the start of the last job (the steady state, while there is always more to
propose: what the schedule decides), and up to the end of the last job (the whole run, including the drain
at the end, when the last candidates finish one by one whatever the schedule). The overhead row runs one slot, no queue
and an instant LLM: (run wall - sandbox time) / candidates is what the orchestration adds per candidate
(graph steps, checkpoints, archive writes, dedup, scheduling, the wait for the LLM's answers to be parsed).
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import agentarch.loop.context as context  # noqa: E402
from agentarch.config import load_settings  # noqa: E402
from agentarch.loop import run as run_lib  # noqa: E402
from tests.llm_server import Reply, ScriptedLLMServer  # noqa: E402

LATENCY_S = 1.0
EPOCHS = (40, 1, 1, 6, 1, 16, 1, 3)
"""Training epochs of the k-th proposal (cycled): with the job's fixed cost, about a 10x spread in time."""

CANDIDATES = 24
SCENARIOS = (
    # (name, slots, queue, batch, llm latency, candidates)
    ("heterogeneous, 2 slots, batch 4", 2, 2, 4, LATENCY_S, CANDIDATES),
    ("more slots than a round: 4 slots, batch 2", 4, 2, 2, LATENCY_S, CANDIDATES),
)
CNN = (REPO / "archive" / "seeds" / "image" / "cnn.py").read_text()


def candidate(k: int, epochs: tuple[int, ...]) -> str:
    code = CNN.replace("width: int = 32", f"width: int = {16 + k}")
    return f'{code}\n\nHPARAMS = {{"epochs": {epochs[k % len(epochs)]}}}\n'


def measure(
    schedule: str, slots: int, queue: int, batch: int, latency: float, budget: int, epochs: tuple[int, ...] = EPOCHS
) -> dict[str, Any]:
    counter, lock = itertools.count(), threading.Lock()

    def answer(request: dict) -> Reply:
        if "Write a short analysis" in request["messages"][-1]["content"]:
            return Reply("Fine.", delay_s=latency)
        with lock:
            k = next(counter)
        return Reply(f"Intent: CNN number {k}.\n\n```python\n{candidate(k, epochs)}```\n", delay_s=latency)

    made: list[Any] = []
    make = context.make_executor
    context.make_executor = lambda *args: made.append(make(*args)) or made[-1]
    try:
        with tempfile.TemporaryDirectory() as tmp, ScriptedLLMServer(default=answer) as server:
            settings = load_settings(
                task="digits",
                model="openai/bench-model",
                api_base=server.url,
                budget=budget,
                schedule=schedule,
                batch=batch,
                slots=slots,
                queue=queue,
                epochs=max(epochs),
                threads=1,
                archive=Path(tmp) / "a.db",
            )
            started = time.monotonic()
            summary = run_lib.start(settings)
            wall = time.monotonic() - started
    finally:
        context.make_executor = make
    busy = made[0].busy
    first, last = min(b[1] for b in busy), max(b[2] for b in busy)
    fed = max(b[1] for b in busy)  # the last job's start: until then a proposal could always have been waiting
    used = sum(end - start for _, start, end in busy)
    used_fed = sum(max(0.0, min(end, fed) - start) for _, start, end in busy)
    durations = sorted(end - start for _, start, end in busy)
    return {
        "trained": summary["trained"],
        "wall": wall,
        "window": last - first,
        "used": used,
        "utilisation": used / (slots * (last - first)),
        "fed": used_fed / (slots * (fed - first)),
        "spread": (durations[0], statistics.median(durations), durations[-1]),
        "overhead": (wall - used) / budget,
    }


def main() -> None:
    print("# Scheduling: rounds against steady state\n")
    print(
        f"`.venv/bin/python benchmarks/scheduling.py` on {platform.machine()}, {len(os.sched_getaffinity(0))} CPU "
        f"cores, {time.strftime('%Y-%m-%d')}. CNN seed variants on digits with HPARAMS epochs cycling {EPOCHS}; "
        f"the LLM answers after {LATENCY_S:g} s; one CPU thread per slot. Both schedules run the same candidates "
        "in the same process, one after the other.\n"
    )
    print(
        "| scenario | schedule | trained | run wall s | window s | slot-busy s | job s (min / median / max) "
        "| utilisation until the last job starts | utilisation, whole window |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, slots, queue, batch, latency, budget in SCENARIOS:
        for schedule in ("rounds", "steady"):
            m = measure(schedule, slots, queue, batch, latency, budget)
            low, mid, high = m["spread"]
            print(
                f"| {name} | {schedule} | {m['trained']} | {m['wall']:.1f} | {m['window']:.1f} | {m['used']:.1f} | "
                f"{low:.1f} / {mid:.1f} / {high:.1f} | {m['fed']:.1%} | {m['utilisation']:.1%} |",
                flush=True,
            )
    print("\n## Orchestration overhead per candidate\n")
    print("One slot, no queue, an LLM that answers at once, short candidates (1 epoch): what the host adds.\n")
    print("| schedule | candidates | run wall s | sandbox s | overhead s per candidate |")
    print("| --- | --- | --- | --- | --- |")
    for schedule in ("rounds", "steady"):
        m = measure(schedule, 1, 0, 1, 0.0, 8, epochs=(1,))
        print(f"| {schedule} | 8 | {m['wall']:.1f} | {m['used']:.1f} | {m['overhead']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
