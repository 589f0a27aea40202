"""Human review: the review gate of `agentarch run --review`, `agentarch review`, and decisions in the archive."""

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from agentarch.archive import Archive, ArchiveError
from agentarch.cli import app
from tests.conftest import REPO, requires_bubblewrap

EDITED = '''import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))
'''


def queue(archive: Archive, key: str = "run/1/0", parent_id=None) -> int:
    return archive.request_review({"run_id": None, "proposal_key": key, "interrupt_id": "i", "code": EDITED,
                                   "intent": "Intent: a linear probe.", "parent_id": parent_id})


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
        parent = db.record({"task": "digits", "name": "p", "proposer": "user", "code": EDITED.replace("64", "8 * 8"),
                            "status": "trained", "text_hash": "p", "parents": []})
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
        cid = db.record({"task": "digits", "name": "c", "proposer": "llm", "code": EDITED, "status": "trained",
                         "text_hash": "c", "parents": []})
    assert review("--flag", str(cid), "--reason", "val and test disagree", "--archive", str(path)).exit_code == 0
    assert review("--flag", str(cid), "--archive", str(path)).exit_code == 2  # no reason
    assert review("--approve", "99", "--archive", str(path)).exit_code == 2
    with Archive(path) as db:
        assert db.reviews(status="flagged")[0]["candidate_id"] == cid


@pytest.mark.slow
@requires_bubblewrap
def test_a_paused_run_resumes_once_a_person_has_decided(tmp_path, cache_dir):
    path = tmp_path / "a.db"
    env = {**os.environ, "AGENTARCH_CACHE_DIR": str(cache_dir), "AGENTARCH_THREADS": "1",
           "AGENTARCH_REVIEW_POLL_S": "0.2", "AGENTARCH_REVIEWER": "tester"}
    run = subprocess.Popen([sys.executable, "-m", "agentarch.cli", "run", "--task", "digits", "--review", "--budget", "3",
                            "--batch", "3", "--epochs", "2", "--archive", str(path), "--json"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    code = db.execute("SELECT c.code FROM reviews r JOIN candidates c ON c.id = r.candidate_id WHERE r.status = 'edited'")
    assert code.fetchone()[0] == EDITED
