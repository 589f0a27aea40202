"""The run's scheduler: keeps the training slots busy with proposals, each one a LangGraph thread of its own.

    steady (default):  while no budget is spent: wait for a place (slots + queue) → plan → start a proposal
    rounds:            while no budget is spent: start `batch` proposals → wait for the slowest of them
    then, with --verify-top K:  retrain the run's best K at the verify fidelity as slots free
    then:              wait for the proposals in flight

A proposal is one thread of the candidate graph (agentarch/loop/graph.py), its LangGraph thread id its key
`RUN/SEQ`. It takes a place when it is planned and gives it back when it starts training (or ends), so the
next proposal is written while the slots train, with few-shot context read at that moment, and no proposal
waits for a sibling: the only barrier is in `rounds` mode, kept to measure what the barrier costs.

Every proposal is written to the archive's `proposals` ledger before it starts and closed with its outcome
when it ends. A resumed run reads the ledger: the closed ones are its outcomes, in the order they ended; the
open ones are resumed from their checkpoints (or started, if the crash came before their first step), so
nothing is lost or done twice. Budgets are checked before each proposal: `max-candidates` counts proposals
started, `max-cost` the run's LLM spend, `hours` the time since the run started.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from langgraph.types import Command

from agentarch.config import ModelArm
from agentarch.llm import client as llm_client
from agentarch.llm import gate as llm_gate
from agentarch.llm import prompts
from agentarch.llm.client import LLMError
from agentarch.loop import bandit, islands
from agentarch.loop.context import OFFLINE_PROPOSER, RunAborted, RunContext
from agentarch.loop.events import Paused, Pulse, Recorded
from agentarch.loop.nodes.base import proposal_tag
from agentarch.loop.nodes.evaluating import SANDBOX_STAGE
from agentarch.loop.stopping import kill_sandbox_jobs
from agentarch.search.limits import Limits
from agentarch.search.proposers.base import Observation, Proposal
from agentarch.search.proposers.baselines import RegularizedEvolution

log = logging.getLogger(__name__)

RECURSION_LIMIT = 1_000
"""LangGraph's cap on steps in one proposal's thread (a candidate takes about 12, repairs included)."""

WAIT_S = 0.5
"""How long the scheduler sleeps at most before it looks again at an abort, a finished proposal or a budget."""

PULSE_S = 1.0
"""How often a watched run says what every proposal in flight is doing (agentarch.loop.events.Pulse)."""


class Scheduler:
    """Drives one run's proposals to the end of its budgets; `outcomes` are theirs in the order they ended."""

    def __init__(
        self, ctx: RunContext, graph: Any, on_waiting: Callable[[list[dict[str, Any]]], None] | None = None
    ) -> None:
        self.ctx, self.graph, self.on_waiting = ctx, graph, on_waiting
        self.settings = ctx.settings
        self.outcomes: list[dict[str, Any]] = []
        self.started = 0
        self.stopped_by: str | None = None
        self._flights: dict[str, dict[str, Any]] = {}  # key -> plan, of the proposals in flight
        self._verifying: set[int] = set()
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._ended = threading.Event()  # the run is over: the pulse stops

    # -- the run ----------------------------------------------------------------------------------

    def run(self) -> None:
        """Resume what the ledger says is open, go on to the end of the budgets, verify, wait for the rest."""
        ledger = self.ctx.archive().proposals(self.ctx.run_id)
        self.started = len(ledger)
        self.outcomes = [p["outcome"] for p in ledger if p["outcome"] is not None]
        for entry in ledger:  # before any resumed proposal runs: a copy of held code must find it held
            if entry["outcome"] is None:
                self._hold_again(entry["plan"]["key"])
        for entry in ledger:
            if entry["outcome"] is None:
                self._launch(entry["plan"], fresh=False)
            elif self.ctx.screening is not None:
                self.ctx.screening.ended(entry["plan"])
        pulse = threading.Thread(target=self._pulse, name="pulse", daemon=True)
        if self.ctx.emit.wanted:
            pulse.start()
        try:
            try:
                if self.settings.schedule == "rounds":
                    self._rounds()
                else:
                    self._steady()
                if self.stopped_by not in ("hours", self.ctx.stop_reason):
                    self._verify()
            except RunAborted:
                if not self.ctx.stopping.is_set():
                    self._raise_failure()
                    raise
                self.stopped_by = self.ctx.stop_reason
            self._wait(lambda: not self._flights and not self._verifying)
        except KeyboardInterrupt:
            self.ctx.aborted.set()
            raise
        except BaseException:
            self.ctx.aborted.set()
            self._wait(lambda: not self._flights and not self._verifying, stop_on_error=False)
            raise
        finally:
            self._ended.set()
        self._raise_failure()

    def _steady(self) -> None:
        """A proposal starts whenever a place frees, budgets checked before and after the wait for it."""
        while not self._spent():
            key = self._key(self.started)
            self._take_place(key)
            if self._spent():
                self.ctx.leave_queue(key)
                return
            self._start(self._plan(self.started, key))

    def _rounds(self) -> None:
        """`batch` proposals at a time; the next round starts when the slowest of this one has ended."""
        round_no = 0
        while not self._spent():
            round_no += 1
            size = min(self.settings.batch, self.settings.budget - self.started)
            for slot in range(size):
                key = self._key(self.started)
                self._take_place(key)
                self._start({**self._plan(self.started, key), "round": round_no, "slot": slot, "of": size})
            self._wait(lambda: not self._flights)

    def _spent(self) -> bool:
        """Stop on the first budget that is spent and say which one, so the user knows what to raise."""
        self._raise_failure()
        s = self.settings
        if self.ctx.stopping.is_set():
            self.stopped_by = self.ctx.stop_reason
        elif self.started >= s.budget:
            self.stopped_by = "max-candidates"
        elif s.max_cost is not None and self.ctx.archive().spent_usd(self.ctx.run_id) >= s.max_cost:
            self.stopped_by = "max-cost"
        elif s.hours is not None and time.time() - self.ctx.started_at >= s.hours * 3600:
            self.stopped_by = "hours"
        return self.stopped_by is not None

    def _take_place(self, key: str) -> None:
        """Wait for a place among slots + queue; a proposal that failed beyond containment stops the wait."""
        try:
            self.ctx.enter_queue(key)
        except RunAborted:
            self._raise_failure()
            raise

    def _key(self, seq: int) -> str:
        return f"{self.ctx.run_id}/{seq}"

    # -- planning ---------------------------------------------------------------------------------

    def _plan(self, seq: int, key: str) -> dict[str, Any]:
        """What proposal `seq` starts from: its island, and offline the architecture evolution proposes now.

        Planning reads the outcomes as they are at this moment, so each proposal sees every result that ended
        before it started; with islands, only its island's pool (its own outcomes and migrants)."""
        s = self.settings
        island = islands.island_of(seq, s.islands)
        with self._changed:
            ended = list(self.outcomes)
            flying = [p.get("arch") for p in self._flights.values()]
        pool = islands.pools(ended, s.islands, s.migrate_every, self.ctx.goals)[island] if s.islands > 1 else ended
        plan: dict[str, Any] = {"key": key, "seq": seq, "island": island, "in_flight": len(flying)}
        if s.screen > 1:  # the last group of a run may be smaller than K: the budget ends inside it
            plan["group_size"] = min(s.screen, s.budget - seq // s.screen * s.screen)
        if self.ctx.offline:
            proposal = self._evolve(pool, seq, [a for a in flying if a])
            plan.update(arch=proposal.arch, parents=proposal.parents, note=proposal.note)
        else:
            if s.islands > 1 and any(o.get("id") for o in pool):
                plan["pool"] = [o["id"] for o in pool if o.get("id") and o.get("status") == "trained"]
            if len(self.ctx.arms) > 1:
                plan["model"] = self._choose_model(seq).spec
            if s.feedback and self.ctx.in_space is None:  # --propose-in asks for architectures, never edits
                diff = s.edit_mode == "diff" or (
                    s.edit_mode == "mixed" and random.Random(f"{self.ctx.run_id}/{seq}/edit").random() < s.edit_rate
                )
                plan["edit"] = "diff" if diff else "full"
        return plan

    def _choose_model(self, seq: int) -> ModelArm:
        """The model of proposal `seq`: the bandit over the run's history as the archive holds it (so a resumed run,
        or one given another list of models, picks from the same state), counting the proposals in flight."""
        arms = self.ctx.arms
        history = bandit.history_from_archive(self.ctx.archive(), self.ctx.run_id, self.ctx.task.name)
        with self._changed:
            pending = Counter(ModelArm.parse(p["model"]).name for p in self._flights.values() if p.get("model"))
        return bandit.choose(arms, history, random.Random(f"{self.ctx.run_id}/{seq}"), pending=pending)

    def _evolve(self, pool: list[dict[str, Any]], seq: int, flying: list[str]) -> Proposal:
        """Regularized evolution rebuilt from `pool` (so a resumed run goes on alike), proposing an architecture
        no proposal in flight already has, inside the task's max_params and the run's constraints on params and
        FLOPs (`Limits`: a space that cannot keep to them is refused with LimitError at the first plan)."""
        s = self.settings
        space = self.ctx.offline_search()
        rea = RegularizedEvolution(
            space,
            seed=s.seed * 100_003 + seq,
            population=s.population,
            sample_size=min(s.sample_size, s.population),
            distinct=True,
            direction=self.ctx.task.direction,
            goals=self.ctx.goals,
            limits=Limits.of(space, self.ctx.task, self.ctx.goals),
        )
        rea.replay([Observation.from_row(Proposal(OFFLINE_PROPOSER, arch=o["arch"]), o) for o in pool if o.get("arch")])
        proposals = rea.propose(1 + len(flying))
        return next((p for p in proposals if p.arch not in flying), proposals[0])

    # -- proposals in flight ----------------------------------------------------------------------

    def _start(self, plan: dict[str, Any]) -> None:
        """Enter the proposal in the ledger, then start its thread."""
        self.ctx.archive().open_proposal(self.ctx.run_id, plan["key"], plan["seq"], plan["island"], plan)
        self.started += 1
        self._launch(plan, fresh=True)

    def _hold_again(self, key: str) -> None:
        """Take back what a resumed proposal held in flight when the run stopped (its checkpoint says: it passed
        dedup and was not recorded), so a copy resumed beside it waits for it instead of training again."""
        snapshot = self.graph.get_state({"configurable": {"thread_id": key}})
        marks = (snapshot.values or {}).get("inflight")
        if marks:
            self.ctx.inflight.restore(key, list(marks))
        arch = (snapshot.values or {}).get("arch")  # --propose-in: the architecture the model chose for it
        if arch:
            self.ctx.claim_arch(key, arch)

    def _launch(self, plan: dict[str, Any], fresh: bool) -> None:
        with self._changed:
            self._flights[plan["key"]] = plan
        threading.Thread(target=self._fly, args=(plan, fresh), name=plan["key"], daemon=True).start()

    def _fly(self, plan: dict[str, Any], fresh: bool) -> None:
        """Drive one proposal's graph to its end, pausing for a person's review where the graph asks for one."""
        key = plan["key"]
        config = {"configurable": {"thread_id": key}, "recursion_limit": RECURSION_LIMIT}
        outcome = None
        try:
            snapshot = self.graph.get_state(config)
            command: Any = None
            if fresh or (not snapshot.values and not snapshot.next):  # never started: the crash came first
                command = {"plan": plan, "tries": 0}
            elif snapshot.interrupts:  # it stopped while waiting for a person
                command = self._await_review(snapshot.interrupts)
            while True:
                self.graph.invoke(command, config, durability="sync")
                snapshot = self.graph.get_state(config)
                if not snapshot.interrupts:
                    break
                command = self._await_review(snapshot.interrupts)
            outcome = {**snapshot.values["outcomes"][-1], "island": plan["island"], "seq": plan["seq"]}
            self.ctx.archive().close_proposal(key, outcome)
            with self._changed:
                self.outcomes.append(outcome)
                recorded = len(self.outcomes)
                due = self._notebook_due()
            self._recorded(outcome, recorded)
            if due:
                self._write_note(*due)
        except RunAborted:
            self._paused(key, plan)
        except BaseException as err:  # beyond containment (the graph's `fail` could not record): the run stops
            with self._changed:
                self._error = self._error or err
            self.ctx.aborted.set()
            self.ctx.leave_queue(key)
        finally:
            self.ctx.left(key)
            self.ctx.inflight.release(key)
            self.ctx.release_arch(key)
            if self.ctx.screening is not None:
                self.ctx.screening.ended(plan)
            with self._changed:
                self._flights.pop(key, None)
                self._changed.notify_all()

    def _recorded(self, outcome: dict[str, Any], recorded: int) -> None:
        if not self.ctx.emit.wanted:
            return
        self.ctx.emit(
            Recorded(
                outcome["key"],
                outcome["seq"],
                outcome.get("model"),
                outcome.get("id"),
                outcome["status"],
                outcome.get("reason"),
                outcome.get("repairs") or 0,
                outcome.get("val_accuracy"),
                outcome.get("cost_usd") or 0.0,
                recorded,
                self.ctx.archive().spent_usd(self.ctx.run_id),
            )
        )

    def _paused(self, key: str, plan: dict[str, Any]) -> None:
        """A proposal stopped at its last checkpoint. When the run is stopping, a sandbox job its smoke step left
        training (killed by the stop) is let go and its start mark closed: the stop ended it, not its code, so a
        resume does not count it as the orchestrator dying under the candidate."""
        if not self.ctx.stopping.is_set():
            return
        code = self.ctx.drop_job(key)
        if code is not None:
            self.ctx.archive().evaluation_finished(self.ctx.run_id, key, code, SANDBOX_STAGE)
        self.ctx.emit(Paused(key, plan["seq"], self.ctx.current_step(key)))

    def _pulse(self) -> None:
        """About once a second while the run works: what every proposal in flight is doing, for a live view."""
        while not self._ended.wait(PULSE_S):
            try:
                self.ctx.emit(self.pulse())
            except Exception as err:  # a failed look (the archive busy) skips one pulse
                log.debug("pulse skipped: %s", err)

    def pulse(self) -> Pulse:
        """Every proposal in flight with its step and, while it calls its model, the call's state (queued at the
        model's gate, waiting for the first token, streaming), seconds in it and tokens so far; the slots busy; the
        calls in flight and queued at every model's gate; the run's counts and spend."""
        calls = {row.get("tag"): row for row in llm_client.calls_in_progress()}
        proposals = []
        for step in self.ctx.steps():
            row = step.as_dict()
            del row["event"]
            call = calls.get(proposal_tag(row))
            if call is not None:
                row["llm"] = {k: call.get(k) for k in ("purpose", "state", "seconds", "tokens", "attempt")}
            proposals.append(row)
        gates = [g.snapshot() for g in llm_gate.gates()]
        executor = self.ctx.executor
        free = getattr(getattr(executor, "free", None), "qsize", None)
        busy = (
            executor.capacity - free() if free is not None else sum(p["step"] in ("smoke", "train") for p in proposals)
        )
        with self._changed:
            recorded, started = len(self.outcomes), self.started
        archive = self.ctx.archive()
        return Pulse(
            time.time(),
            proposals,
            executor.capacity,
            busy,
            started,
            recorded,
            archive.spent_usd(self.ctx.run_id),
            archive.llm_seconds(self.ctx.run_id),
            sum(int(g["in_flight"]) for g in gates),  # type: ignore[call-overload]
            sum(int(g["queued"]) for g in gates),  # type: ignore[call-overload]
            self.ctx.stopping.is_set(),
        )

    def _await_review(self, pauses: Any) -> Command:
        """Queue the proposal's paused candidate for review and wait until a person decides.

        Decisions arrive through the archive (`agentarch review`, the web UI), so the reviewer may be another
        process or another machine. The pause is matched to the review of its proposal and exact code (by
        sha256), never to an earlier decision on code the candidate no longer has.
        """
        pause = pauses[0]
        archive = self.ctx.archive()
        review_id = archive.request_review(
            {
                "run_id": self.ctx.run_id,
                "proposal_key": pause.value["proposal_key"],
                "interrupt_id": pause.id,
                "code": pause.value["code"],
                "intent": pause.value["intent"],
                "parent_id": pause.value["parent_id"],
            }
        )
        if self.on_waiting is not None:
            with self._changed:
                self.on_waiting(archive.reviews(status="pending", run_id=self.ctx.run_id))
        while True:
            review = archive.review(review_id)
            if review["status"] != "pending":
                return Command(
                    resume={
                        pause.id: {
                            "status": review["status"],
                            "reason": review["reason"],
                            "code": review["decision_code"],
                            "by": review["decided_by"],
                            "code_sha256": review["code_sha256"],
                        }
                    }
                )
            if self.ctx.aborted.wait(self.settings.review_poll_s):
                raise RunAborted("the run stopped while this candidate waited for review")

    # -- the run's notebook -----------------------------------------------------------------------

    def _notebook_due(self) -> tuple[int, list[dict[str, Any]]] | None:
        """(how many ended, the latest k outcomes) when the outcome just added completes k more (LLM runs with
        feedback only); called under the lock, so each multiple of k is due exactly once."""
        every, ended = self.settings.notebook_every, len(self.outcomes)
        if self.ctx.arch_space() is not None or not self.settings.feedback or not every or ended % every:
            return None
        return ended, self.outcomes[-every:]

    def _write_note(self, after: int, recent: list[dict[str, Any]]) -> None:
        """Condense the latest outcomes and their analyses (with the notebook's last entry) into a new entry.

        The notebook helps the search and is not needed by it: an LLM failure leaves this entry out (the
        call stays in the ledger) and the run goes on. A resumed run does not write an entry twice."""
        archive = self.ctx.archive()
        notes = archive.notes(self.ctx.run_id)
        if any(note["after"] == after for note in notes):
            return
        rows = [
            {**archive.candidate(o["id"]), **archive.scored(o["id"])}
            if o.get("id")
            else {"id": None, "status": o["status"], "reason": o.get("reason")}
            for o in recent
        ]
        messages = prompts.notebook_messages(self.ctx.task, rows, notes[-1] if notes else None)
        if self.ctx.stopping.is_set():
            return
        try:
            ask = lambda: self.ctx.llm().complete(messages, "notebook", tag="notebook")  # noqa: E731
            text = self.ctx.call(ask, "the notebook call").text.strip()
        except RunAborted:  # the run is stopping: the entry is left out, as after a failed call
            return
        except LLMError as err:
            if not self.ctx.stopping.is_set():
                log.warning("notebook entry after %d candidates left out: %s", after, err)
            return
        if text:
            known = {row["id"] for row in rows if row["id"] is not None}
            archive.add_note(self.ctx.run_id, self.ctx.task.name, after, text, prompts.cited(text, known))

    # -- explore, then verify ---------------------------------------------------------------------

    def _verify(self) -> None:
        """Retrain the run's best `verify_top` (by its goals) at the verify fidelity, as slots free.

        It starts once no more proposals will be started, in the run's tail where slots would idle, and
        looks again each time a proposal ends, so one that enters the top K late is verified too. A
        candidate is verified once per run: the archive's verify-stage evaluations say which already are.
        """
        if not self.settings.verify_top:
            return
        done = set(self.ctx.archive().verified(self.ctx.run_id))
        while not self.ctx.stopping.is_set():
            with self._changed:
                flying = bool(self._flights)
                trained = [o for o in self.outcomes if o.get("status") == "trained" and o.get("id")]
                top = self.ctx.goals.ranked(trained)[: self.settings.verify_top]
                todo = [o["id"] for o in top if o["id"] not in done and o["id"] not in self._verifying]
                self._verifying.update(todo)
            for candidate_id in todo:
                done.add(candidate_id)
                threading.Thread(target=self._reevaluate, args=(candidate_id,), daemon=True).start()
            if not flying:
                return
            self._wait(lambda: True, once=True)

    def _reevaluate(self, candidate_id: int) -> None:
        try:
            self.ctx.evaluator().reevaluate(candidate_id, self.ctx.verify_epochs, stage="verify")
        except BaseException as err:
            with self._changed:
                self._error = self._error or err
            self.ctx.aborted.set()
        finally:
            with self._changed:
                self._verifying.discard(candidate_id)
                self._changed.notify_all()

    # -- waiting ----------------------------------------------------------------------------------

    def _wait(self, done: Callable[[], bool], once: bool = False, stop_on_error: bool = True) -> None:
        """Sleep until `done()` (or, with `once`, until anything changes); an error beyond containment is raised."""
        with self._changed:
            while not done() or once:
                if stop_on_error:
                    self._raise_failure()
                if self.ctx.stopping.is_set():
                    kill_sandbox_jobs()  # one that got its slot as the stop came in
                self._changed.wait(WAIT_S)
                if once:
                    return

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error
