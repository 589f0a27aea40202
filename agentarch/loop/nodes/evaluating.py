"""The evaluating nodes: the evaluator's steps on the proposed code (static check, dedup), the review gate, and
the candidate's one sandbox job (smoke, screen, train), with the marks that tell a host death apart; on a table task
(NAS-Bench-201) the table's answer instead of the sandbox job (look_up).

Its own module because these are the steps that judge a candidate; each decides a verdict or lets it on.
"""

from __future__ import annotations

from typing import Any

from langgraph.types import interrupt

from agentarch.errors import AgentarchError
from agentarch.evaluation.dedup import ast_hash
from agentarch.evaluation.evaluator import SandboxRun
from agentarch.loop.baseline import table_assessment, table_query
from agentarch.loop.context import RunAborted
from agentarch.loop.events import SLOT_WAIT
from agentarch.loop.nodes.base import Nodes, arch_of, decided
from agentarch.loop.state import CandidateState
from agentarch.search.spaces import get_space
from agentarch.store.decisions import code_sha256

HOST_STOPS_BEFORE_FAILED = 2
"""How many starts of one sandbox job the orchestrator may die under (killed for memory, a segfault) before the
candidate is recorded `failed` instead of run again: one ordinary kill (a reboot, Ctrl-C) still replays it."""


SMOKE_MEASURES = ("params", "flops", "latency_ms", "peak_memory_mb", "proxies", "digest", "graph_features")
"""What a screened candidate's smoke run measured that the predictor reads (protocol.py bounded each value; the
graph's features are the host's, graph scoring only)."""

STOPPED = ("failed", "timeout")
"""Verdicts a job killed by a stopping run comes back with: not the candidate's, so not recorded (it replays)."""

SANDBOX_STAGE = "sandbox"
"""The stage name of a candidate's sandbox job in `evaluation_starts` (one job: smoke, then training)."""


def in_flight_marks(row: dict[str, Any]) -> list[str]:
    """The code's marks at the dedup levels that need no sandbox, as `RunContext.inflight` holds them."""
    return [f"whitespace:{row['text_hash']}", f"ast:{ast_hash(row['code'])}"]


class _HostStopped(Exception):
    """The orchestrator died under this candidate's sandbox job too often: it is not started again."""


class EvaluatingNodes(Nodes):
    """static_check → dedup → review_gate → smoke → (screen →) train; on a table task review_gate → look_up."""

    def static_check(self, state: CandidateState) -> dict[str, Any]:
        """The candidate contract, read without running the code; a rejection goes to repair with its rule and line."""
        row = self._row(state)
        rejected = self.ctx.evaluator().check(row)
        if rejected:
            return {**decided(rejected), "error": rejected.reason}
        return {"hparams": row["hparams"], "error": None}

    def dedup(self, state: CandidateState) -> dict[str, Any]:
        """Text and AST levels here; the functional level needs the sandbox and runs in `smoke`.

        Copies in flight at once train once: the code's marks are held (`RunContext.inflight`) before the archive
        is asked, so a copy of code another proposal holds waits until that one is recorded (or leaves the code
        behind), then asks the archive like any later copy. Held first, asked second: a holder records before it
        lets go, so a copy that finds no holder finds the holder's row."""
        row = self._row(state)
        key = state["plan"]["key"]
        marks = in_flight_marks(row)
        screening = self.ctx.screening

        def before_wait(holder: str) -> None:
            # A copy waiting for a holder is out of its screening group (it may be the holder's group, which
            # would wait for it); if it trains after all, it reports late and follows its group's decision.
            if screening is not None:
                screening.ended(state["plan"])

        self.ctx.inflight.hold(key, marks, before_wait)
        duplicate = self.ctx.evaluator().dedup(row)
        if duplicate:
            self.ctx.inflight.release(key)
            return {**decided(duplicate), "inflight": None}
        return {"inflight": marks}

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
            self.ctx.inflight.release(plan["key"])  # the person's code goes through dedup again
            return {
                "inflight": None,
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
            return {"gate": "rejected", "review": decision, **decided(rejected)}
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
        if self.ctx.stopping.is_set() and (verdict is None or verdict.status in STOPPED):
            self._finished(state)  # killed by the stop, not by its code: the job replays on resume
            raise RunAborted(f"the run is stopping ({self.ctx.stop_reason}); {key} resumes at smoke")
        if verdict is None and screening:
            self._finished(state)
            measured = job.pending.smoke().smoke or {}
            return {"error": None, "smoke": {k: measured.get(k) for k in SMOKE_MEASURES}}
        if verdict is None:
            self.ctx.keep_job(key, job, state.get("code") or "")
            return {"error": None}
        self._finished(state)
        return {**decided(verdict), "error": verdict.reason}

    def screen(self, state: CandidateState) -> dict[str, Any]:
        """Report the smoke-tested candidate to its screening group and wait for the group's decision: train it, or
        record it `screened` with its prediction. Its queue place is given back first: it proposes no more."""
        plan = state["plan"]
        self.ctx.leave_queue(plan["key"])
        row = self._row(state)
        decision = self.ctx.screening.report(  # type: ignore[union-attr]
            self.ctx.archive(), plan, state.get("smoke") or {}, {**plan, **row}, stop=self.ctx.stopping
        )
        if decision is None:
            raise RunAborted(f"the run is stopping ({self.ctx.stop_reason}); {plan['key']} resumes at screen")
        if decision.train:
            return {"prediction": decision.prediction}
        screened = self.ctx.evaluator().without_running(
            state.get("code") or "", self._name(state), "screened", decision.reason, self._proposer()
        )
        measured = state.get("smoke") or {}
        screened.candidate.update(params=measured.get("params"), flops=measured.get("flops"))
        return {**decided(screened), "prediction": decision.prediction}

    def train(self, state: CandidateState) -> dict[str, Any]:
        """Wait for the training the smoke step's job went on with (after a resume, run a new job: smoke and train,
        from the latest training checkpoint the lost job left beside the archive, if any)."""
        key = state["plan"]["key"]
        self.ctx.leave_queue(key)
        job = self.ctx.take_job(key) or self._start(state, step="train")
        if isinstance(job, str):
            return {"fault": job}
        try:
            verdict = job.result()
            if self.ctx.stopping.is_set() and verdict.status in STOPPED:  # killed by the stop: replayed on resume
                raise RunAborted(f"the run is stopping ({self.ctx.stop_reason}); {key} resumes at train")
            return decided(verdict)
        finally:
            self._finished(state)

    def look_up(self, state: CandidateState) -> dict[str, Any]:
        """A table task's evaluation: the table's answer for the candidate's architecture, recorded as `agentarch
        baseline` records a table's answer (agentarch.loop.baseline.table_assessment: trained at the benchmark's
        fidelity, isolation `table`); no sandbox job starts. The architecture is the proposal's when the code is its
        rendering, else the one the code declares (a reviewer's edit); code that is no cell of the table is recorded
        `invalid` with the reason."""
        self.ctx.leave_queue(state["plan"]["key"])
        code, space, arch = state.get("code") or "", get_space(self.ctx.arch_space() or ""), arch_of(state)
        try:
            if arch is None or space.render(arch, self.ctx.task) != code:
                arch = space.parse_code(code)
            arch = space.validate(arch)
            score = table_query(self.ctx.task, arch)
        except AgentarchError as err:  # SpaceError, TableError: the code names no cell the table can answer for
            reason = f"[table] {err}"
            invalid = self.ctx.evaluator().without_running(code, self._name(state), "invalid", reason, self._proposer())
            return {**decided(invalid), "error": reason}
        row = self._row({**state, "arch": arch})  # named after the cell looked up
        return {**decided(table_assessment(row, self.ctx.task, score, self.ctx.settings.seed, None)), "arch": arch}

    def _start(self, state: CandidateState, smoke_only: bool = False, step: str = "smoke") -> SandboxRun | str:
        """Start the candidate's sandbox job, marked started in the archive once it has its slot (the proposal's
        step is SLOT_WAIT until then, `step` from then on).

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
        plan = state["plan"]

        def mark() -> None:
            if self.ctx.stopping.is_set():  # it had its slot only after the stop: it starts nothing
                raise RunAborted(f"the run is stopping ({self.ctx.stop_reason}); {key} resumes here")
            self.ctx.step(plan, step)  # it has its slot: the step's time counts from here
            stops = archive.evaluation_started(self.ctx.run_id, key, code, SANDBOX_STAGE)
            if stops >= HOST_STOPS_BEFORE_FAILED:
                raise _HostStopped(
                    f"[host] the orchestrator stopped {stops} times while this candidate was in the sandbox; "
                    "recorded as failed instead of run again"
                )

        self.ctx.step(plan, SLOT_WAIT)
        try:
            digest = None if smoke_only else (state.get("smoke") or {}).get("digest")  # graph mode: the screened graph
            return self.ctx.evaluator().start(
                self._row(state), ready=mark, smoke_only=smoke_only, digest=digest, resumable=key
            )
        except _HostStopped as stopped:
            return str(stopped)

    def _finished(self, state: CandidateState) -> None:
        self.ctx.archive().evaluation_finished(
            self.ctx.run_id, state["plan"]["key"], state.get("code") or "", SANDBOX_STAGE
        )
