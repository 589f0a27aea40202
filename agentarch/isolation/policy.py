"""What a job runs under, settled before it starts: the isolation mode and the resource limits.

The mode is chosen from what this host can give (bubblewrap, or the process mode and its gaps) and an
untrusted candidate is refused where the process mode cannot contain it; the limits are a job's budget
and the prlimit command line that sets the per-process ones. The evaluator and the CLI decide here
once; the job only applies what was decided.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from agentarch.errors import AgentarchError
from agentarch.isolation.bubblewrap import bubblewrap_problem
from agentarch.isolation.process_mode import process_mode_gaps

IsolationMode = Literal["bubblewrap", "process"]


class SandboxError(AgentarchError, RuntimeError):
    """The sandbox itself could not run (not the candidate's fault); the message says what to fix."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 6144
    timeout_s: float = 900.0
    smoke_timeout_s: float = 120.0
    max_pids: int = 64
    max_file_mb: int = 1024
    max_open_files: int = 256
    threads: int = 1

    @property
    def cpu_seconds(self) -> int:
        """CPU-time cap: the wall-clock budget on every thread, so it only binds a runaway."""
        return int(self.timeout_s * max(1, self.threads) + 30)


def prlimit_args(limits: Limits, cap_address_space: bool) -> list[str]:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        raise SandboxError("prlimit (util-linux) is not installed; it sets the sandbox's resource limits")
    args = [
        prlimit,
        f"--cpu={limits.cpu_seconds}",
        f"--fsize={limits.max_file_mb * 2**20}",
        f"--nofile={limits.max_open_files}",
        "--core=0",
    ]
    if cap_address_space:
        args.append(f"--as={limits.memory_mb * 2**20}")
    return args + ["--"]


def resolve_isolation(requested: str) -> IsolationMode:
    """Turn the configured isolation into the mode to use, refusing a bubblewrap that cannot work."""
    problem = bubblewrap_problem()
    if requested == "process":
        return "process"
    if problem is None:
        return "bubblewrap"
    if requested == "bubblewrap":
        raise SandboxError(f"isolation=bubblewrap was asked for, but {problem}")
    return "process"


def refuse_untrusted(isolation: IsolationMode, trusted: Callable[[], bool], weak_sandbox_ok: bool) -> None:
    """Raise when the process mode cannot contain this candidate and nobody said to run it anyway.

    Code rendered from the project's own search-space templates (`trusted()`) is known; an LLM answer
    or a user's file is not, and runs in a mode with gaps only with `weak_sandbox_ok`. `trusted` is
    asked only where there are gaps, so the common case renders no template.
    """
    gaps = process_mode_gaps() if isolation == "process" else []
    if gaps and not weak_sandbox_ok and not trusted():
        raise SandboxError(
            "refusing to run a candidate that was not rendered from a search space in the weak 'process' sandbox: "
            + "; ".join(gaps)
            + ". Install bubblewrap (apt-get install bubblewrap), or accept the gap with "
            "weak_sandbox_ok = true in agentarch.toml (AGENTARCH_WEAK_SANDBOX_OK=1); see docs/sandbox.md"
        )


FALLBACK_WARNING = (
    "WARNING: candidates run in the 'process' sandbox, without namespaces: {why}. They run as an unprivileged "
    "uid (or capless root), under seccomp, rlimits and a pids cgroup, and Landlock keeps them to the runtime "
    "view and their scratch directory; they can still see the host's process list and network interfaces. "
    "Install bubblewrap for full isolation; see docs/sandbox.md."
)
