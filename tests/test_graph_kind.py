"""Node classification on one graph (`kind = "graph"`, agentarch/tasks/nodes.py): the stochastic block model task is
deterministic, a graph npz task file checks and prepares (a bad one says what to fix), the held-out nodes' labels
stay host-only, the seeds (GCN, GraphSAGE, GAT) run the contract, and (slow) each trains in the real sandbox through
`agentarch eval` and beats chance (graph scoring of the same: tests/test_node_scoring.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.evaluation.budget import reference_code
from agentarch.evaluation.checks import check as static_check
from agentarch.tasks import nodes, taskcheck, taskfiles
from agentarch.tasks.preparation import prepare
from agentarch.tasks.registry import get_task
from agentarch.tasks.task import IGNORE_INDEX, TaskError
from sandbox import runner, trainer
from tests.conftest import REPO, requires_bubblewrap

SEEDS = sorted((REPO / "archive" / "seeds" / "graph").glob("*.py"))


def test_the_stochastic_block_model_is_deterministic_and_undirected():
    a = nodes.stochastic_block_model(60, 3, 0.2, 0.02, 5, seed=1)
    b = nodes.stochastic_block_model(60, 3, 0.2, 0.02, 5, seed=1)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    x, edges, y = a
    assert x.dtype == np.float32 and x.shape == (60, 5) and edges.dtype == np.int64 and edges.shape[0] == 2
    assert np.bincount(y).tolist() == [20, 20, 20] and not (edges[0] == edges[1]).any()
    assert {tuple(e) for e in edges.T} == {tuple(e) for e in edges[::-1].T}  # both directions of every edge
    assert not np.array_equal(edges, nodes.stochastic_block_model(60, 3, 0.2, 0.02, 5, seed=2)[1])


def test_sbm_nodes_prepares_the_same_split_and_keeps_held_out_labels_on_the_host(tmp_path):
    task = get_task("sbm-nodes")
    first, second = prepare(task, tmp_path / "a"), prepare(task, tmp_path / "b")
    for name in ("train_x", "train_y", "val_x", "test_x", "edge_index"):
        assert np.array_equal(np.load(first.inputs_dir / f"{name}.npy"), np.load(second.inputs_dir / f"{name}.npy"))
    assert sorted(p.name for p in first.inputs_dir.iterdir()) == [
        "edge_index.npy",
        "meta.json",
        "test_x.npy",
        "train_x.npy",
        "train_y.npy",
        "val_x.npy",
    ]
    train_y = np.load(first.inputs_dir / "train_y.npy")
    val, test = np.load(first.inputs_dir / "val_x.npy"), np.load(first.inputs_dir / "test_x.npy")
    assert (train_y[val] == IGNORE_INDEX).all() and (train_y[test] == IGNORE_INDEX).all()  # no held-out label
    assert (train_y != IGNORE_INDEX).sum() == 120 and len(val) == 120 and len(test) == 360
    assert set(first.labels("val").tolist()) == {0, 1, 2, 3} and len(first.labels("test")) == 360
    meta = json.loads((first.inputs_dir / "meta.json").read_text())
    assert meta["kind"] == "graph" and meta["num_nodes"] == 600 and len(meta["mean"]) == 16
    other = prepare(task, tmp_path / "a", split_seed=1)
    assert not np.array_equal(np.load(other.inputs_dir / "val_x.npy"), val)


def write_task(folder: Path, data: str, extra: str = "", name: str = "my-graph") -> Path:
    path = folder / "task.toml"
    path.write_text(
        f'name = "{name}"\ndescription = "Nodes of a small graph."\nkind = "graph"\n{extra}\n[data]\n{data}\n'
    )
    return path


def small_graph(nodes_: int = 90, classes: int = 3, seed: int = 3) -> dict[str, np.ndarray]:
    """An easy SBM: features that say the class clearly, so a few training steps beat chance."""
    x, edges, y = nodes.stochastic_block_model(nodes_, classes, 0.2, 0.01, 6, seed)
    x[np.arange(nodes_), y] += 2.0
    masks = np.arange(nodes_) % 3
    return {
        "x": x,
        "edge_index": edges,
        "y": y,
        "train_mask": masks == 0,
        "val_mask": masks == 1,
        "test_mask": masks == 2,
    }


def test_a_graph_npz_task_file_checks_and_prepares(tmp_path):
    np.savez(tmp_path / "g.npz", **small_graph())
    report = dict(taskcheck.check(write_task(tmp_path, 'source = "npz"\npath = "g.npz"'), tmp_path))
    assert report["input"].startswith("the whole graph: x float32 (N, 6)")
    assert report["output"].startswith("logits (N, 3)") and report["metric"] == "accuracy (higher is better)"
    assert report["splits"].startswith("train 30, val 30, test 30 nodes")
    task = taskfiles.load(tmp_path / "task.toml")
    assert task.kind == "graph" and task.in_shape == (6,) and task.num_classes == 3


def test_a_graph_without_masks_is_split_by_the_files_fractions(tmp_path):
    graph = {key: value for key, value in small_graph().items() if not key.endswith("_mask")}
    np.savez(tmp_path / "g.npz", **graph)
    path = write_task(tmp_path, 'source = "npz"\npath = "g.npz"\n[splits]\nval = 0.2\ntest = 0.3')
    assert dict(taskcheck.check(path, tmp_path))["splits"].startswith("train 44, val 19, test 27")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"edge_index": None}, "missing edge_index"),
        ({"edge_index": np.zeros((5, 2), dtype=np.int64)}, "looks transposed"),
        ({"edge_index": np.array([[0, 1], [1, 90]])}, r"the graph has nodes \[0, 90\)"),
        ({"edge_index": np.zeros((2, 3), dtype=np.float32)}, "integer node ids"),
        ({"y": np.zeros(89, dtype=np.int64)}, r"one per row of x"),
        ({"val_mask": None}, "together"),
        ({"test_mask": np.ones(90, dtype=bool)}, "overlaps an earlier mask"),
        ({"x": np.full((90, 6), np.nan)}, "NaN"),
    ],
)
def test_a_bad_graph_npz_says_what_to_fix(tmp_path, change, message):
    graph = {**small_graph(), **change}
    np.savez(tmp_path / "bad.npz", **{key: value for key, value in graph.items() if value is not None})
    with pytest.raises(TaskError, match=message):
        taskfiles.load(write_task(tmp_path, 'source = "npz"\npath = "bad.npz"'))


def test_masks_and_splits_together_are_refused(tmp_path):
    np.savez(tmp_path / "g.npz", **small_graph())
    path = write_task(tmp_path, 'source = "npz"\npath = "g.npz"\n[splits]\nval = 0.2\ntest = 0.2')
    with pytest.raises(TaskError, match="remove \\[splits\\]"):
        prepare(taskfiles.load(path), tmp_path)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda p: p.stem)
def test_each_seed_passes_the_static_check_and_trains_above_chance_on_sbm_nodes(seed, tmp_path):
    assert static_check(seed.read_text(), "graph").ok and not static_check(seed.read_text()).ok
    task = get_task("sbm-nodes")
    inputs = trainer.load_inputs(prepare(task, tmp_path).inputs_dir, torch.device("cpu"))
    net = runner.load_candidate(seed)
    model = runner.build(net, task.in_shape, task.num_classes, 0)
    assert sum(p.numel() for p in model.parameters()) <= task.max_params
    spec = {"kind": "graph", "in_shape": [16], "num_classes": 4, "train": {"seed": 0}}
    assert runner.functional_hash(net, spec) == runner.functional_hash(net, spec)
    cfg = trainer.TrainConfig(epochs=30, batch_size=task.batch_size, lr=task.lr, weight_decay=task.weight_decay)
    trainer.train(model, inputs, cfg, torch.device("cpu"))
    logits = trainer.predict(model, inputs.val_x, cfg.batch_size, torch.device("cpu"), inputs)
    labels = prepare(task, tmp_path).labels("val")
    assert logits.shape == (120, 4) and (logits.argmax(1) == labels).mean() > 0.5  # chance is 0.25


def test_the_budget_reference_network_is_a_graph_network():
    namespace: dict = {}
    exec(reference_code("graph", None), namespace)  # noqa: S102 - the host's own code
    model = namespace["Net"]((5,), 3)
    x, edges = torch.randn(7, 5), torch.tensor([[0, 1, 2], [1, 2, 0]])
    assert model(x, edges).shape == (7, 3)


# -- in the real sandbox --------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_graph(tmp_path, cache_dir, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")  # a full-batch step on 90 nodes: a second thread only waits
    np.savez(tmp_path / "g.npz", **small_graph())
    extra = "max_params = 50_000\n[train]\nepochs = 3\nbatch_size = 90\nlr = 0.05\nweight_decay = 0.0"
    return write_task(tmp_path, 'source = "npz"\npath = "g.npz"', extra, name="tiny-graph")


@pytest.mark.slow
@requires_bubblewrap
def test_each_graph_seed_trains_end_to_end_in_the_sandbox_and_beats_chance(tiny_graph, cache_dir):
    args = ["eval", "--json", "--archive", "a.db", "--task", str(tiny_graph)]  # graph scoring, the default
    result = CliRunner().invoke(app, [*args, *map(str, SEEDS)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["status"] for r in rows] == ["trained"] * len(SEEDS), rows
    for row in rows:  # chance is 1/3
        assert row["metrics"]["val_accuracy"] > 0.5 and row["metrics"]["test_accuracy"] > 0.5, row
        assert row["unverified"] is False
    db = sqlite3.connect("a.db")
    assert db.execute("SELECT kind FROM tasks WHERE name = 'tiny-graph'").fetchone() == ("graph",)
    prepared = prepare(taskfiles.load(tiny_graph), cache_dir)
    assert not {"val_y.npy", "test_y.npy"} & {p.name for p in prepared.inputs_dir.iterdir()}
