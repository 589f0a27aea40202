"""Graph scoring of node classification (issue 25): a graph task's network exports with two named inputs, x (nodes, F)
and edge_index (2, edges), the host checks and measures it at the task's node and edge counts, the clean evaluator
runs the whole graph and the host scores the held-out nodes' rows. The seeds (GCN, GraphSAGE, GAT) export exactly,
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
from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.graphs import interface, scoring
from agentarch.evaluation.graphs.scoring import GraphFailed
from agentarch.evaluation.stages import RunRequest, execute
from agentarch.isolation.policy import Limits
from agentarch.store.archive import Archive
from agentarch.tasks.preparation import TRAIN_FILES, prepare
from agentarch.tasks.registry import get_task
from tests.conftest import REPO, requires_bubblewrap

SEEDS = {path.stem: path for path in sorted((REPO / "archive" / "seeds" / "graph").glob("*.py"))}
LIMITS = Limits(memory_mb=4096, timeout_s=240, smoke_timeout_s=120, threads=1)
TRAIN = {"epochs": 20, "batch_size": 1, "lr": 0.01, "weight_decay": 5e-4, "seed": 0}
MODES = [pytest.param("bubblewrap", marks=requires_bubblewrap), "process"]


@pytest.fixture(scope="module")
def sbm(cache_dir):
    return prepare(get_task("sbm-nodes"), cache_dir)


def seed_net(name: str) -> torch.nn.Module:
    found = importlib.util.spec_from_file_location(name, SEEDS[name])
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module.Net((16,), 4)


def export(net: torch.nn.Module, inputs: trainer.Inputs, tmp_path: Path) -> bytes:
    runner.export_graph(net, inputs, tmp_path / "graph.onnx")
    return (tmp_path / "graph.onnx").read_bytes()


class Features(torch.nn.Module):
    """A network of node features alone: its edges unused, the exporter drops that input, which may be missing."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class Scatters(torch.nn.Module):
    """Every other way a GNN written in plain PyTorch sums messages: scatter_add, gather back, index_put accumulating."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        index = edge_index[1].unsqueeze(1).expand(-1, h.shape[1])
        summed = torch.zeros_like(h).scatter_add(0, index, h[edge_index[0]])
        back = torch.gather(summed, 0, index)
        return summed + torch.zeros_like(h).index_put((edge_index[1],), back, accumulate=True)


def test_a_graph_tasks_training_folder_holds_its_edges_and_no_held_out_node(sbm):
    assert sorted(p.name for p in sbm.train_dir.iterdir()) == sorted((*TRAIN_FILES, "edge_index.npy"))


@pytest.mark.parametrize("name", [*sorted(SEEDS), "scatters"])
def test_each_seed_exports_exactly_and_the_host_measures_what_torch_counts(name, sbm, tmp_path):
    task, inputs = get_task("sbm-nodes"), trainer.load_inputs(sbm.train_dir, torch.device("cpu"))
    net = (Scatters() if name == "scatters" else seed_net(name)).eval()
    graph = export(net, inputs, tmp_path)
    measured = scoring.measure_graph(graph, task, LIMITS, interface.sizes(task, sbm.inputs_dir))
    assert measured.params == sum(p.numel() for p in net.parameters())
    assert measured.matmul_flops == int(runner.trace(net, inputs.train_x, inputs.edge_index).total)
    assert measured.flops > measured.matmul_flops  # the scatters and the rest count too
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    probe = interface.probe_graph(16, 0)
    for x, edges in ((inputs.train_x.numpy(), inputs.edge_index.numpy()), (probe["x"], probe["edge_index"])):
        with torch.no_grad():  # every message arrives: index_add and scatter_reduce export with their reductions
            eager = net(torch.from_numpy(x), torch.from_numpy(edges)).numpy()
        # sums of many messages in ONNX Runtime's thread order, not torch's: float32 rounding of the largest value
        scale = max(1.0, float(np.abs(eager).max()))
        np.testing.assert_allclose(
            session.run(None, {"x": x, "edge_index": edges})[0], eager, rtol=1e-5, atol=1e-5 * scale
        )


def test_the_graph_interface_and_the_scatters_are_checked_against_the_task(sbm, tmp_path):
    task, digits = get_task("sbm-nodes"), get_task("digits")
    inputs = trainer.load_inputs(sbm.train_dir, torch.device("cpu"))
    graph = export(seed_net("gcn"), inputs, tmp_path)
    scoring.verify(graph, task, LIMITS)
    with pytest.raises(GraphFailed, match="ScatterElements, an operator outside the allowlist"):
        scoring.verify(graph, digits, LIMITS)  # a network of examples may not move values between rows

    scoring.measure_graph(export(Features(), inputs, tmp_path), task, LIMITS, interface.sizes(task, sbm.inputs_dir))
    model = onnx.load_from_string(graph)
    model.graph.input[1].type.tensor_type.shape.dim[1].dim_value = inputs.edge_index.shape[1]  # a fixed edge count
    with pytest.raises(GraphFailed, match="each named axis dynamic"):
        scoring.verify(model.SerializeToString(), task, LIMITS)
    model = onnx.load_from_string(graph)
    model.graph.input[0].name, model.graph.input[1].name = "edge_index", "x"
    with pytest.raises(GraphFailed, match=r"must have \['x', 'edge_index'\], in forward's order"):
        scoring.verify(model.SerializeToString(), task, LIMITS)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "isolation"), [("gcn", MODES[0]), ("sage", "process"), ("gat", MODES[0])])
def test_graph_scoring_of_a_seed_equals_trusted_scoring(name, isolation, sbm, cache_dir):
    code = SEEDS[name].read_text()
    found = {}
    for mode in ("graph", "trusted"):
        request = RunRequest(code, "sbm-nodes", TRAIN, LIMITS, isolation, cache_dir, None, 0, scoring=mode)
        found[mode] = execute(request)
        assert found[mode].status == "trained", found[mode].error
    for key in ("val_accuracy", "test_accuracy"):
        assert abs(found["graph"].scores[key] - found["trusted"].scores[key]) <= 0.01, found
    assert found["graph"].scores["test_accuracy"] > 0.6  # chance is 0.25
    assert found["graph"].trained["graph"]["latency_ms"] > 0


@pytest.mark.slow
@requires_bubblewrap
def test_the_exported_graph_of_a_gnn_reproduces_its_recorded_test_score_outside_agentarch(tmp_path, cache_dir, sbm):
    archive = tmp_path / "a.db"
    settings = Settings(archive=archive, cache_dir=cache_dir, task="sbm-nodes", epochs=20, isolation="bubblewrap")
    with Archive(archive) as db:
        result = Evaluator(db, settings).evaluate(SEEDS["sage"].read_text(), "sage.py")  # graph scoring: the default
        assert result.status == "trained", result.reason
        recorded = db.evaluations(result.id)[0]
    assert recorded["graph_sha256"] and recorded["timings"]["scoring"] == "graph"
    out = tmp_path / "home"
    done = CliRunner().invoke(app, ["export", str(result.id), "--out", str(out), "--archive", str(archive), "--json"])
    assert done.exit_code == 0 and json.loads(done.stdout)["verified"] is True, done.output

    # Outside agentarch: the whole graph's features normalised as the trainer does, its edges, the test nodes' rows.
    meta = json.loads((sbm.inputs_dir / "meta.json").read_text())
    x = np.load(sbm.inputs_dir / "train_x.npy").astype(np.float32)
    x = (x - np.asarray(meta["mean"], dtype=np.float32)) / np.asarray(meta["std"], dtype=np.float32)
    edges = np.load(sbm.inputs_dir / "edge_index.npy")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"x": x, "edge_index": edges})[0][np.load(sbm.inputs_dir / "test_x.npy")]
    assert float((logits.argmax(axis=1) == sbm.labels("test")).mean()) == recorded["test_accuracy"]  # exactly
    assert 'session.run(None, {"x": x, "edge_index": edge_index})' in (out / "MODEL_CARD.md").read_text()
