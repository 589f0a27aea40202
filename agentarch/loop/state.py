"""What one proposal's checkpoint holds: the candidate graph's state, step by step.

Its own module because its fields are the checkpoint format (a run checkpointed before must resume after), and
every node and router reads it, while it reads none of them.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


class CandidateState(TypedDict, total=False):
    """One proposal on its way from prompt to archive row."""

    plan: dict[str, Any]  # key, seq, island, and offline the space architecture and parents (scheduler._plan)
    parent_id: int | None
    example_ids: list[int]
    fewshot: dict[str, Any]  # the parent and example rows exactly as the prompt showed them
    messages: list[dict[str, str]]
    left_out: dict[str, Any] | None  # what the prompt left out to fit the model's context window (prompts.LeftOut)
    knowledge: list[dict[str, Any]]  # --knowledge: the entries the prompt shows (source, title, text, sha256)
    response: str | None
    llm_error: str | None  # the LLM call failed for good
    intent: str | None
    arch: str | None  # --propose-in: the architecture of the space the model chose (or its fallback sample)
    in_space: dict[str, Any] | None  # --propose-in: what the proposal's query came to (calls, valid, fallback)
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
    inflight: list[str] | None  # the dedup marks this proposal holds while its code is in flight (RunContext.inflight)
    analysis: str | None
    judgment: dict[str, Any] | None  # --judge: the rating of a trained candidate, or why it failed (llm.judge)
    finish_reason: str | None  # why the model stopped answering ("stop", "length"): extraction reads it
    review: dict[str, Any] | None  # a person's latest decision at the review gate
    covered: list[str]  # sha256 of every code a person's decision covers: approved as shown, or written in an edit
    gate: str | None  # the review gate's verdict on this pass: "pass", "edited" or "rejected"
    call_ids: Annotated[list[int], operator.add]
    cost_usd: Annotated[float, operator.add]
    prompt_tokens: Annotated[int, operator.add]
    completion_tokens: Annotated[int, operator.add]
    outcomes: Annotated[list[dict[str, Any]], operator.add]
