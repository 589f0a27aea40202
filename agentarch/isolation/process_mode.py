"""The process mode: what it cannot guarantee here, and its runner's privileges, command line and Landlock rules.

Where bubblewrap is missing or cannot create namespaces, the runner runs without namespaces: setpriv
drops its privileges, and it confines its own file access, signals and ptrace with Landlock
(sandbox/landlock.py) to the rules made here. Its own module because its guarantees hang on the
kernel (process_mode_gaps) and its confinement is the runner's, not a mount namespace's.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from functools import cache
from pathlib import Path

from agentarch.isolation.launch import RUNNER, Program, boot, gpu_devices, runner_dir
from agentarch.isolation.privileges import drop_privileges, host_is_root
from agentarch.isolation.runtime_view import runtime_view
from agentarch.runner import landlock


@cache
def _readable_by_candidate(paths: tuple[Path, ...]) -> bool:
    """Whether CANDIDATE_UID can read every path (the process mode has no mount namespace to help).

    Asked once per set of paths in a process: the answer is a probe process, and a task's paths and
    the runtime's do not change between its jobs.
    """
    probe = [
        *drop_privileges(True),
        sys.executable,
        "-S",
        "-c",
        "import os, sys; sys.exit(not all(os.access(p, os.R_OK) for p in sys.argv[1:]))",
        *map(str, paths),
    ]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"}).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def drops_to_candidate_uid(inputs_dir: Path, program: Program = RUNNER) -> bool:
    """Whether the process mode's `program` can run as CANDIDATE_UID: a root host, and that uid reads what it runs."""
    return host_is_root() and _readable_by_candidate(
        (
            Path(sys.executable).resolve(),
            Path(sysconfig.get_paths()["stdlib"]),
            *_code(program),
            Path(inputs_dir),
            *(p for p in runtime_view(program.packages).packages if p.name in program.packages),
        )
    )


def _code(program: Program) -> tuple[Path, ...]:
    """The program's own files: the runner package; or a module file, and the runner's Landlock module it loads."""
    return (runner_dir(),) if program.module is None else (program.module, runner_dir() / "landlock.py")


def process_mode_gaps() -> list[str]:
    """What the process mode cannot guarantee on this kernel, compared with bubblewrap (empty: it holds).

    With Landlock ABI 6 or later the runner confines itself to the runtime view, its inputs and its
    scratch directory and can signal or trace nothing outside its domain, so files, labels, the
    orchestrator's environment and processes are out of reach as they are under bubblewrap.
    """
    version = landlock.abi()
    if version < 1:
        return [
            "Landlock is not available (Linux 5.13 or later with landlock among the LSMs): a candidate "
            "could read every file this user can, validation and test labels included"
        ]
    if version < 6:
        return [f"Landlock ABI {version} cannot keep a candidate from signalling other processes (ABI 6, Linux 6.12)"]
    return []


def landlock_rules(scratch: Path, inputs_dir: Path, gpu: str | None, program: Program = RUNNER) -> dict[str, list[str]]:
    """What the process-mode runner (or another `program`) may touch once it confines itself (sandbox/landlock.py)."""
    read = [
        *map(str, runtime_view(program.packages).paths),
        *map(str, _code(program)),
        str(inputs_dir),
        "/proc/self",
        "/proc/cpuinfo",
        "/proc/meminfo",
        "/sys/devices/system/cpu",
    ]
    return {
        "read": read,
        "write": [str(scratch)],
        "devices": ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", *gpu_devices(gpu)],
    }


def process_args(scratch: Path, to_candidate_uid: bool, program: Program = RUNNER) -> list[str]:
    """The process mode's command line after the limits: the privilege drop, then the program on its spec in scratch."""
    root = runner_dir().parent if program.module is None else program.module.parent
    return [*drop_privileges(to_candidate_uid), *boot(str(root), str(scratch / "spec.json"), program)]
