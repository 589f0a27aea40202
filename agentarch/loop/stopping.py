"""How a run is asked to stop: once, gently, at its checkpoints; a second time, at once.

`agentarch run` turns the first Ctrl-C (or SIGTERM) into `RunControl.stop`: no proposal starts after it, every LLM
call in flight is cancelled (its stream cut, so the server stops generating) and every call waiting for its model's
turn gives up, sandbox jobs are killed (and their slots freed), and each proposal stops at the checkpoint of its last
completed step, its interrupted step replayed on resume. A proposal in a step that only writes (record) finishes it.
The run is then marked `interrupted` with its summary, and `agentarch run --resume RUN_ID` goes on from there.

The second signal is `RunControl.halt`: the sandbox jobs are killed, the run is marked `interrupted` (given a few
seconds, from another thread, so a stuck write cannot hold the exit), and the caller exits. Every step was
checkpointed with durability="sync", so the run stays resumable; a sandbox job cut this way counts once as the
orchestrator dying under it (agentarch/loop/nodes/evaluating.py), which one resume tolerates.

The library never installs signal handlers itself: the CLI does, and calls these.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

JOB_MARK = b"agentarch-job-"
"""What every sandbox job's command line holds: its scratch directory's name (agentarch/isolation/scratch.py)."""

HALT_WRITE_S = 5.0
"""How long `halt` waits for the run's `interrupted` mark to be written before it lets the caller exit."""


def kill_sandbox_jobs() -> int:
    """Kill the process group of every sandbox job this process started (its direct children whose command line
    names a job's scratch directory); returns how many. The job's own thread then sees the runner die, removes its
    cgroup and scratch, and frees its slot, as after any kill (`SandboxJob.close`)."""
    me, killed = os.getpid(), 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            parent = int(stat.rpartition(")")[2].split()[1])
            if parent != me or JOB_MARK not in (proc / "cmdline").read_bytes():
                continue
            os.killpg(int(proc.name), signal.SIGKILL)  # a job starts its own session: its group is its pid
            killed += 1
        except (OSError, ValueError, IndexError):
            continue
    return killed


class RunControl:
    """The switch a caller holds to stop the run it started (`agentarch.loop.run.start(..., control=...)`).

    Thread- and signal-safe: `stop` and `halt` only set flags, cut connections and kill processes, and never wait
    for a lock the interrupted code might hold (the run's own `interrupted` write goes through a thread)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.halted = False
        self._stop_run: Callable[[str], None] | None = None
        self._mark: Callable[[], None] | None = None
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self.reason is not None

    def stop(self, reason: str) -> bool:
        """The first request: stop gently (see the module's docstring). Returns False when one came before."""
        if self.reason is not None:
            return False
        self.reason = reason
        stop_run = self._stop_run
        if stop_run is not None:
            stop_run(reason)
        return True

    def halt(self, reason: str) -> None:
        """The second request: kill the sandbox jobs and mark the run `interrupted`; the caller exits next."""
        self.halted = True
        self.reason = self.reason or reason
        kill_sandbox_jobs()
        mark = self._mark
        if mark is not None:
            writer = threading.Thread(target=_quietly, args=(mark,), name="mark-interrupted", daemon=True)
            writer.start()
            writer.join(HALT_WRITE_S)

    def attach(self, stop_run: Callable[[str], None], mark_interrupted: Callable[[], None]) -> None:
        """Bind the run now driven: how to stop it, and how to mark it interrupted. A stop asked for before the run
        was ready (while its task was prepared) stops it now."""
        with self._lock:
            self._stop_run, self._mark = stop_run, mark_interrupted
        if self.reason is not None:
            stop_run(self.reason)

    def detach(self) -> None:
        with self._lock:
            self._stop_run = self._mark = None


def _quietly(write: Callable[[], None]) -> None:
    try:
        write()
    except Exception:  # the process is about to exit: the run stays `running`, and --resume still works
        pass
