"""Multi-fidelity: rung budgets, and successive halving recording one evaluation per fidelity."""

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.config import load_settings
from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.fidelity import rung_budgets, successive_halving
from agentarch.store.archive import Archive
from tests.conftest import requires_bubblewrap


def mlp(width: int) -> str:
    return f"""import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, {width}), nn.ReLU(), nn.Linear({width}, num_classes))

    def forward(self, x):
        return self.body(x)
"""


def test_rung_budgets():
    assert rung_budgets(3, 27, 3) == [3, 9, 27]
    assert rung_budgets(2, 30, 3) == [2, 6, 18, 30]
    assert rung_budgets(5, 5, 2) == [5]
    with pytest.raises(ValueError, match="eta >= 2"):
        rung_budgets(3, 27, 1)


@pytest.mark.slow
@requires_bubblewrap
def test_halving_promotes_the_best_third_and_records_each_fidelity(tmp_path, cache_dir, digits):
    settings = load_settings(task="digits", epochs=4, threads=1, cache_dir=cache_dir, archive=tmp_path / "a.db")
    pool = [(f"w{w}", mlp(w)) for w in (2, 4, 32)]
    with Archive(settings.archive) as db:
        result = successive_halving(Evaluator(db, settings), pool, min_epochs=1, max_epochs=4, eta=3)
        assert [r.epochs for r in result.rungs] == [1, 3, 4]
        assert [len(r.results) for r in result.rungs] == [3, 1, 1]
        assert result.epochs_spent == 3 * 1 + 3 + 4
        best = result.best
        assert (
            best.id
            == result.rungs[1].results[0].id
            == max(result.rungs[0].trained, key=lambda r: r.metrics["val_accuracy"]).id
        )
        fidelities = [e["fidelity"] for e in db.evaluations(best.id)]
        assert fidelities == [1, 3, 4]
        assert db.scored(best.id)["fidelity"] == 4  # the leaderboard shows the highest fidelity's score
        assert db.db["candidates"].count == 3


def test_halve_with_an_unknown_task_is_a_usage_error_not_a_traceback(tmp_path):
    seed = tmp_path / "net.py"
    seed.write_text("x = 1\n")
    result = CliRunner().invoke(app, ["halve", str(seed), "--task", "nope", "--archive", str(tmp_path / "a.db")])
    assert result.exit_code == 2 and "unknown task 'nope'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
