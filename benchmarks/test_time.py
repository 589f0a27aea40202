"""Side-by-side wall time of test files: each file as a git revision has it (`--before`, default main), then as the
working tree has it, one after the other in fresh pytest processes, with the load average beside each figure.

Why side by side: the machine these tests run on is shared, so a figure measured an hour apart says more about the
neighbours than about the change; two runs back to back under the same load give a ratio worth reading.

    .venv/bin/python benchmarks/test_time.py tests/test_kinds.py tests/test_loop.py::test_a_run_killed_with_...

An argument `FILE::NAME` times only that test of the file. The earlier version runs as before_<file>.py beside the file
(pytest collects a file given by path whatever its name); it is removed afterwards. Prints one Markdown table row per run.
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


def timed(target: str, log: Path) -> tuple[float, int, str]:
    """Seconds, exit code and pytest's last line of one run of `target`."""
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "--durations=5", target]
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=os.environ).returncode
    seconds = time.monotonic() - started
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return seconds, code, lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", help="tests/FILE.py or tests/FILE.py::TEST")
    parser.add_argument("--before", default="main", help="the git revision of the earlier version (default main)")
    parser.add_argument("--logs", type=Path, default=Path("/tmp"), help="where each run's pytest output goes")
    args = parser.parse_args(argv)
    print("| target | version | seconds | load before -> after | pytest |")
    print("| --- | --- | ---: | --- | --- |")
    for target in args.targets:
        path, _, name = target.partition("::")
        before = REPO / Path(path).parent / f"before_{Path(path).name}"  # beside it: the same conftest.py files
        shown = subprocess.run(["git", "show", f"{args.before}:{path}"], cwd=REPO, capture_output=True, text=True)
        if shown.returncode != 0:
            parser.error(f"{path} is not in {args.before}: {shown.stderr.strip()}")
        before.write_text(shown.stdout)
        try:
            for version, file in ((args.before, before), ("worktree", REPO / path)):
                chosen = str(file.relative_to(REPO)) + (f"::{name}" if name else "")
                start_load = load()
                log = args.logs / f"test_time_{Path(path).stem}_{version.replace('/', '_')}.log"
                seconds, code, last = timed(chosen, log)
                print(f"| {target} | {version} | {seconds:.1f} | {start_load} -> {load()} | rc {code}: {last} |")
                sys.stdout.flush()
        finally:
            before.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
