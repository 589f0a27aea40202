"""The run's notebook: every k recorded candidates the analyses are condensed into a note that cites candidate ids,
and later prompts of the run include it."""

from __future__ import annotations

import json
import sqlite3

import pytest

from agentarch.config import load_settings
from agentarch.llm import prompts
from agentarch.loop import run
from agentarch.tasks.registry import get_task
from tests.conftest import requires_bubblewrap
from tests.llm_server import ScriptedLLMServer
from tests.scripted import MODEL, fenced, kind, mlp


def test_a_note_cites_only_the_candidates_it_was_shown():
    assert prompts.cited("Wider helped (#12, #7); #12 again; #99 is unknown; #7.", {7, 12}) == [12, 7]
    messages = prompts.notebook_messages(
        get_task("digits"),
        [{"id": 7, "status": "trained", "val_accuracy": 0.9, "params": 1000, "analysis": "Wider helped."}],
        {"after": 5, "text": "- Depth hurt (#3)."},
    )
    text = messages[-1]["content"]
    assert "Candidate 7" in text and "Wider helped." in text and "Depth hurt (#3)" in text
    assert "test" not in text.lower().replace("the latest", "")  # the held-back test score is never shown


@pytest.mark.slow
@requires_bubblewrap
def test_the_notebook_is_written_every_k_candidates_and_later_prompts_read_it(tmp_path, cache_dir):
    widths = iter(range(8, 200, 4))
    proposals: list[str] = []

    def answer(request: dict) -> str:
        what = kind(request)
        if what == "analyze":
            return "Wider than its parent; it helped."
        if what == "notebook":
            return "What worked: width (#1, #2). What failed: nothing yet (#999)."
        proposals.append(request["messages"][-1]["content"])
        return fenced(mlp(next(widths)))

    with ScriptedLLMServer(default=answer) as server:
        settings = load_settings(
            task="digits",
            model=MODEL,
            api_base=server.url,
            budget=4,
            schedule="rounds",
            batch=2,
            notebook_every=2,
            epochs=1,
            threads=1,
            archive=tmp_path / "a.db",
            cache_dir=cache_dir,
        )
        summary = run.start(settings)
    assert summary["status"] == "finished" and summary["trained"] == 4
    db = sqlite3.connect(settings.archive)
    notes = db.execute("SELECT after, cites FROM notes ORDER BY after").fetchall()
    assert [after for after, _ in notes] == [2, 4]
    assert json.loads(notes[0][1]) == [1, 2]  # the first two candidates; #999 was never shown
    assert not any("The run's notebook" in p for p in proposals[:2])
    assert all("The run's notebook (after 2 candidates)" in p for p in proposals[2:])
    purposes = db.execute("SELECT purpose, COUNT(*) FROM llm_calls GROUP BY purpose").fetchall()
    assert dict(purposes) == {"propose": 4, "analyze": 4, "notebook": 2}
