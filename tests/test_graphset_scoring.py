"""Graph scoring of graph classification (issue 25): a graphs task's network exports with three named inputs, x (nodes,
F), edge_index (2, edges) and batch (nodes,), and one output (graphs, C) whose graph count the network computes from
`batch`; the host checks it, measures it on one graph of the training split's mean size (the count followed from
`batch`'s bound value), and the clean evaluator runs every held-out graph alone. The seeds (GCN, GIN) export exactly,
score what trusted scoring scores (slow: in the real sandbox, both isolation modes), and `agentarch export` writes a
file that gives the recorded test score in onnxruntime outside agentarch."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from agentarch.runner import runner, trainer
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.config import Settings
from agentarch.evaluation.budget import reference_code
from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.graphs import interface, scoring, shapes
from agentarch.evaluation.graphs.scoring import GraphFailed
from agentarch.evaluation.stages import RunRequest, execute
from agentarch.isolation.policy import Limits
from agentarch.store.archive import Archive
from agentarch.tasks.preparation import TRAIN_FILES, prepare
from agentarch.tasks.registry import get_task
from tests.conftest import REPO, requires_bubblewrap

SEEDS = {path.stem: path for path in sorted((REPO / "archive" / "seeds" / "graphs").glob("*.py"))}
LIMITS = Limits(memory_mb=4096, timeout_s=240, smoke_timeout_s=120, threads=1)
TRAIN = {"epochs": 10, "batch_size": 32, "lr": 0.01, "weight_decay": 5e-4, "seed": 0}
MODES = [pytest.param("bubblewrap", marks=requires_bubblewrap), "process"]


@pytest.fixture(scope="module")
def sbm(cache_dir):
    return prepare(get_task("sbm-graphs"), cache_dir)


@pytest.fixture(scope="module")
def inputs(sbm):
    return trainer.load_inputs(sbm.train_dir, torch.device("cpu"))


def seed_net(name: str) -> torch.nn.Module:
    found = importlib.util.spec_from_file_location(name, SEEDS[name])
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module.Net((8,), 3)


def export(net: torch.nn.Module, inputs: trainer.Inputs, tmp_path: Path) -> bytes:
    runner.export_graph(net, inputs, tmp_path / "graph.onnx")
    return (tmp_path / "graph.onnx").read_bytes()


def alone(session: ort.InferenceSession, graphs) -> np.ndarray:
    """Each graph of a GraphBatch run alone in onnxruntime, a row each (what the clean evaluator does)."""
    rows = []
    for row in range(len(graphs)):
        one = graphs.alone(row)
        feed = {"x": one.x.numpy(), "edge_index": one.edge_index.numpy(), "batch": one.batch.numpy()}
        rows.append(session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0])
    return np.concatenate(rows)


def test_a_graphs_tasks_training_folder_holds_its_training_graphs_alone(sbm):
    names = sorted(p.name for p in sbm.train_dir.iterdir())
    assert names == sorted((*TRAIN_FILES, "train_edges.npy", "train_ptr.npy"))


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_each_seed_exports_exactly_and_the_host_measures_what_torch_counts(name, sbm, inputs, tmp_path):
    task = get_task("sbm-graphs")
    net = seed_net(name).eval()
    graph = export(net, inputs, tmp_path)
    bound = interface.sizes(task, sbm.inputs_dir)
    measured = scoring.measure_graph(graph, task, LIMITS, bound)
    assert measured.params == sum(p.numel() for p in net.parameters())
    nodes, edges = bound["x"][0], bound["edge_index"][1]  # one graph of the training split's mean size
    ring = torch.arange(nodes).repeat(edges // nodes + 1)[:edges]
    one = (torch.randn(nodes, 8), torch.stack([ring, (ring + 1) % nodes]), torch.zeros(nodes, dtype=torch.long))
    assert measured.matmul_flops == int(runner.trace(net, *one).total)
    assert measured.flops > measured.matmul_flops
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    batch = inputs.train_x[0:40]
    with torch.no_grad():  # the graph count comes from `batch`: 40 rows, and each graph's alone equals its batched
        eager = net(*batch.args()).numpy()
    feed = {"x": batch.x.numpy(), "edge_index": batch.edge_index.numpy(), "batch": batch.batch.numpy()}
    np.testing.assert_allclose(session.run(None, feed)[0], eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone(session, batch), eager, rtol=1e-5, atol=1e-5)


def test_the_graph_count_is_followed_from_batch_and_a_frozen_count_cannot_export(sbm, inputs, tmp_path):
    task = get_task("sbm-graphs")
    model = onnx.load_from_string(export(seed_net("gin"), inputs, tmp_path))
    bound = interface.sizes(task, sbm.inputs_dir)
    infos = shapes.propagate(model, bound)
    assert infos["y"].dims == (1, 3)  # batch all zeros: one graph
    infos = shapes.propagate(model, {**bound, "batch": np.arange(bound["x"][0], dtype=np.int64) % 5})
    assert infos["y"].dims == (5, 3)

    class Frozen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(8, 3)

        def forward(self, x, edge_index, batch):
            return torch.zeros(int(batch.max()) + 1, 3).index_add(0, batch, self.linear(x))

    with pytest.raises(runner.CandidateError, match="Converting a tensor to a Python integer"):
        export(Frozen(), inputs, tmp_path)


def test_the_graphs_interface_is_checked_against_the_task(sbm, inputs, tmp_path):
    task, nodes_task = get_task("sbm-graphs"), get_task("sbm-nodes")
    graph = export(seed_net("gcn"), inputs, tmp_path)
    scoring.verify(graph, task, LIMITS)
    with pytest.raises(GraphFailed, match=r"must have \['x', 'edge_index'\]"):
        scoring.verify(graph, nodes_task, LIMITS)  # three inputs where node classification takes two
    model = onnx.load_from_string(graph)
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "nodes"  # a row per node, not per graph
    with pytest.raises(GraphFailed, match="distinct from the others"):
        scoring.verify(model.SerializeToString(), task, LIMITS)


def test_the_budgets_reference_network_exports_a_graph_the_host_measures(sbm, inputs, tmp_path):
    """The training budget's reference job runs in graph scoring too: its smoke stage exports it."""
    namespace: dict = {}
    exec(reference_code("graphs", None), namespace)  # noqa: S102 - the host's own code
    task = get_task("sbm-graphs")
    graph = export(namespace["Net"]((8,), 3).eval(), inputs, tmp_path)
    assert scoring.measure_graph(graph, task, LIMITS, interface.sizes(task, sbm.inputs_dir)).params == 8 * 3 + 3


@pytest.mark.slow
@pytest.mark.parametrize(("name", "isolation"), [("gcn", MODES[0]), ("gin", "process")])
def test_graph_scoring_of_a_seed_equals_trusted_scoring(name, isolation, sbm, cache_dir):
    code = SEEDS[name].read_text()
    found = {}
    for mode in ("graph", "trusted"):
        request = RunRequest(code, "sbm-graphs", TRAIN, LIMITS, isolation, cache_dir, None, 0, scoring=mode)
        found[mode] = execute(request)
        assert found[mode].status == "trained", found[mode].error
    for key in ("val_accuracy", "test_accuracy"):
        assert abs(found["graph"].scores[key] - found["trusted"].scores[key]) <= 0.01, found
    assert found["graph"].scores["test_accuracy"] > 0.5  # chance is 1/3
    assert found["graph"].trained["graph"]["latency_ms"] > 0


@pytest.mark.slow
@requires_bubblewrap
def test_the_exported_graph_of_a_graph_classifier_reproduces_its_recorded_test_score(tmp_path, cache_dir, sbm):
    archive = tmp_path / "a.db"
    settings = Settings(archive=archive, cache_dir=cache_dir, task="sbm-graphs", epochs=10, isolation="bubblewrap")
    with Archive(archive) as db:
        result = Evaluator(db, settings).evaluate(SEEDS["gin"].read_text(), "gin.py")  # graph scoring: the default
        assert result.status == "trained", result.reason
        recorded = db.evaluations(result.id)[0]
    assert recorded["graph_sha256"] and recorded["timings"]["scoring"] == "graph"
    out = tmp_path / "home"
    done = CliRunner().invoke(app, ["export", str(result.id), "--out", str(out), "--archive", str(archive), "--json"])
    assert done.exit_code == 0 and json.loads(done.stdout)["verified"] is True, done.output

    # Outside agentarch: each test graph alone, its features normalised as the trainer does, `batch` all zeros.
    meta = json.loads((sbm.inputs_dir / "meta.json").read_text())
    x = np.load(sbm.inputs_dir / "test_x.npy").astype(np.float32)
    x = (x - np.asarray(meta["mean"], dtype=np.float32)) / np.asarray(meta["std"], dtype=np.float32)
    edges, ptr = np.load(sbm.inputs_dir / "test_edges.npy"), np.load(sbm.inputs_dir / "test_ptr.npy")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    predicted = []
    for start, end in zip(ptr[:-1], ptr[1:]):
        own = edges[:, (edges[0] >= start) & (edges[0] < end)] - start
        feed = {"x": x[start:end], "edge_index": own, "batch": np.zeros(end - start, dtype=np.int64)}
        predicted.append(session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0].argmax(axis=1))
    assert float((np.concatenate(predicted) == sbm.labels("test")).mean()) == recorded["test_accuracy"]  # exactly
    card = (out / "MODEL_CARD.md").read_text()
    assert 'session.run(None, {"x": x, "edge_index": edge_index, "batch": batch})' in card
