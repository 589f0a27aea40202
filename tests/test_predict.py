"""The predictor learned from the archive, and `agentarch predict`: real SQLite archives of synthetic candidates."""

import json
import math
import random

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.search.predictor import (
    GRAPH_PREFIX,
    MIN_TRAINED,
    SUMMARY,
    Example,
    Predictor,
    PredictorError,
    as_ranks,
    chosen,
    cross_validate,
    examples,
    features_of,
    graph_summary,
    held_out,
    pooled_examples,
    shortfall,
    space_features,
)
from agentarch.search.spaces import get_space
from agentarch.store.archive import Archive
from agentarch.tasks.registry import get_task


def record(db: Archive, task: str, n: int, seed: int = 0, status: str = "trained") -> None:
    """`n` nb201 candidates whose validation score follows their synflow and their first edge, plus a little noise."""
    rng = random.Random(seed)
    space = get_space("nb201")
    for i in range(n):
        arch = space.sample(rng)
        synflow = rng.uniform(10, 60)
        conv_first = arch.startswith("|nor_conv_3x3~0|")
        score = 0.5 + synflow / 200 + (0.1 if conv_first else 0.0) + rng.gauss(0, 0.01)
        db.record(
            {
                "task": task,
                "name": f"c{seed}-{i}",
                "proposer": "rea",
                "code": f"# {seed}-{i}",
                "status": status,
                "space": "nb201",
                "arch": arch,
                "params": rng.randint(10_000, 1_000_000),
            },
            {
                "status": status,
                "fidelity": 1,
                "seed": 0,
                "flops": rng.randint(10**6, 10**8),
                "val_accuracy": score if status == "trained" else None,
                "latency_ms": rng.uniform(0.1, 5.0),
                "proxies": {"synflow": synflow, "grad_norm": rng.uniform(0.1, 3.0), "naswot": rng.uniform(100, 300)},
            },
        )


@pytest.fixture
def db(tmp_path):
    archive = Archive(tmp_path / "a.db")
    archive.register_task(get_task("digits"))
    yield archive
    archive.close()


def test_features_from_an_evaluation_row_and_from_a_smoke_result_agree():
    smoke = {"params": 1000, "flops": 99, "latency_ms": 0.1, "proxies": {"synflow": 8.5, "grad_norm": 0.01}}
    row = {**smoke, "proxies": json.dumps(smoke["proxies"])}
    candidate = {"space": "nb201", "arch": get_space("nb201").sample(random.Random(3))}
    features = features_of(smoke, candidate)
    assert features == features_of(row, candidate)
    assert features["log_params"] == 3 and features["log_flops"] == 2 and features["log_latency_ms"] == -1
    assert features["synflow"] == 8.5 and features["log_grad_norm"] == -2 and "naswot" not in features
    one_hot = {k: v for k, v in features.items() if k.startswith("nb201.")}
    assert len(one_hot) == 6 * 5 and sum(one_hot.values()) == 6
    assert features_of({"proxies": "not json", "params": None}, {"params": 10}) == {"log_params": 1.0}


def test_search_space_encodings():
    assert space_features("macro", "d4-w16-k3-skip1-max") == {
        "macro.depth": 4.0,
        "macro.width": 16.0,
        "macro.kernel": 3.0,
        "macro.skip": 1.0,
        "macro.pool.max": 1.0,
        "macro.pool.avg": 0.0,
    }
    mlp = space_features("mlp", "d2-w128-gelu-p0.1-batch")
    assert mlp["mlp.depth"] == 2 and mlp["mlp.activation.gelu"] == 1 and mlp["mlp.norm.layer"] == 0
    mixer = space_features("mixer", "d64|attention|short_conv")
    assert mixer["mixer.layers"] == 2 and mixer["mixer.1.short_conv"] == 1 and mixer["mixer.3.attention"] == 0
    assert space_features("nb201", "not a cell") == {} and space_features(None, None) == {}


def test_too_few_trained_candidates_give_a_reason(db):
    record(db, "digits", MIN_TRAINED - 1)
    record(db, "digits", 5, seed=1, status="failed")  # failed candidates have no score to learn from
    assert Predictor.fit(db, "digits") is None
    with pytest.raises(PredictorError, match=f"digits has {MIN_TRAINED - 1} trained candidate"):
        held_out(db, "digits")
    assert "every trained candidate" in shortfall([Example(i, {}, 0.5) for i in range(MIN_TRAINED)], "digits")


def test_the_predictor_ranks_held_out_candidates(db):
    record(db, "digits", 60)
    scores = held_out(db, "digits")
    assert scores["n"] == 60 and scores["folds"] == 5
    assert scores["spearman"] > 0.7 and scores["kendall"] > 0.5, scores
    assert scores["features"][:6] == ["log_params", "log_flops", "log_latency_ms", "synflow", "log_grad_norm", "naswot"]
    predictor = Predictor.fit(db, "digits")
    assert predictor is not None and predictor.n == 60
    low, high = ({"synflow": s, "log_params": 5.0} for s in (12.0, 58.0))
    assert predictor.predict(high) > predictor.predict(low) and predictor.key(high) > predictor.key(low)
    assert math.isfinite(predictor.predict({}))  # nothing known: still a number


def test_a_lower_is_better_task_ranks_low_predictions_first(db):
    db.register_task(get_task("stdlib-bytes"))
    record(db, "stdlib-bytes", 30)
    predictor = Predictor.fit(db, "stdlib-bytes")
    low, high = ({"synflow": s} for s in (12.0, 58.0))
    assert predictor.predict(high) > predictor.predict(low) and predictor.key(low) > predictor.key(high)


def test_refit_only_when_trained_candidates_came(db):
    record(db, "digits", 20)
    predictor = Predictor.fit(db, "digits")
    assert predictor.refit(db) is predictor
    record(db, "digits", 1, seed=2, status="failed")
    assert predictor.refit(db) is predictor
    record(db, "digits", 1, seed=3)
    refitted = predictor.refit(db)
    assert refitted is not predictor and refitted.n == 21


def test_predict_command(db, tmp_path):
    runner = CliRunner()
    path = str(tmp_path / "a.db")
    record(db, "digits", 3)
    early = runner.invoke(app, ["predict", "--task", "digits", "--archive", path])
    assert early.exit_code == 0 and "no predictor for digits yet" in early.stdout
    assert json.loads(runner.invoke(app, ["predict", "-t", "digits", "--archive", path, "--json"]).stdout) == {
        "fitted": False,
        "task": "digits",
        "n": 3,
        "reason": f"digits has 3 trained candidate(s) in the archive; the predictor needs at least {MIN_TRAINED}",
    }
    record(db, "digits", 37, seed=1)
    table = runner.invoke(app, ["predict", "--task", "digits", "--archive", path])
    assert table.exit_code == 0, table.output
    assert "Spearman" in table.stdout and "Kendall" in table.stdout and "synflow" in table.stdout
    assert "40/40" in table.stdout  # every candidate has each measured feature
    result = json.loads(runner.invoke(app, ["predict", "-t", "digits", "--archive", path, "--json"]).stdout)
    assert result["fitted"] and result["n"] == 40 and result["spearman"] > 0.5


def test_examples_read_each_kept_graph_and_fall_back_without_one(db, tmp_path):
    """A trained candidate with a kept graph is learned from with the graph's features; one whose graph the retention
    policy dropped, or that has none (trusted scoring), with the others only, as a candidate outside any space was."""
    import torch

    from tests.test_graph_features import export, mlp

    record(db, "digits", 10)  # no graphs
    kept = []
    for i, width in enumerate((8, 16)):
        graph = export(mlp(1, width, torch.nn.ReLU), (16,))
        digest = db.keep_graph(graph)
        kept.append(digest)
        db.record(
            {"task": "digits", "name": f"g{i}", "proposer": "user", "code": f"# g{i}", "status": "trained"},
            {"status": "trained", "fidelity": 1, "seed": 0, "params": 100, "val_accuracy": 0.5, "graph_sha256": digest},
        )
    found = {e.candidate_id: e.features for e in examples(db, "digits")}
    assert len(found) == 12
    with_graph = [f for f in found.values() if any(k.startswith(GRAPH_PREFIX) for k in f)]
    assert len(with_graph) == 2 and all(f["graph.op.Gemm"] == 2 for f in with_graph)
    assert {f["graph.width.max"] for f in with_graph} == {8.0, 16.0}
    assert all("nb201.0>1.none" in f for f in found.values() if f not in with_graph)  # their space's one-hot stays
    assert held_out(db, "digits")["n"] == 12  # a predictor fits on the mixture
    table = CliRunner().invoke(app, ["predict", "--task", "digits", "--archive", str(tmp_path / "a.db")])
    assert table.exit_code == 0 and "from the ONNX graph" in table.stdout and "2/12" in table.stdout, table.output
    (db.graphs_dir / f"{kept[0]}.onnx").unlink()  # dropped by the retention policy: remembered or not, no features
    again = [e.features for e in examples(db, "digits")]
    assert sum(any(k.startswith(GRAPH_PREFIX) for k in f) for f in again) == 1


def test_the_graph_summary_reads_structure_and_is_empty_without_a_graph():
    raw = {"graph.depth": 7.0, "graph.linear_depth": 3.0, "graph.linear": 4.0, "graph.norms": 2.0,
           "graph.activations": 4.0, "graph.op.Tanh": 2.0, "graph.op.Conv": 1.0, "graph.residual_adds": 3.0,
           "graph.products": 1.0, "graph.gates": 0.0, "graph.pools": 1.0, "graph.width.median": 32.0,
           "graph.width.log2_mean": 5.0, "graph.width.log2_std": 0.5, "graph.log_flops": 6.0,
           "graph.log_params": 4.0}  # fmt: skip
    summary = graph_summary(raw)
    assert set(summary) <= set(SUMMARY) and summary["graph.summary.log2_depth"] == 3.0
    assert summary["graph.summary.norms_per_linear"] == 0.5 and summary["graph.summary.saturating_per_linear"] == 0.5
    assert summary["graph.summary.residuals_per_linear_depth"] == 1.0 and summary["graph.summary.attention"] == 1.0
    assert summary["graph.summary.gates"] == 0.0 and summary["graph.summary.width_log2_median"] == 5.0
    assert summary["graph.summary.log_flops_per_param"] == 2.0
    assert "graph.summary.log_activations" not in summary  # a feature the graph lacks stays missing
    assert graph_summary({"log_params": 3.0}) == {}


def test_the_model_reads_the_summary_and_predicts_in_the_metric_following_its_rank():
    rng = random.Random(1)
    found = []
    for i in range(30):
        depth, size = rng.randint(1, 8), rng.uniform(3, 6)
        score = 0.3 + 0.05 * size + (0.2 if depth <= 3 else 0.0) + rng.gauss(0, 0.005)
        found.append(Example(i, {"log_params": size, "graph.depth": float(depth), "graph.op.Relu": 9.0}, score))
    predictor = Predictor.on(found, "digits", "max")
    assert "graph.depth" not in predictor.columns and "graph.summary.log2_depth" in predictor.columns
    assert "graph.op.Relu" not in predictor.columns
    assert cross_validate(found, "digits", "max")["spearman"] > 0.8  # depth matters beyond size: the summary sees it
    rows = [e.features for e in found] + [{"log_params": 40.0, "graph.depth": 1.0}, {"log_params": -40.0}]
    ranks, scores = predictor.model.rank(rows), predictor.model.predict(rows)
    assert np.all(np.diff(scores[np.argsort(ranks)]) >= 0)  # the score strictly follows the rank, extremes included
    assert scores[-2] > max(e.score for e in found) and scores[-1] < min(e.score for e in found)


def test_other_tasks_are_pooled_as_ranks_in_their_own_direction(db):
    """A loss and an accuracy mean the same once each is a rank in its own task (lower bits per byte ranks higher);
    the task itself, and a task too small to fit a predictor on, are left out."""
    for name in ("stdlib-bytes", "mqar"):
        db.register_task(get_task(name))
    record(db, "digits", 12)
    record(db, "stdlib-bytes", 10, seed=1)
    record(db, "mqar", MIN_TRAINED - 1, seed=2)
    losses = {e.candidate_id: e.score for e in examples(db, "stdlib-bytes")}
    pool = {e.candidate_id: e.score for e in pooled_examples(db, "digits")}
    assert set(pool) == set(losses)
    assert pool[min(losses, key=losses.get)] == 1.0 and pool[max(losses, key=losses.get)] == 0.1
    assert {e.candidate_id for e in pooled_examples(db, "stdlib-bytes")} == {
        e.candidate_id for e in examples(db, "digits")
    }


def _synthetic(n: int, seed: int, noise: float, sign: float = 1.0) -> list[Example]:
    """Examples whose score follows their depth (a graph feature the trees read, not size) with a sign, plus noise."""
    rng = random.Random(seed)
    found = []
    for i in range(n):
        depth = rng.randint(1, 40)
        score = sign * math.log2(depth) + rng.gauss(0, noise)
        found.append(Example(seed * 1000 + i, {"log_params": rng.uniform(3, 5), "graph.depth": float(depth)}, score))
    return found


def test_a_pool_is_used_only_where_the_tasks_own_cross_validation_says_it_helps():
    few_and_noisy = _synthetic(12, seed=1, noise=1.5)
    helpful = as_ranks(_synthetic(200, seed=2, noise=0.1), "max")
    misleading = as_ranks(_synthetic(200, seed=3, noise=0.1, sign=-1.0), "max")
    assert chosen(few_and_noisy, "max", helpful).pooled == 200
    assert chosen(_synthetic(30, seed=4, noise=0.1), "max", misleading).pooled == 0
    assert chosen(few_and_noisy, "max").pooled == 0  # nothing to pool
    truth = _synthetic(100, seed=5, noise=0.0)
    pooled = chosen(few_and_noisy, "max", helpful).rank([e.features for e in truth])
    alone = chosen(few_and_noisy, "max").rank([e.features for e in truth])
    rho = [float(stats.spearmanr(p, [e.score for e in truth])[0]) for p in (pooled, alone)]
    assert rho[0] > 0.9 and rho[0] > rho[1] + 0.1, rho


def test_the_loops_predictor_pools_and_refits_when_another_task_changes(db):
    db.register_task(get_task("mqar"))
    record(db, "digits", 20)
    record(db, "mqar", 10, seed=1)
    predictor = Predictor.fit(db, "digits")
    assert predictor.n == 20 and len(predictor.pool_ids) == 10
    assert predictor.refit(db) is predictor
    record(db, "mqar", 1, seed=2)
    refitted = predictor.refit(db)
    assert refitted is not predictor and refitted.n == 20 and len(refitted.pool_ids) == 11
    scores = held_out(db, "digits", folds=2)
    # the other task's candidates follow the same rule (synflow, the first edge): pooling them helps every fold
    assert scores["pool"] == 11 and scores["pooled_folds"] == scores["folds"] == 2 and scores["spearman"] is not None
