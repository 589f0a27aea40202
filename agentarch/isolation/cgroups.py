"""A job's cgroups: its pids, memory, cpu and cpuacct groups, the kill that reaches every process, and the stale sweep.

Joined as root before anything else runs, a job's group caps its process count (and memory where
it can) and lets the host kill every process the evaluation started, however it forked or detached.
Its own module because it talks to the kernel's cgroup file systems (v1 or a delegated v2 subtree)
and outlives a job: orchestrators killed mid-job leave groups that the next job sweeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from pathlib import Path

from agentarch.isolation.cputime import cgroup_usage_s
from agentarch.isolation.owners import owner_gone
from agentarch.isolation.scratch import SCRATCH_PREFIX, reap_scratch

STALE_CGROUP_S = 6 * 3600
"""A job's cgroup older than this with no process left was orphaned by a killed orchestrator."""


def _owner_gone(name: str) -> bool:
    """Whether the orchestrator named in a job's cgroup (`<scratch>.<pid>-<start>`) no longer runs."""
    return owner_gone(name.rpartition(".")[2])


def sweep_stale(parent: Path) -> None:
    """Reap what orchestrators that were killed mid-job left: their jobs' processes, cgroups and scratch.

    The parent-death signal ends a job with its orchestrator, except when the orchestrator dies
    before the signal is armed; a job whose owner is gone is killed here, at the next job's start.
    An empty cgroup past STALE_CGROUP_S is removed too; the age guard keeps a concurrent
    orchestrator's just-made cgroup (not yet joined by its process) safe.
    """
    try:
        jobs = [d for d in parent.iterdir() if d.is_dir()]
    except OSError:
        return
    for job in jobs:
        try:
            if _owner_gone(job.name):
                Cgroup.at(job).kill_all()
                scratch = Path(tempfile.gettempdir()) / job.name.rpartition(".")[0]
                if scratch.name.startswith(SCRATCH_PREFIX):
                    reap_scratch(scratch)
            elif time.time() - job.stat().st_mtime <= STALE_CGROUP_S:
                continue
            job.rmdir()
        except OSError:
            pass


CPU_SHARES_PER_CORE = 1024
CPU_SHARES_MAX = 262144
"""cgroup v1 `cpu.shares`: a nice-0 task's weight, and the kernel's cap. All jobs together (`cpu/agentarch`) weigh
as much as one busy nice-0 thread per core; each job's group weighs the same as every other job's."""


class Cgroup:
    """A per-evaluation cgroup (v1 hierarchies or a delegated v2 subtree), where the host may make one.

    Besides the pids (and memory) controller, a job gets a cpu group of its own where the host has the
    controller: the scheduler then shares CPU time between jobs, not between sessions. Without it, every
    session is an autogroup the scheduler treats as a peer of a whole job (sched_autogroup), so a candidate
    that forks processes which each call setsid() takes most of the machine from the jobs beside it (slower
    training, an inflated latency_ms, a smoke stage pushed past its timeout).
    """

    def __init__(self, name: str, max_pids: int, memory_bytes: int | None) -> None:
        self.dirs: list[Path] = []
        self.problem: str | None = None
        try:
            self._create(name, max_pids, memory_bytes)
        except OSError as err:
            self.remove()
            self.problem = f"cannot create a cgroup ({err}); process count is not capped"

    def _create(self, name: str, max_pids: int, memory_bytes: int | None) -> None:
        root = Path("/sys/fs/cgroup")
        if (root / "pids" / "cgroup.procs").exists():  # cgroup v1
            for controller in ("pids", "memory", "cpu", "cpuacct"):
                sweep_stale(root / controller / "agentarch")
            self.dirs.append(self._mkdir(root / "pids" / "agentarch" / name, {"pids.max": str(max_pids)}))
            if (root / "cpu" / "cgroup.procs").exists():
                try:  # best effort: the job's CPU share, however many processes or sessions it makes
                    self.dirs.append(self._mkdir(root / "cpu" / "agentarch" / name, {}))
                except OSError:
                    pass
                else:
                    with contextlib.suppress(OSError):
                        (root / "cpu" / "agentarch" / "cpu.shares").write_text(
                            str(min(CPU_SHARES_MAX, CPU_SHARES_PER_CORE * (os.cpu_count() or 1)))
                        )
            cpuacct = root / "cpuacct"
            if (cpuacct / "cgroup.procs").exists() and cpuacct.resolve() != (root / "cpu").resolve():
                try:  # best effort: the job's CPU-time account (cputime.py); without it the host reads /proc
                    self.dirs.append(self._mkdir(cpuacct / "agentarch" / name, {}))
                except OSError:
                    pass
            if memory_bytes and (root / "memory" / "cgroup.procs").exists():
                try:  # best effort: without it, RLIMIT_AS still caps the address space on CPU hosts
                    self.dirs.append(
                        self._mkdir(root / "memory" / "agentarch" / name, {"memory.limit_in_bytes": str(memory_bytes)})
                    )
                except OSError:
                    try:
                        (root / "memory" / "agentarch" / name).rmdir()
                    except OSError:
                        pass
            return
        own = Path("/proc/self/cgroup").read_text().strip().splitlines()[-1].split("::", 1)[-1].lstrip("/")
        parent = root / own
        if "pids" not in (parent / "cgroup.subtree_control").read_text():
            raise OSError(f"the pids controller is not delegated to {parent}")
        limits = {"pids.max": str(max_pids)}
        if memory_bytes and "memory" in (parent / "cgroup.subtree_control").read_text():
            limits["memory.max"] = str(memory_bytes)
        self.dirs.append(self._mkdir(parent / f"agentarch-{name}", limits))

    @classmethod
    def at(cls, path: Path) -> Cgroup:
        """An existing cgroup directory (another orchestrator's job), to kill what is left in it."""
        found = cls.__new__(cls)  # adopted, not made: nothing of __init__'s creation applies
        found.dirs, found.problem = [path], None
        return found

    @staticmethod
    def _mkdir(path: Path, limits: dict[str, str]) -> Path:
        path.mkdir(parents=True)
        for key, value in limits.items():
            (path / key).write_text(value)
        return path

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        return found

    def cpu_seconds(self) -> float | None:
        """The CPU seconds the kernel charged to the job's group (v1 cpuacct, or a co-mounted cpu,cpuacct; v2's
        cpu.stat), every process that ever ran in it included; None without an account (cputime.py reads /proc then)."""
        return cgroup_usage_s(self.dirs)

    def kill_all(self) -> None:
        """Kill every process in the group, repeating until none is left (a fork can race one pass)."""
        if self.dirs and (self.dirs[0] / "cgroup.kill").exists():
            (self.dirs[0] / "cgroup.kill").write_text("1")
        for _ in range(200):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        for d in reversed(self.dirs):
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
