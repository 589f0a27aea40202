"""Do the training slots stay busy while a slow LLM proposes? Proposing overlaps training.

Run from the repository root:  .venv/bin/python benchmarks/overlap.py > benchmarks/overlap.md

A 127.0.0.1 server speaking the OpenAI API answers every call (proposals and analyses) after 5 s;
a 20-candidate run on digits with 2 local slots (one CPU thread each) and a queue of 2 proposals.
Slot utilisation = time a sandbox ran on a slot / (2 × the window from the first slot use to the
last), which leaves out only the wait for the very first proposal.
"""

from __future__ import annotations

import itertools
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import agentarch.loop.context as context  # noqa: E402
from agentarch.config import load_settings  # noqa: E402
from agentarch.loop import run as run_lib  # noqa: E402
from tests.llm_server import Reply, ScriptedLLMServer  # noqa: E402

LATENCY_S, CANDIDATES, SLOTS, QUEUE = 5.0, 20, 2, 2
CNN = (REPO / "archive" / "seeds" / "image" / "cnn.py").read_text()


def main() -> None:
    widths = itertools.count(16, 2)
    lock = threading.Lock()

    def answer(request: dict) -> Reply:
        if "Write a short analysis" in request["messages"][-1]["content"]:
            return Reply("A fine network; try a wider one next.", delay_s=LATENCY_S)
        with lock:
            width = next(widths)
        code = CNN.replace("width: int = 32", f"width: int = {width}")
        return Reply(f"Intent: a VGG-style CNN of width {width}.\n\n```python\n{code}```\n", delay_s=LATENCY_S)

    made = []
    make = context.make_executor
    context.make_executor = lambda *args: made.append(make(*args)) or made[-1]
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLMServer(default=answer) as server:
        settings = load_settings(
            task="digits",
            model="openai/bench-model",
            api_base=server.url,
            budget=CANDIDATES,
            batch=CANDIDATES,
            slots=SLOTS,
            queue=QUEUE,
            threads=1,
            archive=Path(tmp) / "a.db",
        )
        started = time.monotonic()
        summary = run_lib.start(settings)
        wall = time.monotonic() - started
    busy = made[0].busy
    first, last = min(b[1] for b in busy), max(b[2] for b in busy)
    used = sum(end - start for _, start, end in busy)
    utilisation = used / (SLOTS * (last - first))
    print("# Overlap of proposing and training\n")
    print(
        f"`.venv/bin/python benchmarks/overlap.py` on {platform.machine()}, {len(os.sched_getaffinity(0))} CPU cores, "
        f"{time.strftime('%Y-%m-%d')}. LLM latency {LATENCY_S:.0f} s per call (proposals and analyses), "
        f"{CANDIDATES} candidates (CNN seed variants on digits), {SLOTS} slots, queue {QUEUE}.\n"
    )
    print("| candidates trained | sandbox runs | run wall s | window s | slot-busy s | utilisation |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {summary['trained']} | {len(busy)} | {wall:.1f} | {last - first:.1f} | {used:.1f} | {utilisation:.1%} |")
    print(f"\nTarget: at least 95% busy. Wait for the first proposal: {first - started:.1f} s (excluded).")


if __name__ == "__main__":
    main()
