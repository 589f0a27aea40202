"""The README's main job (`agentarch run --task digits`: 20 candidates, offline, on its defaults), before and after.

Run from the repository root:  .venv/bin/python benchmarks/main_job.py --before REV > benchmarks/main_job.md
Or one version, two scoring modes:  .venv/bin/python benchmarks/main_job.py --scoring trusted graph [--task stdlib-bytes]
Or one version, cold starts against warm sandboxes:  .venv/bin/python benchmarks/main_job.py --warm

Both versions are installed side by side from source (REV from git; "after" from `--after REV`, or the
working tree)
into their own folders and run alternately, each time on a fresh archive with the same prepared
data and the same seeds, so both see the same machine load. Per run it records the wall time of the
whole command, the candidates trained, how many sandbox jobs were started (`evaluation_starts`),
the best validation accuracy, the seconds spent inside sandbox jobs (the rest is the loop, start-up and exit), the
host's training seconds (their share of the wall time), the 1-minute load average at the run's start, and
which networks were trained (a short hash of the sorted architectures). The proposals in flight race for the slot
and plan from the outcomes recorded so far, so two runs of one version may train different networks (another
workload): compare wall times only between runs whose networks match, or compare the time outside the jobs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentarch.tasks.registry import get_task

REPO = Path(__file__).resolve().parent.parent


def install(source: Path, target: Path) -> None:
    """Install agentarch (its code only; the dependencies are this interpreter's) from `source` into `target`."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", target, source],
        check=True,
    )


def checkout(rev: str, into: Path) -> Path:
    """The tree of `rev`, exported from git (no worktree left behind)."""
    into.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def main_job(
    site: Path, archive: Path, cache: Path, task: str = "digits", settings: dict[str, str] | None = None
) -> dict[str, Any]:
    """One run of the README's main job with the agentarch installed in `site` (on `task`, and with `settings` as
    AGENTARCH_* variables, such as {"SCORING": "graph"}; else that version's defaults)."""
    env = {**os.environ, "PYTHONPATH": str(site), "AGENTARCH_CACHE_DIR": str(cache)}
    env |= {f"AGENTARCH_{key}": value for key, value in (settings or {}).items()}
    load = os.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "agentarch.cli", "run", "--task", task, "--archive", str(archive)],
        cwd=archive.parent,
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    db = sqlite3.connect(archive)
    trained = db.execute("SELECT COUNT(*) FROM candidates WHERE status = 'trained'").fetchone()[0]
    jobs = db.execute("SELECT COALESCE(SUM(started), 0) FROM evaluation_starts").fetchone()[0]
    order = "DESC" if get_task(task).direction == "max" else "ASC"  # bits per byte: lower is better
    best, test = db.execute(
        "SELECT val_accuracy, test_accuracy FROM evaluations WHERE val_accuracy IS NOT NULL "
        f"ORDER BY val_accuracy {order}, id LIMIT 1"
    ).fetchone()
    in_jobs = db.execute("SELECT COALESCE(SUM(wall_seconds), 0) FROM evaluations").fetchone()[0]
    training = db.execute("SELECT COALESCE(SUM(train_seconds), 0) FROM evaluations").fetchone()[0]
    archs = "\n".join(a or "" for (a,) in db.execute("SELECT arch FROM candidates ORDER BY arch"))
    networks = hashlib.sha256(archs.encode()).hexdigest()[:8]
    return {
        "wall_s": wall,
        "trained": trained,
        "sandbox_jobs": jobs,
        "best_val": best,
        "its_test": test,
        "in_jobs_s": in_jobs,
        "train_s": training,
        "load": load,
        "networks": networks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git revision to compare against")
    parser.add_argument("--after", help="git revision to measure (default: the working tree)")
    parser.add_argument(
        "--scoring", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two scoring modes of one version instead"
    )
    parser.add_argument(
        "--warm", action="store_true", help="compare cold starts (before) with warm sandboxes (after) of one version"
    )
    parser.add_argument("--task", default="digits", help="the task the job runs (digits is the README's)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each version, alternating")
    parser.add_argument("--budget", type=int, help="candidates per run (default: the run's own, 20)")
    args = parser.parse_args()
    if (bool(args.before) + bool(args.scoring) + args.warm) != 1:
        parser.error("give one of --before REV (two versions), --scoring BEFORE AFTER (two scoring modes), --warm")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sites = {"before": root / "before-site", "after": root / "after-site"}
        install(checkout(args.after, root / "after-src") if args.after else REPO, sites["after"])
        if args.scoring or args.warm:
            sites["before"] = sites["after"]
        else:
            install(checkout(args.before, root / "before-src"), sites["before"])
        settings: dict[str, dict[str, str]] = {"before": {}, "after": {}}
        if args.scoring:
            settings = {version: {"SCORING": mode} for version, mode in zip(("before", "after"), args.scoring)}
        if args.warm:
            settings = {"before": {"WARM_SANDBOXES": "0"}, "after": {"WARM_SANDBOXES": "1"}}
        if args.budget:
            settings = {version: {**said, "BUDGET": str(args.budget)} for version, said in settings.items()}
        cache = root / "cache"
        main_job(
            sites["after"], root / "warm-up.db", cache, args.task, settings["after"]
        )  # prepares the split both versions then read
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for repeat in range(args.repeats):
            for version in ("before", "after"):
                archive = root / f"{version}-{repeat}.db"
                runs[version].append(main_job(sites[version], archive, cache, args.task, settings[version]))
    before, after = (statistics.mean(r["wall_s"] for r in runs[v]) for v in ("before", "after"))
    print("# The README's main job, before and after\n")
    print(
        f"`agentarch run --task {args.task}` ({args.budget or 20} candidates, offline REA, slots 1) on {platform.node()}: "
    )
    after_name = f"`{args.after}`" if args.after else "the working tree"
    if args.scoring:
        said = f"{after_name}, before = `--scoring {args.scoring[0]}`, after = `--scoring {args.scoring[1]}`"
    elif args.warm:
        said = f"{after_name}, before = `AGENTARCH_WARM_SANDBOXES=0` (cold starts), after = warm sandboxes"
    else:
        said = f"before = `{args.before}`, after = {after_name}"
    print(f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {said};")
    print(f"{args.repeats} runs of each, alternating, on fresh archives.\n")
    print(
        "| version | run | load | wall (s) | in sandbox jobs (s) | outside them (s) | training (s) | training share "
        "| trained | sandbox jobs | best val | its test | networks |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for version in ("before", "after"):
        for i, r in enumerate(runs[version]):
            print(
                f"| {version} | {i + 1} | {r['load']:.2f} | {r['wall_s']:.1f} | {r['in_jobs_s']:.1f} "
                f"| {r['wall_s'] - r['in_jobs_s']:.1f} | {r['train_s']:.1f} | {r['train_s'] / r['wall_s']:.2f} "
                f"| {r['trained']} | {r['sandbox_jobs']} | {r['best_val']:.4f} | {r['its_test']:.4f} "
                f"| `{r['networks']}` |"
            )
    print(f"\nMean wall time: before {before:.1f} s, after {after:.1f} s: {after / before - 1:+.0%}.")
    outside = {v: statistics.mean(r["wall_s"] - r["in_jobs_s"] for r in runs[v]) for v in ("before", "after")}
    print(f"Mean time outside sandbox jobs: before {outside['before']:.1f} s, after {outside['after']:.1f} s.")


if __name__ == "__main__":
    main()
