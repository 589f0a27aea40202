"""Warm sandboxes: a slot's next runner started while its candidate runs, so the next job skips the start.

A job's fixed cost outside training is mostly the runner's start: the sandbox's launch, the interpreter, torch's
import (about 1.3 s of a digits job's 1.5 s to its smoke event here). None of it depends on the candidate, so a
slot keeps one sandbox started ahead, up to "confined, torch imported, waiting for its job" (sandbox/runner.py
`main`), and hands it the next candidate's code and spec (`SandboxJob.hand`).

What a warm sandbox shares with a cold one, and what it does not:

- **Isolation**: it is the same launch (`SandboxJob.warm` is `SandboxJob` without a candidate yet): its own fresh
  scratch, cgroup, rlimits, namespaces or Landlock rules and seccomp filter, all in force before it waits; nothing of
  the candidate before it (files, processes) is in it, and it runs one candidate (a second hand-off is refused).
  It is started for a configuration (`Launch`: the task's data folder, the limits, the isolation mode, the slot's
  GPU) and used only for a job of exactly that configuration; any other job starts cold and the warm one is closed.
- **CPU time**: charged to the candidate it becomes, from its launch (cputime.py), as a cold job's start is: the
  training budget's grant is priced from a cold reference job's start (budget.py), so warm or cold, a candidate
  gets the same room, and a cheat no more. Waiting costs no CPU.
- **Wall time**: the job's clocks (its `timeout_s`, the evaluation's `wall_seconds`) start at the hand-off, so the
  wall time recorded for a candidate is what it held its slot for; the start it skipped ran while the previous
  candidate of the slot ran (its smoke stage first: the next start is ordered when a job is handed over), and is
  recorded as `warm_start` in the evaluation's timings. On a loaded host it competes with that candidate for CPU
  like any other process: about 1.3 CPU seconds per job, once.

The slot's starter thread launches every warm sandbox of the slot and lives until `close`: the runner and bubblewrap
die with the thread that started them (PR_SET_PDEATHSIG is per thread), so they must not be started by a job's
thread that ends before the next job. A warm sandbox never used is closed at `close` (no process, cgroup or scratch
left).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentarch.isolation.job import SandboxJob
from agentarch.isolation.policy import IsolationMode, Limits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launch:
    """What a runner's sandbox is started for before its candidate is known: a job of this configuration only."""

    inputs_dir: Path
    limits: Limits
    isolation: IsolationMode
    gpu: str | None = None


class WarmSlot:
    """One slot's sandbox started ahead: `order` asks for one, `take` hands it over (or None: start cold)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._changed = threading.Condition()
        self._order: Launch | None = None  # what the starter starts next
        self._starting: Launch | None = None  # what it is starting now
        self._ready: tuple[Launch, SandboxJob] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def order(self, launch: Launch) -> None:
        """Start a sandbox for `launch` in the background, unless one for it is ready or on its way."""
        with self._changed:
            if self._closed or launch in (self._starting, self._ready and self._ready[0]):
                return
            self._order = launch
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=f"warm-sandbox-{self.name}", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def take(self, launch: Launch) -> SandboxJob | None:
        """The started sandbox if it was started for `launch` and still waits (waiting for one ordered or on its way), else
        None; a sandbox started for another configuration, or that died waiting, is closed."""
        with self._changed:
            while launch in (self._order, self._starting) and not self._closed:
                self._changed.wait()
            ready, self._ready = self._ready, None
        if ready is None:
            return None
        made_for, job = ready
        if made_for == launch and job.waiting():
            return job
        job.close()
        return None

    def _serve(self) -> None:
        """The starter thread: launch each ordered sandbox, keep the newest, close what is replaced or late."""
        while True:
            with self._changed:
                while self._order is None and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                launch, self._order = self._order, None
                stale, self._ready = self._ready, None
                self._starting = launch
            if stale is not None:
                stale[1].close()
            job = self._launch(launch)
            with self._changed:
                self._starting = None
                if job is not None and not self._closed:
                    self._ready, job = (launch, job), None
                self._changed.notify_all()
            if job is not None:  # closed while it started
                job.close()

    def _launch(self, launch: Launch) -> SandboxJob | None:
        """A sandbox started for `launch`, or None (logged): the job that wanted it then starts cold, and a cold
        start that fails too says why in its own words."""
        try:
            return SandboxJob.warm(launch.inputs_dir, launch.limits, launch.isolation, launch.gpu)
        except Exception as err:
            log.warning("could not start a warm sandbox (the next job starts cold): %s", err)
            return None

    def close(self) -> None:
        """Close the sandbox started ahead, if any, and stop the starter (after a start under way, which it closes)."""
        with self._changed:
            self._closed = True
            ready, self._ready = self._ready, None
            self._changed.notify_all()
            thread = self._thread
        if ready is not None:
            ready[1].close()
        if thread is not None:
            thread.join(timeout=120)


def handed(
    slot: WarmSlot | None, code: str, spec: dict[str, Any], launch: Launch, files: dict[str, bytes] | None = None
) -> tuple[SandboxJob, bool]:
    """A sandbox job running `code` with `spec` (and `files` in its scratch): the slot's warm sandbox for `launch` if
    it has one, else a cold start; then the slot's next one is ordered. Also whether it was warm."""
    job = slot.take(launch) if slot is not None else None
    warm = job is not None
    if job is None:
        job = SandboxJob(code, spec, launch.inputs_dir, launch.limits, launch.isolation, launch.gpu, files=files)
    else:
        try:
            job.hand(code, spec, files)
        except BaseException:
            job.close()
            raise
    if slot is not None:
        slot.order(launch)
    return job, warm
