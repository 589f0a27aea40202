"""What a run shows while it works (issue 24): the loop's events, their three renderings (a live view on a terminal,
a plain line each, a JSON line each with --json), the resume command said first, settings a resume may change, a
proposal the LLM never answered recorded as a row, and repair attempts and LLM seconds in the summary.

The fast tests drive the renderer and the library's pieces directly; the slow one runs the real loop against the
scripted OpenAI-compatible server of tests/llm_server.py with the real sandbox and checks the events it emits.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.cli import run as run_cli
from agentarch.cli.progress import Watcher, resume_command
from agentarch.config import load_settings
from agentarch.loop import events as ev
from agentarch.loop import run as run_lib
from agentarch.loop.context import RunContext
from agentarch.loop.nodes.recording import RecordingNodes
from agentarch.loop.stopping import RunControl
from agentarch.loop.summary import summarize
from agentarch.store.archive import Archive
from tests.conftest import requires_bubblewrap
from tests.llm_server import Reply, ScriptedLLMServer
from tests.scripted import MODEL, fenced, kind, mlp
from tests.test_terminal import HOSTILE, VISIBLE, assert_inert

NOW = time.time()  # for events whose times are not checked
STARTED = ev.RunStarted("llm-1", "runs/a b.db", "digits", ["openai/m"], False, 5, 0, 0, 1, 2)


def events() -> list[ev.Event]:
    """A run's events with the hostile text where a model or a candidate writes (a reason), as of now."""
    NOW = time.time()  # noqa: N806 (the moment the events describe)
    return [
        STARTED,
        ev.ProposalStep("llm-1/0", 0, "openai/m", "propose", NOW - 12),
        ev.ProposalStep("llm-1/1", 1, "openai/m", "smoke", NOW - 3),
        ev.Pulse(
            NOW,
            [
                {
                    "key": "llm-1/0",
                    "seq": 0,
                    "model": "openai/m",
                    "step": "repair",
                    "since": NOW - 7,
                    "llm": {"purpose": "repair", "state": "streaming", "seconds": 6.0, "tokens": 140, "attempt": 2},
                },
                {"key": "llm-1/1", "seq": 1, "model": "openai/m", "step": "train", "since": NOW - 40},
            ],
            1,
            1,
            2,
            0,
            0.0123,
            81.5,
            1,
            2,
        ),  # fmt: skip
        ev.Recorded("llm-1/1", 1, "openai/m", 4, "failed", HOSTILE, 2, None, 0.01, 1, 0.02),
        ev.Stopping("SIGINT", NOW, 1),
        ev.Paused("llm-1/0", 0, "repair"),
        ev.RunEnded("llm-1", "interrupted", "SIGINT"),
    ]


def test_the_resume_command_quotes_what_a_shell_would_split():
    assert resume_command("llm-1", "runs/a b.db") == "agentarch run --resume llm-1 --archive 'runs/a b.db'"


def test_plain_lines_say_the_run_id_and_resume_command_first_and_a_line_per_event():
    shown = io.StringIO()
    watcher = Watcher("plain", Console(file=shown, width=60, force_terminal=False))
    for event in events():
        watcher(event)
    lines = shown.getvalue().splitlines()
    assert lines[0].startswith("run llm-1 started on digits with openai/m") and lines[0].endswith(
        "agentarch run --resume llm-1 --archive 'runs/a b.db'"
    )  # one line however narrow the console: a log is grepped
    assert re.search(r"\d\d:\d\d:\d\d proposal 0 \(openai/m\): propose$", lines[1])
    assert re.search(r"proposal 1 \(openai/m\): smoke$", lines[2])
    assert lines[3].startswith("stopping (SIGINT): no new proposals") and "Ctrl-C again" in lines[3]
    assert "proposal 0 stopped at its last checkpoint (it was in repair)" in lines[4]
    assert len(lines) == 5  # the pulse is the live view's; the outcome line is the outcome printer's


def test_json_lines_one_per_event_as_it_comes_with_the_resume_command(capsys):
    watcher = Watcher("json", Console(file=io.StringIO()))
    for event in events():
        watcher(event)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == [
        "run_started", "step", "step", "recorded", "stopping", "paused", "run_ended",
    ]  # fmt: skip
    assert lines[0]["resume"] == lines[-1]["resume"] == "agentarch run --resume llm-1 --archive 'runs/a b.db'"
    assert lines[3]["reason"] == HOSTILE and lines[3]["repairs"] == 2  # JSON carries the text exactly, escaped


def test_the_live_view_shows_each_proposal_its_step_seconds_and_call_and_the_runs_counts():
    watcher = Watcher("live", Console(file=io.StringIO()))
    for event in events()[:4]:
        watcher._keep(event)
    shown = Console(file=io.StringIO(), width=160, force_terminal=True, color_system="truecolor", record=True)
    shown.print(watcher.render())
    text = shown.export_text()
    assert "run llm-1  2/5 proposed  0 recorded  slots 1/1 busy  LLM 1 in flight, 2 queued  $0.0123  LLM 81.5 s" in text
    assert re.search(r"#0\s+openai/m\s+repair\s+[78]s\s+repair: streams 6s, 140 tokens \(attempt 2\)", text), text
    assert re.search(r"#1\s+openai/m\s+train\s+4[01]s", text), text
    watcher._keep(ev.Stopping("SIGTERM", NOW, 2))
    shown.print(watcher.render())
    assert "stopping (SIGTERM): 2 proposal(s) reaching their checkpoints; Ctrl-C again stops at once" in (
        shown.export_text()
    )


def test_the_live_view_and_the_plain_lines_show_hostile_text_as_text():
    """A model name comes from the user, a reason from a model or a candidate: both reach the terminal inert."""
    raw = io.StringIO()
    console = Console(file=raw, width=400, force_terminal=True, color_system="truecolor")
    watcher = Watcher("plain", console)
    watcher(ev.RunStarted(HOSTILE, HOSTILE, HOSTILE, [HOSTILE], True, 5, 2, 1, 1, 2))
    watcher(ev.ProposalStep("k", 3, HOSTILE, HOSTILE, NOW))
    watcher(ev.Paused("k", 3, HOSTILE))
    live = Watcher("live", console)
    live._keep(ev.ProposalStep("k", 3, HOSTILE, HOSTILE, NOW))
    live._keep(ev.Pulse(NOW, [{"key": "k", "seq": 3, "model": HOSTILE, "step": HOSTILE, "since": NOW,
                              "llm": {"purpose": HOSTILE, "state": HOSTILE, "seconds": 1.0}}],
                        1, 0, 4, 1, 0.0, 0.0, 0, 0))  # fmt: skip
    console.print(live.render())
    assert_inert(raw.getvalue(), VISIBLE)


def test_the_run_summary_line_counts_repair_attempts_apart_and_shows_llm_seconds_beside_dollars():
    outcomes = [
        {"id": 1, "status": "trained", "val_accuracy": 0.9, "test_accuracy": 0.9, "repaired": True, "repairs": 2},
        {"id": 2, "status": "invalid", "val_accuracy": None, "test_accuracy": None, "repaired": False, "repairs": 2},
        {"id": 3, "status": "failed", "val_accuracy": None, "test_accuracy": None, "repaired": False},  # an old one
    ]
    summary = summarize("llm-1", "finished", outcomes, "max-candidates", llm_seconds=1234.56)
    assert (summary["repaired"], summary["repair_attempts"], summary["llm_seconds"]) == (1, 4, 1234.6)
    line = run_cli.run_summary_line(summary).plain
    assert "1 repaired of 4 repair attempts" in line and line.endswith("cost $0.0000 and 1234.6 s of LLM time")


def stored_run(path) -> str:
    settings = load_settings(task="digits", model="openai/m@http://127.0.0.1:9/v1", archive=path)
    with Archive(path) as db:
        return db.start_run("llm", "digits", "openai/m", json.loads(settings.model_dump_json(exclude={"api_key"})))


def test_a_resume_takes_settings_that_change_how_the_run_works_and_refuses_those_that_change_what_it_is(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        stored = db.find_run(stored_run(tmp_path / "a.db"))["config"]
    kept = run_lib.check_overrides(
        stored,
        {
            "queue": 0, "llm_concurrency": 1, "llm_timeout_s": 600.0, "llm_first_token_timeout_s": 900.0,
            "llm_retries": 1, "max_tokens": 2048, "max_answer_bytes": 50_000, "slots": 2, "budget": 40,
            "task": "digits",  # as the run has it: kept as it is
            "model": "openai/m@http://127.0.0.1:8080/v1~1",  # the same model at another server
            "epochs": None,  # not given
        },
    )  # fmt: skip
    assert kept["queue"] == 0 and kept["model"].endswith("8080/v1~1") and "task" not in kept and "epochs" not in kept
    for changed in ({"task": "mqar"}, {"objectives": ["val:max", "params:min"]}, {"seed": 3},
                    {"offline_space": "macro"}, {"model": "openai/other"}, {"models": ["openai/m", "openai/n"]}):  # fmt: skip
        with pytest.raises(run_lib.RunError, match=f"--resume cannot change {next(iter(changed))}"):
            run_lib.check_overrides(stored, changed)


def test_resume_on_the_command_line_refuses_another_task_and_names_what_it_takes(tmp_path):
    run_id = stored_run(tmp_path / "a.db")
    result = CliRunner().invoke(app, ["run", "--resume", run_id, "--task", "mqar", "--archive", str(tmp_path / "a.db")])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "--resume cannot change task" in said and "llm_concurrency" in said and "queue" in said


def test_resume_on_the_command_line_passes_the_flags_it_takes(tmp_path, monkeypatch):
    got = {}

    def fake_resume(run_id, archive, **given):
        got.update(given)
        return {"run_id": run_id, "status": "finished", "stopped_by": "max-candidates", "metric": "accuracy",
                "proposed": 0, "best": None, "cost_usd": 0.0}  # fmt: skip

    monkeypatch.setattr(run_lib, "resume", fake_resume)
    args = ["run", "--resume", "r", "--queue", "0", "--llm-concurrency", "1", "--llm-timeout", "600"]
    args += ["--first-token-timeout", "900", "--max-tokens", "2048", "--llm-retries", "1", "--no-llm-stream"]
    result = CliRunner().invoke(app, [*args, "--archive", str(tmp_path / "a.db")])
    assert result.exit_code == 0, result.output
    assert {k: got[k] for k in ("queue", "llm_concurrency", "llm_timeout_s", "llm_first_token_timeout_s")} == {
        "queue": 0, "llm_concurrency": 1, "llm_timeout_s": 600.0, "llm_first_token_timeout_s": 900.0,
    }  # fmt: skip
    assert (got["max_tokens"], got["llm_retries"], got["llm_stream"]) == (2048, 1, False)
    assert isinstance(got["control"], RunControl) and callable(got["on_event"])


def test_a_stop_asked_for_before_the_run_is_ready_stops_it_when_it_attaches_and_a_halt_marks_it():
    control = RunControl()
    stopped, marked = [], []
    assert control.stop("SIGTERM") and not control.stop("SIGINT")  # the first request counts
    control.attach(stopped.append, lambda: marked.append(True))
    assert stopped == ["SIGTERM"]
    control.halt("a second SIGINT")
    assert marked == [True] and control.halted and control.reason == "SIGTERM"


def test_a_proposal_the_llm_never_answered_is_a_failed_row_that_archive_ls_lists(tmp_path):
    settings = load_settings(task="digits", model=MODEL, api_base="http://127.0.0.1:9/v1", archive=tmp_path / "a.db")
    ctx = RunContext(settings, "llm-run", time.time())
    with Archive(settings.archive) as db:
        call = db.record_llm_call(
            {"run_id": "llm-run", "purpose": "propose", "model": MODEL, "attempt": 1, "status": "timeout"}
        )
    state = {
        "plan": {"key": "llm-run/0", "seq": 0, "island": 0},
        "messages": [{"role": "user", "content": "propose"}],
        "response": None,
        "llm_error": "[llm] gave up after 5 attempts: timeout (no first token within 300s)",
        "call_ids": [call],
        "tries": 0,
    }
    outcome = RecordingNodes(ctx).give_up(state)["outcomes"][0]
    assert (outcome["status"], outcome["reason"], outcome["model"]) == ("failed", state["llm_error"], MODEL)
    db = sqlite3.connect(settings.archive)
    row = db.execute("SELECT id, status, reason, model, proposal_key, code FROM candidates").fetchone()
    assert row == (outcome["id"], "failed", state["llm_error"], MODEL, "llm-run/0", "")
    assert db.execute("SELECT candidate_id FROM llm_calls").fetchone()[0] == outcome["id"]  # the spend is the row's
    listed = CliRunner().invoke(app, ["archive", "ls", "--json", "--archive", str(settings.archive)])
    assert [json.loads(line)["status"] for line in listed.stdout.splitlines()] == ["failed"]


# -- end to end: the events of a real run ---------------------------------------------------------------------


@pytest.mark.slow
@requires_bubblewrap
def test_a_runs_events_say_each_step_as_it_comes_and_a_pulse_shows_the_call_waiting(
    tmp_path, cache_dir, digits, caplog
):
    """Proposal 0 is answered after 3 s (a pulse sees its call waiting for the first token), then repaired once;
    proposal 1's server never answers (two attempts, HTTP 500): the retry's warning names the proposal and its step,
    and the proposal is recorded `failed` with its reason."""
    answers = iter(
        [
            Reply(content=fenced(mlp(16, crash=True)), first_token_delay_s=3.0, delay_s=3.0),
            fenced(mlp(16)),  # the repair
        ]
    )

    def answer(request):
        if kind(request) == "analyze":
            return "Fine."
        if "This is proposal 2 of the run" in request["messages"][-1]["content"]:
            return Reply(status=500)
        return next(answers)

    seen: list[ev.Event] = []
    with ScriptedLLMServer(default=answer, stream=True) as server:
        settings = load_settings(
            task="digits", model=MODEL, api_base=server.url, budget=2, slots=1, queue=0, epochs=1, llm_retries=1,
            repair_tries=1, notebook_every=0, archive=tmp_path / "a.db", cache_dir=cache_dir, threads=1,
        )  # fmt: skip
        summary = run_lib.start(settings, on_event=seen.append)
    kinds = [e.kind for e in seen]
    assert kinds[0] == "run_started" and kinds[-1] == "run_ended" and seen[0].run_id == summary["run_id"]
    steps = [e.step for e in seen if isinstance(e, ev.ProposalStep) and e.seq == 0]
    assert steps == [
        "context", "prompt", "propose", "extract", "check", "dedup", "review", "slot wait", "smoke", "repair",
        "extract", "check", "dedup", "review", "slot wait", "smoke", "train", "analyze", "record",
    ]  # fmt: skip
    waiting = [p["llm"] for e in seen if isinstance(e, ev.Pulse) for p in e.proposals if p["seq"] == 0 and p.get("llm")]
    assert any(call["purpose"] == "propose" and call["state"] == "waiting" for call in waiting), waiting
    recorded = {e.seq: e for e in seen if isinstance(e, ev.Recorded)}
    assert (recorded[0].status, recorded[0].repairs) == ("trained", 1)
    assert recorded[1].status == "failed" and recorded[1].reason.startswith("[llm]") and recorded[1].candidate_id
    assert (summary["proposed"], summary["trained"], summary["failed"]) == (2, 1, 1)
    assert (summary["repaired"], summary["repair_attempts"]) == (1, 1) and summary["llm_seconds"] > 3.0
    db = sqlite3.connect(settings.archive)
    assert sorted(db.execute("SELECT status FROM candidates").fetchall()) == [("failed",), ("trained",)]
    retried = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert retried and all(m.startswith(f"proposal 1 propose {MODEL}: attempt 1 server_error") for m in retried)
