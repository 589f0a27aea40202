"""The candidate graph's plumbing that needs no sandbox: its shape, every router, the bounded queue, summaries."""

import threading
import time

import pytest

from agentarch.config import load_settings
from agentarch.loop.context import RunContext
from agentarch.loop.graph import build, open_checkpointer
from agentarch.loop.routers import Routers, unless_fault
from agentarch.loop.summary import summarize


@pytest.fixture
def ctx(tmp_path):
    return RunContext(load_settings(task="digits", slots=1, queue=1, archive=tmp_path / "a.db"), "run-1", time.time())


def test_the_graph_reads_like_the_diagram(ctx):
    candidate = build(ctx, open_checkpointer(ctx.settings.archive)).get_graph().nodes
    for step in (
        "select_context",
        "render_prompt",
        "propose",
        "extract",
        "static_check",
        "dedup",
        "review_gate",
        "smoke",
        "repair",
        "train",
        "analyze",
        "record",
    ):
        assert step in candidate, step


def test_the_queue_bounds_proposals_in_flight_and_an_abort_frees_the_waiters(ctx):
    ctx.enter_queue("a")
    ctx.enter_queue("b")  # slots + queue = 2 places
    waiting = threading.Thread(target=lambda: ctx.enter_queue("c"))
    waiting.start()
    time.sleep(0.3)
    assert waiting.is_alive()  # no room for a third
    ctx.leave_queue("a")
    waiting.join(timeout=2)
    assert not waiting.is_alive()
    ctx.leave_queue("a")  # leaving twice (a branch resumed after a crash) frees nothing extra
    errors = []

    def blocked():
        try:
            ctx.enter_queue("d")
        except RuntimeError as err:
            errors.append(str(err))

    stuck = threading.Thread(target=blocked)
    stuck.start()
    ctx.aborted.set()
    stuck.join(timeout=3)
    assert errors and "failed" in errors[0]


def test_summary_counts_and_best():
    outcomes = [
        {"id": 1, "status": "trained", "val_accuracy": 0.9, "test_accuracy": 0.88, "repaired": True, "cost_usd": 0.1},
        {"id": 2, "status": "timeout", "val_accuracy": None, "test_accuracy": None, "repaired": False, "cost_usd": 0.2},
        {"id": None, "status": "failed", "val_accuracy": None, "test_accuracy": None, "repaired": False},
        {"id": 3, "status": "trained", "val_accuracy": 0.95, "test_accuracy": 0.9, "repaired": False},
    ]
    summary = summarize("r", "finished", outcomes, "max-candidates")
    assert (summary["proposed"], summary["trained"], summary["failed"], summary["repaired"]) == (4, 2, 2, 1)
    assert summary["best"] == {"id": 3, "test_accuracy": 0.9} and summary["cost_usd"] == pytest.approx(0.3)


LLM = {"model": "openai/m", "repair_tries": 2}
OFFLINE = {"repair_tries": 2}
FAILED = {"verdict": "failed", "error": "[smoke:forward] shape mismatch"}
ROUTES = [
    # (router, state, settings, where the candidate goes next)
    ("after_propose", {"response": None, "code": None}, LLM, "give_up"),
    ("after_propose", {"response": "text"}, LLM, "extract"),
    ("after_repair", {"llm_error": "timeout"}, LLM, "record"),
    ("after_repair", {}, LLM, "extract"),
    ("after_extract", {"error": "no code", "tries": 0}, LLM, "repair"),
    ("after_extract", {"error": "no code", "tries": 2}, LLM, "record"),
    ("after_extract", {"error": "no code", "tries": 0}, OFFLINE, "record"),
    ("after_extract", {}, LLM, "static_check"),
    ("after_check", {"verdict": "invalid", "error": "[import-allowlist] os", "tries": 1}, LLM, "repair"),
    ("after_check", {"verdict": "invalid", "error": "[import-allowlist] os", "tries": 2}, LLM, "record"),
    ("after_check", {"error": None}, LLM, "dedup"),
    ("after_dedup", {"verdict": "duplicate"}, LLM, "record"),
    ("after_dedup", {"verdict": None}, LLM, "review_gate"),
    ("after_review", {"gate": "pass"}, LLM, "smoke"),
    ("after_review", {"gate": "rejected", "verdict": "rejected"}, LLM, "record"),
    ("after_review", {"gate": "edited"}, LLM, "static_check"),
    ("after_smoke", {"verdict": None}, LLM, "train"),
    ("after_smoke", {**FAILED, "tries": 0}, LLM, "repair"),
    ("after_smoke", {"verdict": "timeout", "error": "no result", "tries": 0}, LLM, "repair"),
    ("after_smoke", {"verdict": "invalid", "error": "[param-budget] too big", "tries": 1}, LLM, "repair"),
    ("after_smoke", {"verdict": "duplicate", "error": "same function", "tries": 0}, LLM, "record"),
    ("after_smoke", {**FAILED, "tries": 2}, LLM, "record"),
    ("after_smoke", {**FAILED, "tries": 0}, OFFLINE, "record"),
]


@pytest.mark.parametrize(("router", "state", "settings", "expected"), ROUTES)
def test_every_router_sends_each_state_where_the_diagram_says(router, state, settings, expected, tmp_path):
    ctx = RunContext(load_settings(task="digits", archive=tmp_path / "a.db", **settings), "run-1", time.time())
    assert getattr(Routers(ctx), router)(state) == expected


def test_a_fault_goes_to_fail_from_any_step():
    assert unless_fault(lambda state: "train")({"fault": "[host] smoke raised TypeError"}) == "fail"
    assert unless_fault(lambda state: "train")({}) == "train"
