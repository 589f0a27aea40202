"""The candidate graph's conditional edges: where a candidate goes after each step, read from its state.

Its own module because the routers are the diagram's arrows and do no work: they read the state and the run's
settings, never the archive, the LLM or the sandbox.
"""

from __future__ import annotations

from typing import Any

from agentarch.loop.context import RunContext
from agentarch.loop.state import CandidateState


class Routers:
    """The way on from each step that has more than one, as methods over one RunContext."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

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

    def after_review(self, state: CandidateState) -> str:
        """Rejected: record; edited: check the person's code; passed: the sandbox job, or on a table task the table."""
        passed = "look_up" if self.ctx.table else "smoke"
        return {"rejected": "record", "edited": "static_check"}.get(state.get("gate") or "", passed)

    @staticmethod
    def after_screen(state: CandidateState) -> str:
        """A screened candidate its group did not choose is recorded; the chosen one trains."""
        return "record" if state.get("verdict") else "train"

    def after_smoke(self, state: CandidateState) -> str:
        verdict = state.get("verdict")
        if verdict is None:
            return "train" if self.ctx.screening is None else "screen"
        fixable = verdict in ("failed", "timeout") or "[param-budget]" in (state.get("error") or "")
        return self._repair_or_record(state) if fixable else "record"

    def _repair_or_record(self, state: CandidateState) -> str:
        """A failing module the model wrote goes back to it (at most k times); code rendered from a space's
        architecture (offline, --propose-in) is recorded as it failed: the space, not the model, wrote it."""
        if self.ctx.arch_space() is not None or state.get("tries", 0) >= self.ctx.settings.repair_tries:
            return "record"
        return "repair"


def unless_fault(route: Any) -> Any:
    """A step's way on, except that a candidate with a fault goes to `fail`."""

    def routed(state: CandidateState) -> str:
        return "fail" if state.get("fault") else route(state)

    return routed
