"""The recording nodes: the analyst's note, the archive row with its evaluation, its LLM provenance and the judge's
rating (made by agentarch/loop/nodes/judging.py), a fault's `failed` row, and the `failed` row of a proposal the LLM
never answered; each ends a proposal and reports its outcome.

Its own module because these are the steps that keep what a candidate became; nothing here proposes, and the verdict
and the rating are decided before.
"""

from __future__ import annotations

from typing import Any

from agentarch.config import ModelArm
from agentarch.evaluation.evaluator import Assessment
from agentarch.llm import prompts
from agentarch.loop.containment import storable
from agentarch.loop.nodes.base import Nodes, arch_of, as_state, decided
from agentarch.loop.state import CandidateState
from agentarch.search.recipes import split
from agentarch.store import judgments, knowledge


class RecordingNodes(Nodes):
    """analyze → record, and fail and give_up."""

    def analyze(self, state: CandidateState) -> dict[str, Any]:
        """The analyst: a short note against the parent, kept with the candidate and shown to later rounds (not in a
        space: offline there is no model, and --propose-in's prompt shows scores, not analyses)."""
        assessment = state["assessment"]
        if self.ctx.arch_space() is not None:
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
            assessment = as_state(
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
        space, arch = self.ctx.arch_space(), arch_of(state)
        if space is None:
            extra["edit"] = _edit_outcome(state)
        elif arch is not None:  # a searched recipe (--search-recipe) is the row's own column, read from the code
            extra.update(space=space, arch=split(arch)[0])
        if not self.ctx.offline:
            extra.update(
                model=ModelArm.parse(plan["model"]).name if plan.get("model") else self.ctx.arms[0].name,
                prompt=state.get("messages"),
                prompt_left_out=state.get("left_out"),
                knowledge=[knowledge.reference(entry) for entry in state.get("knowledge") or []] or None,
                response=state.get("response"),
                examples=state.get("example_ids") or [],
                analysis=state.get("analysis"),
                prompt_tokens=state.get("prompt_tokens", 0),
                completion_tokens=state.get("completion_tokens", 0),
                cost_usd=state.get("cost_usd", 0.0),
            )
        self.ctx.leave_queue(plan["key"])
        result = self.ctx.evaluator().record(_load(assessment), extra, llm_calls=state.get("call_ids", []))
        self.ctx.inflight.release(plan["key"])  # recorded: copies waiting for it find its row
        self.ctx.release_arch(plan["key"])  # and later proposals in the space may know it from the archive
        if state.get("review"):
            self.ctx.archive().link_review(plan["key"], result.id)
        if state.get("judgment") and result.status == "trained" and result.id is not None:
            judgments.record(self.ctx.archive(), result.id, self.ctx.run_id, state["judgment"])  # type: ignore[arg-type]
        return {
            "inflight": None,
            "outcomes": [self._outcome(state, result.id, result.status, result.reason, result.metrics)],
        }

    def fail(self, state: CandidateState) -> dict[str, Any]:
        """Record a candidate whose step raised (or that the host kept dying under) as `failed`, with the fault.

        Only its code and provenance are kept, none of what the faulting step produced, since that may be
        what broke the host; text is made storable first (an LLM answer may hold unpaired surrogates).
        """
        fault = state["fault"] or "[host] unknown fault"
        code = storable(state.get("code") or state.get("response") or "")
        failed = self.ctx.evaluator().without_running(code, self._name(state), "failed", fault, self._proposer())
        failed.evaluation = {"status": "failed", "error": fault, "isolation": self.ctx.evaluator().isolation}
        clean = {
            **state,
            **decided(failed),
            "analysis": None,
            "response": storable(state.get("response")),
            "messages": [{k: storable(v) for k, v in m.items()} for m in state.get("messages") or []],
        }
        return self.record(clean)  # type: ignore[arg-type]

    def give_up(self, state: CandidateState) -> dict[str, Any]:
        """The LLM never answered (every attempt failed): the proposal is recorded as a `failed` candidate with no
        code and the reason (`[llm] ...`: the last attempt's fault), so `archive ls` lists every proposal; its failed
        calls are linked to the row, so spend and the model bandit see one failed proposal of that model."""
        reason = state.get("llm_error") or "[llm] the model gave no answer"
        failed = self.ctx.evaluator().without_running("", self._name(state), "failed", reason, self._proposer())
        return self.record({**state, **decided(failed)})  # type: ignore[arg-type]

    def _outcome(
        self, state: CandidateState, candidate_id: int | None, status: str, reason: str | None, metrics: dict[str, Any]
    ) -> dict[str, Any]:
        """What the scheduler and the run summary keep of a finished proposal: its scores and the measures that
        objectives and constraints may name."""
        evaluation = (state.get("assessment") or {}).get("evaluation") or {}
        measured = {**evaluation, **metrics}
        judgment = state.get("judgment") if status == "trained" else None
        outcome = {
            "key": state["plan"]["key"],
            "id": candidate_id,
            "status": status,
            "reason": reason,
            "repaired": status == "trained" and state.get("tries", 0) > 0,
            "repairs": state.get("tries", 0),  # repair calls asked (whether or not they worked)
            "model": self.ctx.model_of(state["plan"]),
            "val_accuracy": metrics.get("val_accuracy"),
            "test_accuracy": metrics.get("test_accuracy"),
            **{m: measured.get(m) for m in ("params", "flops", "latency_ms", "peak_memory_mb")},
            "metric": self.ctx.task.metric,  # what the two scores are
            "edit": None if self.ctx.arch_space() is not None else _edit_outcome(state),
            "arch": arch_of(state),
            "cost_usd": state.get("cost_usd", 0.0) + ((judgment or {}).get("cost_usd") or 0.0),  # the judge's too
        }
        if judgment:  # --judge: its score (None when the rating failed), an objective may rank by
            outcome.update(judge=judgment.get("score"), judged=judgment["status"])
        if state.get("in_space") is not None:  # --propose-in: what its query came to, for the run's summary
            outcome["in_space"] = state["in_space"]
        if self.ctx.on_outcome is not None:
            self.ctx.on_outcome(outcome)
        return outcome


def _edit_outcome(state: CandidateState) -> str:
    """How an LLM proposal got its code: full (asked for a module), diff (its edits applied), diff-repaired (applied
    after the one retry), diff-fallback (a full module after two failed edits), diff-unanswered (the LLM gave no
    answer to the retry or the fallback)."""
    if state.get("edit_outcome"):
        return state["edit_outcome"]  # type: ignore[return-value]
    return "diff-unanswered" if state.get("edit") == "diff" else "full"


def _load(data: dict[str, Any]) -> Assessment:
    return Assessment(**data)
