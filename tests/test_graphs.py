"""The graph room (agentarch/evaluation/graphs): checks, shapes, the batch-flow proof and the measures, on real
TorchScript exports of every seed and of samples of every shipped search space, and on hostile graphs.

Exports are small (the digits, table, mqar and short-sequence tasks) and made once per module.
"""

from __future__ import annotations

import importlib.util
import io
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from agentarch.runner.runner import count_flops
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from agentarch.evaluation import novelty
from agentarch.evaluation.graphs import batch_flow, checks, measures, shapes, sizes
from agentarch.evaluation.graphs.checks import GraphRejected, check_graph
from agentarch.isolation.protocol import MAX_STRUCTURE_TOKENS, MAX_TOKEN_CHARS
from agentarch.search.spaces import SPACES
from agentarch.tasks.builtin import TASKS
from agentarch.tasks.task import Task
from tests.conftest import REPO

MAX_BYTES = 64 * 2**20
SEED_FILES = sorted(p for p in (REPO / "archive" / "seeds").glob("*/*.py") if p.parent.name not in ("graph", "graphs"))
"""Every seed of a kind of examples: the graph kinds' take named inputs and are checked in tests/test_node_scoring.py
and tests/test_graphset_scoring.py."""
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def example_task(name: str, kind: str, in_shape: tuple[int, ...], num_classes: int, **extra) -> Task:
    return Task(name, kind, in_shape, num_classes, "accuracy", 1, 16, 1e-3, 0.0, 10**7, False, "example", **extra)


TASK_OF_KIND = {
    "image": TASKS["digits"],
    "token": TASKS["mqar"],
    "lm": example_task("bytes-32", "lm", (32,), 256),
    "sequence": example_task("ids-sequence", "sequence", (40,), 3, vocab_size=50),
    "table": example_task("table-classes", "table", (12,), 4),
    "dense": TASKS["digits-sr2"],
}
FLOAT_SEQUENCE = example_task("float-series", "sequence", (30, 4), 5)
SPACE_SAMPLES = [
    ("nb201", TASKS["digits"], 3),
    ("macro", TASKS["digits"], 3),
    ("mlp", TASK_OF_KIND["table"], 3),
    ("mixer", TASKS["mqar"], 2),
    ("mixer", TASK_OF_KIND["lm"], 1),
    ("mixer", TASK_OF_KIND["sequence"], 1),
    ("mixer", FLOAT_SEQUENCE, 1),
]


def example_input(task: Task, batch: int) -> torch.Tensor:
    if task.kind in ("token", "lm") or task.vocab_size:
        return torch.randint(0, task.vocab_size or task.num_classes, (batch, *task.in_shape))
    return torch.randn(batch, *task.in_shape)


def export(model: nn.Module, x: torch.Tensor, opset: int = 17, **options) -> bytes:
    """The recommended export: eval mode, TorchScript exporter, a dynamic batch axis, no constant folding."""
    buffer = io.BytesIO()
    settings = {"dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}}, "do_constant_folding": False} | options
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (x,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=["x"],
            output_names=["y"],
            **settings,
        )
    return buffer.getvalue()


def build(code_or_path: str | Path, task: Task) -> nn.Module:
    if isinstance(code_or_path, Path):
        spec = importlib.util.spec_from_file_location(
            f"seed_{code_or_path.parent.name}_{code_or_path.stem}", code_or_path
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        net = module.Net
    else:
        namespace: dict = {}
        exec(compile(code_or_path, "<space>", "exec"), namespace)
        net = namespace["Net"]
    torch.manual_seed(0)
    extra = {"vocab_size": task.vocab_size} if task.vocab_size else {}
    extra |= {"out_shape": task.out_shape} if task.out_shape else {}
    return net(task.in_shape, task.num_classes, **extra)


@dataclass
class Exported:
    data: bytes
    task: Task
    params: int
    buffers: int
    torch_flops: int
    attention: bool


@pytest.fixture(scope="module")
def exported() -> dict[str, Exported]:
    made = {}
    cases: list[tuple[str, str | Path, Task]] = [
        (f"{p.parent.name}/{p.stem}", p, TASK_OF_KIND[p.parent.name]) for p in SEED_FILES
    ]
    cases += [(f"{p.parent.name}/{p.stem}:float", p, FLOAT_SEQUENCE) for p in SEED_FILES if p.parent.name == "sequence"]
    rng = random.Random(25)
    for space, task, count in SPACE_SAMPLES:
        for _ in range(count):
            arch = SPACES[space].sample(rng)
            cases.append((f"{space}:{task.name}:{arch}", SPACES[space].render(arch, task), task))
    for name, source, task in cases:
        model = build(source, task).eval()
        x = example_input(task, 2)
        buffers = sum(b.numel() for n, b in model.named_buffers() if not n.endswith(STATISTICS))
        attention = any(word in str(source) for word in ("attention", "transformer", "gpt"))
        made[name] = Exported(
            export(model, x),
            task,
            sum(p.numel() for p in model.parameters()),
            buffers,
            count_flops(model, x),
            attention,
        )
    return made


def test_every_seed_and_space_sample_passes_the_checks_and_the_batch_flow_proof(exported):
    assert len(exported) >= len(SEED_FILES) + sum(count for _, _, count in SPACE_SAMPLES)
    used: set[str] = set()
    for name, graph in exported.items():
        ids = graph.task.kind in ("token", "lm") or graph.task.vocab_size is not None
        model = check_graph(graph.data, max_bytes=MAX_BYTES, in_shape=graph.task.in_shape, ids=ids)
        batch_flow.prove_batch_independence(model)
        used |= {node.op_type for node in model.graph.node}
    assert used <= checks.EXPORTED_OPS <= checks.ALLOWED_OPS, sorted(used - checks.EXPORTED_OPS)
    spaces = {name.split(":")[0] for name in exported if ":" in name and "/" not in name}
    assert spaces == {"nb201", "macro", "mlp", "mixer"}


def test_opset_18_exports_pass_too():
    for path in SEED_FILES[::2]:
        task = TASK_OF_KIND[path.parent.name]
        model = check_graph(export(build(path, task), example_input(task, 2), opset=18), max_bytes=MAX_BYTES)
        batch_flow.prove_batch_independence(model)


def test_measured_parameters_are_torchs_plus_the_buffers_the_graph_reads(exported):
    """Exactly torch's count for every network without buffers; a buffer the forward pass reads (the token
    transformer's RoPE tables) is stored in the graph and counts, once however many blocks share it."""
    for name, graph in exported.items():
        params = measures.count_params(onnx.load_from_string(graph.data))
        if graph.buffers == 0:
            assert params == graph.params, name
        else:
            assert graph.params < params <= graph.params + graph.buffers, name


def test_parameters_survive_constant_folding_of_a_tied_weight():
    """With constant folding kept (training=PRESERVE keeps BatchNorm unfused), the exporter stores the GPT's tied
    head as a transposed copy of the embedding; it still counts once."""
    path = next(p for p in SEED_FILES if p.parent.name == "lm" and p.stem == "gpt")
    task = TASK_OF_KIND["lm"]
    model = build(path, task)
    data = export(model, example_input(task, 2), do_constant_folding=True, training=torch.onnx.TrainingMode.PRESERVE)
    assert measures.count_params(onnx.load_from_string(data)) == sum(p.numel() for p in model.parameters())


def test_flops_match_the_smoke_runs_counter(exported):
    """The matmul FLOPs are torch's count exactly, except that torch's counter misses the attention products of
    scaled_dot_product_attention on the CPU (the graph's MatMuls count them: up to 1.3x); the total adds the
    cheap operators, at most half again on these networks (tiny MLPs, where activations weigh most)."""
    for name, graph in exported.items():
        total, matmul = measures.count_flops(onnx.load_from_string(graph.data))
        if graph.attention:
            assert graph.torch_flops <= matmul <= 1.35 * graph.torch_flops, name
        else:
            assert matmul == graph.torch_flops, name
        assert matmul < total <= 1.5 * matmul, name


def test_shapes_and_small_values_match_onnxruntime(exported):
    """shapes.py's dimensions and values, at batch 3, are what ONNX Runtime computes for every tensor."""
    for name in ["image/resnet", "lm/gpt", "token/transformer", "sequence/conv:float"] + [
        n for n in exported if n.startswith("mixer:")
    ]:
        model = onnx.load_from_string(exported[name].data)
        infos = shapes.propagate(model)
        outputs, results = run_every_tensor(model, example_input(exported[name].task, 3).numpy())
        for tensor, result in zip(outputs, results):
            info = infos[tensor]
            assert result.shape == tuple(sizes.evaluate(d, 3) for d in info.dims), (name, tensor)
            if info.value is not None:
                expected = info.value
                if expected.dtype == object:
                    expected = np.vectorize(lambda v: v.at(3) if isinstance(v, sizes.Sym) else v)(expected)
                assert np.array_equal(result, expected), (name, tensor)


def run_every_tensor(model: onnx.ModelProto, x: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    every = onnx.ModelProto()
    every.CopyFrom(model)
    del every.graph.output[:]
    outputs = [name for node in model.graph.node for name in node.output if name]
    every.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in outputs)
    return outputs, session(every).run(None, {"x": x})


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_what_the_proof_accepts_an_example_computes_alike_alone_and_in_a_batch(exported):
    for name in [f"{p.parent.name}/{p.stem}" for p in SEED_FILES]:
        graph = exported[name]
        runner = session(onnx.load_from_string(graph.data))
        x = example_input(graph.task, 4).numpy()
        together = runner.run(None, {"x": x})[0]
        for i in range(len(x)):
            alone = runner.run(None, {"x": x[i : i + 1]})[0]
            np.testing.assert_allclose(alone[0], together[i], rtol=1e-4, atol=1e-5, err_msg=name)


def test_the_structure_signature_is_a_drop_in_for_novelty(exported):
    nb201 = [name for name in exported if name.startswith("nb201:")]
    signatures = {name: measures.structure(onnx.load_from_string(exported[name].data)) for name in nb201}
    for signature in signatures.values():
        assert 0 < len(signature) <= MAX_STRUCTURE_TOKENS
        assert all(isinstance(t, str) and len(t) <= MAX_TOKEN_CHARS for t in signature)
        assert all(isinstance(c, int) and c >= 1 for c in signature.values())
        assert novelty.similarity(signature, signature) == 1.0
    first, second = nb201[:2]
    assert novelty.similarity(signatures[first], signatures[second]) < 1.0
    cnn = measures.structure(onnx.load_from_string(exported["image/cnn"].data))
    assert any(token.startswith("Conv([1,1,8,8],[32,1,3,3]") for token in cnn), sorted(cnn)


class Renamed(nn.Module):
    """The image MLP seed's network with other attribute names, another initialisation and another class name."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.flat = nn.Flatten()
        self.first, self.second, self.third = nn.Linear(64, 256), nn.Linear(256, 256), nn.Linear(256, num_classes)
        self.act = nn.GELU()
        for layer in (self.first, self.second, self.third):
            nn.init.normal_(layer.weight)

    def forward(self, x):
        return self.third(self.act(self.second(self.act(self.first(self.flat(x))))))


def test_the_digest_ignores_names_and_weights_and_sees_the_architecture(exported):
    seed = onnx.load_from_string(exported["image/mlp"].data)
    x = example_input(TASKS["digits"], 2)
    renamed = onnx.load_from_string(export(Renamed((1, 8, 8), 10), x))
    assert measures.digest(renamed) == measures.digest(seed)
    path = next(p for p in SEED_FILES if p.parent.name == "image" and p.stem == "mlp")
    wider = build(path, TASKS["digits"])
    wider.layers[1] = nn.Linear(64, 256, bias=False)
    assert measures.digest(onnx.load_from_string(export(wider, x))) != measures.digest(seed)
    digests = {measures.digest(onnx.load_from_string(graph.data)) for graph in exported.values()}
    assert len(digests) == len(exported)


def test_measure_gives_all_four(exported):
    graph = exported["image/cnn"]
    found = measures.measure(check_graph(graph.data, max_bytes=MAX_BYTES))
    assert found.params == graph.params and found.matmul_flops == graph.torch_flops < found.flops
    assert found.structure and len(found.digest) == 64


# -- hostile networks: the proof refuses each with a reason --------------------------------------------------


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.bn = nn.Linear(8, 4), nn.BatchNorm1d(8)


class BatchStatistics(Small):
    def forward(self, x):
        return self.fc((x - x.mean(0)) / (x.std(0) + 1e-5))


class BatchSum(Small):
    def forward(self, x):
        return self.fc(x + x.sum(0))


class TransposedBatchMatMul(Small):
    def forward(self, x):
        return self.fc(x @ (x.T @ x) / 8)


class AttentionAcrossTheBatch(Small):
    def forward(self, x):
        h = self.fc(x)
        return torch.softmax(h @ h.T, -1) @ h


class BatchNormInTraining(Small):
    def forward(self, x):
        return self.fc(F.batch_norm(x, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias, True))


class StickyTrainingBatchNorm(Small):
    def train(self, mode=True):
        super().train(mode)
        self.bn.training = True  # the export's eval() leaves BatchNorm on batch statistics
        return self

    def forward(self, x):
        return self.fc(self.bn(x))


class SoftmaxOverTheBatch(Small):
    def forward(self, x):
        return torch.softmax(self.fc(x), 0)


class ShiftedBatch(Small):
    def forward(self, x):
        return self.fc(torch.cat([x[1:], x[:1]]))


class BatchSizeAsValue(Small):
    def forward(self, x):
        return self.fc(x) * x.shape[0]


class RunningSumOverTheBatch(Small):
    def forward(self, x):
        return self.fc(x.cumsum(0))


class FoldedBatch(Small):
    def forward(self, x):
        return self.fc(x.reshape(8, -1).T)  # row j now holds the j-th entries of 8 consecutive examples' values


class PositionInTheBatch(Small):
    def forward(self, x):
        return self.fc(x) + torch.arange(x.shape[0]).unsqueeze(1)


class InterleavedConstant(Small):
    def forward(self, x):
        table = torch.arange(8.0).expand(x.shape[0], 8).reshape(8, -1)  # entry (i, b) depends on b's place
        return self.fc((x.T + table).T)


HOSTILE = [
    (BatchStatistics, "ReduceMean node", "reduces over axis 0, the batch axis"),
    (BatchSum, "ReduceSum node", "reduces over axis 0, the batch axis"),
    (TransposedBatchMatMul, "MatMul node", "contracts the batch axis"),
    (AttentionAcrossTheBatch, "MatMul node", "pairs of examples"),
    (BatchNormInTraining, "BatchNormalization node", "in training mode"),
    (StickyTrainingBatchNorm, "BatchNormalization node", "in training mode"),
    (SoftmaxOverTheBatch, "Softmax node", "over axis 0, the batch axis"),
    (ShiftedBatch, "Slice node", "slices the batch axis"),
    (BatchSizeAsValue, "Mul node", "batch size as a value"),
    (RunningSumOverTheBatch, "CumSum node", "the batch axis"),
    (FoldedBatch, "Reshape node", "moves the batch axis into another axis"),
    (PositionInTheBatch, "Range node", "numbers them"),
    (InterleavedConstant, "Reshape node", "moves the batch axis into another axis"),
]


@pytest.mark.parametrize("net, node, reason", HOSTILE, ids=[h[0].__name__ for h in HOSTILE])
def test_a_network_that_mixes_the_batch_is_refused_naming_the_node_and_why(net, node, reason):
    model = check_graph(export(net(), torch.randn(3, 8)), max_bytes=MAX_BYTES)
    with pytest.raises(GraphRejected) as refused:
        batch_flow.prove_batch_independence(model)
    message = str(refused.value)
    assert node in message and reason in message, message
    assert "each example's output must depend on that example alone" in message


class FlattenByView(Small):
    def forward(self, x):
        return self.fc(x.view(x.size(0), -1))


class HeadsFoldedIntoTheBatch(nn.Module):
    """Attention that folds the heads into the batch axis (b * h), as older implementations do, then unfolds."""

    def __init__(self):
        super().__init__()
        self.qkv, self.out = nn.Linear(8, 24), nn.Linear(8, 4)

    def forward(self, x):
        b, length, d = x.shape
        q, k, v = (t.reshape(b * 2, length, d // 2) for t in self.qkv(x).chunk(3, -1))
        y = torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)), -1), v)
        return self.out(y.reshape(b, length, d).mean(1))


class EinsumPerExample(Small):
    def forward(self, x):
        h = x.view(x.shape[0], 2, 4)
        return self.fc(torch.einsum("...ij,...kj->...ik", h, h).flatten(1).repeat(1, 2))


@pytest.mark.parametrize(
    "net, shape", [(FlattenByView, (3, 2, 4)), (HeadsFoldedIntoTheBatch, (3, 5, 8)), (EinsumPerExample, (3, 8))]
)
def test_export_patterns_that_keep_the_examples_apart_are_accepted(net, shape):
    module = net()
    if net is FlattenByView:
        module.fc = nn.Linear(8, 4)
    model = check_graph(export(module, torch.randn(*shape)), max_bytes=MAX_BYTES)
    batch_flow.prove_batch_independence(model)


class ViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 32, 4, 4)
        self.cls, self.pos = nn.Parameter(torch.randn(1, 1, 32)), nn.Parameter(torch.randn(1, 17, 32))
        layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
        self.encoder, self.head = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), nn.Linear(32, 10)

    def forward(self, x):
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), h], 1) + self.pos
        return self.head(self.encoder(h)[:, 0])


class Recurrent(nn.Module):
    def __init__(self, kind: type[nn.Module], **options):
        super().__init__()
        self.embed, self.rnn = nn.Embedding(50, 16), kind(16, 16, batch_first=True, **options)
        self.head = nn.Linear(32 if options.get("bidirectional") else 16, 3)

    def forward(self, x):
        out, _ = self.rnn(self.embed(x))
        return self.head(out.mean(1))


class AttentionModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.attention = nn.Embedding(50, 16), nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)
        mask = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), 1)
        return self.head(self.attention(h, h, h, attn_mask=mask, need_weights=False)[0].amax(1))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 16, 3, padding=1, groups=1), nn.GroupNorm(4, 16)
        self.squeeze, self.excite, self.head = nn.Linear(16, 4), nn.Linear(4, 16), nn.Linear(16, 10)

    def forward(self, x):
        h = F.silu(self.norm(self.conv(x)))
        h = h * torch.sigmoid(self.excite(F.relu(self.squeeze(h.mean((2, 3))))))[:, :, None, None]
        return self.head(F.normalize(torch.amax(F.max_pool2d(h, 2), dim=(2, 3)), dim=1))


WRITTEN = [
    (ViT, (3, 16, 16), False),
    (lambda: Recurrent(nn.LSTM), (12,), True),
    (lambda: Recurrent(nn.GRU, bidirectional=True), (12,), True),
    (AttentionModule, (12,), True),
    (SqueezeExcite, (3, 8, 8), False),
]


@pytest.mark.parametrize("net, shape, ids", WRITTEN, ids=["vit", "lstm", "bigru", "multihead", "squeeze-excite"])
def test_networks_an_llm_writes_outside_the_spaces_pass_and_compute_alike_alone_and_in_a_batch(net, shape, ids):
    torch.manual_seed(0)
    module = net().eval()
    x = torch.randint(0, 50, (4, *shape)) if ids else torch.randn(4, *shape)
    model = check_graph(export(module, x), max_bytes=MAX_BYTES)
    batch_flow.prove_batch_independence(model)
    assert measures.count_params(model) == sum(p.numel() for p in module.parameters())
    runner = session(model)
    together = runner.run(None, {"x": x.numpy()})[0]
    for i in range(len(x)):
        np.testing.assert_allclose(
            runner.run(None, {"x": x[i : i + 1].numpy()})[0][0], together[i], rtol=1e-4, atol=1e-5
        )


# -- the checks refuse graphs outside the allowed language ---------------------------------------------------


def tiny_graph(
    node: onnx.NodeProto, opset: int = 17, domains: tuple[tuple[str, int], ...] = (), nodes=(), **kwargs
) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([node, *nodes], "g", [x], [y], **kwargs)
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in domains)]
    return helper.make_model(graph, opset_imports=imports, ir_version=8).SerializeToString()


def refusal(data: bytes, **options) -> str:
    with pytest.raises(GraphRejected) as refused:
        check_graph(data, max_bytes=options.pop("max_bytes", MAX_BYTES), **options)
    return str(refused.value)


def test_a_plain_graph_passes():
    check_graph(tiny_graph(helper.make_node("Relu", ["x"], ["y"])), max_bytes=MAX_BYTES)


def test_custom_and_contrib_domains_are_refused():
    evil = helper.make_node("Steal", ["x"], ["y"], domain="evil.ops")
    assert "domain 'evil.ops'" in refusal(tiny_graph(evil, domains=(("evil.ops", 1),)))
    contrib = helper.make_node("FastGelu", ["x"], ["y"], domain="com.microsoft")
    assert "com.microsoft" in refusal(tiny_graph(contrib, domains=(("com.microsoft", 1),)))


def test_an_operator_outside_the_allowlist_is_refused_with_what_to_do_instead():
    message = refusal(tiny_graph(helper.make_node("RandomNormalLike", ["x"], ["y"])))
    assert "RandomNormalLike" in message and "outside the allowlist" in message and "deterministic" in message

    class TopK(Small):
        def forward(self, x):
            return self.fc(x) + torch.topk(x, 2).values.sum(-1, keepdim=True)

    message = refusal(export(TopK(), torch.randn(3, 8)))
    assert "TopK" in message and "data-dependent indexing" in message


def test_control_flow_and_functions_are_refused():
    body = helper.make_graph([], "body", [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])])
    branch = helper.make_node("If", ["x"], ["y"], then_branch=body, else_branch=body)
    assert "If" in refusal(tiny_graph(branch))
    model = onnx.load_from_string(tiny_graph(helper.make_node("Relu", ["x"], ["y"])))
    model.functions.append(helper.make_function("local", "Twice", ["a"], ["b"], [], [helper.make_opsetid("", 17)]))
    assert "functions" in refusal(model.SerializeToString())


def test_external_data_and_string_tensors_are_refused(tmp_path):
    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    model = onnx.load_from_string(tiny_graph(helper.make_node("Add", ["x", "w"], ["y"]), initializer=[weight]))
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    assert "external file ('w.bin')" in refusal((tmp_path / "m.onnx").read_bytes())
    forged = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    forged.data_location = TensorProto.EXTERNAL
    forged.external_data.add(key="location", value="/etc/shadow")
    constant = helper.make_node("Constant", [], ["w"], value=forged)
    assert "/etc/shadow" in refusal(tiny_graph(constant, nodes=[helper.make_node("Add", ["x", "w"], ["y"])]))
    text = helper.make_tensor("path", TensorProto.STRING, [1], [b"/etc/passwd"])
    assert "string tensor" in refusal(tiny_graph(helper.make_node("Relu", ["x"], ["y"]), initializer=[text]))


def test_size_parsing_versions_and_interface_are_checked():
    data = tiny_graph(helper.make_node("Relu", ["x"], ["y"]))
    assert "over the" in refusal(data, max_bytes=len(data) - 1)
    assert "not a valid ONNX file" in refusal(b"\x00not onnx at all\xff" * 10)
    assert "opset 13" in refusal(tiny_graph(helper.make_node("Relu", ["x"], ["y"]), opset=13))
    fixed = export(Small().fc, torch.randn(3, 8), dynamic_axes={})
    assert "fixed batch size" in refusal(fixed)
    assert "expected (batch, (5,))" in refusal(data, out_shape=(5,))
    assert "int64 token ids" in refusal(data, ids=True)
    assert "task's examples are (8,)" in refusal(data, in_shape=(8,))
    two = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in "yz"],
    )  # fmt: skip
    two_outputs = helper.make_model(two, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert "2 outputs" in refusal(two_outputs.SerializeToString())


def test_a_graph_the_checker_refuses_is_refused():
    broken = tiny_graph(helper.make_node("Add", ["x", "missing"], ["y"]))
    assert "checker refuses" in refusal(broken)


def test_an_operator_the_proof_has_no_rule_for_refuses_rather_than_passes():
    """Conservative by construction: a node the shape analysis cannot follow ends the proof with a refusal."""
    squeeze_all = helper.make_node("Squeeze", ["x"], ["s"])
    unsqueeze = helper.make_node("Unsqueeze", ["s", "axes"], ["y"])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph([squeeze_all, unsqueeze], "g", [x], [y], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(GraphRejected, match="Squeeze node .* no axes"):
        batch_flow.prove_batch_independence(model)


def reshaping(*targets: list[int]) -> onnx.ModelProto:
    """x (batch, 2, 4) through one Reshape per target in turn, then Flatten to (batch, 8)."""
    nodes, inits, current = [], [], "x"
    for k, target in enumerate(targets):
        inits.append(helper.make_tensor(f"t{k}", TensorProto.INT64, [len(target)], target))
        nodes.append(helper.make_node("Reshape", [current, f"t{k}"], [f"r{k}"]))
        current = f"r{k}"
    nodes.append(helper.make_node("Flatten", [current], ["y"], axis=1))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize(
    "targets, accepted",
    [
        ([[0, -1]], True),  # keep axis 0, flatten the rest
        ([[-1, 8]], True),  # the batch is what is left over
        ([[0, 4, 2], [0, 2, 2, 2]], True),  # reshapes within each example
        ([[-1, 4], [-1, 2, 4]], True),  # fold each example into 2 rows, then back: example b keeps rows 2b, 2b+1
        ([[-1]], False),  # one long vector: the examples are no longer rows
        ([[4, -1]], False),  # interleaves: a row mixes entries of several examples
        ([[2, -1, 4], [-1, 8]], False),  # puts the batch behind an axis of 2, interleaving examples
    ],
)
def test_a_reshape_keeps_the_examples_apart_only_when_the_layout_allows(targets, accepted):
    model = reshaping(*targets)
    if accepted:
        batch_flow.prove_batch_independence(model)
        x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
        runner = session(model)
        together = runner.run(None, {"x": x})[0]
        for i in range(3):
            np.testing.assert_array_equal(runner.run(None, {"x": x[i : i + 1]})[0][0], together[i])
    else:
        with pytest.raises(GraphRejected, match="Reshape node|Flatten node|output"):
            batch_flow.prove_batch_independence(model)


def test_shape_arithmetic_keeps_the_batch_as_a_symbol():
    assert sizes.mul(sizes.B, 4) == sizes.Sym(4)
    assert sizes.div(sizes.Sym(12), 3) == sizes.Sym(4) and sizes.div(sizes.Sym(4), sizes.B) == 4
    assert sizes.div(-7, 2) == -3  # ONNX truncates integer division
    with pytest.raises(sizes.Unfollowable):
        sizes.add(sizes.B, 1)
    assert math.prod([sizes.evaluate(d, 5) for d in (sizes.B, 3, sizes.Sym(2))]) == 150
