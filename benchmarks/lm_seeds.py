"""The built-in LM task (stdlib-bytes): bits per byte of the lm seeds and the time per candidate here.

Each seed in archive/seeds/lm/ goes through the real evaluation path (sandbox job: smoke run, then
training with the task's defaults, then host-side scoring), one after another on this machine.
Writes benchmarks/lm_seeds.md. Run: .venv/bin/python benchmarks/lm_seeds.py
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

from agentarch.evaluation.stages import RunRequest, execute
from agentarch.isolation.policy import Limits, resolve_isolation
from agentarch.tasks.registry import get_task

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    task = get_task("stdlib-bytes")
    train = {"epochs": task.epochs, "batch_size": task.batch_size, "lr": task.lr, "weight_decay": task.weight_decay}
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for seed in sorted((REPO / "archive" / "seeds" / "lm").glob("*.py")):
            started = time.perf_counter()
            result = execute(
                RunRequest(
                    code=seed.read_text(),
                    task=task.name,
                    train={**train, "seed": 0},
                    limits=Limits(timeout_s=1800, smoke_timeout_s=120, threads=os.cpu_count() or 1),
                    isolation=resolve_isolation("auto"),
                    cache_dir=Path(cache),
                    data_dir=None,
                    split_seed=0,
                )
            )
            wall = time.perf_counter() - started
            assert result.status == "trained", result.error
            rows.append(
                f"| lm/{seed.name} | {result.smoke['params']:,} | {result.scores['val_accuracy']:.3f} | "
                f"{result.scores['test_accuracy']:.3f} | {result.trained['train_seconds']:.0f} | {wall:.0f} |"
            )
            print(rows[-1], flush=True)
    header = [
        "# stdlib-bytes: the lm seeds",
        "",
        f"Recorded by `benchmarks/lm_seeds.py` on {platform.node()} ({os.cpu_count()} CPU cores, no GPU), "
        f"Python {platform.python_version()}, with the task's defaults ({task.epochs} epoch, batch "
        f"{task.batch_size}, lr {task.lr}); bits per byte, lower is better (a uniform guess is 8).",
        "Times are for one candidate alone on the machine (the candidate wall includes the sandbox's start).",
        "",
        "| seed | parameters | val bits/byte | test bits/byte | train s | candidate wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    (REPO / "benchmarks" / "lm_seeds.md").write_text("\n".join([*header, *rows]) + "\n")


if __name__ == "__main__":
    main()
