"""Copies in flight at once train once (issue 23): a proposal whose code matches, at a dedup level that needs no
sandbox, code another proposal holds in flight (passed dedup, not yet recorded) waits for that one to be recorded,
then is deduplicated against the archive as usual.

The loop tests drive the real loop (scheduler, LangGraph threads, the sandbox) against the scripted LLM of
tests/llm_server.py, a real OpenAI-compatible server on 127.0.0.1, which holds every proposal's answer until all
of them have asked, so the copies are in flight together.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from agentarch.config import load_settings
from agentarch.evaluation import dedup
from agentarch.loop import run
from agentarch.loop.context import InFlight, RunAborted, RunContext
from agentarch.loop.graph import build, open_checkpointer
from agentarch.loop.nodes.evaluating import in_flight_marks
from agentarch.store.archive import Archive
from agentarch.store.decisions import code_sha256
from tests.conftest import requires_bubblewrap
from tests.llm_server import ScriptedLLMServer
from tests.scripted import MODEL, fenced, kind, mlp

# -- the registry ------------------------------------------------------------------------------------


def waiting(inflight: InFlight, key: str, marks: list[str]) -> tuple[threading.Thread, dict]:
    """`key` holding `marks` on a thread of its own; `seen` says whom it waited for, or the error it raised."""
    seen: dict = {}

    def go() -> None:
        try:
            seen["waited_for"] = inflight.hold(key, marks, before_wait=lambda holder: seen.setdefault("told", holder))
        except RunAborted as err:
            seen["error"] = err

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, seen


def test_a_copy_waits_for_the_holder_and_takes_over_once_it_lets_go():
    inflight = InFlight(threading.Event())
    assert inflight.hold("run/0", ["whitespace:a", "ast:b"]) is None
    assert inflight.hold("run/0", ["whitespace:a", "ast:b"]) is None  # its own hold never blocks it
    thread, seen = waiting(inflight, "run/1", ["whitespace:x", "ast:b"])  # the same AST, other text
    time.sleep(0.3)
    assert thread.is_alive() and seen == {"told": "run/0"}
    inflight.release("run/0")
    thread.join(5)
    assert seen == {"told": "run/0", "waited_for": "run/0"}
    assert inflight.holding() == {"run/1": ["whitespace:x", "ast:b"]}


def test_new_code_replaces_what_a_proposal_held_and_a_restore_never_waits():
    inflight = InFlight(threading.Event())
    inflight.hold("run/0", ["whitespace:a", "ast:a"])
    inflight.hold("run/0", ["whitespace:b", "ast:b"])  # repaired: the old code is free again
    assert inflight.hold("run/1", ["whitespace:a", "ast:a"]) is None
    inflight.restore("run/2", ["whitespace:b", "ast:c"])  # after a resume: what is free is taken back
    assert inflight.holding() == {
        "run/0": ["whitespace:b", "ast:b"],
        "run/1": ["whitespace:a", "ast:a"],
        "run/2": ["ast:c"],
    }
    inflight.release("run/9")  # holding nothing: nothing happens
    inflight.release("run/0")
    assert "run/0" not in inflight.holding()


def test_a_copy_stops_waiting_when_the_run_stops():
    stop = threading.Event()
    inflight = InFlight(stop)
    inflight.hold("run/0", ["ast:a"])
    thread, seen = waiting(inflight, "run/1", ["ast:a"])
    time.sleep(0.2)
    stop.set()
    inflight.release("run/0")  # a holder stopping with the run lets go unrecorded: the copy must not go on
    thread.join(5)
    assert not thread.is_alive() and isinstance(seen["error"], RunAborted)
    assert "run/1" not in inflight.holding()


def test_the_marks_are_the_whitespace_and_ast_hashes():
    code = mlp(16)
    renamed = code.replace("hidden", "inner")
    row = {"code": code, "text_hash": dedup.whitespace_hash(code)}
    other = {"code": renamed, "text_hash": dedup.whitespace_hash(renamed)}
    assert in_flight_marks(row)[0] != in_flight_marks(other)[0]
    assert in_flight_marks(row)[1] == in_flight_marks(other)[1] == f"ast:{dedup.ast_hash(code)}"


# -- the real loop -----------------------------------------------------------------------------------


class Together:
    """Answers analyses itself; holds each proposal's request until `copies` have asked, then answers all of them
    with the same code (so they are in flight at once); repairs take the next of `repairs`."""

    def __init__(self, copies: int, code: str, repairs: list[str] = ()) -> None:
        self.barrier = threading.Barrier(copies, timeout=60)
        self.code, self.repairs = code, list(repairs)
        self.seen: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: dict) -> str:
        what = kind(request)
        with self.lock:
            self.seen.append(what)
        if what in ("analyze", "notebook"):
            return "Analysis: fine."
        if what == "repair":
            with self.lock:
                return self.repairs.pop(0)
        self.barrier.wait()
        return fenced(self.code)


def loop_run(tmp_path, cache_dir, url: str, budget: int, **extra):
    settings = load_settings(
        task="digits",
        archive=tmp_path / "a.db",
        cache_dir=cache_dir,
        model=MODEL,
        api_base=url,
        budget=budget,
        epochs=1,
        threads=1,
        notebook_every=0,
        **extra,
    )
    summary = run.start(settings)
    db = sqlite3.connect(settings.archive)
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM candidates WHERE run_id = ? ORDER BY id", [summary["run_id"]]).fetchall()
    starts = db.execute(
        "SELECT proposal_key, code_sha256, started FROM evaluation_starts WHERE run_id = ?", [summary["run_id"]]
    ).fetchall()
    return summary, rows, starts, db


@pytest.mark.slow
@requires_bubblewrap
def test_four_copies_in_flight_at_once_train_once(tmp_path, cache_dir):
    answers = Together(4, mlp(16))
    with ScriptedLLMServer(default=answers) as server:
        summary, rows, starts, db = loop_run(tmp_path, cache_dir, server.url, budget=4, slots=2, queue=2)
    assert answers.seen.count("propose") == 4  # four proposals, all asked before any was answered
    assert summary["status"] == "finished" and summary["trained"] == 1 and summary["duplicate"] == 3
    [trained] = [r for r in rows if r["status"] == "trained"]
    copies = [r for r in rows if r["status"] == "duplicate"]
    assert len(copies) == 3 and len({r["proposal_key"] for r in rows}) == 4
    for copy in copies:
        assert copy["duplicate_of"] == trained["id"] and copy["dedup_level"] == "whitespace"
        assert copy["reason"] == f"same code as candidate {trained['id']} (whitespace level)"
    assert sum(r["started"] for r in starts) == 1  # one sandbox job
    assert db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 1


@pytest.mark.slow
@requires_bubblewrap
def test_copies_of_a_candidate_recorded_failed_are_its_duplicates_as_with_any_recorded_failure(tmp_path, cache_dir):
    """The archive's dedup counts a recorded failure as evaluated (failed code fails again): a copy that waited
    for a candidate recorded `failed` is its duplicate, exactly as a later copy would be."""
    answers = Together(3, mlp(16, crash=True))
    with ScriptedLLMServer(default=answers) as server:
        summary, rows, starts, _ = loop_run(tmp_path, cache_dir, server.url, budget=3, slots=1, queue=2, repair_tries=0)
    [failed] = [r for r in rows if r["status"] == "failed"]
    assert "shape mismatch" in failed["reason"]
    copies = [r for r in rows if r["status"] == "duplicate"]
    assert len(copies) == 2 and {(r["duplicate_of"], r["dedup_level"]) for r in copies} == {
        (failed["id"], "whitespace")
    }
    assert sum(r["started"] for r in starts) == 1


@pytest.mark.slow
@requires_bubblewrap
def test_a_copy_of_code_its_holder_left_behind_unrecorded_is_evaluated_itself(tmp_path, cache_dir):
    """The holder's smoke run fails and it is repaired: the failing code is never recorded, so the copy that
    waited for it is evaluated itself (its own smoke run, its own repair), never a duplicate of nothing."""
    crash = mlp(16, crash=True)
    answers = Together(2, crash, repairs=[fenced(mlp(20), "Intent: fixed."), fenced(mlp(24), "Intent: fixed.")])
    with ScriptedLLMServer(default=answers) as server:
        summary, rows, starts, _ = loop_run(tmp_path, cache_dir, server.url, budget=2, slots=1, queue=1)
    assert answers.seen.count("repair") == 2
    assert [r["status"] for r in rows] == ["trained", "trained"] and [r["repairs"] for r in rows] == [1, 1]
    assert summary["duplicate"] == 0
    failing = {r["code"] for r in rows}  # what each was recorded with is its repair; the first code is shared
    assert len(failing) == 2
    by_key: dict[str, set[str]] = {}
    for start in starts:
        by_key.setdefault(start["proposal_key"], set()).add(start["code_sha256"])
    assert set(by_key) == {r["proposal_key"] for r in rows}
    shared = set.intersection(*by_key.values())  # each copy ran the failing code in its own sandbox job
    assert len(shared) == 1 and all(len(shas) == 2 for shas in by_key.values())
    assert shared.isdisjoint(code_sha256(code) for code in failing)


@pytest.mark.slow
@requires_bubblewrap
def test_after_a_crash_a_resumed_holder_holds_again_before_its_copy_runs(tmp_path, cache_dir):
    """Holds are memory only: the run stopped with proposal 0 past dedup (its checkpoint holds the code) and
    proposal 1 not yet started. On resume, proposal 0 holds again before anything runs, so proposal 1, answered
    the same code, waits for it and is recorded its duplicate instead of training a second time."""
    code = mlp(16)
    archive_path = tmp_path / "a.db"

    answered = threading.Event()

    def while_proposal_0_is_in_flight(request: dict) -> str:
        """Proposal 1 is answered once proposal 0's sandbox job runs (its start is marked as it starts), and proposal
        0's analysis only 2 s after that, so proposal 1 reaches dedup while proposal 0 is unrecorded."""
        if kind(request) == "analyze":
            answered.wait(60)
            time.sleep(2)
            return "Analysis: fine."
        deadline = time.time() + 60
        while time.time() < deadline:
            with sqlite3.connect(archive_path) as db:
                if db.execute("SELECT COUNT(*) FROM evaluation_starts").fetchone()[0]:
                    break
            time.sleep(0.05)
        answered.set()
        return fenced(code)

    with ScriptedLLMServer(default=while_proposal_0_is_in_flight) as server:
        settings = load_settings(
            task="digits",
            archive=archive_path,
            cache_dir=cache_dir,
            model=MODEL,
            api_base=server.url,
            budget=2,
            slots=1,
            queue=1,
            epochs=1,
            threads=1,
            notebook_every=0,
        )
        with Archive(settings.archive) as archive:
            run_id = archive.start_run(
                "llm", "digits", MODEL, json.loads(settings.model_dump_json(exclude={"api_key"}))
            )
            plans = [
                {"key": f"{run_id}/{seq}", "seq": seq, "island": 0, "in_flight": 0, "edit": "full"} for seq in (0, 1)
            ]
            for plan in plans:
                archive.open_proposal(run_id, plan["key"], plan["seq"], 0, plan)
        ctx = RunContext(settings, run_id, time.time())
        checkpointer = open_checkpointer(settings.archive)
        try:
            graph = build(ctx, checkpointer)
            row = {"code": code, "text_hash": dedup.whitespace_hash(code)}
            answer = fenced(code)
            past_dedup = {
                "plan": plans[0],
                "tries": 0,
                "parent_id": None,
                "example_ids": [],
                "fewshot": {"parent": None, "examples": [], "strategy": "topk"},
                "messages": [{"role": "user", "content": "propose"}],
                "response": answer,
                "intent": "Intent: try a wider hidden layer.",
                "code": code,
                "hparams": {"epochs": 2},
                "error": None,
                "edit": "full",
                "inflight": in_flight_marks(row),
            }
            config = {"configurable": {"thread_id": plans[0]["key"]}}
            graph.update_state(config, past_dedup, as_node="dedup")
            assert graph.get_state(config).next == ("review_gate",)
        finally:
            checkpointer.conn.close()
            ctx.executor.close()

        summary = run.resume(run_id, settings.archive)
    assert summary["status"] == "finished" and summary["trained"] == 1 and summary["duplicate"] == 1
    db = sqlite3.connect(settings.archive)
    rows = dict(db.execute("SELECT proposal_key, status FROM candidates WHERE run_id = ?", [run_id]).fetchall())
    assert rows == {plans[0]["key"]: "trained", plans[1]["key"]: "duplicate"}
    assert db.execute("SELECT SUM(started) FROM evaluation_starts").fetchone()[0] == 1
