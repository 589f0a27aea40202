"""The proposing nodes: the few-shot context, the prompt, the LLM's answer (offline: the evolution's architecture),
the module pulled out of it, and the LLM's second chances (an edit retry, a full-module fallback, a repair).

Its own module because these are the steps that get a candidate's code; nothing here judges or records it.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from agentarch.llm import edits, fewshot, prompts
from agentarch.llm.faults import ContextOverflow
from agentarch.loop.nodes.base import Nodes
from agentarch.loop.state import CandidateState
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
        """The prompt, fitted to the model's context window (prompts.fit_prompt): what it leaves out is kept with the
        candidate (`left_out`); a prompt that cannot fit even cut down leaves `llm_error`, and the proposal is
        recorded `failed` with the sizes to change."""
        if self.ctx.offline:
            return {"messages": []}
        plan = state["plan"]
        notes = self.ctx.archive().notes(self.ctx.run_id) if self.ctx.settings.feedback else []
        shot = fewshot.FewShot(**state["fewshot"])
        purpose = "edit" if plan.get("edit") == "diff" and shot.parent is not None else "propose"  # edits need a parent
        try:
            fitted = self._fit(state, purpose, notes[-1] if notes else None)
        except ContextOverflow as err:
            return {"messages": [], "llm_error": f"[llm] {err}", "edit": "full"}
        return {"messages": fitted["messages"], "left_out": fitted["left_out"], "edit": _EDIT[purpose]}

    def _fit(self, state: CandidateState, purpose: str, notebook: dict[str, Any] | None) -> dict[str, Any]:
        """The `purpose` prompt for this proposal fitted to its model's window, and the record of what it left out."""
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
        )
        return {"messages": fitted.messages, "left_out": fitted.record(window)}

    def propose(self, state: CandidateState) -> dict[str, Any]:
        """Ask the LLM for a candidate (offline: render the evolution's architecture)."""
        plan = state["plan"]
        if self.ctx.offline:
            space = get_space(self.ctx.offline_space())
            return {"code": space.render(plan["arch"], self.ctx.task), "intent": plan.get("note"), "response": None}
        if not state["messages"]:  # the prompt did not fit the window (render_prompt's llm_error says why)
            return {"response": None, "code": None}
        return self._ask(state, state["messages"], "propose")

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
        """Edits that failed twice: ask for a full module instead, from the same context; nothing is dropped."""
        outcome = {"edit": "full", "edit_outcome": "diff-fallback", "edit_error": None}
        try:
            fitted = self._fit(state, "propose", None)
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
