"""The predictor's graph features of networks of graphs (issue 25): node classification's forward(x, edge_index) and
graph classification's forward(x, edge_index, batch), exported with the sandbox's own recipe (runner.export_graph, the
task's named inputs and dynamic node and edge counts) from the repository's seeds and from networks written here (no
candidate code runs). What is checked is what the host reads from the file: sizes per node and per edge where the
counts are symbolic, the message passing (aggregations by reduction, attention over edges, degree normalisation,
layers, readouts), one vector for the smoke and the trained export of one architecture, and the interface a graph's
input names claim held against it.
"""

from __future__ import annotations

import importlib.util
import io
import math
import warnings
from pathlib import Path

import pytest
import torch
from agentarch.runner import runner, trainer
from torch import nn

from agentarch.config import Settings
from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.graphs.checks import GraphRejected
from agentarch.evaluation.graphs.features import FEATURES, graph_features
from agentarch.evaluation.stages import RunRequest, execute
from agentarch.isolation.policy import Limits
from agentarch.search.predictor import graph_summary, kept_graph_features
from agentarch.store.archive import Archive
from agentarch.tasks.preparation import prepare
from agentarch.tasks.registry import get_task
from tests.conftest import REPO, requires_bubblewrap

MESSAGE_PASSING = [name for name in FEATURES if name.startswith("graph.mp.")]


@pytest.fixture(scope="module")
def node_inputs(cache_dir) -> trainer.Inputs:
    return trainer.load_inputs(prepare(get_task("sbm-nodes"), cache_dir).train_dir, torch.device("cpu"))


@pytest.fixture(scope="module")
def graph_inputs(cache_dir) -> trainer.Inputs:
    return trainer.load_inputs(prepare(get_task("sbm-graphs"), cache_dir).train_dir, torch.device("cpu"))


def export(net: nn.Module, inputs: trainer.Inputs, tmp_path: Path) -> bytes:
    """The sandbox's export of a graph task's network (eval mode, named inputs, dynamic node and edge counts)."""
    path = tmp_path / "graph.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner.export_graph(net.eval(), inputs, path)
    return path.read_bytes()


def seed(kind: str, name: str, *args: object) -> nn.Module:
    found = importlib.util.spec_from_file_location(name, REPO / "archive" / "seeds" / kind / f"{name}.py")
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module.Net(*args)


def perturbed(net: nn.Module) -> nn.Module:
    """The network as training leaves it: every parameter moved (an untrained export aliases equal weights)."""
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(torch.randn_like(parameter))
    return net


class MaxNet(nn.Module):
    """Max aggregation (scatter_reduce amax, no softmax after it) and a max readout by `batch`."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin, self.head = nn.Linear(8, width), nn.Linear(width, 3)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        z = self.lin(x)
        index = edge_index[1].unsqueeze(1).expand(-1, z.shape[1])
        agg = torch.full_like(z, float("-inf")).scatter_reduce(
            0, index, z[edge_index[0]], reduce="amax", include_self=True
        )
        h = torch.relu(torch.where(torch.isinf(agg), torch.zeros_like(agg), agg) + z)
        rows = torch.zeros(batch.max() + 1, h.shape[1], dtype=h.dtype) - float("inf")
        return self.head(rows.scatter_reduce(0, batch.unsqueeze(1).expand_as(h), h, reduce="amax", include_self=True))


class NodeMLP(nn.Module):
    """A network of node features alone: the exporter drops the unused edges, so it reads as a network of examples."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.parametrize(
    ("name", "structural", "expected"),
    [
        ("gat", 0, {"layers": 2, "attention": 2, "sum": 2, "mean": 0, "max": 0, "degree_norms": 0, "readouts": 0}),
        ("gcn", 1, {"layers": 2, "sum": 2, "mean": 0, "attention": 0, "degree_norms": 2}),
        ("sage", 2, {"layers": 2, "mean": 2, "sum": 0, "attention": 0}),
    ],
)
def test_node_classification_seeds_have_sizes_per_node_and_their_message_passing(
    name, structural, expected, node_inputs, tmp_path
):
    torch.manual_seed(0)
    smoke = export(seed("graph", name, (16,), 4), node_inputs, tmp_path)
    found = graph_features(smoke)
    assert list(found) == list(FEATURES)
    for size in ("log_flops", "log_matmul_flops", "log_activation_max", "log_activations", "mp.log_flops_per_edge"):
        assert math.isfinite(found[f"graph.{size}"]) and found[f"graph.{size}"] > 0, size
    assert found["graph.log_flops"] > found["graph.log_matmul_flops"]  # the scatters count too
    assert found["graph.mp.aggregations"] > 0 and found["graph.mp.messages"] > 0
    assert {key: found[f"graph.mp.{key}"] for key in expected} == expected
    # GAT's softmax maxima and sums are aggregations (of scores); GCN's degree and SAGE's neighbour counts are scatters
    # of structure alone, no aggregation
    assert found["graph.op.ScatterElements"] == found["graph.mp.aggregations"] + structural
    torch.manual_seed(0)
    trained = export(perturbed(seed("graph", name, (16,), 4)), node_inputs, tmp_path)
    assert trained != smoke and graph_features(trained) == found


def test_graph_classification_reads_readouts_and_layers(graph_inputs, tmp_path):
    torch.manual_seed(0)
    gin = graph_features(export(seed("graphs", "gin", (8,), 3), graph_inputs, tmp_path))
    assert gin["graph.mp.layers"] == 3 and gin["graph.mp.sum"] == 3  # GIN: three sum layers, each read out
    assert (gin["graph.mp.readouts"], gin["graph.mp.readout_sum"], gin["graph.mp.readout_mean"]) == (3, 3, 0)
    assert math.isfinite(gin["graph.log_flops"]) and gin["graph.mp.log_flops_per_edge"] > 0
    torch.manual_seed(0)
    gcn = graph_features(export(seed("graphs", "gcn", (8,), 3), graph_inputs, tmp_path))
    assert (gcn["graph.mp.readouts"], gcn["graph.mp.readout_mean"]) == (1, 1)  # a mean pool: a sum over a count
    narrow, wide = (graph_features(export(MaxNet(width), graph_inputs, tmp_path)) for width in (8, 64))
    assert (narrow["graph.mp.max"], narrow["graph.mp.readout_max"], narrow["graph.mp.layers"]) == (1, 1, 1)
    assert wide["graph.log_flops"] > narrow["graph.log_flops"]
    assert wide["graph.mp.log_flops_per_edge"] > narrow["graph.mp.log_flops_per_edge"]  # wider messages
    torch.manual_seed(0)
    trained = export(perturbed(seed("graphs", "gin", (8,), 3)), graph_inputs, tmp_path)
    assert graph_features(trained) == gin


def test_networks_without_message_passing_count_none(node_inputs, tmp_path):
    nodes = graph_features(export(NodeMLP(), node_inputs, tmp_path))  # exported without its unused edges
    assert all(nodes[name] == 0 for name in MESSAGE_PASSING)
    assert math.isfinite(nodes["graph.log_flops"])  # per example: per node
    summary = graph_summary(nodes)
    assert summary["graph.summary.message_layers"] == 0 and summary["graph.summary.edge_attention"] == 0


def test_the_summary_reads_message_passing(node_inputs, tmp_path):
    torch.manual_seed(0)
    gat = graph_summary(graph_features(export(seed("graph", "gat", (16,), 4), node_inputs, tmp_path)))
    sage = graph_summary(graph_features(export(seed("graph", "sage", (16,), 4), node_inputs, tmp_path)))
    assert gat["graph.summary.message_layers"] == 2 and gat["graph.summary.edge_attention"] == 1
    assert sage["graph.summary.aggregation_mean_share"] == 1 and sage["graph.summary.edge_attention"] == 0
    assert gat["graph.summary.log_flops_per_edge"] > sage["graph.summary.log_flops_per_edge"]  # attention costs
    # Features read before message passing was counted: the summary leaves those columns missing, not 0.
    old = {k: v for k, v in graph_features(export(NodeMLP(), node_inputs, tmp_path)).items() if ".mp." not in k}
    assert "graph.summary.message_layers" not in graph_summary(old) and "graph.summary.log2_depth" in graph_summary(old)


class Scattering(nn.Module):
    """A network of examples (one input, x) that scatters: allowed for a network of graphs only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x).index_add_(1, torch.tensor([0, 0, 1, 2]), x)


class FloatEdges(nn.Module):
    """Inputs named as a graph task's, but edge_index is not int64: the claim the names make does not hold."""

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return x + edge_index.sum()


def _export_named(net: nn.Module, args: tuple[torch.Tensor, ...], names: list[str]) -> bytes:
    buffer = io.BytesIO()
    axes = {"x": {0: "nodes"}, "edge_index": {1: "edges"}, "y": {0: "nodes"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(), args, buffer, dynamo=False, opset_version=17, input_names=names, output_names=["y"],
            dynamic_axes={k: v for k, v in axes.items() if k in [*names, "y"]}, do_constant_folding=False,
        )  # fmt: skip
    return buffer.getvalue()


def test_scatters_are_read_only_in_a_graph_that_has_a_graph_tasks_interface():
    with pytest.raises(GraphRejected, match="outside the allowlist"):
        graph_features(_export_named(Scattering(), (torch.randn(5, 4),), ["x"]))
    with pytest.raises(GraphRejected, match="'edge_index' must be a tensor of int64"):
        graph_features(_export_named(FloatEdges(), (torch.randn(5, 4), torch.randn(2, 7)), ["x", "edge_index"]))


@pytest.mark.slow  # a screening job and a training in the real sandbox: about 30 s on 2 loaded cores
@requires_bubblewrap
@pytest.mark.parametrize("task", ["sbm-nodes", "sbm-graphs"])
def test_a_screened_gnns_smoke_features_are_its_trained_graphs(task, tmp_path, cache_dir):
    """End to end: the smoke stage's host side reads the features of the graph a screening job exported (scoring.py,
    without the task), and the predictor reads the trained graph the archive keeps (predictor.kept_graph_features):
    one architecture, one vector, message passing included."""
    code = (REPO / "archive" / "seeds" / ("graph/gat.py" if task == "sbm-nodes" else "graphs/gin.py")).read_text()
    limits = Limits(memory_mb=4096, timeout_s=240, smoke_timeout_s=120, threads=1)
    train = {"epochs": 2, "batch_size": 600 if task == "sbm-nodes" else 32, "lr": 0.01, "weight_decay": 5e-4, "seed": 0}
    screened = execute(RunRequest(code, task, train, limits, "bubblewrap", cache_dir, None, 0, smoke_only=True,
                                  scoring="graph"))  # fmt: skip
    assert screened.status == "smoked", screened.reason
    smoke = screened.smoke["graph_features"]
    assert smoke["graph.mp.aggregations"] > 0 and math.isfinite(smoke["graph.log_flops"])
    settings = Settings(archive=tmp_path / "a.db", cache_dir=cache_dir, task=task, epochs=2, isolation="bubblewrap")
    with Archive(tmp_path / "a.db") as db:
        result = Evaluator(db, settings).evaluate(code, "seed.py")
        assert result.status == "trained", result.reason
        kept = kept_graph_features(db, db.evaluations(result.id)[0]["graph_sha256"])
    assert kept is not None and {k: v for k, v in kept.items() if math.isfinite(v)} == smoke
