"""What an orchestrator kill costs, with and without training checkpoints: epochs trained again per candidate in flight.

Run from the repository root:  .venv/bin/python benchmarks/checkpoint_kill.py > benchmarks/checkpoint_kill.md

A small digits job (`agentarch run --task digits`, offline: regularized evolution over NAS-Bench-201 cells, SLOTS
candidates training at once, EPOCHS epochs each) is SIGKILLed once every candidate in flight has trained KILL_AT
epochs, then `--resume`d to its end. The killed run always checkpoints every epoch (`checkpoint_s = 0`), which is how
this script sees each candidate's progress at the kill: the epoch of the latest checkpoint kept beside the archive
(the training after it, under one epoch, is lost either way and not counted). The resume runs either with checkpoints
(each candidate continues from its latest one) or without (the kept checkpoints removed first: each trains from
scratch, as before issue 26). Epochs re-trained = progress at the kill - the epoch the new job resumed from (the evaluation's
`timings.resumed_epoch`, 0 without). Both modes run the same candidates (the same seed and plan) on fresh archives.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SLOTS, EPOCHS, KILL_AT = 2, 16, 5
ORDER = (True, False, False, True)
"""With and without checkpoints, twice each in ABBA order, so a load that drifts over the runs weighs on both alike."""


def command(archive: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agentarch.cli",
        "run",
        "--task",
        "digits",
        "--archive",
        str(archive),
        "--json",
        *args,
    ]


def kept_epochs(archive: Path) -> dict[str, int]:
    """The epoch of each proposal's latest checkpoint kept beside the archive (from each file's header)."""
    found = {}
    for path in Path(f"{archive}.resumes").glob("*/*.safetensors"):
        try:
            data = path.read_bytes()
            header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        except (FileNotFoundError, ValueError):  # replaced while read
            continue
        found[path.parent.name] = json.loads(header["__metadata__"]["agentarch"])["epoch"]
    return found


def measure(checkpoints: bool, cache_dir: Path) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="ckpt-bench-"))
    archive = folder / "a.db"
    env = {**os.environ, "AGENTARCH_THREADS": "1", "AGENTARCH_CACHE_DIR": str(cache_dir), "AGENTARCH_CHECKPOINT_S": "0"}
    args = ("--budget", str(SLOTS), "--slots", str(SLOTS), "--queue", "0", "--epochs", str(EPOCHS))
    victim = subprocess.Popen(
        command(archive, *args), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    progress: dict[str, int] = {}
    while victim.poll() is None and not (len(progress) == SLOTS and min(progress.values()) >= KILL_AT):
        time.sleep(0.05)
        progress = kept_epochs(archive)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    progress = kept_epochs(archive)
    run_id = sqlite3.connect(archive).execute("SELECT id FROM runs").fetchone()[0]
    if not checkpoints:  # nothing kept to resume from: every candidate in flight trains from scratch, as before
        shutil.rmtree(f"{archive}.resumes")
    began = time.perf_counter()
    resumed = subprocess.run(command(archive, "--resume", run_id), cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = sqlite3.connect(archive).execute(
        "SELECT c.proposal_key, json_extract(e.timings, '$.resumed_epoch'), json_extract(e.timings, '$.epochs_done'),"
        " e.train_seconds FROM candidates c JOIN evaluations e ON e.candidate_id = c.id ORDER BY c.proposal_key"
    )
    candidates = []
    for key, resumed_epoch, done, seconds in rows:
        at_kill = progress.get(hashlib.sha256(key.encode()).hexdigest()[:40], 0)
        candidates.append(
            {"key": key, "at_kill": at_kill, "resumed": resumed_epoch or 0, "done": done, "train_s": seconds}
        )
    return {"checkpoints": checkpoints, "resume_wall_s": wall, "candidates": candidates}


def main() -> None:
    sys.path.insert(0, str(REPO))
    from agentarch.tasks.preparation import prepare
    from agentarch.tasks.registry import get_task

    cache_dir = Path(tempfile.mkdtemp(prefix="ckpt-cache-"))
    prepare(get_task("digits"), cache_dir)
    results = [measure(flag, cache_dir) for flag in ORDER]
    print("# An orchestrator kill, with and without training checkpoints\n")
    print(
        f"`python benchmarks/checkpoint_kill.py` on {platform.node()} ({os.cpu_count()} cores, shared), "
        f"{time.strftime('%Y-%m-%d')}: digits, offline (REA over NAS-Bench-201 cells), {SLOTS} candidates training "
        f"at once, {EPOCHS} epochs each, one CPU thread per sandbox; the orchestrator SIGKILLed once every candidate "
        f"in flight had a checkpoint at epoch {KILL_AT} or later, then `--resume`d.\n"
    )
    print(
        "| run | resume | candidate | progress at the kill (epoch) | resumed from | epochs re-trained | epochs done "
        "| resumed job's host train s |"
    )
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for run, result in enumerate(results, 1):
        mode = "with checkpoints" if result["checkpoints"] else "without"
        for c in result["candidates"]:
            print(
                f"| {run} | {mode} | {c['key'].rsplit('/', 1)[1]} | {c['at_kill']} | {c['resumed']} | "
                f"{c['at_kill'] - c['resumed']} | {c['done']:g} | {c['train_s']:.1f} |"
            )
    print("\n| resume | epochs re-trained per candidate in flight (mean) | resumed runs' wall time (s) |")
    print("| --- | ---: | --- |")
    for flag in (True, False):
        runs = [r for r in results if r["checkpoints"] is flag]
        lost = [c["at_kill"] - c["resumed"] for r in runs for c in r["candidates"]]
        walls = ", ".join(f"{r['resume_wall_s']:.1f}" for r in runs)
        print(f"| {'with checkpoints' if flag else 'without'} | {sum(lost) / len(lost):.1f} | {walls} |")


if __name__ == "__main__":
    main()
