"""The README's "Your own data" examples end to end: offline runs, baselines and the report on task files.

A CSV regression (examples/houses, scored by MSE, lower is better) must be searched, summarized,
ranked and reported by its lowest error; a byte-level text corpus (examples/tiny-text) trains
offline through the same loop. Everything runs the real CLI, sandbox and archive.
"""

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.store.archive import Archive
from tests.conftest import REPO, requires_bubblewrap

pytestmark = requires_bubblewrap

HOUSES = str(REPO / "examples" / "houses" / "task.toml")
TINY_TEXT = str(REPO / "examples" / "tiny-text" / "task.toml")


@pytest.fixture
def env(tmp_path, cache_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    return tmp_path


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout  # what a pipe reads: notes beside --json output go to stderr


def offline_run(task: str, budget: int, epochs: int) -> dict:
    """`agentarch run` without a model into a.db; its JSON summary."""
    out = cli(
        "run",
        "--task",
        task,
        "--budget",
        str(budget),
        "--epochs",
        str(epochs),
        "--archive",
        "a.db",
        "--json",
    )
    return json.loads(out.strip().splitlines()[-1])


def test_a_csv_regression_is_searched_and_ranked_by_its_lowest_error(env):
    summary = offline_run(HOUSES, budget=4, epochs=3)
    assert summary["metric"] == "mse" and summary["trained"] >= 2
    db = sqlite3.connect(env / "a.db")
    scores = dict(
        db.execute(
            "SELECT c.id, e.val_accuracy FROM candidates c JOIN evaluations e ON e.candidate_id = c.id "
            "WHERE c.status = 'trained'"
        ).fetchall()
    )
    lowest = min(scores, key=scores.get)
    run_best = db.execute("SELECT candidate_id FROM evaluations WHERE val_accuracy = ?", [scores[lowest]]).fetchone()
    assert summary["best"]["id"] == lowest == run_best[0]
    assert db.execute("SELECT task FROM runs").fetchone()[0] == "houses"  # the task's name, not its path

    with Archive(env / "a.db") as archive:
        assert archive.top("houses", limit=1)[0]["id"] == lowest  # the leaderboard's order
    listing = cli("archive", "top", "--task", "houses", "--archive", "a.db", "--json")
    first = json.loads(listing.splitlines()[0])
    assert first["id"] == lowest and first["metric"] == "mse"
    cli("report", summary["run_id"], "--out", str(env / "report"), "--archive", "a.db")
    page = (env / "report" / "index.html").read_text()
    assert "mse" in page.lower()

    baseline = cli(
        "baseline", "--algo", "random", "--space", "mlp", "--task", HOUSES, "--budget", "2", "--archive", "b.db"
    )
    assert "val mse" in " ".join(baseline.split())


def test_a_text_corpus_trains_offline_as_language_modelling(env):
    summary = offline_run(TINY_TEXT, budget=2, epochs=1)
    assert summary["metric"] == "bits_per_byte" and summary["trained"] >= 1
    bits = sqlite3.connect(env / "a.db").execute("SELECT MIN(val_accuracy) FROM evaluations").fetchone()[0]
    assert 0 < bits < 8.5  # bits per byte: a byte holds 8 bits; an untrained network is near log2(256)
