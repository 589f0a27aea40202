"""Predictor-guided screening (`--screen K`): one member of each group of K trains, the rest are recorded `screened`
with their prediction, and a decision, once kept, stands for members resumed after a crash."""

from __future__ import annotations

import random
import sqlite3
import threading

import pytest

from agentarch.config import load_settings
from agentarch.loop import run
from agentarch.loop.screening import Screening
from agentarch.search.spaces import get_space
from agentarch.store.archive import Archive
from agentarch.tasks.builtin import TASKS
from tests.conftest import requires_bubblewrap

NB201 = get_space("nb201")


def seed_archive(path, n: int = 16) -> None:
    """Trained digits candidates from the nb201 space, with a score that grows with the convolutions they use."""
    rng = random.Random(0)
    with Archive(path) as db:
        db.register_task(TASKS["digits"])
        for i in range(n):
            arch = NB201.sample(rng)
            convs = arch.count("conv_3x3")
            db.record(
                {
                    "task": "digits",
                    "name": f"seeded {i}",
                    "proposer": "rea",
                    "code": f"# seeded {i}",
                    "status": "trained",
                    "space": "nb201",
                    "arch": arch,
                    "params": 1000 + 500 * convs,
                },
                {"status": "trained", "fidelity": 1, "val_accuracy": 0.5 + 0.08 * convs, "test_accuracy": 0.5},
            )


def member(seq: int, arch: str) -> tuple[dict, dict, dict]:
    plan = {"key": f"run-1/{seq}", "seq": seq, "group_size": 3}
    return plan, {"params": 1000}, {"space": "nb201", "arch": arch}


def test_a_group_trains_its_best_predicted_member_and_a_decision_stands(tmp_path):
    seed_archive(tmp_path / "a.db")
    many = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    few = "|none~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"
    screening = Screening("run-1", "digits", 3, explore=0.0, seed=0)
    parts: dict[str, object] = {}

    def report(seq: int, arch: str) -> None:
        with Archive(tmp_path / "a.db") as db:
            plan, smoke, candidate = member(seq, arch)
            parts[plan["key"]] = screening.report(db, plan, smoke, candidate)

    threads = [threading.Thread(target=report, args=(seq, arch)) for seq, arch in ((0, few), (1, many))]
    for thread in threads:
        thread.start()
    screening.ended({"key": "run-1/2", "seq": 2, "group_size": 3})  # left early: an invalid proposal
    for thread in threads:
        thread.join(timeout=30)
    assert parts["run-1/1"].train and not parts["run-1/0"].train
    assert parts["run-1/0"].prediction < parts["run-1/1"].prediction
    assert (
        parts["run-1/0"].reason.startswith("[screen] not trained: predicted") and "run-1/1" in parts["run-1/0"].reason
    )
    with Archive(tmp_path / "a.db") as db:  # a resumed process follows the kept decision
        again = Screening("run-1", "digits", 3, explore=0.0, seed=0).report(db, *member(1, many))
        assert again.train and db.screening("run-1", 0)["how"] == "best predicted of 2"


def test_without_a_predictor_the_group_draws_its_member(tmp_path):
    screening = Screening("run-1", "digits", 1, explore=0.0, seed=0)
    with Archive(tmp_path / "a.db") as db:
        plan, smoke, candidate = member(0, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
        decision = screening.report(db, {**plan, "group_size": 1}, smoke, candidate)
        assert decision.train and decision.prediction is None
        assert db.screening("run-1", 0)["how"] == "no predictor yet: drawn at random"


@pytest.mark.slow
@requires_bubblewrap
def test_run_screen_4_trains_one_in_four_and_records_the_rest_with_their_predictions(tmp_path, cache_dir):
    seed_archive(tmp_path / "a.db")
    settings = load_settings(
        task="digits",
        archive=tmp_path / "a.db",
        cache_dir=cache_dir,
        budget=8,
        screen=4,
        screen_explore=0.0,
        epochs=1,
        threads=1,
    )
    summary = run.start(settings)
    assert (summary["proposed"], summary["trained"], summary["screened"]) == (8, 2, 6)
    db = sqlite3.connect(settings.archive)
    rows = db.execute(
        "SELECT status, prediction, reason FROM candidates WHERE run_id = ? ORDER BY id", [summary["run_id"]]
    ).fetchall()
    assert sorted(status for status, _, _ in rows) == ["screened"] * 6 + ["trained"] * 2
    assert all(p is not None and reason.startswith("[screen]") for s, p, reason in rows if s == "screened")
    assert all(p is not None for s, p, _ in rows if s == "trained")
    decisions = db.execute("SELECT grp, how FROM screenings ORDER BY grp").fetchall()
    assert decisions == [(0, "best predicted of 4"), (1, "best predicted of 4")]
