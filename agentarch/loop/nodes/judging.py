"""The judge node (`--judge MODEL`, issue 28): after a candidate trained and its analysis is written, a model rates it
against the rubric of agentarch.llm.judge; `record` keeps the rating beside the scores in the same step that records
the candidate.

Its own module because the judge is an opinion beside the pipeline, not a step of it: whatever goes wrong here (the
call fails, the answer is garbage or hostile, the prompt cannot be built) becomes a `failed` judgment with the reason,
never the candidate's fault, so a bad judge cannot fail a candidate or a run. Only a stopping run interrupts it, and a
resume asks again.
"""

from __future__ import annotations

import logging
from typing import Any

from agentarch.llm import judge
from agentarch.loop.context import RunAborted
from agentarch.loop.nodes.base import Nodes
from agentarch.loop.state import CandidateState
from agentarch.store import browse
from agentarch.store.judgments import FAILED, JUDGED

log = logging.getLogger(__name__)


class JudgingNodes(Nodes):
    """judge, between analyze (or a table's look_up) and record."""

    def judge(self, state: CandidateState) -> dict[str, Any]:
        """Rate a trained candidate with the run's judge (`judgment`: the rating, or why there is none); passes
        through without --judge and for any candidate that did not train."""
        arm = self.ctx.judge_arm
        if arm is None or state.get("verdict") != "trained":
            return {}
        try:
            answer = self._ask(state, self._messages(state), "judge", self.ctx.judge_llm)
            judgment = self._read(answer)
        except RunAborted:
            raise
        except Exception as err:  # a judge never fails its candidate: the reason is the judgment
            log.warning("%s: the judge failed (%s: %s)", state["plan"]["key"], type(err).__name__, err)
            judgment = {"status": FAILED, "error": f"[judge] {type(err).__name__}: {err}"}
        return {"judgment": {"model": arm.name, **judgment}}

    def _messages(self, state: CandidateState) -> list[dict[str, str]]:
        """The judge's prompt: the candidate with its measures, its parent, and the archive's candidates the proposal
        was shown (else the task's best), the parent apart."""
        assessment = state["assessment"] or {}
        candidate = {**assessment["candidate"], **assessment["evaluation"], **assessment["metrics"]}
        archive = self.ctx.archive()
        parent_id = state.get("parent_id")
        parent = None
        if parent_id:
            parent = {**archive.scored(parent_id), "code": archive.candidate(parent_id)["code"]}
        shown = [row for row in (state.get("fewshot") or {}).get("examples") or [] if isinstance(row.get("id"), int)]
        if not shown:
            best = archive.top(self.ctx.task.name, limit=judge.NEIGHBOURS + 1)
            codes = browse.candidate_fields(archive, [row["id"] for row in best], ("code",))
            shown = [{**row, **codes.get(row["id"], {})} for row in best]
        neighbours = [row for row in shown if row.get("id") != parent_id][: judge.NEIGHBOURS]
        return judge.judge_messages(self.ctx.task, candidate, parent, neighbours)

    @staticmethod
    def _read(answer: dict[str, Any]) -> dict[str, Any]:
        """The judgment of the judge's call: the rating read strictly (agentarch.llm.judge.read_answer), or `failed`
        with why (the call failed; the answer is no rating), with the call's ids, tokens and cost either way."""
        spent = {k: answer.get(k) for k in ("call_ids", "prompt_tokens", "completion_tokens", "cost_usd")}
        if answer.get("response") is None:
            return {"status": FAILED, "error": answer.get("llm_error") or "[llm] no answer", **spent}
        try:
            rating = judge.read_answer(answer["response"])
        except judge.JudgeError as err:
            return {"status": FAILED, "error": f"[judge] {err}", **spent}
        return {"status": JUDGED, **rating, **spent}
