"""Crash safety: SIGKILL a real `agentarch run` at 20 random points; every resume keeps the archive whole.

After each kill the database must pass `PRAGMA integrity_check`, and once the run is finally
resumed to its end, every proposal is recorded exactly once and every trained candidate has exactly
one evaluation: nothing completed is lost, nothing is recorded twice.

Kills this close together land twice on some candidate's sandbox job; such a candidate is recorded
`failed` (with one evaluation saying so) instead of replayed a third time, as a candidate that keeps
killing the orchestrator must be. Every other candidate is replayed and recorded as usual.
"""

import json
import random
import signal
import sqlite3
import time

import pytest

from tests.conftest import requires_bubblewrap
from tests.scripted import start_run

pytestmark = [pytest.mark.slow, requires_bubblewrap]

KILLS = 20
BUDGET = 30  # kills this close together fail a candidate they land on twice (see below)


def start(archive, cache_dir, *extra):
    return start_run(archive, "--budget", str(BUDGET), "--epochs", "3", *extra, cache_dir=cache_dir)


def test_twenty_kills_lose_nothing_and_record_nothing_twice(tmp_path, cache_dir, digits):
    archive = tmp_path / "a.db"
    rng = random.Random(0)
    run_id = None
    finished = None
    landed = 0
    for kill in range(KILLS):
        proc = start(archive, cache_dir, *(["--resume", run_id] if run_id else []))
        time.sleep(rng.uniform(0.5, 6.0))  # anywhere: start-up, proposing, smoke, training, recording
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            landed += 1
        out, _ = proc.communicate()
        db = sqlite3.connect(archive)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"after kill {kill + 1}"
        if run_id is None:  # a kill during start-up (a loaded machine) may land before the run has a row
            started = db.execute("SELECT name FROM sqlite_master WHERE name = 'runs'").fetchone()
            row = db.execute("SELECT id FROM runs").fetchone() if started else None
            run_id = row[0] if row else None
        if proc.returncode == 0:
            finished = json.loads(out.splitlines()[-1])
            break
    if finished is None:  # every kill landed (a loaded machine: perhaps before the run had its row)
        proc = start(archive, cache_dir, *(["--resume", run_id] if run_id else []))
        out, errors = proc.communicate(timeout=600)
        assert proc.returncode == 0, errors
        finished = json.loads(out.splitlines()[-1])
    assert landed == KILLS, f"only {landed} kills landed before the run finished; raise BUDGET"
    db = sqlite3.connect(archive)
    keys = [r[0] for r in db.execute("SELECT proposal_key FROM candidates")]
    assert len(keys) == len(set(keys)) == BUDGET == finished["proposed"]
    per_candidate = db.execute(
        "SELECT c.status, COUNT(e.id) FROM candidates c LEFT JOIN evaluations e ON e.candidate_id = c.id GROUP BY c.id"
    ).fetchall()
    assert all(n == (1 if status in ("trained", "failed", "timeout") else 0) for status, n in per_candidate)
    reasons = [r for (r,) in db.execute("SELECT reason FROM candidates WHERE status = 'failed'")]
    assert all(r.startswith("[host] the orchestrator stopped ") for r in reasons), reasons
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "finished"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
