"""One proposal's way from prompt to archive row, as a LangGraph StateGraph; read it next to docs/architecture.md.

    select_context → render_prompt → propose → extract → static_check → dedup → review_gate
        → smoke → train → analyze → judge → record
    (on a table task (nb201-*), review_gate → look_up → judge → record: the table answers, no sandbox job;
     judge, only in a run with --judge, rates a trained candidate;
     extract, static_check and smoke failures go to repair → extract, at most k times;
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

This module wires the graph and opens its checkpoints; the pieces it wires live by job: the state
(agentarch/loop/state.py), the nodes by stage (agentarch/loop/nodes/: proposing, evaluating, recording), the
routers (agentarch/loop/routers.py), and the guard that turns a step's exception into the candidate's fault
(agentarch/loop/containment.py). Node names are the checkpoint's: a run checkpointed before resumes after.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

from agentarch.loop.containment import guarded
from agentarch.loop.context import RunAborted, RunContext
from agentarch.loop.events import STEPS
from agentarch.loop.nodes.evaluating import EvaluatingNodes
from agentarch.loop.nodes.judging import JudgingNodes
from agentarch.loop.nodes.proposing import ProposingNodes
from agentarch.loop.nodes.recording import RecordingNodes
from agentarch.loop.routers import Routers, unless_fault
from agentarch.loop.state import CandidateState


def build(ctx: RunContext, checkpointer: SqliteSaver) -> Any:
    """Compile the candidate graph, checkpointed; nodes are named as in the module docstring."""
    proposing, evaluating, recording = ProposingNodes(ctx), EvaluatingNodes(ctx), RecordingNodes(ctx)
    judging = JudgingNodes(ctx)
    route = Routers(ctx)
    one = StateGraph(CandidateState)
    for nodes, name in (
        (proposing, "select_context"),
        (proposing, "render_prompt"),
        (proposing, "propose"),
        (proposing, "extract"),
        (evaluating, "static_check"),
        (evaluating, "dedup"),
        (evaluating, "review_gate"),
        (evaluating, "smoke"),
        (evaluating, "screen"),
        (proposing, "repair"),
        (proposing, "edit_retry"),
        (proposing, "fall_back"),
        (evaluating, "train"),
        (evaluating, "look_up"),
        (recording, "analyze"),
        (judging, "judge"),
        (recording, "record"),
        (recording, "give_up"),
    ):
        one.add_node(name, guarded(ctx, stepped(ctx, name, getattr(nodes, name)), checkpointer.serde))
    one.add_node("fail", guarded(ctx, stepped(ctx, "fail", recording.fail), checkpointer.serde, contain=False))

    def then(step: str, way_on: Any, targets: list[str]) -> None:
        """`step`'s way on; a step that raised goes to `fail` instead (so every edge out of a step is conditional)."""
        one.add_conditional_edges(step, unless_fault(way_on), [*targets, "fail"])

    one.add_edge(START, "select_context")
    then("select_context", lambda state: "render_prompt", ["render_prompt"])
    then("render_prompt", lambda state: "propose", ["propose"])
    then("propose", route.after_propose, ["extract", "give_up"])
    then("extract", route.after_extract, ["static_check", "repair", "record", "edit_retry", "fall_back"])
    then("static_check", route.after_check, ["dedup", "repair", "record"])
    then("dedup", route.after_dedup, ["review_gate", "record"])
    then("review_gate", route.after_review, ["smoke", "look_up", "static_check", "record"])
    then("smoke", route.after_smoke, ["train", "screen", "repair", "record"])
    then("screen", route.after_screen, ["train", "record"])
    then("repair", route.after_repair, ["extract", "record"])
    then("edit_retry", route.after_edit_call, ["extract", "record"])
    then("fall_back", route.after_edit_call, ["extract", "record"])
    then("train", lambda state: "analyze", ["analyze"])
    judged = "judge" if ctx.judge_arm is not None else "record"  # only a run with --judge has the step
    then("look_up", lambda state: judged, ["judge", "record"])
    then("analyze", lambda state: judged, ["judge", "record"])
    then("judge", lambda state: "record", ["record"])
    then("record", lambda state: END, [END])
    then("give_up", lambda state: END, [END])
    one.add_edge("fail", END)

    return one.compile(checkpointer=checkpointer)


FINISHING = frozenset({"record", "give_up", "fail"})
"""Steps that only write what is decided: a stopping run lets a proposal in one finish it (see `stepped`)."""

SAYS_ITS_OWN_STEP = frozenset({"smoke"})
"""Steps that say when they begin themselves: smoke waits for a sandbox slot first (`slot wait`, then `smoke`)."""


def stepped(ctx: RunContext, name: str, node: Any) -> Any:
    """`node` that says when its proposal enters it (a ProposalStep event) and that does not begin once the run is
    stopping: the proposal stays at the checkpoint of its last completed step, and a resume runs this step then.
    The steps that only record (FINISHING) still run, so a decided candidate is not asked for again."""

    def run(state: CandidateState) -> Any:
        plan = state["plan"]
        if ctx.stopping.is_set() and name not in FINISHING:
            raise RunAborted(f"the run is stopping ({ctx.stop_reason}); {plan['key']} resumes at {name}")
        if name not in SAYS_ITS_OWN_STEP:
            ctx.step(plan, STEPS.get(name, name))
        return node(state)

    run.__name__ = getattr(node, "__name__", name)
    return run


def checkpoint_path(archive_path: Path) -> Path:
    """The LangGraph checkpoints live next to the archive: archive.db -> archive.checkpoints.db."""
    return archive_path.with_name(archive_path.stem + ".checkpoints.db")


def open_checkpointer(archive_path: Path) -> SqliteSaver:
    conn = sqlite3.connect(str(checkpoint_path(archive_path)), check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    return SqliteSaver(conn)
