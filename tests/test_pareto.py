"""Pareto fronts, crowding and hypervolume against brute force; objectives and constraints as a user writes them."""

from __future__ import annotations

import itertools
import random

import pytest

from agentarch.search import pareto
from agentarch.search.objectives import GoalError, Goals, parse_constraint, parse_objective


def brute_front(points):
    return [i for i, p in enumerate(points) if not any(pareto.dominates(q, p) for q in points)]


def brute_hypervolume(points, reference):
    """Inclusion-exclusion over every subset: the union of the boxes each point dominates."""
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in itertools.combinations(points, size):
            corner = [min(c) for c in zip(*subset)]
            box = 1.0
            for c, r in zip(corner, reference):
                box *= max(0.0, c - r)
            total += (-1) ** (size + 1) * box
    return total


@pytest.mark.parametrize("dims", [2, 3])
def test_front_matches_the_definition(dims):
    rng = random.Random(dims)
    for _ in range(200):
        points = [tuple(rng.randint(0, 6) for _ in range(dims)) for _ in range(rng.randint(1, 25))]
        assert pareto.front(points) == brute_front(points)
        assert pareto.fronts(points)[0] == brute_front(points)


def test_fronts_partition_and_each_is_beaten_only_by_earlier_ones():
    rng = random.Random(1)
    points = [(rng.random(), rng.random()) for _ in range(60)]
    layers = pareto.fronts(points)
    assert sorted(i for layer in layers for i in layer) == list(range(60))
    for k, layer in enumerate(layers):
        later = {i for other in layers[k:] for i in other}
        for i in layer:
            assert not any(pareto.dominates(points[j], points[i]) for j in later)


@pytest.mark.parametrize("dims", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(dims):
    rng = random.Random(dims)
    for _ in range(40):
        points = [tuple(rng.uniform(0, 1) for _ in range(dims)) for _ in range(rng.randint(1, 7))]
        reference = tuple(rng.uniform(-0.5, 0.2) for _ in range(dims))
        clipped = [p for p in points if all(x > r for x, r in zip(p, reference))]
        assert pareto.hypervolume(points, reference) == pytest.approx(brute_hypervolume(clipped, reference))


def test_crowding_keeps_the_ends_and_prefers_the_lonely():
    points = [(0.0, 3.0), (1.0, 2.9), (1.1, 2.8), (3.0, 0.0)]
    distance = pareto.crowding(points, [0, 1, 2, 3])
    assert distance[0] == distance[3] == float("inf")
    assert distance[2] > distance[1]  # (1.1, 2.8) has the wider box: its neighbours are (1.0, 2.9) and (3.0, 0.0)


def test_goals_rank_by_front_then_crowding_and_honour_constraints():
    goals = Goals.parse(["val:max", "params:min"], ["params<=1000"])
    rows = [
        {"id": 1, "val_accuracy": 0.90, "params": 900},
        {"id": 2, "val_accuracy": 0.80, "params": 100},
        {"id": 3, "val_accuracy": 0.85, "params": 950},  # dominated by 1
        {"id": 4, "val_accuracy": 0.99, "params": 5000},  # breaks the constraint
        {"id": 5, "val_accuracy": None, "params": 10},  # not trained
    ]
    assert [r["id"] for r in goals.front(rows)] == [1, 2]
    assert [r["id"] for r in goals.ranked(rows)] == [1, 2, 3]
    assert goals.standing(rows)[3] is None and goals.standing(rows)[4] is None
    # against the reference (0.5, -1000): the boxes of 1 (0.4 x 100) and 2 (0.3 x 900) overlap in 0.3 x 100
    assert goals.hypervolume(rows, (0.5, -1000)) == pytest.approx(40 + 270 - 30)


def test_one_objective_is_the_task_metric_in_its_direction():
    goals = Goals.parse([], [], direction="min", metric="mse")
    assert [str(o) for o in goals.objectives] == ["val:min"] and not goals.multi
    assert [r["id"] for r in goals.ranked([{"id": 1, "val_accuracy": 2.0}, {"id": 2, "val_accuracy": 1.0}])] == [2, 1]


def test_objectives_and_constraints_read_as_written():
    assert str(parse_objective("params")) == "params:min"
    assert str(parse_objective("mse:min", metric="mse")) == "val:min"
    assert str(parse_objective("latency:max")) == "latency_ms:max"
    assert str(parse_constraint("params <= 2e5")) == "params<=200000"
    assert parse_constraint("latency_ms<5").holds({"latency_ms": 4.9})
    assert not parse_constraint("latency_ms<5").holds({"latency_ms": None})


@pytest.mark.parametrize(
    "objective, constraint, says",
    [
        ("size:min", None, "unknown measure 'size'"),
        ("params:smallest", None, "must be max or min"),
        (None, "params == 3", "MEASURE<=VALUE"),
        (None, "params<=1e999", "finite"),
        ("params:min", None, None),
    ],
)
def test_bad_goals_say_what_to_write(objective, constraint, says):
    if says is None:
        Goals.parse([objective], [])
        return
    with pytest.raises(GoalError, match=says):
        Goals.parse([objective] if objective else [], [constraint] if constraint else [])


def test_a_measure_is_one_objective_only():
    with pytest.raises(GoalError, match="one objective only"):
        Goals.parse(["params:min", "parameters:max"])


@pytest.mark.parametrize("dims", [1, 2])
def test_the_sweep_finds_the_fronts_the_pairwise_sort_finds(dims):
    """One or two objectives are sorted and swept (fast enough for a task-wide leaderboard); the answer is the
    pairwise sort's, ties and repeated points included."""
    rng = random.Random(dims)
    for _ in range(200):
        points = [tuple(rng.choice([0.0, 0.5, rng.random()]) for _ in range(dims)) for _ in range(rng.randint(0, 60))]
        assert pareto.fronts(points) == pareto._fronts_by_pairs(points)
