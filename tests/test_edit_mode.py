"""Diff edit mode end to end: every proposal's edits are applied, repaired after one retry, or replaced by a full
module; none is dropped, and the run counts each way (applied + repaired + fallen back = proposed)."""

from __future__ import annotations

import itertools
import re
import sqlite3

import pytest

from agentarch.config import load_settings
from agentarch.loop import run
from agentarch.store.archive import Archive
from agentarch.tasks.builtin import TASKS
from tests.conftest import requires_bubblewrap
from tests.llm_server import ScriptedLLMServer
from tests.scripted import MODEL, fenced, kind, mlp

HIDDEN = re.compile(r"self\.hidden = nn\.Linear\(math\.prod\(in_shape\), (\d+)\)")


WIDTHS = itertools.count(24, 8)  # never 16 (the seed) nor 100 (the fallback)


def widen(prompt: str) -> str:
    """A diff that applies to the parent the prompt shows: its hidden layer set to a width no edit used before, so no
    two edits compute the same function whichever parent the run picks (the parent depends on scores, which vary
    from machine to machine; a width made from the parent's once gave two parents the same child, a duplicate)."""
    width = int(HIDDEN.search(prompt).group(1))
    wider = next(WIDTHS)
    return (
        f"Intent: widen the hidden layer to {wider}.\n\n"
        "<<<<<<< SEARCH\n"
        f"        self.hidden = nn.Linear(math.prod(in_shape), {width})\n"
        f"        self.out = nn.Linear({width}, num_classes)\n"
        "=======\n"
        f"        self.hidden = nn.Linear(math.prod(in_shape), {wider})\n"
        f"        self.out = nn.Linear({wider}, num_classes)\n"
        ">>>>>>> REPLACE\n"
    )


NOT_THERE = "Intent: swap the activation.\n\n<<<<<<< SEARCH\n        self.act = nn.ReLU()\n=======\n        self.act = nn.GELU()\n>>>>>>> REPLACE\n"


@pytest.mark.slow
@requires_bubblewrap
def test_every_diff_is_applied_repaired_or_replaced_by_a_full_module(tmp_path, cache_dir):
    archive = tmp_path / "a.db"
    with Archive(archive) as db:  # a trained parent to edit
        db.register_task(TASKS["digits"])
        db.record(
            {"task": "digits", "name": "seed mlp", "proposer": "user", "code": mlp(16), "status": "trained"},
            {"status": "trained", "fidelity": 1, "val_accuracy": 0.5, "test_accuracy": 0.5},
        )
    proposals = iter(["valid", "bad", "bad", "prose"])
    retries = iter(["valid", "bad", "valid"])
    seen: list[str] = []

    def answer(request: dict) -> str:
        what, prompt = kind(request), request["messages"][-1]["content"]
        if what in ("analyze", "notebook"):
            return "Fine."
        if "could not be applied" in prompt:
            seen.append("retry")
            plan = next(retries)
        elif "## The parent: candidate" in prompt:
            seen.append("edit")
            plan = next(proposals)
        else:
            seen.append("full")
            return fenced(mlp(100))
        return {"valid": lambda: widen(prompt), "bad": lambda: NOT_THERE, "prose": lambda: "I would widen it."}[plan]()

    with ScriptedLLMServer(default=answer) as server:
        settings = load_settings(
            task="digits",
            model=MODEL,
            api_base=server.url,
            budget=4,
            schedule="rounds",
            batch=1,
            edit_mode="diff",
            epochs=1,
            threads=1,
            archive=archive,
            cache_dir=cache_dir,
        )
        summary = run.start(settings)
    outcomes = sqlite3.connect(archive).execute("SELECT name, status, reason FROM candidates ORDER BY id").fetchall()
    assert summary["proposed"] == 4 and summary["trained"] == 4, outcomes
    assert summary["edits"] == {"diff": 1, "diff-repaired": 2, "diff-fallback": 1}
    assert sum(summary["edits"].values()) == summary["proposed"]
    assert seen == ["edit", "edit", "retry", "edit", "retry", "full", "edit", "retry"]
    db = sqlite3.connect(archive)
    rows = db.execute("SELECT edit, code FROM candidates WHERE run_id = ? ORDER BY id", [summary["run_id"]]).fetchall()
    assert [edit for edit, _ in rows] == ["diff", "diff-repaired", "diff-fallback", "diff-repaired"]
    assert "nn.Linear(100, num_classes)" in rows[2][1]  # the fallback's full module
    calls = dict(db.execute("SELECT purpose, COUNT(*) FROM llm_calls GROUP BY purpose").fetchall())
    assert calls == {"propose": 5, "edit": 3, "analyze": 4}
