"""What the candidate graph's nodes share and must not checkpoint: the run's settings, its per-thread archive
handles and LLM clients, the executor's slots and the bounded queue in front of them, and the code in flight (passed
dedup, not yet recorded) that copies of it wait for.

Its own module because the scheduler holds the same context as the nodes: it is the run's, not one step's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentarch.config import ModelArm, Settings, parse_arms
from agentarch.errors import UsageError
from agentarch.evaluation.evaluator import Evaluator, SandboxRun
from agentarch.evaluation.executors import Executor, make_executor
from agentarch.llm.client import LLMClient
from agentarch.loop.screening import Screening
from agentarch.search.objectives import Goals
from agentarch.search.proposers.baselines import RegularizedEvolution
from agentarch.search.spaces import space_for
from agentarch.store.archive import Archive
from agentarch.tasks.registry import get_task
from agentarch.tasks.task import Task

OFFLINE_PROPOSER = RegularizedEvolution.name
BEST_OF_N = "best-of-n"
"""The proposer name of the control without feedback: the LLM prompted from the seeds alone (`feedback` off)."""


class RunAborted(RuntimeError):
    """Another branch failed in a way that stops the run; this one stops waiting (never recorded as its fault)."""


IN_FLIGHT_POLL_S = 0.5
"""How long a proposal waiting for a copy in flight sleeps at most before it looks again at an abort."""


class InFlight:
    """Code that passed dedup and is not recorded yet, by its dedup marks (`level:hash` at the levels that need no
    sandbox: whitespace and AST), each held by one proposal.

    A proposal whose code matches a mark another holds waits (in its `dedup` step, holding no slot: the holder
    already has its own queue place) until the holder lets go, then runs the archive's dedup as usual, so copies in
    flight at once train once and the copy's `duplicate_of` names a recorded row. A holder lets go once its
    candidate is recorded (trained, failed, rejected, screened: whatever the archive's dedup makes of it), when it
    leaves the code behind (a repair, a person's edit), or when its branch stops beyond containment. Memory only:
    after a crash the archive is the truth, and the scheduler takes back the holds of the resumed proposals from
    their checkpoints (`CandidateState.inflight`) before any of them runs.
    """

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._holder: dict[str, str] = {}  # mark -> the key of the proposal holding it
        self._held: dict[str, list[str]] = {}  # proposal key -> the marks it holds
        self._changed = threading.Condition()

    def hold(self, key: str, marks: list[str], before_wait: Callable[[str], None] | None = None) -> str | None:
        """Hold `marks` for proposal `key` (in place of what it held before), first waiting while another proposal
        holds any of them; returns the proposal it waited for, or None. `before_wait` is called with that
        proposal's key once, outside the lock, before the wait begins. Raises RunAborted when the run stops."""
        with self._changed:
            other = self._other(key, marks)
            if other is None:
                self._take(key, marks)
                return None
        if before_wait is not None:
            before_wait(other)
        with self._changed:
            while True:
                if self._stop.is_set():  # a holder that stopped with the run lets go unrecorded: do not go on
                    raise RunAborted("the run stopped while this candidate waited for a copy of its code in flight")
                if self._other(key, marks) is None:
                    break
                self._changed.wait(IN_FLIGHT_POLL_S)
            self._take(key, marks)
        return other

    def restore(self, key: str, marks: list[str]) -> None:
        """Take back a resumed proposal's hold (never waits: a mark another already holds stays theirs)."""
        with self._changed:
            self._take(key, [mark for mark in marks if self._holder.get(mark, key) == key])

    def release(self, key: str) -> None:
        """Let go of whatever proposal `key` holds, and wake the proposals waiting for it."""
        with self._changed:
            self._drop(key)
            self._changed.notify_all()

    def holding(self) -> dict[str, list[str]]:
        """Who holds what now (proposal key -> marks)."""
        with self._changed:
            return {key: list(marks) for key, marks in self._held.items()}

    def _other(self, key: str, marks: list[str]) -> str | None:
        return next((self._holder[m] for m in marks if self._holder.get(m, key) != key), None)

    def _take(self, key: str, marks: list[str]) -> None:
        self._drop(key)
        for mark in marks:
            self._holder[mark] = key
        if marks:
            self._held[key] = list(marks)

    def _drop(self, key: str) -> None:
        for mark in self._held.pop(key, []):
            if self._holder.get(mark) == key:
                del self._holder[mark]


@dataclass
class RunContext:
    """What the nodes share and must not checkpoint: settings, per-thread archive handles, the LLM, slots."""

    settings: Settings
    run_id: str
    started_at: float
    on_outcome: Any = None  # called with each finished candidate's outcome (progress display)
    task: Task = field(init=False)
    executor: Executor = field(init=False)
    _local: threading.local = field(default_factory=threading.local)
    _queue: threading.Semaphore = field(init=False)
    _queued: set[str] = field(default_factory=set)
    _queue_lock: threading.Lock = field(default_factory=threading.Lock)
    aborted: threading.Event = field(default_factory=threading.Event)
    _jobs: dict[str, SandboxRun] = field(default_factory=dict)
    _jobs_lock: threading.Lock = field(default_factory=threading.Lock)
    inflight: InFlight = field(init=False)  # code that passed dedup and is not recorded yet (copies wait for it)

    goals: Goals = field(init=False)
    screening: Screening | None = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.task = get_task(s.task)
        self.goals = Goals.parse(s.objectives, s.constraints, self.task.direction, self.task.metric)
        if s.screen > 1 and s.review:
            raise UsageError(
                "--screen waits for every member of a group, and --review may keep one waiting for a person; "
                "use one or the other"
            )
        self.screening = (
            Screening(self.run_id, self.task.name, s.screen, s.screen_explore, s.seed) if s.screen > 1 else None
        )
        self.executor = make_executor(s.executor, s.slots, s.ray_address, s.per_gpu)
        self._queue = threading.Semaphore(self.executor.capacity + s.queue)
        self.inflight = InFlight(self.aborted)

    @property
    def verify_epochs(self) -> int:
        """The verify fidelity: --verify-epochs, else three times the explore epochs."""
        return self.settings.verify_epochs or 3 * (self.settings.epochs or self.task.epochs)

    def enter_queue(self, key: str) -> None:
        """Wait for room among the proposals between the LLM and the slots (at most slots + queue).

        A branch that failed beyond containment sets `aborted`, so the others stop waiting and the error
        reaches the user.
        """
        while not self._queue.acquire(timeout=0.5):
            if self.aborted.is_set():
                raise RunAborted("another candidate failed beyond containment; the run stops (see the error above)")
        with self._queue_lock:
            self._queued.add(key)

    def leave_queue(self, key: str) -> None:
        """Free the proposal's place once it trains or ends (a branch resumed after a crash holds none)."""
        with self._queue_lock:
            if key not in self._queued:
                return
            self._queued.discard(key)
        self._queue.release()

    def keep_job(self, key: str, job: SandboxRun) -> None:
        """Hold a proposal's sandbox job between its `smoke` and `train` steps (not checkpointable: a live job)."""
        with self._jobs_lock:
            self._jobs[key] = job

    def take_job(self, key: str) -> SandboxRun | None:
        """The proposal's job started by `smoke`, or None after a resume (the job died with the old process)."""
        with self._jobs_lock:
            return self._jobs.pop(key, None)

    @property
    def offline(self) -> bool:
        return self.settings.model is None

    def archive(self) -> Archive:
        """This thread's handle on the archive (SQLite connections are not shared across threads)."""
        if not hasattr(self._local, "archive"):
            self._local.archive = Archive(self.settings.archive)
        return self._local.archive

    def evaluator(self) -> Evaluator:
        if not hasattr(self._local, "evaluator"):
            self._local.evaluator = Evaluator(self.archive(), self.settings, self.run_id, self.executor)
        return self._local.evaluator

    @property
    def arms(self) -> list[ModelArm]:
        """The models of the run: the `--model` specs, or the one model (none offline)."""
        s = self.settings
        if s.models:
            return parse_arms(s.models)
        return [ModelArm.parse(s.model)] if s.model else []

    def llm(self, spec: str | None = None) -> LLMClient:
        """This thread's client for the model `spec` names (default: the run's first), with the run's settings; an
        arm's own server and key variable win over the run's `api_base` and `api_key`."""
        clients = self._local.__dict__.setdefault("llms", {})
        arm = ModelArm.parse(spec) if spec else self.arms[0]
        if arm.spec not in clients:
            s = self.settings
            clients[arm.spec] = LLMClient(
                arm.name,
                api_base=arm.api_base or s.api_base,
                api_key=arm.api_key() or (s.api_key.get_secret_value() if s.api_key else None),
                timeout_s=s.llm_timeout_s,
                max_retries=s.llm_retries,
                temperature=s.temperature,
                max_tokens=s.max_tokens,
                max_answer_bytes=s.max_answer_bytes,
                archive=self.archive(),
                run_id=self.run_id,
            )
        return clients[arm.spec]

    def offline_space(self) -> str:
        """The configured space when it builds this task's kind, else the first registered space that does."""
        return space_for(self.task.kind, self.settings.offline_space)
