"""The agent loop end to end: `agentarch run` against a real OpenAI-compatible server on 127.0.0.1.

The server replays scripted answers (good code, code in prose, a crash fixed by repair, a duplicate,
a 429, a timeout, garbage); candidates are really checked, sandboxed, trained and recorded. The
crash test SIGKILLs a real `agentarch run` process with proposals in flight and resumes it.
"""

import json
import re
import signal
import sqlite3
import time

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from tests.conftest import requires_bubblewrap
from tests.llm_server import Reply, ScriptedLLMServer
from tests.scripted import MODEL, fenced, kind, mlp, start_run

pytestmark = [pytest.mark.slow, requires_bubblewrap]


class Responder:
    """Answers analyses and notebook entries itself; proposals and repairs take the next scripted reply."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.seen: list[str] = []

    def __call__(self, request: dict):
        what = kind(request)
        self.seen.append(what)
        if what == "analyze":
            return "Wider than its parent; validation accuracy rose slightly. Next: try a second hidden layer."
        if what == "notebook":
            return "What worked: wider layers (#1). What failed: nothing yet."
        return self.script.pop(0)


def run_cli(*args: str):
    return CliRunner().invoke(app, ["run", "--json", *args])


@pytest.fixture
def env(tmp_path, cache_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    monkeypatch.setenv("AGENTARCH_LLM_TIMEOUT_S", "3")
    monkeypatch.setenv("AGENTARCH_LLM_FIRST_TOKEN_TIMEOUT_S", "3")  # streamed calls: the first token
    return tmp_path


def test_a_scripted_run_counts_exactly_what_was_scripted(env):
    responder = Responder(
        [
            fenced(mlp(16)),  # good code
            "Sure! Here is my design.\n" + fenced(mlp(24)) + "\nHope this helps.",  # code wrapped in prose
            fenced(mlp(32, crash=True)),  # fails its smoke run ...
            fenced(mlp(32), "Intent: fixed the forward pass."),  # ... and is repaired
            fenced(mlp(16)),  # a duplicate of the first
            Reply(status=429, headers={"Retry-After": "1"}),
            fenced(mlp(40)),  # rate limited, then fine
            Reply(delay_s=8),
            fenced(mlp(48)),  # times out, then fine
            "I am not sure what you mean by a network.",  # garbage ...
            "Still no code, sorry.",  # ... twice: invalid
        ]
    )
    with ScriptedLLMServer(default=responder) as server:
        result = run_cli(
            "--task",
            "digits",
            "--model",
            MODEL,
            "--api-base",
            server.url,
            "--budget",
            "7",
            "--schedule",
            "rounds",
            "--batch",
            "1",
            "--repair-tries",
            "1",
            "--archive",
            "a.db",
        )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert {
        k: summary[k]
        for k in ("status", "proposed", "trained", "invalid", "duplicate", "failed", "repaired", "stopped_by")
    } == {
        "status": "finished",
        "proposed": 7,
        "trained": 5,
        "invalid": 1,
        "duplicate": 1,
        "failed": 0,
        "repaired": 1,
        "stopped_by": "max-candidates",
    }
    assert responder.script == [] and summary["best"]["test_accuracy"] > 0.5

    db = sqlite3.connect(env / "a.db")
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM candidates WHERE run_id = ? ORDER BY id", [summary["run_id"]]).fetchall()
    assert [r["status"] for r in rows] == [
        "trained",
        "trained",
        "trained",
        "duplicate",
        "trained",
        "trained",
        "invalid",
    ]
    for row in rows:  # the provenance every LLM candidate carries
        assert row["model"] == MODEL and row["prompt"] and row["response"] and row["proposal_key"]
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and row["cost_usd"] == 0.0
        assert json.loads(row["examples"]) is not None
    trained = [r for r in rows if r["status"] == "trained"]
    assert all(r["analysis"].startswith("Wider than its parent") for r in trained)
    assert [r["repairs"] for r in rows] == [0, 0, 1, 0, 0, 0, 1]
    later = [r for r in trained[1:]]
    assert all(
        json.loads(r["parents"]) and json.loads(r["examples"]) for r in later
    )  # parents and examples once any exist
    calls = db.execute("SELECT status, COUNT(*) FROM llm_calls GROUP BY status").fetchall()
    assert dict(calls) == {"ok": 9 + 5, "rate_limited": 1, "timeout": 1}  # 9 proposals and repairs, 5 analyses
    linked = db.execute("SELECT COUNT(*) FROM llm_calls WHERE candidate_id IS NULL").fetchone()[0]
    assert linked == 0, "every LLM call is linked to the candidate it served"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    shown = CliRunner().invoke(app, ["archive", "show", str(trained[2]["id"]), "--json", "--archive", "a.db"])
    record = json.loads(shown.stdout)
    assert record["repairs"] == 1 and [c["purpose"] for c in record["llm_calls"]] == ["propose", "repair", "analyze"]
    assert record["prompt"][-1]["role"] == "user" and "shape mismatch" in record["prompt"][-1]["content"]


def code_for(request: dict) -> str:
    """A deterministic answer per proposal number, so a resumed run is asked the same things."""
    if kind(request) == "analyze":
        return "Analysis: fine."
    seq = int(re.search(r"This is proposal (\d+) of the run", request["messages"][-1]["content"]).group(1))
    return fenced(mlp(8 + 4 * seq))


def agentarch_run(archive, url, *extra):
    return start_run(archive, "--model", MODEL, "--api-base", url, "--budget", "6", *extra)


def test_a_run_killed_with_proposals_in_flight_resumes_with_every_evaluation_kept_once(env):
    with ScriptedLLMServer(default=code_for) as server:
        reference = agentarch_run(env / "ref.db", server.url)
        out, errors = reference.communicate(timeout=500)
        assert reference.returncode == 0, errors
        expected = json.loads(out.splitlines()[-1])

        victim = agentarch_run(env / "a.db", server.url)
        deadline = time.time() + 300
        recorded = 0
        while time.time() < deadline and recorded < 3:  # kill with proposals in flight
            time.sleep(0.2)
            if (env / "a.db").exists():
                try:
                    recorded = sqlite3.connect(env / "a.db").execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
                except sqlite3.OperationalError:
                    recorded = 0
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        db = sqlite3.connect(env / "a.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        run_id = db.execute("SELECT id FROM runs").fetchone()[0]
        resumed = agentarch_run(env / "a.db", server.url, "--resume", run_id)
        out, errors = resumed.communicate(timeout=500)
        assert resumed.returncode == 0, errors
    summary = json.loads(out.splitlines()[-1])
    same = ("proposed", "trained", "invalid", "duplicate", "failed", "repaired", "stopped_by")
    assert {k: summary[k] for k in same} == {k: expected[k] for k in same}
    keys = [r[0] for r in db.execute("SELECT proposal_key FROM candidates")]
    assert len(keys) == len(set(keys)) == 6
    assert db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 6
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "finished"


def test_without_a_model_the_loop_runs_offline_evolution_and_a_finished_run_cannot_resume(env):
    result = run_cli("--task", "digits", "--budget", "3", "--epochs", "3", "--archive", "a.db")
    assert result.exit_code == 0, result.output
    assert "No LLM configured" in result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    db = sqlite3.connect(env / "a.db")
    outcomes = db.execute("SELECT name, status, reason FROM candidates").fetchall()
    assert summary["proposed"] == 3 and summary["trained"] + summary["duplicate"] == 3, (summary, outcomes)
    assert summary["cost_usd"] == 0.0
    assert {r for r in db.execute("SELECT proposer, space FROM candidates")} == {("rea", "nb201")}
    again = run_cli("--resume", summary["run_id"], "--archive", "a.db")
    assert again.exit_code == 2 and "already finished" in again.output
    runs = CliRunner().invoke(app, ["archive", "runs", "--json", "--archive", "a.db"])
    assert json.loads(runs.stdout.splitlines()[0])["summary"]["proposed"] == 3


def test_the_cost_budget_stops_a_run_and_says_so(env):
    """gpt-4o-mini is priced from litellm's bundled cost map, so the scripted server's usage costs money."""
    width = iter(range(8, 200, 4))
    with ScriptedLLMServer(
        default=lambda request: "Fine." if kind(request) == "analyze" else fenced(mlp(next(width)))
    ) as server:
        result = run_cli(
            "--task",
            "digits",
            "--model",
            "openai/gpt-4o-mini",
            "--api-base",
            server.url,
            "--budget",
            "10",
            "--max-cost",
            "0.00001",
            "--archive",
            "a.db",
        )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["stopped_by"] == "max-cost" and summary["cost_usd"] > 0.00001
    assert 1 <= summary["proposed"] <= 3  # what was in flight (slots + queue) when the first call's cost came in
