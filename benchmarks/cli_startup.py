"""How long the `agentarch` command takes before it does anything: its help, a sub-app's and a command's help, and
an argument error, before and after.

Run from the repository root:  .venv/bin/python benchmarks/cli_startup.py --before REV > benchmarks/cli_startup.md

Both versions are installed side by side from source (REV from git; "after" from `--after REV`, or the working
tree) into their own folders with this interpreter's dependencies, and each is run through its console script
(`bin/agentarch`, the entry point a user types), alternately, `--repeats` times per case, so both see the same
machine load. Each run is a fresh process: the figure is the whole command's wall time, interpreter start
included, which is what a person waits for at the prompt. The table gives each case's median and the ratio of the
medians, and below it the floor (`FLOOR`: the imports any Typer command with pydantic-settings pays) timed in the
same loop; the load averages are recorded at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from main_job import checkout, install  # the same installs as the main job's before and after (run as a script)

REPO = Path(__file__).resolve().parent.parent

CASES: dict[str, tuple[list[str], int]] = {
    "agentarch --help": (["--help"], 0),
    "agentarch archive --help": (["archive", "--help"], 0),
    "agentarch run --help": (["run", "--help"], 0),
    "agentarch run --epochs many (error)": (["run", "--epochs", "many"], 2),
}
"""What is timed: the arguments and the exit code each must end with (a run that ends otherwise stops the
benchmark, since its time would measure something else)."""


FLOOR = "import typer, typer.rich_utils, rich.console, pydantic_settings"
"""What any Typer CLI with Settings from pydantic-settings pays before its own code: timed beside the cases, as the
floor the start-up can approach."""


def floor(home: Path) -> float:
    """Seconds a fresh interpreter takes to import `FLOOR` and exit."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR], cwd=home, check=True)
    return time.perf_counter() - started


def working_tree(into: Path) -> Path:
    """The working tree's sources, copied: building from the checkout itself would leave build/ and an egg-info
    there, which pip then takes for an installed agentarch (tests/test_package.py copies the same folders)."""
    for folder in ("agentarch", "sandbox", "prompts", "archive/seeds"):
        shutil.copytree(REPO / folder, into / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / file, into / file)
    return into


def timed(site: Path, args: list[str], code: int, home: Path) -> float:
    """Seconds one `agentarch ARGS` of the version in `site` takes, start to exit."""
    env = {**os.environ, "PYTHONPATH": str(site), "HOME": str(home), "COLUMNS": "100"}
    env = {key: value for key, value in env.items() if not key.startswith("AGENTARCH_")}
    started = time.perf_counter()
    done = subprocess.run([str(site / "bin" / "agentarch"), *args], cwd=home, env=env, capture_output=True)
    seconds = time.perf_counter() - started
    if done.returncode != code:
        raise SystemExit(f"agentarch {' '.join(args)} exited {done.returncode}, not {code}:\n{done.stderr.decode()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--after", help="git revision to measure (default: the working tree)")
    parser.add_argument("--repeats", type=int, default=10, help="runs of each case and version, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sites = {"before": root / "before-site", "after": root / "after-site"}
        install(checkout(args.before, root / "before-src"), sites["before"])
        install(
            checkout(args.after, root / "after-src") if args.after else working_tree(root / "after-src"), sites["after"]
        )
        home = root / "home"  # no agentarch.toml is read from the checkout, no cache from a previous run
        home.mkdir()
        for version in sites:  # the first start of a fresh install compiles its bytecode: not what is measured
            timed(sites[version], ["--help"], 0, home)
        load_start = os.getloadavg()
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        seconds: dict[tuple[str, str], list[float]] = {(case, v): [] for case in CASES for v in sites}
        floors: list[float] = []
        for _ in range(args.repeats):
            for case, (case_args, code) in CASES.items():
                for version in sites:
                    seconds[case, version].append(timed(sites[version], case_args, code, home))
            floors.append(floor(home))
        load_end = os.getloadavg()
    after_name = f"`{args.after}`" if args.after else "the working tree"
    print("# `agentarch` start-up, before and after\n")
    print(
        f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {started}; before = "
        f"`{args.before}`, after = {after_name}; each version's console script, {args.repeats} runs of each case, "
        f"alternating. Load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in load_start)} at the start, "
        f"{' '.join(f'{x:.2f}' for x in load_end)} at the end.\n"
    )
    print("| command | before median (s) | after median (s) | after / before | before range (s) | after range (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case in CASES:
        before, after = seconds[case, "before"], seconds[case, "after"]
        print(
            f"| `{case}` | {statistics.median(before):.2f} | {statistics.median(after):.2f} "
            f"| {statistics.median(after) / statistics.median(before):.2f} "
            f"| {min(before):.2f}-{max(before):.2f} | {min(after):.2f}-{max(after):.2f} |"
        )
    print(
        f'\nThe floor, `python -c "{FLOOR}"` in the same loop: median {statistics.median(floors):.2f} s '
        f"(range {min(floors):.2f}-{max(floors):.2f})."
    )


if __name__ == "__main__":
    main()
