"""What every node of the candidate graph shares: the run's context, the LLM call, the candidate's name, proposer
and row, and an assessment as the checkpoint stores it.

Its own module because the proposing, evaluating and recording nodes all build on it, and none on each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from agentarch.evaluation.evaluator import Assessment
from agentarch.llm.client import LLMCancelled, LLMClient, LLMError
from agentarch.loop.containment import storable
from agentarch.loop.context import OFFLINE_PROPOSER, RunAborted, RunContext
from agentarch.loop.state import CandidateState
from agentarch.search.proposers.base import BEST_OF_N
from agentarch.search.proposers.llm_space import IN_SPACE
from agentarch.search.recipes import label
from agentarch.store.names import candidate_name


class Nodes:
    """The nodes of the candidate graph, as methods over one RunContext; each stage's nodes subclass it."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def _ask(
        self,
        state: CandidateState,
        messages: list[dict[str, str]],
        purpose: str,
        client: Callable[[], LLMClient] | None = None,
    ) -> dict[str, Any]:
        """One LLM call to the proposal's model (or to the one `client` gives: the judge's); a call that fails for good leaves
        `response` None and says why in `llm_error`. A call cancelled because the run is stopping leaves nothing: the
        step is asked again on resume.

        The call is tagged with the proposal (`proposal SEQ`), so the client's retry warnings and its calls in
        progress (the live view) say which proposal and step (`purpose`) they belong to."""
        plan = state["plan"]
        tag = proposal_tag(plan)

        def ask() -> Any:
            asked = client() if client is not None else self.ctx.llm(plan.get("model"))  # the calling thread's
            return asked.complete(messages, purpose, tag=tag)

        try:
            done = self.ctx.call(ask, f"{tag}'s {purpose} call")
        except LLMCancelled as err:
            raise RunAborted(f"{plan['key']}: {err}") from None
        except LLMError as err:
            if self.ctx.stopping.is_set():
                raise RunAborted(f"{plan['key']}: the run is stopping ({err})") from None
            return {
                "response": None,
                "finish_reason": None,
                "llm_error": f"[llm] {err}",
                "call_ids": list(getattr(err, "call_ids", [])),
            }
        return {
            "response": storable(done.text),
            "finish_reason": done.finish_reason,
            "llm_error": None,
            "call_ids": done.call_ids,
            "cost_usd": done.cost_usd,
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
        }

    def _proposer(self) -> str:
        if self.ctx.in_space is not None:
            return IN_SPACE
        if self.ctx.offline:
            return OFFLINE_PROPOSER
        return "llm" if self.ctx.settings.feedback else BEST_OF_N

    def _name(self, state: CandidateState) -> str:
        """What the candidate is (the space's architecture, else the intent's first words) and the run's tag and
        proposal number, so each name is unique and a name pasted into search finds its one candidate."""
        plan = state["plan"]
        arch = arch_of(state)
        named = label(self.ctx.arch_space() or "", arch) if arch else None
        return candidate_name(self.ctx.run_id, plan["seq"], state.get("intent"), named)

    def _row(self, state: CandidateState) -> dict[str, Any]:
        """The candidate row the evaluator's steps work on, with the HPARAMS the static check read."""
        parents = [state["parent_id"]] if state.get("parent_id") else []
        row = self.ctx.evaluator().row(state.get("code") or "", self._name(state), self._proposer(), parents)
        row["hparams"] = state.get("hparams") or {}
        return row


def arch_of(state: CandidateState) -> str | None:
    """The proposal's architecture of its space: the model's choice (--propose-in), else the offline evolution's."""
    return state.get("arch") or state["plan"].get("arch")


def proposal_tag(plan: dict[str, Any]) -> str:
    """How a proposal's LLM calls are named in the client's warnings and calls in progress: `proposal SEQ`."""
    return f"proposal {plan['seq']}"


def as_state(assessment: Assessment) -> dict[str, Any]:
    """An assessment as the checkpoint stores it (plain data)."""
    return dataclasses.asdict(assessment)


def decided(assessment: Assessment) -> dict[str, Any]:
    """The state update that decides a candidate's outcome: its verdict and the rows to record."""
    return {"verdict": assessment.status, "assessment": as_state(assessment)}
