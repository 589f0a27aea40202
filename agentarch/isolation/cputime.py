"""The CPU time a sandbox job has used, read from outside its processes: what the host holds a training budget to.

Everything the runner reports about its own training (epochs, steps, seconds) comes from the process that runs
candidate code, so it is the candidate's word. The kernel's accounting is not: a job's CPU time is read here, by
the host, from files no sandboxed process can write.

Two sources, the first that this job has:

- **its cgroup's counter** (cgroup v1 `cpuacct.usage`, in nanoseconds; cgroup v2 `cpu.stat`'s `usage_usec`, which
  v2 keeps for every group whether or not the cpu controller is delegated). The kernel charges every thread of
  every process that ever ran in the group, including processes that already exited and were never waited for,
  and the candidate cannot leave the group (`cgroup.procs` is root's, cgroups.py). Nothing it does hides CPU time
  from this counter, in either isolation mode;
- **/proc**, where no accounting group could be made (an ordinary user without a delegated cgroup): the sum of
  `utime + stime + cutime + cstime` (/proc/PID/stat) over the job's processes (its pids cgroup's members, else the
  process tree under the job's first process), plus, for a process seen before that is gone, the time it had when
  last seen. In the process mode this is exact: seccomp allows no new process, so the runner is the job's one
  process, and its `utime + stime` covers all its threads, exited ones included. A forked child's time would stay
  counted once it was seen (or once its parent reaped it), but a child that lives less than one poll and whose
  parent ignores SIGCHLD (so nobody's `cutime` gets its time) would go uncounted: so under bubblewrap too, a job
  whose cgroup keeps no CPU account may not fork (seccomp.py, `SandboxJob.forks`). The gap is why the cgroup
  counter comes first.

CPU time rather than wall time: a job's wall time grows with whatever else runs on the machine (the slots beside
it, another session's jobs), its CPU time hardly does, so a budget in CPU seconds holds on a busy host. On a GPU,
CPU time does not count what the device computes (docs/sandbox.md says what bounds that).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

CpuSource = Literal["cgroup", "proc"]


def cgroup_usage_s(dirs: Iterable[Path]) -> float | None:
    """The CPU seconds the kernel charged to a cgroup, from the first of `dirs` that keeps an account (v1 cpuacct,
    v2 cpu.stat); None when none does."""
    for d in dirs:
        try:
            return int((d / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            pass
        try:
            for line in (d / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError):
            pass
    return None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (field 3 on), which may itself hold spaces and parentheses,
    and any byte but NUL: any process can name itself (PR_SET_NAME, /proc/self/comm) with bytes that are not UTF-8,
    so the file is read as bytes, and only the fields after the name's last `)` (numbers and a state letter) are
    decoded."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].decode("ascii", "replace").split()
    except (OSError, IndexError):
        return None


def process_seconds(pid: int) -> tuple[str, float] | None:
    """A process's start time (which tells a live pid from a reused one) and its CPU seconds: its own threads'
    (`utime + stime`) and its waited-for children's (`cutime + cstime`); None when it is gone."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return fields[19], (utime + stime + cutime + cstime) / CLOCK_TICKS


def descendants(root: int) -> set[int]:
    """`root` and every process below it in the process tree (by each process's parent pid in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


class CpuMeter:
    """A job's CPU seconds so far, from its cgroup's counter or, without one, from /proc (module docstring).

    `members` lists the job's processes for the /proc source: its pids cgroup's members where it has one, else
    the tree under its first process. Each reading is at least the one before (a process's figures only grow, and
    one that is gone keeps the time it was last seen with).
    """

    def __init__(self, accounting: Callable[[], float | None], members: Callable[[], set[int]]) -> None:
        self._accounting, self._members = accounting, members
        self.source: CpuSource = "cgroup" if accounting() is not None else "proc"
        self._seen: dict[tuple[int, str], float] = {}  # (pid, start) -> CPU seconds when last read
        self._last = 0.0

    def seconds(self) -> float:
        """CPU seconds every process of the job has used since it started (or since this meter could first see it)."""
        if self.source == "cgroup":
            used = self._accounting()
            if used is not None:
                self._last = max(self._last, used)
                return self._last
        for pid in self._members():
            found = process_seconds(pid)
            if found is not None:
                start, used = found
                self._seen[(pid, start)] = max(used, self._seen.get((pid, start), 0.0))
        self._last = max(self._last, sum(self._seen.values()))
        return self._last
