"""Several models in one run: the cost-aware bandit shifts proposals to the model that improves cheaply, and a run
killed and resumed keeps the bandit's counts (they are rebuilt from the archive)."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import threading
import time

import pytest

from tests.conftest import requires_bubblewrap
from tests.llm_server import ScriptedLLMServer
from tests.scripted import fenced, kind, mlp, start_run

CHEAP, DEAR = "openai/gpt-4o-mini", "openai/gpt-4o"  # both priced by litellm's bundled cost map, 1:16


def answers():
    """The cheap model widens the network each time (it improves); the dear one sends code that cannot run."""
    widths, lock = itertools.count(8, 12), threading.Lock()

    def answer(request: dict) -> str:
        if kind(request) in ("analyze", "notebook"):
            return "Fine."
        if request["model"].endswith("gpt-4o"):
            return fenced(mlp(20, crash=True))
        with lock:
            return fenced(mlp(next(widths)))

    return answer


def run_with_both(archive, url, cache_dir):
    return start_run(
        archive,
        *("--model", f"{CHEAP}@{url}", "--model", f"{DEAR}@{url}", "--budget", "14", "--repair-tries", "0"),
        *("--epochs", "1", "--slots", "1"),
        cache_dir=cache_dir,
        AGENTARCH_QUEUE="0",  # one proposal ahead at a time: each choice sees the results before it
    )


@pytest.mark.slow
@requires_bubblewrap
def test_the_bandit_prefers_the_better_value_model_and_keeps_its_counts_across_a_kill(tmp_path, cache_dir):
    archive = tmp_path / "a.db"
    with ScriptedLLMServer(default=answers()) as server:
        first = run_with_both(archive, server.url, cache_dir)
        deadline = time.time() + 240
        while time.time() < deadline:
            time.sleep(0.3)
            try:
                if sqlite3.connect(archive).execute("SELECT COUNT(*) FROM candidates").fetchone()[0] >= 5:
                    break
            except sqlite3.OperationalError:
                continue
        first.send_signal(signal.SIGKILL)
        first.wait()
        run_id = sqlite3.connect(archive).execute("SELECT id FROM runs").fetchone()[0]
        second = start_run(archive, "--resume", run_id, cache_dir=cache_dir, AGENTARCH_QUEUE="0")
        out, errors = second.communicate(timeout=400)
    assert second.returncode == 0, errors
    summary = json.loads(out.splitlines()[-1])
    models = {row["model"]: row for row in summary["models"]}
    db = sqlite3.connect(archive)
    recorded = dict(db.execute("SELECT model, COUNT(*) FROM candidates GROUP BY model").fetchall())
    assert summary["proposed"] == 14 and sum(recorded.values()) == 14
    assert {name: row["proposals"] for name, row in models.items()} == recorded  # the counts survived the kill
    assert recorded[CHEAP] >= 9 and models[CHEAP]["improvements"] >= 1 and models[DEAR]["trained"] == 0
    assert models[DEAR]["spend_usd"] > models[CHEAP]["spend_usd"] / recorded[CHEAP] * recorded[DEAR]
    plans = [json.loads(p)["model"] for (p,) in db.execute("SELECT plan FROM proposals ORDER BY seq")]
    assert plans[:2] == [f"{CHEAP}@{server.url}", f"{DEAR}@{server.url}"]  # untried models first, in order
