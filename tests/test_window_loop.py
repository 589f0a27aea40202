"""The loop fits every prompt to the model's context window: against a server with a 2,048-token window and an
archive of long trained candidates, no request is larger than the window, and each candidate records what its
prompt left out (`prompt_left_out`)."""

from __future__ import annotations

import itertools
import json
import sqlite3

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.config import load_settings
from agentarch.llm import streaming
from agentarch.loop import run
from agentarch.store.archive import Archive
from agentarch.tasks.builtin import TASKS
from tests.conftest import requires_bubblewrap
from tests.llm_server import ScriptedLLMServer
from tests.scripted import MODEL, fenced, kind, mlp
from tests.test_local_model import long_example


def seed(path, n: int, lines: int) -> None:
    """`n` trained candidates, each `lines` lines of code long: more than a small window can show."""
    with Archive(path) as db:
        db.register_task(TASKS["digits"])
        for i in range(1, n + 1):
            example = long_example(i, lines)
            db.record(
                {
                    "task": "digits",
                    "name": f"long {i}",
                    "proposer": "user",
                    "code": example["code"],
                    "status": "trained",
                },
                {"status": "trained", "fidelity": 1, "val_accuracy": 0.5 + i / 100, "test_accuracy": 0.5},
            )


@pytest.mark.slow
@requires_bubblewrap
def test_a_run_against_a_2048_token_window_sends_nothing_larger_and_records_what_it_left_out(tmp_path, cache_dir):
    archive = tmp_path / "a.db"
    seed(archive, 4, 60)
    widths = itertools.count(24, 8)

    def answer(request: dict) -> str:
        return "Fine." if kind(request) in ("analyze", "notebook") else fenced(mlp(next(widths)))

    with ScriptedLLMServer(default=answer, stream=True, props=True, context_tokens=2048) as server:
        settings = load_settings(
            task="digits",
            model=MODEL,
            api_base=server.url,
            budget=2,
            batch=1,
            examples=4,
            epochs=1,
            threads=1,
            archive=archive,
            cache_dir=cache_dir,
        )
        summary = run.start(settings)
    assert summary["proposed"] == 2 and summary["trained"] == 2, summary
    sent = [count + request["max_tokens"] for count, request in zip(server.prompt_counts, server.requests)]
    assert server.oversized == [] and max(sent) <= 2048, sent
    db = sqlite3.connect(archive)
    rows = db.execute("SELECT id, examples, prompt_left_out FROM candidates WHERE run_id = ?", [summary["run_id"]])
    for candidate_id, examples, left_out in rows.fetchall():
        record = json.loads(left_out)
        assert record["context_tokens"] == 2048 and record["source"] == "the server's /props (n_ctx)"
        assert record["examples"] and record["prompt_tokens"] <= record["prompt_limit"]
        shown = set(json.loads(examples)) - set(record["examples"])  # dropped ones were chosen, then left out
        assert shown and not shown & set(record["examples"])
        shown_by_cli = CliRunner().invoke(app, ["archive", "show", str(candidate_id), "--archive", str(archive)])
        dropped = ", ".join(str(i) for i in record["examples"])
        assert (
            "prompt left out to fit 2,048 tokens" in shown_by_cli.output
            and f"examples {dropped}" in shown_by_cli.output
        )


def test_the_capped_session_hooks_once_however_often_it_is_built():
    """litellm's shared HTTP client got our hooks twice when two threads set litellm up at once, and every JSON
    body was then read twice ("Extra data" in a plain completion): the hooks go on once."""
    streaming.litellm()
    session = streaming.capped_session()
    session = streaming.capped_session()
    assert session.event_hooks["response"].count(streaming._cap_body) == 1
    assert session.event_hooks["request"].count(streaming._sending) == 1
