"""What the candidate graph's nodes share and must not checkpoint: the run's settings, its per-thread archive
handles and LLM clients, the executor's slots and the bounded queue in front of them, and the code in flight (passed
dedup, not yet recorded) that copies of it wait for.

Its own module because the scheduler holds the same context as the nodes: it is the run's, not one step's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentarch.config import ModelArm, Settings, parse_arms
from agentarch.errors import UsageError
from agentarch.evaluation.evaluator import Evaluator, SandboxRun
from agentarch.evaluation.executors import Executor, executor_for
from agentarch.llm import client as llm_client
from agentarch.llm import judge
from agentarch.llm.client import LLMClient
from agentarch.loop.events import Emitter, ProposalStep, Stopping
from agentarch.loop.screening import Screening
from agentarch.loop.stopping import kill_sandbox_jobs
from agentarch.search.objectives import JUDGE_MEASURE, Goals
from agentarch.search.proposers.baselines import RegularizedEvolution, beyond_the_metric
from agentarch.search.recipes import RecipeSpace
from agentarch.search.spaces import SearchSpace, SpaceError, get_space, space_for
from agentarch.store import knowledge
from agentarch.store.archive import Archive
from agentarch.tasks.registry import get_task
from agentarch.tasks.task import Task

OFFLINE_PROPOSER = RegularizedEvolution.name


class RunAborted(RuntimeError):
    """Another branch failed in a way that stops the run, or the run was asked to stop; this one stops waiting (never
    recorded as its fault) and stays at its last checkpoint."""


def in_space_of(settings: Settings, task: Task) -> str | None:
    """The space `--propose-in` names, checked against the run: it exists, declares its fields (what the model is
    asked for), builds networks of the task's kind, and the run ranks by the task's metric alone (what the in-space
    prompt shows); UsageError says what to change. None when the model writes modules (or the run is offline)."""
    name = settings.propose_in
    if name is None:
        return None
    try:
        space = get_space(name)
        space.check_fit(task)
        space.fields()
    except SpaceError as err:
        raise UsageError(f"--propose-in {name}: {err}") from None
    goals = Goals.parse(settings.objectives, settings.constraints, task.direction, task.metric)
    if beyond_the_metric(goals) is not None:
        raise UsageError(
            f"--propose-in {name} shows the model the task's metric ({task.metric}) alone; leave out --objective and "
            "--constraint, or let the model write modules (no --propose-in)"
        )
    return space.name


def answered_by_table(settings: Settings, task: Task) -> bool:
    """Whether the run's proposals are answered from a table (a NAS-Bench-201 task): each proposal is an
    architecture of the table's space (the model's, with --propose-in; offline, the evolution's), looked up instead of
    trained, and no sandbox job starts. UsageError for what a table cannot do: a model writing modules (it can only
    choose cells), and what trains (--screen, --verify-top)."""
    if task.kind != "tabular":
        return False
    if settings.model is not None and settings.propose_in is None:
        raise UsageError(
            f"{task.name} is a table of NAS-Bench-201 cells: a model cannot write a module for it, only choose one of "
            f"its cells; give --propose-in nb201 (or leave --model out to run regularized evolution on it)"
        )
    trains = [flag for flag, on in (("--screen", settings.screen > 1), ("--verify-top", settings.verify_top > 0)) if on]
    if trains:
        raise UsageError(
            f"{task.name} is answered from its table and nothing trains there: leave out {' and '.join(trains)}"
        )
    return True


def index_knowledge(settings: Settings, archive: Archive) -> None:
    """Index the run's knowledge base (`--knowledge`, if any) into the archive now: called before a run opens, so a
    folder that is not there (or a PDF by name, or thousands of files) is refused with what to do before anything is
    recorded."""
    if settings.knowledge is not None:
        knowledge.add(archive, settings.knowledge)


KNOWLEDGE_REFRESH_S = 60.0
"""How often at most a run looks at its knowledge folder again (a stat of each file; a changed one is reindexed), so
notes edited during an overnight run reach its later proposals."""

log = logging.getLogger(__name__)

IN_FLIGHT_POLL_S = 0.5
"""How long a proposal waiting for a copy in flight sleeps at most before it looks again at an abort."""

ABANDON_GRACE_S = 2.0
"""How long a stopping run waits for an LLM call to end once it was cancelled, before it stops waiting for it."""


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
    on_event: Any = None  # called with each agentarch.loop.events.Event (live progress)
    task: Task = field(init=False)
    executor: Executor = field(init=False)
    _local: threading.local = field(default_factory=threading.local)
    _queue: threading.Semaphore = field(init=False)
    _queued: set[str] = field(default_factory=set)
    _queue_lock: threading.Lock = field(default_factory=threading.Lock)
    aborted: threading.Event = field(default_factory=threading.Event)
    # asked to stop (agentarch/loop/stopping.py): nothing new starts; `aborted` is set too, so every wait gives up
    stopping: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None
    emit: Emitter = field(init=False)
    _steps: dict[str, ProposalStep] = field(default_factory=dict)  # the step each proposal in flight is in
    _jobs: dict[str, tuple[SandboxRun, str]] = field(default_factory=dict)
    _jobs_lock: threading.Lock = field(default_factory=threading.Lock)
    inflight: InFlight = field(init=False)  # code that passed dedup and is not recorded yet (copies wait for it)
    in_space: str | None = field(init=False)  # --propose-in: the space the model chooses architectures in
    table: bool = field(init=False)  # a table task: each proposal is looked up, not trained (answered_by_table)
    _archs: dict[str, tuple[str, str]] = field(default_factory=dict)  # proposal key -> (arch, identity) in flight
    _archs_ended: set[str] = field(default_factory=set)  # identities of the architectures proposals ended with
    # a model (by spec) whose server refused the space's JSON schema: later proposals ask it without one
    schema_refused: dict[str, str] = field(default_factory=dict)

    goals: Goals = field(init=False)
    screening: Screening | None = field(init=False)
    judge_arm: ModelArm | None = field(init=False)  # --judge: the model that rates each trained candidate
    knowledge_root: Path | None = field(init=False)  # --knowledge: the folder (or file) the proposals read from
    _knowledge_checked: float | None = None  # when the run last looked at its knowledge files (monotonic)
    _knowledge_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        s = self.settings
        self.task = get_task(s.task)
        self.in_space = in_space_of(s, self.task)
        self.table = answered_by_table(s, self.task)
        self.goals = Goals.parse(s.objectives, s.constraints, self.task.direction, self.task.metric)
        if s.screen > 1 and s.review:
            raise UsageError(
                "--screen waits for every member of a group, and --review may keep one waiting for a person; "
                "use one or the other"
            )
        if self.goals.names(JUDGE_MEASURE) and s.judge is None:
            raise UsageError(
                f"an objective or constraint on {JUDGE_MEASURE} ranks by the judge's ratings: give --judge MODEL"
            )
        self.judge_arm = ModelArm.parse(s.judge) if s.judge is not None else None
        self.screening = (
            Screening(self.run_id, self.task.name, s.screen, s.screen_explore, s.seed) if s.screen > 1 else None
        )
        self.executor = executor_for(s)
        self._queue = threading.Semaphore(self.executor.capacity + s.queue)
        self.inflight = InFlight(self.aborted)
        self.emit = Emitter(self.on_event)
        self.knowledge_root = knowledge.resolve(s.knowledge) if s.knowledge is not None else None

    # -- what the run says while it works ---------------------------------------------------------

    def model_of(self, plan: dict[str, Any]) -> str | None:
        """The name of the model a proposal asks (None offline)."""
        if plan.get("model"):
            return ModelArm.parse(plan["model"]).name
        return self.arms[0].name if self.arms else None

    def step(self, plan: dict[str, Any], step: str) -> None:
        """Proposal `plan` entered `step`: kept for the live view's pulse, and said as a ProposalStep event."""
        event = ProposalStep(plan["key"], plan["seq"], self.model_of(plan), step, time.time())
        with self._queue_lock:
            self._steps[plan["key"]] = event
        self.emit(event)

    def left(self, key: str) -> ProposalStep | None:
        """Proposal `key` is no longer in flight; returns the step it was last in."""
        with self._queue_lock:
            return self._steps.pop(key, None)

    def current_step(self, key: str) -> str | None:
        with self._queue_lock:
            event = self._steps.get(key)
        return event.step if event is not None else None

    def steps(self) -> list[ProposalStep]:
        """The step of every proposal in flight, by proposal number."""
        with self._queue_lock:
            return sorted(self._steps.values(), key=lambda e: e.seq)

    # -- stopping ---------------------------------------------------------------------------------

    def call(self, ask: Callable[[], Any], what: str) -> Any:
        """`ask()` (an LLM call) in a thread of its own, so that a stopping run stops waiting for it: the client cuts
        the calls it can (a stream under way) and their threads end at once; one it cannot cut yet (the server has
        not answered the request's headers) is left to end on its own after ABANDON_GRACE_S, and RunAborted says so.
        The thread has its own archive handle and client (`llm` is per thread)."""
        box: dict[str, Any] = {}
        finished = threading.Event()

        def run() -> None:
            try:
                box["value"] = ask()
            except BaseException as err:  # handed to the caller's thread
                box["error"] = err
            finally:
                finished.set()

        threading.Thread(target=run, name=what, daemon=True).start()
        while not finished.wait(IN_FLIGHT_POLL_S):
            if self.stopping.is_set() and not finished.wait(ABANDON_GRACE_S):
                raise RunAborted(f"the run is stopping ({self.stop_reason}); {what} was left unanswered")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def stop(self, reason: str) -> None:
        """Stop gently (agentarch/loop/stopping.py): nothing new starts, every wait gives up, LLM calls in flight are
        cancelled and sandbox jobs killed; each proposal stays at its last checkpoint."""
        if self.stopping.is_set():
            return
        self.stop_reason = reason
        self.stopping.set()
        self.aborted.set()  # every wait (a queue place, a copy in flight, a review) looks at it
        llm_client.interrupt(f"the run is stopping ({reason})")
        kill_sandbox_jobs()
        self.emit(Stopping(reason, time.time(), len(self.steps())))

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
            if self.stopping.is_set():
                raise RunAborted(f"the run is stopping ({self.stop_reason})")
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

    def keep_job(self, key: str, job: SandboxRun, code: str = "") -> None:
        """Hold a proposal's sandbox job (and the code it runs) between its `smoke` and `train` steps (not
        checkpointable: a live job)."""
        with self._jobs_lock:
            self._jobs[key] = (job, code)

    def take_job(self, key: str) -> SandboxRun | None:
        """The proposal's job started by `smoke`, or None after a resume (the job died with the old process)."""
        with self._jobs_lock:
            kept = self._jobs.pop(key, None)
        return kept[0] if kept else None

    def drop_job(self, key: str) -> str | None:
        """Let go of a job its proposal will not wait for (the run stopped before `train`); returns its code."""
        with self._jobs_lock:
            kept = self._jobs.pop(key, None)
        return kept[1] if kept else None

    @property
    def offline(self) -> bool:
        return self.settings.model is None

    def arch_space(self) -> str | None:
        """The space each proposal's architecture comes from: the model's (--propose-in) or the offline evolution's;
        None when the model writes modules. With one, the module-writing steps pass through (few-shot prompt,
        extraction, repair, analysis) and the candidate records its space and architecture."""
        if self.in_space is not None:
            return self.in_space
        return self.offline_space() if self.offline else None

    # -- architectures in flight (--propose-in) ---------------------------------------------------

    def claim_arch(self, key: str, arch: str) -> bool:
        """Take architecture `arch` for proposal `key` (in place of what it held) until it is recorded, unless another
        proposal in flight holds the same network (the space's identity), or one of this run's proposals ended with it:
        then False. Later proposals are told to avoid what is held, and two asking at once cannot both take one answer.

        An ended one counts because a proposal reads the archive before its model answers: a holder recorded while
        that call waited is neither in flight nor among what it read (on a table, which answers at once, that is the
        common case, not a rare one)."""
        identity = get_space(self.arch_space() or "").identity(arch)
        with self._queue_lock:
            if identity in self._archs_ended:
                return False
            if any(held == identity for other, (_, held) in self._archs.items() if other != key):
                return False
            self._archs[key] = (arch, identity)
            return True

    def release_arch(self, key: str) -> None:
        """Proposal `key` ended (recorded, or stopped with the run): its architecture is no longer held, and no later
        proposal of this process claims it (`claim_arch`; a resumed run starts from the archive)."""
        with self._queue_lock:
            held = self._archs.pop(key, None)
            if held is not None:
                self._archs_ended.add(held[1])

    def archs_in_flight(self, but: str | None = None) -> list[str]:
        """The architectures of the proposals in flight (all but proposal `but`), in the order they were chosen."""
        with self._queue_lock:
            return [arch for key, (arch, _) in self._archs.items() if key != but]

    def knowledge_for(self, parent: dict[str, Any] | None, notebook: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The knowledge entries a proposal's prompt shows (`knowledge.for_proposal`: the most relevant to its parent,
        the latest analysis and the notebook), after bringing the index in step with the folder's files at most every
        KNOWLEDGE_REFRESH_S (and first on a resume). A folder that cannot be read now (gone, a file added that is
        refused) is said in a warning, and the index is searched as it stands: notes are help, not a reason to fail a
        proposal. Empty without --knowledge."""
        root = self.knowledge_root
        if root is None:
            return []
        with self._knowledge_lock:
            if self._knowledge_checked is None or time.monotonic() - self._knowledge_checked >= KNOWLEDGE_REFRESH_S:
                self._knowledge_checked = time.monotonic()
                try:
                    knowledge.refresh(self.archive(), root)
                except (knowledge.KnowledgeError, OSError) as err:
                    log.warning("knowledge base %s not refreshed (%s); searching it as it stands", root, err)
        task = f"{self.task.name} {self.task.kind} {self.task.description}"
        return knowledge.for_proposal(self.archive(), root, self.settings.knowledge_entries, parent, notebook, task)

    def archive(self) -> Archive:
        """This thread's handle on the archive (SQLite connections are not shared across threads)."""
        if not hasattr(self._local, "archive"):
            self._local.archive = Archive(self.settings.archive)
        return self._local.archive

    def evaluator(self) -> Evaluator:
        if not hasattr(self._local, "evaluator"):
            self._local.evaluator = Evaluator(
                self.archive(), self.settings, self.run_id, self.executor, lookup=self.table
            )
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
            clients[arm.spec] = LLMClient.for_arm(arm, self.settings, archive=self.archive(), run_id=self.run_id)
        return clients[arm.spec]

    def judge_llm(self) -> LLMClient:
        """This thread's client for the judge (--judge): the run's settings, its answers held to the judge's own small
        caps (a rating is one small JSON object) and asked at temperature 0, so a rating is as repeatable as the model
        allows. Its own client even when the judge is a proposing model, whose client keeps the run's caps."""
        client = self._local.__dict__.get("judge")
        if client is None:
            assert self.judge_arm is not None, "a judge client without --judge"
            client = LLMClient.for_arm(self.judge_arm, self.settings, archive=self.archive(), run_id=self.run_id)
            client.max_tokens = min(client.max_tokens, judge.MAX_ANSWER_TOKENS)
            client.max_answer_bytes = min(client.max_answer_bytes, judge.MAX_ANSWER_BYTES)
            client.temperature = 0.0
            self._local.judge = client
        return client

    def offline_space(self) -> str:
        """The configured space when it builds this task's kind, else the first registered space that does."""
        return space_for(self.task.kind, self.settings.offline_space)

    def offline_search(self) -> SearchSpace:
        """What the offline evolution searches: the offline space, or with --search-recipe (architecture, recipe)
        pairs over it (agentarch/search/recipes.py)."""
        space = get_space(self.offline_space())
        return RecipeSpace(space, self.task) if self.settings.search_recipe else space
