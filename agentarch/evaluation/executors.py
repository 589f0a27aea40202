"""Where sandboxed evaluations run: a local pool of slots (one per GPU, or N CPU workers) or a Ray cluster
(agentarch/evaluation/ray_executor.py; `make_executor` picks).

An executor takes a `RunRequest` (plain data: code, training config, limits) and starts one sandbox
job for it: a `Pending` that gives the smoke verdict first and the final `RunResult` later, so the
agent loop's `smoke` and `train` steps are two looks at one job (one sandbox start per candidate).
It never touches the archive. The orchestrator alone reads the archive (it passes the
task's known functional hashes and members' structure signatures along, so a worker can stop a
functional duplicate or a near-copy after its smoke run) and alone writes it, so a cluster needs no
shared database.
"""

from __future__ import annotations

import atexit
import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agentarch.errors import UsageError
from agentarch.evaluation.jobs import Pending, StreamedJob
from agentarch.evaluation.stages import RunRequest, RunResult, stages
from agentarch.isolation.warm import WarmSlot

if TYPE_CHECKING:
    from agentarch.config import Settings


class Executor(Protocol):
    """Starts sandbox jobs; `start` blocks the calling thread until the job has a place to run (call it from
    many threads), `run` until its result is in. `capacity` is how many jobs run at once: local slots (GPUs x
    per_gpu on a GPU host), or what the Ray cluster holds when it starts; the run keeps that many proposals
    in flight, plus its queue."""

    capacity: int

    def start(self, request: RunRequest, ready: Callable[[], None] | None = None) -> Pending:
        """Start the job once it has a place to run, calling `ready` just before (if it raises, nothing starts)."""
        ...

    def run(self, request: RunRequest) -> RunResult: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Slots on this machine: one per GPU (each evaluation sees only its GPU) or `slots` CPU workers.

    Callers are threads (the agent loop's parallel branches); a caller waits for a free slot, so at
    most `slots` sandboxes run at once and the rest queue. A slot is held from the sandbox's start to
    its final result.

    With `warm` (Settings.warm_sandboxes, which the run loop passes) each slot keeps its next sandbox started ahead
    while its job runs (agentarch/isolation/warm.py), so the next job skips the interpreter's and torch's start, and
    in graph scoring the clean evaluator that scores a job is started while it trains; such an executor must be
    closed, which closes the sandboxes never used (at exit too, in case nobody did).
    """

    def __init__(self, slots: int = 1, gpus: list[str] | None = None, warm: bool = False) -> None:
        self.free: queue.Queue[tuple[int, str | None]] = queue.Queue()
        for slot, gpu in enumerate(gpus if gpus else [None] * slots):
            self.free.put((slot, gpu))
        self.capacity = self.free.qsize()
        self.warm = {slot: WarmSlot(str(slot)) for slot in range(self.capacity)} if warm else {}
        if warm:
            atexit.register(self.close)
        self.busy: list[tuple[int, float, float]] = []  # (slot, start, end) of every run: slot utilisation

    def start(self, request: RunRequest, ready: Callable[[], None] | None = None) -> StreamedJob:
        slot, gpu = self.free.get()
        try:
            if ready is not None:
                ready()
        except BaseException:
            self.free.put((slot, gpu))
            raise
        began = time.monotonic()

        def done() -> None:
            self.busy.append((slot, began, time.monotonic()))
            self.free.put((slot, gpu))

        return StreamedJob(stages(request, gpu, warm=self.warm.get(slot)), done)

    def run(self, request: RunRequest) -> RunResult:
        return self.start(request).result()

    def close(self) -> None:
        """Close every slot's sandbox started ahead and never used (slots themselves are just tokens)."""
        for slot in self.warm.values():
            slot.close()


def visible_gpus() -> list[str]:
    """GPU indices this process may use (CUDA_VISIBLE_DEVICES, else every /dev/nvidiaN)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    return sorted((p.name.removeprefix("nvidia") for p in Path("/dev").glob("nvidia[0-9]*")), key=int)


def make_executor(
    kind: str, slots: int = 1, ray_address: str | None = None, per_gpu: int = 1, warm: bool = False
) -> Executor:
    """The executor a run asked for: `local` (slots, or `per_gpu` slots on each visible GPU) or `ray` (the cluster
    at `ray_address`, else a local Ray bound to loopback).

    `per_gpu` > 1 packs several small candidates on one GPU (each sandbox still sees only that GPU;
    the memory cgroup caps each one, so size it to the GPU's share). `warm` keeps each slot's next sandbox started
    ahead (Settings.warm_sandboxes): a local slot's, or a Ray actor's.
    """
    gpus = visible_gpus()
    if kind == "local":
        return LocalExecutor(slots, [g for g in gpus for _ in range(per_gpu)] or None, warm)
    if kind == "ray":
        from agentarch.evaluation.ray_executor import RayExecutor  # its module only where a run asks for Ray

        return RayExecutor(ray_address, gpus_per_task=1.0 / per_gpu if gpus else 0.0, warm=warm)
    raise UsageError(f"unknown executor {kind!r}; use local or ray")


def executor_for(settings: Settings) -> Executor:
    """The executor `settings` ask for (`executor`, `slots`, `ray_address`, `per_gpu`, `warm_sandboxes`): the one
    rule every command that evaluates many candidates (`agentarch run`, `agentarch baseline`) starts its executor
    by. Its caller closes it (a warm one holds started sandboxes)."""
    return make_executor(
        settings.executor, settings.slots, settings.ray_address, settings.per_gpu, settings.warm_sandboxes
    )
