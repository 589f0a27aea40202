"""A network as numbers for the performance predictor, from its ONNX graph alone: one encoding for any architecture.

A candidate rendered from a search space has its settings as features (agentarch/search/predictor.py); one an LLM
wrote has none, so the predictor used to see only its size and latency. As ONNX-Net argues, the exported graph is an
encoding every network has. `graph_features` turns the bytes of a graph into a fixed-length vector (FEATURES: the same
names, in the same order, for every graph), computed on the host from the protobuf: the graph is never run, and only
a graph the host's checks pass (checks.py: size cap, standard operators, no external data, no nested graphs) is
read at all. GraphRejected, with the checks' reason, for anything else.

Only nodes that compute on the input count (measures.live_nodes: not the shape arithmetic an export adds), and
never an Identity (the exporter aliases equal-valued weights through Identity nodes, which an untrained export has
and its trained twin has not), so the smoke stage's graph and the trained graph of one architecture (one
`measures.digest`) have the same features: the predictor learns from trained graphs and ranks smoke graphs.

- `op.<Op>`: nodes of each operator in OPS; `op.other` counts the rest;
- families: linear maps (convolutions, Gemm, MatMul and Einsum with a stored weight, recurrent layers),
  normalizations, activations, pooling; `residual_adds` (an Add of two computed tensors), `gates` (a Mul of two
  computed tensors) and `products` (a MatMul or Einsum of two computed tensors: attention);
- `depth`: the longest path from the input to an output, in computing nodes (data movement does not count);
  `linear_depth`: in linear maps only; `nodes`: all computing nodes;
- widths, from the stored weights' shapes (through Identity, Transpose and Cast of a stored tensor): each linear
  map's output channels or units, as their count, first, min, median, max and the mean and spread of log2;
- convolutions by kernel size (1, 3, 5 or more elements per spatial axis), depthwise and other grouped ones, strided;
- size: log10 of the parameters (measures.count_params), and, where shapes.py can follow the graph, of the FLOPs
  and matmul FLOPs per example (measures.count_flops), the largest activation and all activations per example;
- `hash.<i>`: an ONNX-Net-style text encoding: each computing node written as a word (its operator, kernel,
  stride and grouping) and each edge between computing nodes as "producer>consumer", the words hashed (sha256, the
  same in every process) into HASH_BUCKETS counts.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import Counter
from collections.abc import Iterable

import onnx

from agentarch.evaluation.graphs import measures, shapes
from agentarch.evaluation.graphs.checks import GraphRejected, check_graph
from agentarch.evaluation.graphs.sizes import BROKEN, Unfollowable

OPS = (
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "LSTM", "GRU", "RNN",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf",
    "Gelu", "Softplus", "Softsign", "Mish",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "Softmax", "LogSoftmax",
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Clip", "Where", "Max",
    "Min", "ReduceMean", "ReduceSum", "ReduceMax", "CumSum",
    "Reshape", "Flatten", "Transpose", "Concat", "Split", "Slice", "Gather", "Expand", "Tile", "Pad", "Squeeze",
    "Unsqueeze", "DepthToSpace", "SpaceToDepth", "Cast",
)  # fmt: skip
"""The operators counted one by one: what networks of the allowed operators (checks.ALLOWED_OPS) compute with."""
LINEAR = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", *shapes.RECURRENT}
NORMS = {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization"}
ACTIVATIONS = {
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu",
    "Softplus", "Softsign", "Mish",
}  # fmt: skip
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
HASH_BUCKETS = 32
MAX_FEATURE_BYTES = 512 * 2**20
"""The largest graph read for features: the largest the host reads back from a sandbox (scoring.MAX_GRAPH_BYTES)."""

SHAPE = (
    "nodes", "depth", "linear_depth", "linear", "norms", "activations", "pools", "residual_adds", "gates", "products",
    "width.count", "width.first", "width.min", "width.median", "width.max", "width.log2_mean", "width.log2_std",
    "conv.k1", "conv.k3", "conv.k5", "conv.depthwise", "conv.grouped", "conv.strided",
    "log_params", "log_flops", "log_matmul_flops", "log_activation_max", "log_activations",
)  # fmt: skip
WIDTH_STATISTICS = tuple(f"graph.{name}" for name in SHAPE if name.startswith("width.") and name != "width.count")
FEATURES = tuple(
    f"graph.{name}"
    for name in (*(f"op.{op}" for op in OPS), "op.other", *SHAPE, *(f"hash.{i}" for i in range(HASH_BUCKETS)))
)
"""Every feature's name, in order: what `graph_features` returns, a value for each (NaN where the shapes could not be
followed)."""


def graph_features(data: bytes, max_bytes: int = MAX_FEATURE_BYTES) -> dict[str, float]:
    """The features (module docstring) of the graph in `data`: every name of FEATURES, in order. GraphRejected, with
    the reason, for bytes the host's checks refuse (too large, not ONNX, operators outside the allowlist, ...) or a
    graph that cannot be measured; the graph is never run."""
    model = check_graph(data, max_bytes=max_bytes)
    try:
        return _features(model)
    except GraphRejected:
        raise
    except BROKEN as err:
        raise GraphRejected(f"the graph's features cannot be read ({type(err).__name__}: {str(err)[:200]})") from None


def _features(model: onnx.ModelProto) -> dict[str, float]:
    graph = model.graph
    live = measures.live_nodes(model)
    nodes = [n for n in live if n.op_type != "Identity"]
    computed = {value.name for value in graph.input} | {name for node in live for name in node.output}
    weights = _stored_shapes(graph)
    found = dict.fromkeys(FEATURES, 0.0)
    for node in nodes:
        key = f"graph.op.{node.op_type}" if node.op_type in OPS else "graph.op.other"
        found[key] += 1
    both = [node for node in nodes if sum(name in computed for name in node.input if name) >= 2]
    found.update(
        {
            "graph.nodes": float(len(nodes)),
            "graph.linear": float(sum(n.op_type in LINEAR and _is_map(n, weights) for n in nodes)),
            "graph.norms": float(sum(n.op_type in NORMS for n in nodes)),
            "graph.activations": float(sum(n.op_type in ACTIVATIONS for n in nodes)),
            "graph.pools": float(sum(n.op_type in POOLS for n in nodes)),
            "graph.residual_adds": float(sum(n.op_type == "Add" for n in both)),
            "graph.gates": float(sum(n.op_type == "Mul" for n in both)),
            "graph.products": float(sum(n.op_type in ("MatMul", "Einsum") for n in both)),
        }
    )
    found.update(_depths(graph, live, weights))
    found.update(_widths(nodes, weights))
    found.update(_kernels(nodes, weights))
    found.update(_sizes(model, nodes))
    for word in _words(live, computed):
        bucket = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % HASH_BUCKETS
        found[f"graph.hash.{bucket}"] += 1
    return found


def _stored_shapes(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    """The shape of every stored tensor by name, and of each Identity, Cast or Transpose of one (a weight the exporter
    aliased, cast or transposed), in graph order."""
    found = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}
    for node in graph.node:
        if not node.output:
            continue
        if node.op_type == "Constant":
            tensor = next((a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR), None)
            if tensor is not None:
                found[node.output[0]] = tuple(int(d) for d in tensor.dims)
        elif node.op_type in ("Identity", "Cast") and node.input and node.input[0] in found:
            found[node.output[0]] = found[node.input[0]]
        elif node.op_type == "Transpose" and node.input and node.input[0] in found:
            dims = found[node.input[0]]
            perm = shapes.attributes(node).get("perm") or list(reversed(range(len(dims))))
            found[node.output[0]] = tuple(dims[int(p)] for p in perm)
    return found


def _is_map(node: onnx.NodeProto, weights: dict[str, tuple[int, ...]]) -> bool:
    """A linear map with a stored weight (a MatMul or Einsum of two computed tensors is a product, not a layer)."""
    if node.op_type in ("MatMul", "Einsum"):
        return any(name in weights for name in node.input)
    return True


def _width(node: onnx.NodeProto, weights: dict[str, tuple[int, ...]]) -> int | None:
    """A linear map's output channels or units, from its weight's shape; None where the shape does not say."""
    attrs = shapes.attributes(node)
    op, ins = node.op_type, list(node.input)
    weight = weights.get(ins[1]) if len(ins) > 1 else None
    if op in shapes.RECURRENT:
        return int(attrs.get("hidden_size", 0)) or None
    if not weight or len(weight) < 2:
        return None
    if op == "Conv":
        return weight[0]
    if op == "ConvTranspose":
        return weight[1] * int(attrs.get("group", 1))
    if op == "Gemm":
        return weight[0] if attrs.get("transB", 0) else weight[1]
    if op == "MatMul":
        return weight[-1]
    return None


def _depths(
    graph: onnx.GraphProto, nodes: list[onnx.NodeProto], weights: dict[str, tuple[int, ...]]
) -> dict[str, float]:
    """The longest input-to-output path in computing nodes, and in linear maps; a node counts its inputs' depths only
    from earlier nodes (a graph's order is topological), so no graph can make this loop."""
    depth: dict[str, tuple[int, int]] = {value.name: (0, 0) for value in graph.input}
    for node in nodes:
        before = [depth[name] for name in node.input if name in depth]
        steps = max((d for d, _ in before), default=0) + (node.op_type not in measures.MOVEMENT)
        maps = max((m for _, m in before), default=0) + (node.op_type in LINEAR and _is_map(node, weights))
        for name in node.output:
            depth.setdefault(name, (steps, maps))
    ends = [depth[value.name] for value in graph.output if value.name in depth]
    return {
        "graph.depth": float(max((d for d, _ in ends), default=0)),
        "graph.linear_depth": float(max((m for _, m in ends), default=0)),
    }


def _widths(nodes: list[onnx.NodeProto], weights: dict[str, tuple[int, ...]]) -> dict[str, float]:
    widths = [w for n in nodes if n.op_type in LINEAR and (w := _width(n, weights)) and w > 0]
    if not widths:  # no layer to measure: the statistics do not apply (missing), the count is 0
        return dict.fromkeys(WIDTH_STATISTICS, math.nan)
    logs = [math.log2(w) for w in widths]
    return {
        "graph.width.count": float(len(widths)),
        "graph.width.first": float(widths[0]),
        "graph.width.min": float(min(widths)),
        "graph.width.median": float(statistics.median(widths)),
        "graph.width.max": float(max(widths)),
        "graph.width.log2_mean": statistics.fmean(logs),
        "graph.width.log2_std": statistics.pstdev(logs),
    }


def _kernels(nodes: list[onnx.NodeProto], weights: dict[str, tuple[int, ...]]) -> dict[str, float]:
    found: Counter[str] = Counter()
    for node in nodes:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
            continue
        attrs, weight = shapes.attributes(node), weights.get(node.input[1]) or ()
        kernel = list(attrs.get("kernel_shape") or weight[2:]) or [1]
        size = max(int(k) for k in kernel)
        found["graph.conv.k1" if size <= 1 else "graph.conv.k3" if size <= 3 else "graph.conv.k5"] += 1
        group = int(attrs.get("group", 1))
        if group > 1:
            found["graph.conv.depthwise" if len(weight) > 1 and weight[1] == 1 else "graph.conv.grouped"] += 1
        if any(int(s) > 1 for s in attrs.get("strides") or ()):
            found["graph.conv.strided"] += 1
    return {key: float(count) for key, count in found.items()}


def _sizes(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> dict[str, float]:
    """Parameters always; FLOPs and activation sizes where shapes.py can follow every node (NaN otherwise: missing,
    as the predictor takes a feature a candidate lacks)."""
    found = {"graph.log_params": math.log10(measures.count_params(model) + 1)}
    try:
        infos = shapes.propagate(model)
        total, matmul = measures.count_flops(model, infos)
        sizes = [infos[name].numel(1) for node in nodes for name in node.output if name in infos]
    except (Unfollowable, GraphRejected, *BROKEN):
        nan = math.nan
        return {**found, **dict.fromkeys(("graph.log_flops", "graph.log_matmul_flops"), nan),
                "graph.log_activation_max": nan, "graph.log_activations": nan}  # fmt: skip
    return {
        **found,
        "graph.log_flops": math.log10(total + 1),
        "graph.log_matmul_flops": math.log10(matmul + 1),
        "graph.log_activation_max": math.log10(max(sizes, default=0) + 1),
        "graph.log_activations": math.log10(sum(sizes) + 1),
    }


def _words(live: list[onnx.NodeProto], computed: set[str]) -> Iterable[str]:
    """The graph as text, ONNX-Net style: a word per computing node (operator, kernel, stride, grouping) and one per
    edge between two computing nodes ("producer>consumer"), an Identity passing its producer on."""
    made: dict[str, str] = {}
    for node in live:
        if node.op_type == "Identity":
            if node.input and node.input[0] in made and node.output:
                made[node.output[0]] = made[node.input[0]]
            continue
        attrs = shapes.attributes(node)
        word = node.op_type
        if "kernel_shape" in attrs:
            word += "/k" + "x".join(str(int(k)) for k in attrs["kernel_shape"])
        if any(int(s) > 1 for s in attrs.get("strides") or ()):
            word += "/s"
        if int(attrs.get("group", 1)) > 1:
            word += "/g"
        yield word
        for name in node.input:
            if name in made:
                yield f"{made[name]}>{node.op_type}"
        for name in node.output:
            if name in computed:
                made[name] = node.op_type
