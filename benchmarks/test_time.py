"""Side-by-side wall time of test files: each file as a git revision has it (`--before`, default main), then as the
working tree has it, one after the other in fresh pytest processes, with the load average beside each figure.

Why side by side: the machine these tests run on is shared, so a figure measured an hour apart says more about the
neighbours than about the change; two runs back to back under the same load give a ratio worth reading.

    .venv/bin/python benchmarks/test_time.py tests/test_kinds.py tests/test_loop.py::test_a_run_killed_with_...

An argument `FILE::NAME` times only that test of the file. The earlier version runs as before_<file>.py beside the file
(pytest collects a file given by path whatever its name); it is removed afterwards. Prints one Markdown table row per run.

`--workers 2,0 tests` times the working tree's targets (here the whole suite) once per pytest-xdist worker count
instead, back to back (0: one process): what two workers buy on this machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load() -> str:
    """The one-minute load average (other sessions' work included)."""
    return Path("/proc/loadavg").read_text().split()[0]


def timed(target: str, log: Path, workers: int = 0) -> tuple[float, int, str]:
    """Seconds, exit code and pytest's last line of one run of `target` on `workers` xdist workers (0: one process)."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-n",
        str(workers),
        "-p",
        "no:cacheprovider",
        "--durations=5",
        target,
    ]
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=os.environ).returncode
    seconds = time.monotonic() - started
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return seconds, code, lines[-1] if lines else ""


def row(target: str, version: str, run: str, log: Path, workers: int = 0) -> None:
    """Time one run and print its table row, the load average before and after beside it."""
    start_load = load()
    seconds, code, last = timed(run, log, workers)
    print(f"| {target} | {version} | {seconds:.1f} | {start_load} -> {load()} | rc {code}: {last} |", flush=True)


def compare_versions(target: str, before_rev: str, logs: Path) -> None:
    """`target` as `before_rev` has it, then as the working tree has it."""
    path, _, name = target.partition("::")
    before = REPO / Path(path).parent / f"before_{Path(path).name}"  # beside it: the same conftest.py files
    shown = subprocess.run(["git", "show", f"{before_rev}:{path}"], cwd=REPO, capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"{path} is not in {before_rev}: {shown.stderr.strip()}")
    before.write_text(shown.stdout)
    try:
        for version, file in ((before_rev, before), ("worktree", REPO / path)):
            run = str(file.relative_to(REPO)) + (f"::{name}" if name else "")
            row(target, version, run, logs / f"test_time_{Path(path).stem}_{version.replace('/', '_')}.log")
    finally:
        before.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", help="tests/FILE.py or tests/FILE.py::TEST")
    parser.add_argument("--before", default="main", help="the git revision of the earlier version (default main)")
    parser.add_argument("--logs", type=Path, default=Path("/tmp"), help="where each run's pytest output goes")
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        help="time the working tree with each xdist worker count, e.g. 2,0 (0: one process) instead of comparing versions",
    )
    args = parser.parse_args(argv)
    print("| target | version | seconds | load before -> after | pytest |")
    print("| --- | --- | ---: | --- | --- |")
    for target in args.targets:
        if args.workers:
            for workers in args.workers:
                log = args.logs / f"test_time_{Path(target).stem}_n{workers}.log"
                row(target, f"-n {workers}", target, log, workers)
        else:
            compare_versions(target, args.before, args.logs)


if __name__ == "__main__":
    main()
