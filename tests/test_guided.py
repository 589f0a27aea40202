"""Predictor-guided table search (`search_table(screen=K)`, agentarch/search/guided.py) and `agentarch baseline --screen`."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.errors import UsageError
from agentarch.loop.baseline import search_table
from agentarch.search.guided import Guide, table_features
from agentarch.search.objectives import Goals
from agentarch.search.predictor import MIN_TRAINED, Example, Predictor
from agentarch.search.proposers.base import Observation
from agentarch.search.proposers.baselines import RegularizedEvolution, make_proposer
from agentarch.search.spaces import get_space
from agentarch.tasks.registry import get_task
from agentarch.tasks.tabular import nb201_table

NB201 = get_space("nb201")
CIFAR10 = get_task("nb201-cifar10")


def guided(seed: int = 0, budget: int = 24, screen: int = 4, **options):
    return search_table("rea", NB201, CIFAR10, budget, seed, screen=screen, **options)


@pytest.fixture(scope="module")
def greedy():
    """A search that always takes the predicted best (no exploration), refitting after every evaluation."""
    return guided(budget=12, explore=0.0, refit=0.0)


def test_a_guided_search_evaluates_exactly_its_budget_one_cell_of_each_k(greedy):
    assert len(greedy.history) == len(greedy.choices) == 12
    for trial, choice in zip(greedy.history, greedy.choices):
        assert len(choice.archs) == 4 and trial.arch == choice.archs[choice.chosen]


def test_without_exploration_each_query_is_the_predicted_best_of_its_group(greedy):
    assert [c.how for c in greedy.choices] == ["no predictor yet"] * MIN_TRAINED + ["predicted"] * 4
    for choice in greedy.choices[MIN_TRAINED:]:
        assert choice.predictions[choice.chosen] == max(choice.predictions)


def test_the_predictor_is_fitted_on_the_cells_evaluated_before_the_choice(greedy):
    features = table_features("cifar10")
    step = MIN_TRAINED + 3
    seen = [Example(i, features(t.arch), t.val) for i, t in enumerate(greedy.history[:step])]
    predictor = Predictor.on(seen, CIFAR10.name, "max")
    choice = greedy.choices[step]
    assert choice.predictions == pytest.approx([predictor.predict(features(arch)) for arch in choice.archs])


def test_a_guided_search_is_deterministic_per_seed():
    first, again, other = guided(0, budget=11), guided(0, budget=11), guided(1, budget=11)
    assert [t.arch for t in first.history] == [t.arch for t in again.history]
    assert first.choices == again.choices
    assert [t.arch for t in first.history] != [t.arch for t in other.history]


def test_full_exploration_picks_at_random_and_never_fits():
    result = guided(budget=40, explore=1.0)
    assert {c.how for c in result.choices} == {"explored"}
    assert all(p is None for c in result.choices for p in c.predictions)
    assert {c.chosen for c in result.choices} == {0, 1, 2, 3}


def test_the_guide_refits_as_the_evaluated_cells_grow_by_its_fraction():
    table = nb201_table()
    guide = Guide(CIFAR10.name, "max", 0, table_features("cifar10"), explore=0.0, refit=0.5)
    fitted_at = []
    for arch in table.archs[:20]:
        fits = guide.fits
        guide.choose([arch])
        if guide.fits > fits:
            fitted_at.append(len(guide.examples))
        guide.learn(arch, table.query("cifar10", arch).val_accuracy)
    assert fitted_at == [8, 12, 18]


def test_withdrawn_proposals_count_as_never_made():
    rea = RegularizedEvolution(NB201, 0, population=5, sample_size=2)
    evaluated = []
    for _ in range(5):
        first, *rest = rea.propose(3)
        rea.withdraw(rest)
        rea.observe([Observation(first, "trained", 50.0)])
        evaluated.append(first)
    assert not any(p.parent_archs for p in evaluated)  # the initial population is five evaluated samples
    assert all(p.parent_archs for p in rea.propose(3))
    tpe = make_proposer("tpe", NB201, 0)
    kept, *dropped = tpe.propose(3)
    tpe.withdraw(dropped)
    tpe.observe([Observation(kept, "trained", 50.0)])
    assert [t.state.name for t in tpe.study.trials] == ["COMPLETE", "FAIL", "FAIL"] and not tpe.pending


def test_random_search_can_be_guided_too():
    result = search_table("random", NB201, CIFAR10, 12, 0, screen=3)
    assert len(result.history) == 12 and result.choices[-1].how in {"predicted", "explored"}


def test_screening_refuses_goals_beyond_the_metric():
    goals = Goals.parse(["val:max", "params:min"])
    with pytest.raises(UsageError, match="predicted validation score alone"):
        guided(budget=4, goals=goals)


# -- the command ----------------------------------------------------------------------------------


def baseline(*args: str):
    return CliRunner().invoke(app, ["baseline", *args])


def test_baseline_screen_on_a_table_prints_the_baseline_summary_and_records_the_setting(tmp_path):
    args = ["--algo", "rea", "--task", "nb201-cifar10", "--budget", "12", "--seeds", "0-1", "--json"]
    result = baseline(*args, "--screen", "4", "--screen-explore", "0.2", "--archive", str(tmp_path / "a.db"))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["seed"] for line in lines[:-1]] == [0, 1]
    assert set(lines[-1]) == {"algo", "task", "budget", "seeds", "mean_test", "std_test", "mean_val"}
    conn = sqlite3.connect(tmp_path / "a.db")
    config = json.loads(conn.execute("SELECT config FROM runs").fetchone()[0])
    assert config["screen"] == 4 and config["screen_explore"] == 0.2
    reason = conn.execute("SELECT reason FROM candidates LIMIT 1").fetchone()[0]
    assert "the predictor's pick of 4" in reason
    plain = baseline(*args, "--archive", str(tmp_path / "b.db"))
    assert json.loads(plain.stdout.splitlines()[-1])["mean_test"] != lines[-1]["mean_test"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "digits", "--space", "macro"], "screens table searches only"),
        (["--task", "nb201-cifar10", "--objective", "val:max", "--objective", "params:min"], "validation score alone"),
        (["--task", "nb201-cifar10", "--screen", "0"], "screen: Input should be greater than or equal to 1"),
    ],
)
def test_baseline_screen_usage_errors_say_what_to_fix(tmp_path, args, message):
    screen = [] if "--screen" in args else ["--screen", "4"]
    result = baseline(*args, *screen, "--archive", str(tmp_path / "a.db"))
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
