"""One proposal's way from prompt to archive row, as a LangGraph StateGraph; read it next to docs/architecture.md.

    select_context → render_prompt → propose → extract → static_check → dedup → review_gate
        → smoke → train → analyze → record
    (extract, static_check and smoke failures go to repair → extract, at most k times;
     review_gate pauses for a person only with --review: approve → smoke, reject → record,
     edit → static_check with the person's code; code no decision covers, by sha256, pauses again;
     a step that raises goes to fail, which records the candidate as failed: the run goes on)

Each proposal is a LangGraph thread of its own (thread id = its key, `RUN/SEQ`), started by the run's
scheduler (agentarch/loop/scheduler.py) whenever a place frees; every step is checkpointed (SqliteSaver next to
the archive, `durability="sync"`), so `agentarch run --resume RUN_ID` continues each proposal where a killed
run left it. The archive records each proposal key at most once, so a step replayed after a crash never writes
a second row.

Without a model the same graph runs offline: the scheduler's regularized evolution proposes the architecture
(in the plan), the LLM-only steps pass through, and everything else (sandbox, dedup, archive) is unchanged.
"""

from __future__ import annotations

import dataclasses
import operator
import random
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from agentarch.config import ModelArm, Settings, parse_arms
from agentarch.errors import UsageError
from agentarch.evaluation.evaluator import Assessment, Evaluator, SandboxRun
from agentarch.evaluation.executors import Executor, make_executor
from agentarch.isolation.sandbox import SandboxError
from agentarch.llm import edits, fewshot, prompts
from agentarch.llm.client import LLMClient, LLMError
from agentarch.loop.screening import Screening
from agentarch.search.objectives import Goals
from agentarch.search.proposers.baselines import RegularizedEvolution
from agentarch.search.spaces import get_space, space_for
from agentarch.store import ranking
from agentarch.store.archive import Archive, code_sha256
from agentarch.store.names import candidate_name
from agentarch.store.ranking import Direction
from agentarch.store.summaries import best_by_validation, status_counts
from agentarch.tasks.registry import Task, get_task

OFFLINE_PROPOSER = RegularizedEvolution.name
BEST_OF_N = "best-of-n"
"""The proposer name of the control without feedback: the LLM prompted from the seeds alone (`feedback` off)."""

HOST_STOPS_BEFORE_FAILED = 2
"""How many starts of one sandbox job the orchestrator may die under (killed for memory, a segfault) before the
candidate is recorded `failed` instead of run again: one ordinary kill (a reboot, Ctrl-C) still replays it."""

FAULT_CHARS = 4000
"""A fault's reason is capped to this (head and tail kept): an exception message may be megabytes of hostile text."""


SMOKE_MEASURES = ("params", "flops", "latency_ms", "peak_memory_mb", "proxies")
"""What a screened candidate's smoke run measured that the predictor reads (protocol.py bounded each value)."""

SANDBOX_STAGE = "sandbox"
"""The stage name of a candidate's sandbox job in `evaluation_starts` (one job: smoke, then training)."""


class _HostStopped(Exception):
    """The orchestrator died under this candidate's sandbox job too often: it is not started again."""


class RunAborted(RuntimeError):
    """Another branch failed in a way that stops the run; this one stops waiting (never recorded as its fault)."""


class CandidateState(TypedDict, total=False):
    """One proposal on its way from prompt to archive row."""

    plan: dict[str, Any]  # key, seq, island, and offline the space architecture and parents (scheduler._plan)
    parent_id: int | None
    example_ids: list[int]
    fewshot: dict[str, Any]  # the parent and example rows exactly as the prompt showed them
    messages: list[dict[str, str]]
    response: str | None
    llm_error: str | None  # the LLM call failed for good
    intent: str | None
    code: str | None
    hparams: dict[str, Any]  # the code's HPARAMS, read by the static check
    error: str | None  # what the repair prompt shows: a rejection, a dedup verdict, a smoke failure
    fault: str | None  # a step raised, or the host died under this candidate too often: it goes to `fail`
    tries: int  # repairs so far
    verdict: str | None  # the candidate's outcome once decided (invalid, duplicate, rejected, failed, trained...)
    smoke: dict[str, Any] | None  # with --screen: what the smoke-only job measured (size, latency, proxies)
    prediction: float | None  # with --screen: the predictor's validation score for this candidate
    edit: str | None  # what the last answer was asked to be: "diff" (edits of the parent) or "full" (a module)
    edit_error: str | None  # why the answer's edits did not apply (shown once to the LLM, then a full module)
    edit_tries: int  # edit retries so far (at most one)
    edit_outcome: str | None  # diff, diff-repaired or diff-fallback: how a diff-mode proposal got its code
    assessment: dict[str, Any] | None  # the rows that verdict records
    analysis: str | None
    review: dict[str, Any] | None  # a person's latest decision at the review gate
    covered: list[str]  # sha256 of every code a person's decision covers: approved as shown, or written in an edit
    gate: str | None  # the review gate's verdict on this pass: "pass", "edited" or "rejected"
    call_ids: Annotated[list[int], operator.add]
    cost_usd: Annotated[float, operator.add]
    prompt_tokens: Annotated[int, operator.add]
    completion_tokens: Annotated[int, operator.add]
    outcomes: Annotated[list[dict[str, Any]], operator.add]


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
                archive=self.archive(),
                run_id=self.run_id,
            )
        return clients[arm.spec]

    def offline_space(self) -> str:
        """The configured space when it builds this task's kind, else the first registered space that does."""
        return space_for(self.task.kind, self.settings.offline_space)


class Loop:
    """The nodes of both graphs, as methods over one RunContext."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    # -- one candidate ----------------------------------------------------------------------------

    def select_context(self, state: CandidateState) -> dict[str, Any]:
        """Choose the parent and the few-shot examples from the archive (offline: the evolution's parent).

        The scheduler started this proposal when a place among the slots and the queue freed, so the
        context is read now, with every result that ended before it. With several objectives the parent
        is chosen by Pareto front and crowding; with islands, from the island's pool (`plan["pool"]`).
        """
        plan = state["plan"]
        if self.ctx.offline:
            return {"parent_id": (plan.get("parents") or [None])[0], "example_ids": []}
        s = self.ctx.settings
        if not s.feedback:
            shot = fewshot.from_seeds(self.ctx.task.kind, s.examples)
            return {"parent_id": None, "example_ids": [], "fewshot": dataclasses.asdict(shot)}
        shot = fewshot.select(
            self.ctx.archive(),
            self.ctx.task.name,
            n=s.examples,
            strategy=s.parent_strategy,
            rng=random.Random(plan["key"]),
            goals=self.ctx.goals,
            members=plan.get("pool"),
        )
        return {
            "parent_id": shot.parent_id,
            "example_ids": shot.example_ids,
            "fewshot": {"parent": shot.parent, "examples": shot.examples, "strategy": shot.strategy},
        }

    def render_prompt(self, state: CandidateState) -> dict[str, Any]:
        if self.ctx.offline:
            return {"messages": []}
        plan = state["plan"]
        note = _batch_note(plan)
        notes = self.ctx.archive().notes(self.ctx.run_id) if self.ctx.settings.feedback else []
        shot = fewshot.FewShot(**state["fewshot"])
        notebook = notes[-1] if notes else None
        if plan.get("edit") == "diff" and shot.parent is not None:  # an edit needs a parent to edit
            messages = prompts.edit_messages(self.ctx.task, shot, note, self.ctx.goals, notebook)
            return {"messages": messages, "edit": "diff"}
        messages = prompts.propose_messages(
            self.ctx.task, shot, batch_note=note, goals=self.ctx.goals, notebook=notebook
        )
        return {"messages": messages, "edit": "full"}

    def propose(self, state: CandidateState) -> dict[str, Any]:
        """Ask the LLM for a candidate (offline: render the evolution's architecture)."""
        plan = state["plan"]
        if self.ctx.offline:
            space = get_space(self.ctx.offline_space())
            return {"code": space.render(plan["arch"], self.ctx.task), "intent": plan.get("note"), "response": None}
        return self._ask(state, state["messages"], "propose")

    def _ask(self, state: CandidateState, messages: list[dict[str, str]], purpose: str) -> dict[str, Any]:
        """One LLM call to the proposal's model; a call that fails for good leaves `response` None and says why in
        `llm_error`."""
        try:
            done = self.ctx.llm(state["plan"].get("model")).complete(messages, purpose)
        except LLMError as err:
            return {"response": None, "llm_error": f"[llm] {err}", "call_ids": list(getattr(err, "call_ids", []))}
        return {
            "response": _printable(done.text),
            "llm_error": None,
            "call_ids": done.call_ids,
            "cost_usd": done.cost_usd,
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
        }

    def extract(self, state: CandidateState) -> dict[str, Any]:
        """Pull the module out of the answer (prose, several blocks, a cut-off answer are all handled); in diff
        mode, apply the answer's SEARCH/REPLACE blocks to the parent, strictly (each must match exactly once)."""
        if self.ctx.offline:
            return {"error": None}
        if state.get("edit") == "diff":
            parent = (state.get("fewshot") or {}).get("parent") or {}
            try:
                applied = edits.apply(parent.get("code") or "", state.get("response") or "")
            except edits.EditError as err:
                return {"code": None, "edit_error": str(err)}
            outcome = "diff-repaired" if state.get("edit_tries") else "diff"
            intent = prompts.intent_of(state.get("response") or "")
            return {"code": applied.code, "intent": intent, "error": None, "edit_error": None, "edit_outcome": outcome}
        try:
            found = prompts.extract_code(state.get("response") or "")
        except prompts.ExtractError as err:
            return {"code": None, "error": f"[extract] {err}"}
        return {"code": found.code, "intent": found.intent, "error": None}

    def static_check(self, state: CandidateState) -> dict[str, Any]:
        """The candidate contract, read without running the code; a rejection goes to repair with its rule and line."""
        row = self._row(state)
        rejected = self.ctx.evaluator().check(row)
        if rejected:
            return {**_verdict(rejected), "error": rejected.reason}
        return {"hparams": row["hparams"], "error": None}

    def dedup(self, state: CandidateState) -> dict[str, Any]:
        """Text and AST levels here; the functional level needs the sandbox and runs in `smoke`."""
        duplicate = self.ctx.evaluator().dedup(self._row(state))
        return _verdict(duplicate) if duplicate else {}

    def review_gate(self, state: CandidateState) -> dict[str, Any]:
        """With --review, pause here (a LangGraph interrupt) until a person approves, rejects or edits this code.

        A decision covers exactly the code it was shown, by sha256 (and, for an edit, the code the person
        wrote). Every way to the sandbox passes here, so code that changed after a decision (an LLM repair
        after a failed smoke run, or of a person's edit that failed the checks) pauses again.
        """
        code = state.get("code") or ""
        covered = state.get("covered") or []
        if not self.ctx.settings.review or code_sha256(code) in covered:
            return {"gate": "pass"}
        plan = state["plan"]
        decision = interrupt(
            {
                "proposal_key": plan["key"],
                "code": code,
                "code_sha256": code_sha256(code),
                "intent": state.get("intent"),
                "parent_id": state.get("parent_id"),
            }
        )
        if decision.get("code_sha256") != code_sha256(code):
            raise RuntimeError(f"the decision resuming proposal {plan['key']} was taken on other code than it shows")
        if decision["status"] == "edited":
            return {
                "gate": "edited",
                "review": decision,
                "code": decision["code"],
                "error": None,
                "covered": [*covered, code_sha256(decision["code"])],
            }
        if decision["status"] == "rejected":
            rejected = self.ctx.evaluator().without_running(
                code,
                self._name(state),
                "rejected",
                f"rejected by {decision['by']}: {decision['reason']}",
                self._proposer(),
            )
            return {"gate": "rejected", "review": decision, **_verdict(rejected)}
        return {"gate": "pass", "review": decision, "covered": [*covered, code_sha256(code)]}

    def smoke(self, state: CandidateState) -> dict[str, Any]:
        """Start the candidate's sandbox job and wait for its smoke verdict (build, count, forward and backward one
        batch, functional dedup, the parameter budget); a candidate that passed trains on in the same job.

        With --screen the job ends after the smoke run, and what it measured goes to `screen`."""
        screening = self.ctx.screening is not None
        job = self._start(state, smoke_only=screening)
        if isinstance(job, str):
            return {"fault": job}
        key = state["plan"]["key"]
        try:
            verdict = job.smoke()
        except BaseException:
            self._finished(state)
            raise
        if verdict is None and screening:
            self._finished(state)
            measured = job.pending.smoke().smoke or {}
            return {"error": None, "smoke": {k: measured.get(k) for k in SMOKE_MEASURES}}
        if verdict is None:
            self.ctx.keep_job(key, job)
            return {"error": None}
        self._finished(state)
        return {**_verdict(verdict), "error": verdict.reason}

    def screen(self, state: CandidateState) -> dict[str, Any]:
        """Report the smoke-tested candidate to its screening group and wait for the group's decision: train it, or
        record it `screened` with its prediction. Its queue place is given back first: it proposes no more."""
        plan = state["plan"]
        self.ctx.leave_queue(plan["key"])
        row = self._row(state)
        decision = self.ctx.screening.report(self.ctx.archive(), plan, state.get("smoke") or {}, {**plan, **row})  # type: ignore[union-attr]
        if decision.train:
            return {"prediction": decision.prediction}
        screened = self.ctx.evaluator().without_running(
            state.get("code") or "", self._name(state), "screened", decision.reason, self._proposer()
        )
        measured = state.get("smoke") or {}
        screened.candidate.update(params=measured.get("params"), flops=measured.get("flops"))
        return {**_verdict(screened), "prediction": decision.prediction}

    def edit_retry(self, state: CandidateState) -> dict[str, Any]:
        """Edits that did not apply: show the LLM why (and the parent again), once, in the same conversation."""
        parent = state["fewshot"]["parent"]
        messages = [
            *state["messages"],
            {"role": "assistant", "content": state.get("response") or ""},
            prompts.edit_retry_message(self.ctx.task, parent, state.get("edit_error") or ""),
        ]
        return {**self._ask(state, messages, "edit"), "messages": messages, "edit_tries": 1}

    def fall_back(self, state: CandidateState) -> dict[str, Any]:
        """Edits that failed twice: ask for a full module instead, from the same context; nothing is dropped."""
        plan = state["plan"]
        messages = prompts.propose_messages(
            self.ctx.task,
            fewshot.FewShot(**state["fewshot"]),
            batch_note=_batch_note(plan),
            goals=self.ctx.goals,
        )
        answer = self._ask(state, messages, "propose")
        return {**answer, "messages": messages, "edit": "full", "edit_outcome": "diff-fallback", "edit_error": None}

    def repair(self, state: CandidateState) -> dict[str, Any]:
        """Show the LLM its code and what went wrong; its answer goes back through extract and the checks."""
        tries = state.get("tries", 0) + 1
        messages = prompts.repair_messages(
            self.ctx.task, state.get("code") or state.get("response") or "", state.get("error") or "", attempt=tries
        )
        answer = self._ask(state, messages, "repair")
        if answer["response"] is None:  # keep the failing candidate and its verdict for the record
            return {**answer, "response": state.get("response"), "tries": tries}
        return {
            **answer,
            "tries": tries,
            "verdict": None,
            "assessment": None,
            "messages": state["messages"] + messages[-1:],
        }

    def train(self, state: CandidateState) -> dict[str, Any]:
        """Wait for the training the smoke step's job went on with (after a resume, run a new job: smoke and train)."""
        key = state["plan"]["key"]
        self.ctx.leave_queue(key)
        job = self.ctx.take_job(key) or self._start(state)
        if isinstance(job, str):
            return {"fault": job}
        try:
            return _verdict(job.result())
        finally:
            self._finished(state)

    def _start(self, state: CandidateState, smoke_only: bool = False) -> SandboxRun | str:
        """Start the candidate's sandbox job, marked started in the archive once it has its slot.

        The mark is closed (`_finished`) when the job's verdict is in. A mark left open means the
        orchestrator died while the candidate was in the sandbox; after HOST_STOPS_BEFORE_FAILED such deaths
        the candidate is not run again, and the reason returned instead is recorded as its failure. With
        local slots the mark is taken once the job has its slot, so a candidate waiting for one is not blamed;
        with Ray, a job queued on the cluster is.
        """
        code, key = state.get("code") or "", state["plan"]["key"]
        if self.ctx.settings.review and code_sha256(code) not in (state.get("covered") or []):
            raise RuntimeError("code that no review decision covers reached the sandbox")  # the graph's invariant
        archive = self.ctx.archive()

        def mark() -> None:
            stops = archive.evaluation_started(self.ctx.run_id, key, code, SANDBOX_STAGE)
            if stops >= HOST_STOPS_BEFORE_FAILED:
                raise _HostStopped(
                    f"[host] the orchestrator stopped {stops} times while this candidate was in the sandbox; "
                    "recorded as failed instead of run again"
                )

        try:
            return self.ctx.evaluator().start(self._row(state), ready=mark, smoke_only=smoke_only)
        except _HostStopped as stopped:
            return str(stopped)

    def _finished(self, state: CandidateState) -> None:
        self.ctx.archive().evaluation_finished(
            self.ctx.run_id, state["plan"]["key"], state.get("code") or "", SANDBOX_STAGE
        )

    def analyze(self, state: CandidateState) -> dict[str, Any]:
        """The analyst: a short note against the parent, kept with the candidate and shown to later rounds."""
        assessment = state["assessment"]
        if self.ctx.offline:
            return {}
        archive = self.ctx.archive()
        parent = None
        if state.get("parent_id"):
            parent = {**archive.scored(state["parent_id"]), "code": archive.candidate(state["parent_id"])["code"]}
        candidate = {
            **assessment["candidate"],
            **assessment["metrics"],
            "status": assessment["status"],
            "reason": assessment["reason"],
        }
        answer = self._ask(state, prompts.analyze_messages(self.ctx.task, candidate, parent), "analyze")
        analysis = (answer["response"] or "").strip() or None
        return {
            k: v for k, v in answer.items() if k in ("call_ids", "cost_usd", "prompt_tokens", "completion_tokens")
        } | {"analysis": analysis}

    def record(self, state: CandidateState) -> dict[str, Any]:
        """Write the candidate, its evaluation and its LLM provenance in one transaction (once per proposal)."""
        plan = state["plan"]
        assessment = state.get("assessment") if state.get("verdict") else None
        if assessment is None:  # no verdict: no code in the answer, or no LLM answer to a repair
            assessment = _dump(
                self.ctx.evaluator().without_running(
                    state.get("code") or state.get("response") or "",
                    self._name(state),
                    "invalid",
                    state.get("error") or state.get("llm_error") or "no candidate",
                    self._proposer(),
                )
            )
        extra: dict[str, Any] = {
            "proposal_key": plan["key"],
            "parents": [state["parent_id"]] if state.get("parent_id") else [],
            "repairs": state.get("tries", 0),
            "island": plan.get("island"),
            "prediction": state.get("prediction"),
        }
        if not self.ctx.offline:
            extra["edit"] = _edit_outcome(state)
        if self.ctx.offline:
            extra.update(space=self.ctx.offline_space(), arch=plan["arch"])
        else:
            extra.update(
                model=ModelArm.parse(plan["model"]).name if plan.get("model") else self.ctx.arms[0].name,
                prompt=state.get("messages"),
                response=state.get("response"),
                examples=state.get("example_ids") or [],
                analysis=state.get("analysis"),
                prompt_tokens=state.get("prompt_tokens", 0),
                completion_tokens=state.get("completion_tokens", 0),
                cost_usd=state.get("cost_usd", 0.0),
            )
        self.ctx.leave_queue(plan["key"])
        result = self.ctx.evaluator().record(_load(assessment), extra, llm_calls=state.get("call_ids", []))
        if state.get("review"):
            self.ctx.archive().link_review(plan["key"], result.id)
        return {"outcomes": [self._outcome(state, result.id, result.status, result.reason, result.metrics)]}

    def fail(self, state: CandidateState) -> dict[str, Any]:
        """Record a candidate whose step raised (or that the host kept dying under) as `failed`, with the fault.

        Only its code and provenance are kept, none of what the faulting step produced, since that may be
        what broke the host; text is made storable first (an LLM answer may hold unpaired surrogates).
        """
        fault = state["fault"] or "[host] unknown fault"
        code = _printable(state.get("code") or state.get("response") or "")
        failed = self.ctx.evaluator().without_running(code, self._name(state), "failed", fault, self._proposer())
        failed.evaluation = {"status": "failed", "error": fault, "isolation": self.ctx.evaluator().isolation}
        clean = {
            **state,
            **_verdict(failed),
            "analysis": None,
            "response": _printable(state.get("response")),
            "messages": [{k: _printable(v) for k, v in m.items()} for m in state.get("messages") or []],
        }
        return self.record(clean)  # type: ignore[arg-type]

    def give_up(self, state: CandidateState) -> dict[str, Any]:
        """The LLM never answered: nothing to record as a candidate, but the run counts the attempt."""
        self.ctx.leave_queue(state["plan"]["key"])
        return {"outcomes": [self._outcome(state, None, "failed", state.get("llm_error"), {})]}

    def _outcome(
        self, state: CandidateState, candidate_id: int | None, status: str, reason: str | None, metrics: dict[str, Any]
    ) -> dict[str, Any]:
        """What the scheduler and the run summary keep of a finished proposal: its scores and the measures that
        objectives and constraints may name."""
        evaluation = (state.get("assessment") or {}).get("evaluation") or {}
        measured = {**evaluation, **metrics}
        outcome = {
            "key": state["plan"]["key"],
            "id": candidate_id,
            "status": status,
            "reason": reason,
            "repaired": status == "trained" and state.get("tries", 0) > 0,
            "val_accuracy": metrics.get("val_accuracy"),
            "test_accuracy": metrics.get("test_accuracy"),
            **{m: measured.get(m) for m in ("params", "flops", "latency_ms", "peak_memory_mb")},
            "metric": self.ctx.task.metric,  # what the two scores are
            "edit": None if self.ctx.offline else _edit_outcome(state),
            "arch": state["plan"].get("arch"),
            "cost_usd": state.get("cost_usd", 0.0),
        }
        if self.ctx.on_outcome is not None:
            self.ctx.on_outcome(outcome)
        return outcome

    # -- routing ----------------------------------------------------------------------------------

    @staticmethod
    def after_propose(state: CandidateState) -> str:
        return "give_up" if state.get("response") is None and state.get("code") is None else "extract"

    def after_repair(self, state: CandidateState) -> str:
        return "record" if state.get("llm_error") else "extract"

    def after_extract(self, state: CandidateState) -> str:
        if state.get("edit_error"):
            return "fall_back" if state.get("edit_tries") else "edit_retry"
        return self._repair_or_record(state) if state.get("error") else "static_check"

    @staticmethod
    def after_edit_call(state: CandidateState) -> str:
        """An edit retry or fallback the LLM did not answer is recorded `invalid` with what it last said."""
        return "record" if state.get("response") is None else "extract"

    def after_check(self, state: CandidateState) -> str:
        return self._repair_or_record(state) if state.get("verdict") else "dedup"

    @staticmethod
    def after_dedup(state: CandidateState) -> str:
        return "record" if state.get("verdict") else "review_gate"

    @staticmethod
    def after_review(state: CandidateState) -> str:
        return {"rejected": "record", "edited": "static_check"}.get(state.get("gate") or "", "smoke")

    def after_smoke(self, state: CandidateState) -> str:
        verdict = state.get("verdict")
        if verdict is None:
            return "train" if self.ctx.screening is None else "screen"
        fixable = verdict in ("failed", "timeout") or "[param-budget]" in (state.get("error") or "")
        return self._repair_or_record(state) if fixable else "record"

    def _repair_or_record(self, state: CandidateState) -> str:
        if self.ctx.offline or state.get("tries", 0) >= self.ctx.settings.repair_tries:
            return "record"
        return "repair"

    # -- helpers ----------------------------------------------------------------------------------

    def _proposer(self) -> str:
        if self.ctx.offline:
            return OFFLINE_PROPOSER
        return "llm" if self.ctx.settings.feedback else BEST_OF_N

    def _name(self, state: CandidateState) -> str:
        """What the candidate is (the space's architecture, else the intent's first words) and the run's tag and
        proposal number, so each name is unique and a name pasted into search finds its one candidate."""
        plan = state["plan"]
        arch = f"{self.ctx.offline_space()}:{plan['arch']}" if plan.get("arch") else None
        return candidate_name(self.ctx.run_id, plan["seq"], state.get("intent"), arch)

    def _row(self, state: CandidateState) -> dict[str, Any]:
        """The candidate row the evaluator's steps work on, with the HPARAMS the static check read."""
        parents = [state["parent_id"]] if state.get("parent_id") else []
        row = self.ctx.evaluator().row(state.get("code") or "", self._name(state), self._proposer(), parents)
        row["hparams"] = state.get("hparams") or {}
        return row


def _guarded(ctx: RunContext, node: Any, serde: SerializerProtocol, contain: bool = True) -> Any:
    """A candidate step whose unexpected exception becomes the candidate's `fault` (recorded `failed` by `fail`),
    so that no exception from one candidate's evaluation stops a run.

    A step's update is serialized here once (`serde`, the checkpointer's), because a value the checkpoint
    cannot store (a 5,000-digit integer from a hostile runner) would otherwise fail the whole run outside
    every step.

    What cannot be contained (a SandboxError; `fail` itself raising, i.e. the archive refusing a write; Ctrl-C) frees the
    queue place and tells the waiting branches to stop, and the error reaches the user.
    """

    def run(state: CandidateState) -> dict[str, Any]:
        try:
            update = node(state)
            if contain:
                serde.dumps_typed(update)
            return update
        except (GraphBubbleUp, RunAborted):  # a review pause; another branch stopping the run
            raise
        except BaseException as err:
            # A SandboxError is the machine's, not the candidate's (no sandbox can run here, or the weak
            # one refuses untrusted code): every later candidate would fail the same way, so it stops the run.
            if contain and isinstance(err, Exception) and not isinstance(err, SandboxError):
                return {"fault": _fault(node.__name__, err)}
            ctx.aborted.set()
            ctx.leave_queue(state["plan"]["key"])
            raise

    run.__name__ = node.__name__
    return run


def _fault(step: str, err: Exception) -> str:
    """The reason recorded for a step that raised: the step, the exception type and its message, capped."""
    text = _printable(f"[host] {step} raised {type(err).__name__}: {err}")
    if len(text) <= FAULT_CHARS:
        return text
    head, tail = text[: FAULT_CHARS * 3 // 4], text[-FAULT_CHARS // 4 :]
    return f"{head}\n[... {len(text) - len(head) - len(tail)} of {len(text)} characters cut ...]\n{tail}"


def _printable(text: str | None) -> str | None:
    """Text as SQLite and every later reader can take it: unpaired surrogates (valid in a Python str, not in
    UTF-8; a JSON answer can carry them) become '?'."""
    return None if text is None else text.encode("utf-8", "replace").decode("utf-8")


def _unless_fault(route: Any) -> Any:
    """A step's way on, except that a candidate with a fault goes to `fail`."""

    def routed(state: CandidateState) -> str:
        return "fail" if state.get("fault") else route(state)

    return routed


def _batch_note(plan: dict[str, Any]) -> str:
    """Where this proposal stands among its siblings, so that proposals written at the same time differ."""
    if "round" in plan:
        return f"This is proposal {plan['slot'] + 1} of {plan['of']} in round {plan['round']}; make it differ from its siblings."
    if plan.get("in_flight"):
        return (
            f"This is proposal {plan['seq'] + 1} of the run; {plan['in_flight']} others are being written or trained "
            "now, so make it differ from what you would propose by default."
        )
    return f"This is proposal {plan['seq'] + 1} of the run."


def _edit_outcome(state: CandidateState) -> str:
    """How an LLM proposal got its code: full (asked for a module), diff (its edits applied), diff-repaired (applied
    after the one retry), diff-fallback (a full module after two failed edits), diff-unanswered (the LLM gave no
    answer to the retry or the fallback)."""
    if state.get("edit_outcome"):
        return state["edit_outcome"]  # type: ignore[return-value]
    return "diff-unanswered" if state.get("edit") == "diff" else "full"


def _dump(assessment: Assessment) -> dict[str, Any]:
    """An assessment as the checkpoint stores it (plain data)."""
    return dataclasses.asdict(assessment)


def _verdict(assessment: Assessment) -> dict[str, Any]:
    """The state update that decides a candidate's outcome: its verdict and the rows to record."""
    return {"verdict": assessment.status, "assessment": _dump(assessment)}


def _load(data: dict[str, Any]) -> Assessment:
    return Assessment(**data)


def build(ctx: RunContext, checkpointer: SqliteSaver) -> Any:
    """Compile the candidate graph, checkpointed; nodes are named as in the module docstring."""
    loop = Loop(ctx)
    one = StateGraph(CandidateState)
    for name in (
        "select_context",
        "render_prompt",
        "propose",
        "extract",
        "static_check",
        "dedup",
        "review_gate",
        "smoke",
        "screen",
        "repair",
        "edit_retry",
        "fall_back",
        "train",
        "analyze",
        "record",
        "give_up",
    ):
        one.add_node(name, _guarded(ctx, getattr(loop, name), checkpointer.serde))
    one.add_node("fail", _guarded(ctx, loop.fail, checkpointer.serde, contain=False))

    def then(step: str, route: Any, targets: list[str]) -> None:
        """`step`'s way on; a step that raised goes to `fail` instead (so every edge out of a step is conditional)."""
        one.add_conditional_edges(step, _unless_fault(route), [*targets, "fail"])

    one.add_edge(START, "select_context")
    then("select_context", lambda state: "render_prompt", ["render_prompt"])
    then("render_prompt", lambda state: "propose", ["propose"])
    then("propose", loop.after_propose, ["extract", "give_up"])
    then("extract", loop.after_extract, ["static_check", "repair", "record", "edit_retry", "fall_back"])
    then("static_check", loop.after_check, ["dedup", "repair", "record"])
    then("dedup", loop.after_dedup, ["review_gate", "record"])
    then("review_gate", loop.after_review, ["smoke", "static_check", "record"])
    then("smoke", loop.after_smoke, ["train", "screen", "repair", "record"])
    then("screen", lambda state: "record" if state.get("verdict") else "train", ["train", "record"])
    then("repair", loop.after_repair, ["extract", "record"])
    then("edit_retry", loop.after_edit_call, ["extract", "record"])
    then("fall_back", loop.after_edit_call, ["extract", "record"])
    then("train", lambda state: "analyze", ["analyze"])
    then("analyze", lambda state: "record", ["record"])
    then("record", lambda state: END, [END])
    then("give_up", lambda state: END, [END])
    one.add_edge("fail", END)

    return one.compile(checkpointer=checkpointer)


def checkpoint_path(archive_path: Path) -> Path:
    """The LangGraph checkpoints live next to the archive: archive.db -> archive.checkpoints.db."""
    return archive_path.with_name(archive_path.stem + ".checkpoints.db")


def open_checkpointer(archive_path: Path) -> SqliteSaver:
    conn = sqlite3.connect(str(checkpoint_path(archive_path)), check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    return SqliteSaver(conn)


def summarize(
    run_id: str,
    status: str,
    outcomes: list[dict[str, Any]],
    stopped_by: str | None,
    direction: Direction = "max",
    metric: str = "accuracy",
    goals: Goals | None = None,
    verified: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The object `agentarch run --json` prints last; `best` is the best by validation in the task's `direction`
    (`agentarch.loop.run` passes it and the task's `metric`, which the scores in `best` are).

    With several objectives it adds the run's Pareto front (trained candidates that meet the constraints and
    that no other dominates) and its hypervolume against a reference point it states; with --verify-top the
    verify-stage results, best first, apart from the explore results.
    """
    found = status_counts(o["status"] for o in outcomes)
    counts = {k: found.get(k, 0) for k in ("trained", "invalid", "duplicate", "failed", "rejected", "screened")}
    counts["failed"] += found.get("timeout", 0)
    best = best_by_validation(
        outcomes, lambda o: o.get("val_accuracy") if o["status"] == "trained" else None, direction
    )
    summary: dict[str, Any] = {
        "run_id": run_id,
        "status": status,
        "proposed": len(outcomes),
        **counts,
        "repaired": sum(1 for o in outcomes if o.get("repaired")),
        "best": {"id": best["id"], "test_accuracy": best["test_accuracy"]} if best else None,
        "metric": metric,
        "cost_usd": round(sum(o.get("cost_usd") or 0.0 for o in outcomes), 6),
        "stopped_by": stopped_by,
    }
    if goals is not None and goals.multi:
        trained = [o for o in outcomes if o["status"] == "trained" and o.get("id")]
        reference = goals.reference(trained)
        summary["objectives"] = goals.describe()
        summary["front"] = [
            {"id": o["id"], **{obj.column: o.get(obj.column) for obj in goals.objectives}} for o in goals.front(trained)
        ]
        summary["hypervolume"] = goals.hypervolume(trained, reference)
        summary["reference"] = (
            None if reference is None else [obj.key(r) for obj, r in zip(goals.objectives, reference)]
        )
    edited = Counter(o["edit"] for o in outcomes if o.get("edit"))
    if set(edited) - {"full"}:
        summary["edits"] = dict(edited)
    if verified:
        summary["verified"] = ranking.ranked(
            [v for v in verified.values() if v["status"] == "trained"], lambda v: v["val_accuracy"], direction
        )
    return summary
