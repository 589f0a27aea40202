"""The run's scheduler: steady state and rounds, the proposals ledger a resume reads, islands, explore-then-verify,
and a run with two objectives (offline regularized evolution on digits through the real sandbox)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from agentarch.config import load_settings
from agentarch.loop import islands, run
from agentarch.search.objectives import Goals
from agentarch.store.archive import Archive
from tests.conftest import requires_bubblewrap


def outcome(key: str, island: int, status: str = "trained", val: float | None = 0.5, params: int = 100) -> dict:
    return {"key": key, "island": island, "status": status, "val_accuracy": val, "params": params, "id": hash(key)}


def test_islands_are_round_robin_and_migrate_their_best_along_the_ring():
    goals = Goals.parse()
    assert [islands.island_of(seq, 3) for seq in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    ended = [outcome("a", 0, val=0.9), outcome("b", 1, val=0.2), outcome("c", 0, val=0.1), outcome("d", 1, val=0.3)]
    before = islands.pools(ended[:3], 2, every=4, goals=goals)
    assert [[o["key"] for o in pool] for pool in before] == [["a", "c"], ["b"]]  # no migration yet
    after = islands.pools(ended, 2, every=4, goals=goals)
    assert [[o["key"] for o in pool] for pool in after] == [["a", "c", "d"], ["b", "d", "a"]]
    assert after[1][-1]["migrant"] and not after[1][0].get("migrant")
    assert islands.pools(ended, 1, every=1, goals=goals) == [ended]


def test_island_migration_ranks_by_the_runs_goals():
    goals = Goals.parse(["val:max", "params:min"], ["params<=500"])
    ended = [outcome("big", 0, val=0.99, params=10_000), outcome("small", 0, val=0.5, params=50), outcome("x", 1)]
    assert islands.pools(ended, 2, every=3, goals=goals)[1][-1]["key"] == "small"  # "big" breaks the constraint


def offline(tmp_path, cache_dir, **extra):
    return load_settings(
        task="digits",
        archive=tmp_path / "a.db",
        cache_dir=cache_dir,
        epochs=1,
        threads=1,
        **extra,
    )


@pytest.mark.slow
@requires_bubblewrap
def test_a_steady_two_objective_run_with_islands_and_verify_records_its_front_and_ledger(tmp_path, cache_dir):
    settings = offline(
        tmp_path,
        cache_dir,
        budget=6,
        slots=2,
        queue=1,
        islands=2,
        migrate_every=2,
        objectives=["val:max", "params:min"],
        constraints=["params<=200000"],
        verify_top=1,
        verify_epochs=2,
    )
    summary = run.start(settings)
    assert summary["status"] == "finished" and summary["proposed"] == 6 and summary["stopped_by"] == "max-candidates"
    assert summary["objectives"] == {"objectives": ["val:max", "params:min"], "constraints": ["params<=200000"]}
    assert summary["front"] and summary["hypervolume"] > 0 and len(summary["reference"]) == 2
    front_ids = {row["id"] for row in summary["front"]}
    db = sqlite3.connect(settings.archive)
    trained = db.execute(
        "SELECT c.id, e.val_accuracy, c.params FROM candidates c JOIN evaluations e ON e.candidate_id = c.id "
        "WHERE c.status = 'trained' AND e.stage IS NULL"
    ).fetchall()
    for cid, val, params in trained:  # nothing off the front dominates a member of it
        dominated = [
            f for f in summary["front"] if val >= f["val_accuracy"] and params <= f["params"] and cid != f["id"]
        ]
        assert (
            cid in front_ids
            or not dominated
            or all((val, params) == (f["val_accuracy"], f["params"]) for f in dominated)
        )
    ledger = db.execute("SELECT seq, island, outcome IS NOT NULL FROM proposals ORDER BY seq").fetchall()
    assert ledger == [(seq, seq % 2, 1) for seq in range(6)]
    assert {island for (island,) in db.execute("SELECT island FROM candidates")} == {0, 1}
    verified = db.execute("SELECT candidate_id, fidelity FROM evaluations WHERE stage = 'verify'").fetchall()
    # the best one, and any that took the lead while the last proposals were still training (at most 3 in flight)
    assert 1 <= len(verified) <= 1 + 3 and {epochs for _, epochs in verified} == {2}
    assert len({cid for cid, _ in verified}) == len(verified)  # each verified once
    assert {v["id"] for v in summary["verified"]} <= {cid for cid, _ in verified}


@pytest.mark.slow
@requires_bubblewrap
def test_a_resume_starts_what_the_ledger_holds_open_and_keeps_what_it_closed(tmp_path, cache_dir):
    """A crash between entering a proposal in the ledger and its first checkpoint: the resumed run starts that
    proposal from its stored plan, keeps the closed ones, and proposes no more than its budget."""
    settings = offline(tmp_path, cache_dir, budget=3, slots=1, queue=0)
    with Archive(settings.archive) as db:
        run_id = db.start_run("offline", "digits", "rea", json.loads(settings.model_dump_json(exclude={"api_key"})))
        closed = {"key": f"{run_id}/0", "id": None, "status": "failed", "reason": "[llm] gone", "val_accuracy": None}
        db.open_proposal(run_id, f"{run_id}/0", 0, 0, {"key": f"{run_id}/0", "seq": 0, "island": 0})
        db.close_proposal(f"{run_id}/0", closed)
        plan = {
            "key": f"{run_id}/1",
            "seq": 1,
            "island": 0,
            "in_flight": 0,
            "arch": "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
            "parents": [],
            "note": "stored plan",
        }
        db.open_proposal(run_id, plan["key"], 1, 0, plan)
    time.sleep(0.01)
    summary = run.resume(run_id, settings.archive)
    assert summary["status"] == "finished" and summary["proposed"] == 3
    db = sqlite3.connect(settings.archive)
    keys = sorted(k for (k,) in db.execute("SELECT proposal_key FROM candidates"))
    # the open one and one more (budget 3); the two race for the slot, so either may be recorded first
    assert keys == [f"{run_id}/1", f"{run_id}/2"]
    assert db.execute("SELECT arch FROM candidates WHERE proposal_key = ?", [plan["key"]]).fetchone()[0] == plan["arch"]
    assert db.execute("SELECT COUNT(*) FROM proposals WHERE outcome IS NULL").fetchone()[0] == 0


def test_proposals_in_flight_follow_the_executors_slots_not_the_batch(tmp_path, monkeypatch):
    """On a GPU host the slots are GPUs x per_gpu: the run keeps that many (plus its queue) in flight."""
    from agentarch.evaluation import executors
    from agentarch.loop.context import RunContext

    monkeypatch.setattr(executors, "visible_gpus", lambda: ["0", "1", "2", "3"])
    settings = load_settings(task="digits", archive=tmp_path / "a.db", per_gpu=2, queue=1, batch=2)
    ctx = RunContext(settings, "run-1", time.time())
    assert ctx.executor.capacity == 8
    for n in range(9):
        ctx.enter_queue(f"k{n}")  # 8 slots + 1 queue place, none waits
    assert not ctx._queue.acquire(blocking=False)


def test_the_runs_last_line_says_front_verified_screened_and_edits():
    from agentarch.cli import run as run_cli

    summary = {
        **{"run_id": "r", "status": "finished", "stopped_by": "max-candidates", "metric": "accuracy"},
        **{"proposed": 8, "trained": 2, "invalid": 0, "duplicate": 0, "failed": 0, "rejected": 0, "screened": 6},
        **{"repaired": 0, "best": {"id": 3, "test_accuracy": 0.9}, "cost_usd": 0.0, "hypervolume": 819.7},
        "objectives": {"objectives": ["val:max", "params:min"], "constraints": []},
        "front": [{"id": 1}, {"id": 2}],
        "verified": [{"id": 3, "test_accuracy": 0.95, "epochs": 30}],
        "edits": {"diff": 2, "full": 1},
    }
    line = run_cli.run_summary_line(summary)
    assert "6 screened" in line and "Pareto front of 2 (val:max, params:min), hypervolume 819.7" in line
    assert "1 verified, best #3 test 0.9500 at 30 epochs" in line and "edits: 2 diff, 1 full" in line
