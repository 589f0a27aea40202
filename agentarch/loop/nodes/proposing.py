"""The proposing nodes: the few-shot context, the prompt, the LLM's answer (offline: the evolution's architecture;
with --propose-in: the model's architecture of the space), the module pulled out of it, and the LLM's second chances
(an edit retry, a full-module fallback, a repair).

Its own module because these are the steps that get a candidate's code; nothing here judges or records it.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from agentarch.llm import edits, fewshot, prompts
from agentarch.llm.faults import ContextOverflow, LLMCancelled
from agentarch.loop.containment import storable
from agentarch.loop.context import RunAborted
from agentarch.loop.nodes.base import Nodes, proposal_tag
from agentarch.loop.state import CandidateState
from agentarch.search.limits import Limits
from agentarch.search.proposers.base import Observation, Proposal
from agentarch.search.proposers.llm_space import IN_SPACE, PURPOSE, InSpaceLLM, InSpaceModel
from agentarch.search.spaces import get_space


class ProposingNodes(Nodes):
    """select_context → render_prompt → propose → extract, and repair, edit_retry and fall_back back to extract."""

    def select_context(self, state: CandidateState) -> dict[str, Any]:
        """Choose the parent and the few-shot examples from the archive (offline: the evolution's parent).

        The scheduler started this proposal when a place among the slots and the queue freed, so the
        context is read now, with every result that ended before it. With several objectives the parent
        is chosen by Pareto front and crowding; with islands, from the island's pool (`plan["pool"]`).
        """
        plan = state["plan"]
        if self.ctx.arch_space() is not None:  # the evolution's parent offline; none in a space the model searches
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
        """The prompt, fitted to the model's context window (prompts.fit_prompt): what it leaves out is kept with the
        candidate (`left_out`); a prompt that cannot fit even cut down leaves `llm_error`, and the proposal is
        recorded `failed` with the sizes to change. With --knowledge the prompt shows the knowledge base's entries most
        relevant to the parent, its analysis and the notebook (`knowledge`: those the fitted prompt kept, which the
        candidate records). In a space (offline, --propose-in) there is no few-shot prompt."""
        if self.ctx.arch_space() is not None:
            return {"messages": []}
        plan = state["plan"]
        notes = self.ctx.archive().notes(self.ctx.run_id) if self.ctx.settings.feedback else []
        shot = fewshot.FewShot(**state["fewshot"])
        notebook = notes[-1] if notes else None
        entries = self.ctx.knowledge_for(shot.parent, notebook)
        purpose = "edit" if plan.get("edit") == "diff" and shot.parent is not None else "propose"  # edits need a parent
        try:
            fitted = self._fit(state, purpose, notebook, entries)
        except ContextOverflow as err:
            return {"messages": [], "llm_error": f"[llm] {err}", "edit": "full"}
        return {**fitted, "edit": _EDIT[purpose]}

    def _fit(
        self, state: CandidateState, purpose: str, notebook: dict[str, Any] | None, entries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The `purpose` prompt for this proposal fitted to its model's window, the record of what it left out, and
        the knowledge entries it shows."""
        plan = state["plan"]
        window = self.ctx.llm(plan.get("model")).window()
        fitted = prompts.fit_prompt(
            purpose,
            self.ctx.task,
            fewshot.FewShot(**state["fewshot"]),
            window,
            batch_note=_batch_note(plan),
            goals=self.ctx.goals,
            notebook=notebook,
            knowledge=entries,
        )
        return {"messages": fitted.messages, "left_out": fitted.record(window), "knowledge": fitted.knowledge}

    def propose(self, state: CandidateState) -> dict[str, Any]:
        """Ask the LLM for a candidate (offline: render the evolution's architecture; --propose-in: ask the model for
        an architecture of the space and render it)."""
        plan = state["plan"]
        if self.ctx.in_space is not None:
            return self._propose_in_space(state)
        if self.ctx.offline:
            space = self.ctx.offline_search()
            return {"code": space.render(plan["arch"], self.ctx.task), "intent": plan.get("note"), "response": None}
        if not state["messages"]:  # the prompt did not fit the window (render_prompt's llm_error says why)
            return {"response": None, "code": None}
        return self._ask(state, state["messages"], "propose")

    def extract(self, state: CandidateState) -> dict[str, Any]:
        """Pull the module out of the answer (prose, several blocks, a cut-off answer are all handled); in diff
        mode, apply the answer's SEARCH/REPLACE blocks to the parent, strictly (each must match exactly once). Code
        rendered from a space's architecture needs no extraction."""
        if self.ctx.arch_space() is not None:
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
            found = prompts.extract_code(state.get("response") or "", state.get("finish_reason"))
        except prompts.ExtractError as err:
            return {"code": None, "error": f"[extract] {err}"}
        return {"code": found.code, "intent": found.intent, "error": None}

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
        """Edits that failed twice: ask for a full module instead, from the same context (the knowledge entries the
        edit prompt showed, not the notebook)."""
        outcome = {"edit": "full", "edit_outcome": "diff-fallback", "edit_error": None}
        try:
            fitted = self._fit(state, "propose", None, state.get("knowledge") or [])
        except ContextOverflow as err:
            return {**outcome, "response": None, "llm_error": f"[llm] {err}"}
        answer = self._ask(state, fitted["messages"], "propose")
        return {**answer, **fitted, **outcome}

    def repair(self, state: CandidateState) -> dict[str, Any]:
        """Show the LLM its code and what went wrong; its answer goes back through extract and the checks."""
        tries = state.get("tries", 0) + 1
        self.ctx.inflight.release(state["plan"]["key"])  # the failing code is left behind: its copies go on
        messages = prompts.repair_messages(
            self.ctx.task, state.get("code") or state.get("response") or "", state.get("error") or "", attempt=tries
        )
        answer = self._ask(state, messages, "repair")
        if answer["response"] is None:  # keep the failing candidate and its verdict for the record
            return {**answer, "response": state.get("response"), "tries": tries, "inflight": None}
        return {
            **answer,
            "tries": tries,
            "inflight": None,
            "verdict": None,
            "assessment": None,
            "messages": state["messages"] + messages[-1:],
        }

    def _propose_in_space(self, state: CandidateState) -> dict[str, Any]:
        """The model chooses this proposal's architecture of the --propose-in space (agentarch.search.proposers.
        llm_space): shown the task's candidates of that space in the archive (every run's, so the archive seeds the
        next round) and told the architectures of the proposals in flight, it answers one JSON object, which is
        validated; an invalid answer, a repeat or a failed call takes a uniform sample the search has not proposed,
        counted in `in_space`. The call runs in this proposal's thread through its model's gate and tag, so it is
        seen, queued and stopped like any other; its ledger rows are linked to the candidate. The architecture is
        claimed for the proposal as it is chosen (`RunContext.claim_arch`), so two proposals asking at once never
        take the same one: the second's answer counts as a repeat."""
        ctx, plan = self.ctx, state["plan"]
        space = get_space(ctx.in_space or "")
        avoid = ctx.archs_in_flight(but=plan["key"])  # before the archive: one recorded in between is in one of them
        rows = ctx.archive().space_rows(ctx.task.name, space.name) if ctx.settings.feedback else []
        seen = [Observation.from_row(Proposal(row["proposer"] or IN_SPACE, arch=row["arch"]), row) for row in rows]
        spec = plan.get("model") or ctx.arms[0].spec
        tag = proposal_tag(plan)

        def ask() -> tuple[Proposal, InSpaceLLM, InSpaceModel]:
            model = InSpaceModel(ctx.llm(spec), ctx.task, schema=spec not in ctx.schema_refused)
            seed = ctx.settings.seed * 100_003 + plan["seq"]
            search = InSpaceLLM(
                space,
                seed,
                model,
                distinct=True,
                direction=ctx.task.direction,
                tag=tag,
                claim=lambda arch: ctx.claim_arch(plan["key"], arch),
                limits=Limits.of(space, ctx.task, ctx.goals),
            )
            search.replay(seen)
            (proposal,) = search.propose(1, avoid)
            return proposal, search, model

        try:
            proposal, search, model = ctx.call(ask, f"{tag}'s {PURPOSE} call")
        except LLMCancelled as err:
            raise RunAborted(f"{plan['key']}: {err}") from None
        stats = search.stats
        if stats.no_answer and ctx.stopping.is_set():  # the stop failed the call: ask again on resume
            raise RunAborted(f"{plan['key']}: the run is stopping; its {PURPOSE} call is asked again on resume")
        if model.schema_refused:
            ctx.schema_refused[spec] = model.schema_refused
        assert proposal.arch is not None  # and claimed for this proposal (ctx.claim_arch) until it is recorded
        calls = search.exchanges
        return {
            "arch": proposal.arch,
            "code": space.render(proposal.arch, ctx.task),
            "intent": proposal.note,
            "response": storable(calls[-1].text) if calls else None,
            "messages": calls[-1].messages if calls else [],
            "llm_error": None,
            "call_ids": [i for call in calls for i in call.call_ids],
            "cost_usd": sum(call.cost_usd for call in calls),
            "prompt_tokens": sum(call.prompt_tokens for call in calls),
            "completion_tokens": sum(call.completion_tokens for call in calls),
            "in_space": {
                "outcome": stats.outcomes[-1] if stats.outcomes else "answer",
                **{k: getattr(stats, k) for k in ("asks", "valid", "invalid", "no_answer", "repeats", "fallbacks")},
                "schema_sent": stats.schema_sent,
                "reason": stats.reasons[0] if stats.reasons else None,
            },
        }


_EDIT = {"edit": "diff", "propose": "full"}
"""What the answer to each kind of prompt is asked to be (the state's `edit`)."""


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
