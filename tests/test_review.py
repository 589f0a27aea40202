"""Human review: the review gate of `agentarch run --review`, `agentarch review`, and decisions in the archive."""

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.store.archive import Archive
from agentarch.store.decisions import code_sha256
from agentarch.store.handle import ArchiveError
from tests.conftest import REPO, requires_bubblewrap

EDITED = """import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""


def queue(archive: Archive, key: str = "run/1/0", parent_id=None) -> int:
    return archive.request_review(
        {
            "run_id": None,
            "proposal_key": key,
            "interrupt_id": "i",
            "code": EDITED,
            "intent": "Intent: a linear probe.",
            "parent_id": parent_id,
        }
    )


def review(*args: str, input: str | None = None):
    return CliRunner().invoke(app, ["review", *args], input=input)


def test_decisions_are_kept_with_who_and_why_and_taken_once(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        first, second = queue(db, "k1"), queue(db, "k2")
        assert queue(db, "k1") == first  # asking twice for the same proposal queues it once
        with pytest.raises(ArchiveError, match="say why"):
            db.decide(second, "rejected", "ana")
        db.decide(second, "rejected", "ana", reason="copies its parent")
        with pytest.raises(ArchiveError, match="already decided"):
            db.decide(second, "approved", "bo")
        row = db.review(second)
        assert (row["status"], row["decided_by"], row["reason"]) == ("rejected", "ana", "copies its parent")
        assert row["decided_at"] and db.review(first)["status"] == "pending"


def test_terminal_review_walks_the_queue(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTARCH_REVIEWER", "tester")
    path = tmp_path / "a.db"
    with Archive(path) as db:
        parent = db.record(
            {
                "task": "digits",
                "name": "p",
                "proposer": "user",
                "code": EDITED.replace("64", "8 * 8"),
                "status": "trained",
                "text_hash": "p",
                "parents": [],
            }
        )
        approve, reject = queue(db, "k1", parent), queue(db, "k2")
    listed = review("--list", "--archive", str(path))
    assert listed.exit_code == 0 and "a linear probe" in listed.output
    walked = review("--archive", str(path), input="a\nr\ntoo small to learn anything\n")
    assert walked.exit_code == 0, walked.output
    assert "-        self.fc = nn.Linear(8 * 8, num_classes)" in walked.output  # the diff against the parent
    with Archive(path) as db:
        assert db.review(approve)["status"] == "approved" and db.review(approve)["decided_by"] == "tester"
        assert db.review(reject)["reason"] == "too small to learn anything"
    assert "no candidate waits" in review("--archive", str(path)).output


def test_flagging_a_recorded_candidate_and_bad_input(tmp_path):
    path = tmp_path / "a.db"
    with Archive(path) as db:
        cid = db.record(
            {
                "task": "digits",
                "name": "c",
                "proposer": "llm",
                "code": EDITED,
                "status": "trained",
                "text_hash": "c",
                "parents": [],
            }
        )
    assert review("--flag", str(cid), "--reason", "val and test disagree", "--archive", str(path)).exit_code == 0
    assert review("--flag", str(cid), "--archive", str(path)).exit_code == 2  # no reason
    assert review("--approve", "99", "--archive", str(path)).exit_code == 2
    with Archive(path) as db:
        assert db.reviews(status="flagged")[0]["candidate_id"] == cid


@pytest.mark.slow
@requires_bubblewrap
def test_a_paused_run_resumes_once_a_person_has_decided(tmp_path, cache_dir):
    path = tmp_path / "a.db"
    env = {
        **os.environ,
        "AGENTARCH_CACHE_DIR": str(cache_dir),
        "AGENTARCH_THREADS": "1",
        "AGENTARCH_REVIEW_POLL_S": "0.2",
        "AGENTARCH_REVIEWER": "tester",
    }
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentarch.cli",
            "run",
            "--task",
            "digits",
            "--review",
            "--budget",
            "3",
            "--epochs",
            "2",
            "--archive",
            str(path),
            "--json",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        pending = []
        while time.time() < deadline and len(pending) < 3:
            time.sleep(0.3)
            if path.exists():
                with Archive(path) as db:
                    pending = db.reviews(status="pending")
        assert len(pending) == 3, "the run did not pause its three candidates for review"
        with Archive(path) as db:
            assert db.db["candidates"].count == 0  # nothing is trained before a person decides
        edited = tmp_path / "edited.py"
        edited.write_text(EDITED)
        a, r, e = (p["id"] for p in pending)
        assert review("--approve", str(a), "--archive", str(path)).exit_code == 0
        assert review("--reject", str(r), "--reason", "not this one", "--archive", str(path)).exit_code == 0
        assert review("--edit", str(e), "--file", str(edited), "--archive", str(path)).exit_code == 0
        out, errors = run.communicate(timeout=300)
    finally:
        run.kill()
    assert run.returncode == 0, errors
    assert "paused:" in errors
    summary = json.loads(out.splitlines()[-1])
    assert (summary["proposed"], summary["rejected"]) == (3, 1)
    db = sqlite3.connect(path)
    rows = dict(db.execute("SELECT r.status, c.status FROM reviews r JOIN candidates c ON c.id = r.candidate_id"))
    assert rows["rejected"] == "rejected" and rows["approved"] in ("trained", "duplicate")
    assert rows["edited"] == "trained"
    code = db.execute(
        "SELECT c.code FROM reviews r JOIN candidates c ON c.id = r.candidate_id WHERE r.status = 'edited'"
    )
    assert code.fetchone()[0] == EDITED


# -- the gate covers exactly the code a person saw (fast: the sandbox and the LLM are stand-ins) --------------

BROKEN = EDITED.replace("self.fc(x.flatten(1))", "self.fc(x.flatten(1))  # fails its smoke run")
REPAIRED = EDITED.replace("nn.Linear(64, num_classes)", "nn.Linear(8 * 8, num_classes)")
NOT_ALLOWED = "import os\n" + EDITED


def fenced(code: str) -> str:
    return f"Intent: a linear probe.\n\n```python\n{code}```\n"


@pytest.fixture
def gated(tmp_path, monkeypatch):
    """A one-candidate LLM run with --review whose sandbox steps and LLM are scripted stand-ins.

    `smoke` fails code marked "fails its smoke run" and passes any other; `train` records what it was
    given as trained; the LLM proposes BROKEN, repairs to REPAIRED and analyses in one line. Returns
    (settings, the codes the sandbox steps saw).
    """
    from agentarch.config import load_settings
    from agentarch.loop.nodes.base import Nodes, decided
    from agentarch.loop.nodes.evaluating import EvaluatingNodes

    sandboxed: list[tuple[str, str]] = []

    def smoke(self, state):
        sandboxed.append(("smoke", state["code"]))
        if "fails its smoke run" in state["code"]:
            failed = self.ctx.evaluator().without_running(state["code"], "c", "failed", "shape mismatch", "llm")
            return {**decided(failed), "error": "shape mismatch"}
        return {"error": None}

    def train(self, state):
        sandboxed.append(("train", state["code"]))
        done = self.ctx.evaluator().without_running(state["code"], "c", "trained", None, "llm")
        return decided(done)

    def ask(self, state, messages, purpose):
        answer = {"propose": fenced(BROKEN), "repair": fenced(REPAIRED), "analyze": "Fine."}[purpose]
        return {"response": answer, "llm_error": None, "call_ids": []}

    monkeypatch.setattr(EvaluatingNodes, "smoke", smoke)
    monkeypatch.setattr(EvaluatingNodes, "train", train)
    monkeypatch.setattr(Nodes, "_ask", ask)
    settings = load_settings(
        task="digits",
        model="openai/scripted",
        review=True,
        review_poll_s=0.01,
        budget=1,
        batch=1,
        repair_tries=2,
        archive=tmp_path / "a.db",
    )
    return settings, sandboxed


def run_reviewed(settings, decide) -> tuple[dict, list[dict]]:
    """Run to the end, answering each pause with `decide(archive, review)`; returns the summary and the reviews."""
    from agentarch.loop import run

    def on_waiting(pending):
        with Archive(settings.archive) as db:
            for row in pending:
                decide(db, row)

    summary = run.start(settings, on_waiting=on_waiting)
    with Archive(settings.archive) as db:
        return summary, db.reviews()


def test_an_approved_candidate_repaired_after_its_smoke_run_pauses_again_with_the_repaired_code(gated):
    settings, sandboxed = gated
    summary, reviews = run_reviewed(settings, lambda db, r: db.decide(r["id"], "approved", "ana"))
    assert [r["code"] for r in reviews] == [BROKEN, REPAIRED]  # the repair was shown to a person before it ran
    assert [r["status"] for r in reviews] == ["approved", "approved"]
    assert [r["code_sha256"] for r in reviews] == [code_sha256(BROKEN), code_sha256(REPAIRED)]
    assert sandboxed == [("smoke", BROKEN), ("smoke", REPAIRED), ("train", REPAIRED)]
    assert (summary["trained"], summary["repaired"]) == (1, 1)
    with Archive(settings.archive) as db:
        assert db.candidate(reviews[1]["candidate_id"])["code"] == REPAIRED


def test_an_edit_that_fails_the_checks_and_is_repaired_pauses_again(gated):
    settings, sandboxed = gated

    def decide(db, row):
        if row["code"] == BROKEN:
            db.decide(row["id"], "edited", "ana", code=NOT_ALLOWED)
        else:
            db.decide(row["id"], "approved", "ana")

    summary, reviews = run_reviewed(settings, decide)
    assert [(r["code"], r["status"]) for r in reviews] == [(BROKEN, "edited"), (REPAIRED, "approved")]
    assert reviews[0]["decision_code_sha256"] == code_sha256(NOT_ALLOWED)
    assert sandboxed == [("smoke", REPAIRED), ("train", REPAIRED)]  # neither BROKEN nor the edit ever ran
    assert summary["trained"] == 1


def test_approving_unchanged_code_trains_without_a_second_pause_and_an_edit_that_passes_runs_as_written(gated):
    settings, sandboxed = gated
    settings.repair_tries = 0  # BROKEN's smoke failure is then recorded, not repaired
    summary, reviews = run_reviewed(settings, lambda db, r: db.decide(r["id"], "approved", "ana"))
    assert len(reviews) == 1 and sandboxed == [("smoke", BROKEN)] and summary["failed"] == 1
    with Archive(settings.archive) as db:
        assert db.candidate(reviews[0]["candidate_id"])["reason"] == "shape mismatch"

    sandboxed.clear()
    settings.archive = settings.archive.with_name("b.db")
    summary, reviews = run_reviewed(settings, lambda db, r: db.decide(r["id"], "edited", "bo", code=EDITED))
    assert len(reviews) == 1 and reviews[0]["status"] == "edited"
    assert sandboxed == [("smoke", EDITED), ("train", EDITED)] and summary["trained"] == 1


def test_the_gate_routes_on_its_verdict_and_every_review_is_keyed_by_code(tmp_path):
    from agentarch.config import load_settings
    from agentarch.loop.context import RunContext
    from agentarch.loop.routers import Routers

    route = Routers(RunContext(load_settings(task="digits", archive=tmp_path / "r.db"), "run-1", time.time()))
    assert route.after_review({"gate": "pass"}) == "smoke"
    assert route.after_review({"gate": "edited"}) == "static_check"
    assert route.after_review({"gate": "rejected"}) == "record"
    with Archive(tmp_path / "a.db") as db:
        first = db.request_review({"run_id": None, "proposal_key": "k", "interrupt_id": "i", "code": BROKEN})
        assert db.request_review({"run_id": None, "proposal_key": "k", "interrupt_id": "j", "code": BROKEN}) == first
        again = db.request_review({"run_id": None, "proposal_key": "k", "interrupt_id": "j", "code": REPAIRED})
        assert again != first and db.review(again)["code_sha256"] == code_sha256(REPAIRED)


# -- the terminal side: who decides, what the help and the run say ----------------------------------------------


def test_review_by_names_the_reviewer_and_the_help_keeps_its_key_markers(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTARCH_REVIEWER", "from-env")
    path = tmp_path / "a.db"
    with Archive(path) as db:
        first, second = queue(db, "k1"), queue(db, "k2")
    assert review("--approve", str(first), "--by", "ada", "--archive", str(path)).exit_code == 0
    assert review("--approve", str(second), "--archive", str(path)).exit_code == 0
    with Archive(path) as db:
        assert (db.review(first)["decided_by"], db.review(second)["decided_by"]) == ("ada", "from-env")
    shown = CliRunner().invoke(app, ["review", "--help"], env={"COLUMNS": "200"}).output
    assert "[a]pprove, [r]eject, [e]dit in $EDITOR, [s]kip or [q]uit" in shown and "--by" in shown


def test_the_run_says_nothing_when_nothing_waits_and_counts_rejections(capsys):
    from agentarch.cli import run as run_cli

    run_cli._waiting_notice([])
    assert capsys.readouterr().err == ""
    run_cli._waiting_notice([{"id": 3}])
    assert "paused: 1 candidate(s) wait for review (reviews 3)" in capsys.readouterr().err
    summary = {
        "run_id": "r",
        "status": "finished",
        "stopped_by": "budget",
        "proposed": 3,
        "trained": 1,
        "invalid": 0,
        "duplicate": 0,
        "failed": 0,
        "rejected": 2,
        "repaired": 0,
        "best": None,
        "metric": "accuracy",
        "cost_usd": 0.0,
    }
    line = run_cli.run_summary_line(summary)
    assert "3 proposed, 1 trained, 0 invalid, 0 duplicate, 0 failed, 2 rejected, 0 repaired" in line
    assert "nothing trained" in line
    assert "best #7 test 0.9000" in run_cli.run_summary_line({**summary, "best": {"id": 7, "test_accuracy": 0.9}})
