"""The predictor's graph features (agentarch/evaluation/graphs/features.py) from real exported ONNX files.

Each network here is the test's own, built and exported in this process with the sandbox's recipe (no candidate code
runs): what is checked is what the host reads from the file, and that the predictor learns from it.
"""

from __future__ import annotations

import io
import math
import random
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from agentarch.evaluation.graphs.checks import GraphRejected
from agentarch.evaluation.graphs.features import FEATURES, OPS, graph_features
from agentarch.search.predictor import Example, Predictor, cross_validate, features_of


def export(model: nn.Module, in_shape: tuple[int, ...]) -> bytes:
    """The sandbox's export recipe (sandbox/runner.py): eval mode, opset 17, a dynamic batch axis, no folding."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.randn(2, *in_shape),), buffer, dynamo=False, opset_version=17, input_names=["x"],
            output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, do_constant_folding=False,
        )  # fmt: skip
    return buffer.getvalue()


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16), nn.GELU(),
        )  # fmt: skip
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x).mean(dim=(2, 3))
        return self.head(self.norm(y) + y)


def mlp(depth: int, width: int, activation: type[nn.Module]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    features = 16
    for _ in range(depth):
        layers += [nn.Linear(features, width), activation()]
        features = width
    return nn.Sequential(*layers, nn.Linear(features, 4))


@pytest.fixture(scope="module")
def cnn_graph() -> bytes:
    torch.manual_seed(0)
    return export(SmallCNN(), (1, 8, 8))


def test_features_from_a_real_export(cnn_graph):
    found = graph_features(cnn_graph)
    assert list(found) == list(FEATURES) and len(FEATURES) == len(set(FEATURES))
    assert found["graph.op.Conv"] == 3 and found["graph.op.Gemm"] == 1 and found["graph.op.Relu"] == 2
    assert found["graph.op.BatchNormalization"] == 1 and found["graph.op.LayerNormalization"] == 1
    assert found["graph.linear"] == 4 and found["graph.linear_depth"] == 4 and found["graph.residual_adds"] == 1
    assert found["graph.norms"] == 2 and found["graph.pools"] == 0
    assert found["graph.depth"] >= 9  # conv, bn, relu, conv, relu, conv, gelu (erf...), mean, norm, add, gemm
    widths = (found["graph.width.first"], found["graph.width.min"], found["graph.width.max"])
    assert widths == (8, 8, 16)  # the layers' 8, 16, 16 and the head's 10
    assert found["graph.width.count"] == 4
    assert (found["graph.conv.k1"], found["graph.conv.k3"], found["graph.conv.depthwise"]) == (1, 2, 1)
    assert found["graph.conv.strided"] == 1
    params = sum(p.numel() for p in SmallCNN().parameters())
    assert found["graph.log_params"] == pytest.approx(math.log10(params + 1))
    assert found["graph.log_flops"] > found["graph.log_params"] and found["graph.log_matmul_flops"] > 0
    assert 0 < found["graph.log_activation_max"] < found["graph.log_activations"]
    assert sum(found[f"graph.op.{op}"] for op in OPS) + found["graph.op.other"] == found["graph.nodes"]
    assert sum(v for k, v in found.items() if k.startswith("graph.hash.")) > found["graph.nodes"]  # nodes and edges
    assert all(isinstance(v, float) for v in found.values())


def test_deterministic_and_blind_to_the_weights(cnn_graph):
    """One architecture, one vector: the smoke stage's untrained export and the trained one give the same features,
    though the exporter aliases a freshly initialised LayerNorm's equal weights and a trained one's not."""
    assert graph_features(cnn_graph) == graph_features(bytes(cnn_graph))
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    trained = export(model, (1, 8, 8))
    assert trained != cnn_graph
    assert graph_features(trained) == graph_features(cnn_graph)


def test_every_graph_has_the_same_names_and_unknown_operators_count_as_other():
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sign(x).flatten(1) + torch.floor(x).flatten(1)

    found = graph_features(export(Odd(), (3,)))
    assert list(found) == list(FEATURES)
    assert found["graph.op.other"] == 2 and found["graph.op.Add"] == 1  # Sign and Floor are outside OPS
    assert math.isnan(found["graph.width.max"]) and found["graph.width.count"] == 0  # no layer: no width
    assert found["graph.linear"] == 0 and found["graph.log_params"] == 0


def _graph_with(node: onnx.NodeProto, domain: str = "") -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets)
    model.ir_version = 8
    return model.SerializeToString()


def test_hostile_or_oversized_files_are_refused_with_the_reason(cnn_graph):
    with pytest.raises(GraphRejected, match="over the .* cap"):
        graph_features(cnn_graph, max_bytes=len(cnn_graph) - 1)
    with pytest.raises(GraphRejected, match="not a valid ONNX file"):
        graph_features(b"\x08\x07garbage" * 100)
    with pytest.raises(GraphRejected, match="only the standard ONNX domain"):
        graph_features(_graph_with(helper.make_node("Evil", ["x"], ["y"], domain="com.evil"), "com.evil"))
    with pytest.raises(GraphRejected, match="outside the allowlist"):
        graph_features(_graph_with(helper.make_node("RandomNormalLike", ["x"], ["y"])))
    loop = helper.make_node("Relu", ["y"], ["y2"])  # reads a tensor only a later node makes: no order, no graph
    relu = helper.make_node("Relu", ["x"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["batch", 4])
    unordered = helper.make_model(
        helper.make_graph([loop, relu], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    unordered.ir_version = 8
    with pytest.raises(GraphRejected):
        graph_features(unordered.SerializeToString())


# -- the predictor learns from them ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic() -> list[tuple[dict[str, float], float]]:
    """Small MLPs whose made-up score depends on what size cannot show (the activation, the depth at equal width)
    and a little on the width: (features, score) for each."""
    rng = random.Random(0)
    activations = {nn.ReLU: 0.85, nn.Tanh: 0.6, nn.Sigmoid: 0.3}
    found = []
    for i in range(36):
        activation = list(activations)[i % 3]
        depth, width = 1 + (i // 3) % 3, rng.choice([16, 32, 64])
        torch.manual_seed(i)
        graph = graph_features(export(mlp(depth, width, activation), (16,)))
        score = activations[activation] - 0.05 * depth + 0.01 * math.log2(width) + rng.gauss(0, 0.01)
        found.append((graph, score))
    return found


def test_the_predictor_with_graph_features_beats_a_constant(synthetic):
    with_graph = [
        Example(i, features_of({"graph_features": graph}, {}), score) for i, (graph, score) in enumerate(synthetic)
    ]
    assert all(len(e.features) > 50 for e in with_graph)
    scores = cross_validate(with_graph, "synthetic", "max", folds=4)
    # The model reads the graph as predictor.graph_summary, which counts Tanh and Sigmoid as one kind (saturating):
    # it tells them from ReLU and sees depth and width, not Tanh from Sigmoid.
    assert scores["spearman"] is not None and scores["spearman"] > 0.7, scores
    # The same held-out folds: its error beats predicting the fitted folds' mean score.
    truth = np.array([e.score for e in with_graph])
    ours, constant = [], []
    for k in range(4):
        held = [i for i in range(len(with_graph)) if i % 4 == k]
        fitted = [e for i, e in enumerate(with_graph) if i % 4 != k]
        predictor = Predictor.on(fitted, "synthetic", "max")
        ours += [abs(predictor.predict(with_graph[i].features) - truth[i]) for i in held]
        constant += [abs(np.mean([e.score for e in fitted]) - truth[i]) for i in held]
    assert np.mean(ours) < 0.7 * np.mean(constant)  # Tanh for Sigmoid (0.3 apart) bounds how far below it goes


def test_smoke_results_carry_only_finite_graph_features():
    smoke = {"params": 100, "graph_features": {"graph.depth": 3, "graph.width.max": math.nan, "log_params": 9.0}}
    found = features_of(smoke, {})
    assert found == {"log_params": 2.0, "graph.depth": 3.0}  # NaN is missing; a graph entry cannot set another
    assert features_of({"graph_features": "not a mapping"}, {}) == {}
