"""Warm sandboxes: a slot's next sandboxes started while its candidate runs, so the next job skips their start.

A job's fixed cost outside training is mostly the runner's start: the sandbox's launch, the interpreter, torch's
import (about 1.3 s of a digits job's 1.5 s to its smoke event here). None of it depends on the candidate, so a
slot keeps one sandbox started ahead, up to "confined, torch imported, waiting for its job" (sandbox/runner.py
`main`), and hands it the next candidate's code and spec (`SandboxJob.hand`). Graph scoring has a second start on
the critical path, after training: the clean evaluator's (agentarch/evaluation/graphs/worker.py: its sandbox,
the interpreter, ONNX Runtime's import). It does not depend on the graph either, so while a candidate trains the
slot starts the evaluator that will score it (ordered by stages.py once the job was told to train, so it does not
compete with the smoke stage), and scoring hands it the graph and the probe inputs (`GraphWorker`). A slot holds at
most one started sandbox per program (`Launch.program`).

What a warm sandbox shares with a cold one, and what it does not:

- **Isolation**: it is the same launch (`SandboxJob.warm` is `SandboxJob` without its job yet): its own fresh
  scratch, cgroup, rlimits, namespaces or Landlock rules and seccomp filter, all in force before it waits; nothing of
  the job before it (files, processes) is in it, and it serves one job (a second hand-off is refused): a runner one
  candidate, a clean evaluator one graph (ONNX Runtime parses a hostile graph inside it, so nothing of one
  candidate's graph may reach another's scoring). It is started for a configuration (`Launch`: the task's data
  folder, the limits, the isolation mode, the slot's GPU, the program) and used only for a job of exactly that
  configuration; any other job starts cold and the warm one is closed.
- **CPU time**: charged to the candidate it becomes, from its launch (cputime.py), as a cold job's start is: the
  training budget's grant is priced from a cold reference job's start (budget.py), so warm or cold, a candidate
  gets the same room, and a cheat no more. Waiting costs no CPU.
- **Wall time**: the job's clocks (its `timeout_s`, the evaluation's `wall_seconds`) start at the hand-off, so the
  wall time recorded for a candidate is what it held its slot for; the start it skipped ran while the previous
  candidate of the slot ran (its smoke stage first: the next start is ordered when a job is handed over), and is
  recorded as `warm_start` in the evaluation's timings (`evaluator_warm_start` for the clean evaluator's). On a
  loaded host it competes with that candidate for CPU like any other process: about 1.3 CPU seconds per job, once.

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
from agentarch.isolation.launch import RUNNER, Program
from agentarch.isolation.policy import IsolationMode, Limits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launch:
    """What a sandbox is started for before its job is known: a job of this configuration only. `program` is what it
    runs: the runner (a candidate's training) or the clean evaluator (a trained graph's scoring)."""

    inputs_dir: Path
    limits: Limits
    isolation: IsolationMode
    gpu: str | None = None
    program: Program = RUNNER


class WarmSlot:
    """One slot's sandboxes started ahead, at most one per program: `order` asks for one, `take` hands it over (or
    None: start cold). Orders are started one at a time, oldest first, by the slot's starter thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._changed = threading.Condition()
        self._orders: dict[Program, Launch] = {}  # what the starter starts next, per program, oldest first
        self._starting: Launch | None = None  # what it is starting now
        self._ready: dict[Program, tuple[Launch, SandboxJob]] = {}
        self._closed = False
        self._thread: threading.Thread | None = None

    def order(self, launch: Launch) -> None:
        """Start a sandbox for `launch` in the background, unless one for it is ready or on its way (a newer order for
        the same program replaces an older one not yet started)."""
        with self._changed:
            ready = self._ready.get(launch.program)
            if self._closed or launch in (self._starting, ready and ready[0], self._orders.get(launch.program)):
                return
            self._orders[launch.program] = launch
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=f"warm-sandbox-{self.name}", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def take(self, launch: Launch) -> SandboxJob | None:
        """The started sandbox of `launch`'s program if it was started for `launch` and still waits (waiting for one
        ordered or on its way), else None; a sandbox started for another configuration, or that died waiting, is
        closed. Taken, it is nobody else's: a sandbox serves one job."""
        with self._changed:
            while launch in (self._orders.get(launch.program), self._starting) and not self._closed:
                self._changed.wait()
            ready = self._ready.pop(launch.program, None)
        if ready is None:
            return None
        made_for, job = ready
        if made_for == launch and job.waiting():
            return job
        job.close()
        return None

    def _serve(self) -> None:
        """The starter thread: launch each ordered sandbox, keep the newest per program, close what is replaced or
        late."""
        while True:
            with self._changed:
                while not self._orders and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                launch = self._orders.pop(next(iter(self._orders)))
                stale = self._ready.pop(launch.program, None)
                self._starting = launch
            if stale is not None:
                stale[1].close()
            job = self._launch(launch)
            with self._changed:
                self._starting = None
                if job is not None and not self._closed:
                    self._ready[launch.program], job = (launch, job), None
                self._changed.notify_all()
            if job is not None:  # closed while it started
                job.close()

    def _launch(self, launch: Launch) -> SandboxJob | None:
        """A sandbox started for `launch`, or None (logged): the job that wanted it then starts cold, and a cold
        start that fails too says why in its own words."""
        try:
            return SandboxJob.warm(launch.inputs_dir, launch.limits, launch.isolation, launch.gpu, launch.program)
        except Exception as err:
            log.warning("could not start a warm sandbox (the next job starts cold): %s", err)
            return None

    def close(self) -> None:
        """Close the sandboxes started ahead, if any, and stop the starter (after a start under way, which it
        closes)."""
        with self._changed:
            self._closed = True
            ready, self._ready = list(self._ready.values()), {}
            self._changed.notify_all()
            thread = self._thread
        for _, job in ready:
            job.close()
        if thread is not None:
            thread.join(timeout=120)


def handed(
    slot: WarmSlot | None,
    code: str | None,
    spec: dict[str, Any],
    launch: Launch,
    files: dict[str, bytes] | None = None,
    *,
    again: bool = True,
) -> tuple[SandboxJob, bool]:
    """A sandbox job of `launch` running `code` with `spec` (and `files` in its scratch): the slot's warm sandbox for
    `launch` if it has one, else a cold start; then, with `again`, the slot's next one is ordered (the runner's: the
    next job on the slot needs one; the clean evaluator's is ordered when its job trains, stages.py). Also whether
    it was warm."""
    job = slot.take(launch) if slot is not None else None
    warm = job is not None
    if job is None:
        job = SandboxJob(
            code, spec, launch.inputs_dir, launch.limits, launch.isolation, launch.gpu, launch.program, files
        )
    else:
        try:
            job.hand(code, spec, files)
        except BaseException:
            job.close()
            raise
    if slot is not None and again:
        slot.order(launch)
    return job, warm
