"""A network as numbers for the performance predictor, from its ONNX graph alone: one encoding for any architecture.

A network of graphs (node classification's forward(x, edge_index), graph classification's and batch) is read as
one too: its input names claim its interface (interface.claimed_kind), which the checks then hold it to, with the
scatters and gathers of message passing allowed as for its task (interface.NODE_EXTRA_OPS). Its node and edge
counts are symbolic, so it is measured on a fixed reference graph rather than the task's (the smoke stage's host
side reads the features without the task, and a size per node compares across tasks of any graph size).

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
  for a network of graphs per node of a reference graph (interface.reference_sizes), with what each further edge
  adds (`mp.log_flops_per_edge`, `mp.log_activations_per_edge`);
- message passing (`mp.*`, `_message_passing`), for a network of graphs: its aggregations along the edges by what
  they reduce with (sum, mean, max), attention over the edges, degree normalisations, messages gathered, layers,
  readouts by `batch` (sum, mean, max); 0 for a network of examples;
- `hash.<i>`: an ONNX-Net-style text encoding: each computing node written as a word (its operator, kernel,
  stride and grouping) and each edge between computing nodes as "producer>consumer", the words hashed (sha256, the
  same in every process) into HASH_BUCKETS counts.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable

import onnx
from google.protobuf.message import DecodeError

from agentarch.evaluation.graphs import interface, measures, shapes
from agentarch.evaluation.graphs.checks import GraphRejected, check_graph
from agentarch.evaluation.graphs.interface import Interface
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
    "Unsqueeze", "DepthToSpace", "SpaceToDepth", "Cast", "ScatterElements", "ScatterND", "GatherElements", "GatherND",
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
    "mp.layers", "mp.aggregations", "mp.sum", "mp.mean", "mp.max", "mp.attention", "mp.degree_norms", "mp.messages",
    "mp.readouts", "mp.readout_sum", "mp.readout_mean", "mp.readout_max", "mp.log_flops_per_edge",
    "mp.log_activations_per_edge",
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
    ports = _claimed(data, max_bytes)
    extra = interface.NODE_EXTRA_OPS if ports else frozenset()
    model = check_graph(data, max_bytes=max_bytes, interface=ports, extra_ops=extra)
    try:
        return _features(model, ports)
    except GraphRejected:
        raise
    except BROKEN as err:
        raise GraphRejected(f"the graph's features cannot be read ({type(err).__name__}: {str(err)[:200]})") from None


def _claimed(data: bytes, max_bytes: int) -> Interface | None:
    """The interface of a kind of graphs that the graph's input names claim (interface.claimed_kind), its feature and
    class counts read from its own x and output; None for a network of examples, or for bytes check_graph will refuse
    anyway (with its own message). check_graph then holds the graph to the claim, so a graph is read as a network of
    graphs (with its scatters and gathers allowed) only where it has exactly that interface."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) > max_bytes:
        return None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(bytes(data))
    except (DecodeError, ValueError, RuntimeError):
        return None
    stored = {t.name for t in model.graph.initializer}
    inputs = {value.name: value for value in model.graph.input if value.name not in stored}
    kind = interface.claimed_kind(list(inputs))
    if kind is None or "x" not in inputs or len(model.graph.output) != 1:
        return None
    return interface.ports(kind, _axis(inputs["x"], 1), _axis(model.graph.output[0], 1))


def _axis(value: onnx.ValueInfoProto, axis: int) -> int:
    """A fixed axis of an input or output (0 where it has none: the interface check then refuses the graph)."""
    dims = value.type.tensor_type.shape.dim
    return int(dims[axis].dim_value) if len(dims) > axis else 0


def _features(model: onnx.ModelProto, ports: Interface | None = None) -> dict[str, float]:
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
    kind = None if ports is None else "graphs" if "batch" in ports.names else "graph"
    found.update(_sizes(model, nodes, kind))
    found.update(_message_passing(model, live, weights))
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


def _sizes(model: onnx.ModelProto, nodes: list[onnx.NodeProto], kind: str | None) -> dict[str, float]:
    """Parameters always; FLOPs and activation sizes where shapes.py can follow every node (NaN otherwise: missing,
    as the predictor takes a feature a candidate lacks): per example, or for a network of graphs (`kind`) per node
    of the reference graph (interface.REFERENCE_NODES nodes, REFERENCE_EDGES edges, one graph), and what each
    further edge adds (the reference graph with twice the edges, less the reference graph, per edge added: the cost
    of one message), so the figures compare across tasks of any graph size and no task is needed to read them."""
    found = {"graph.log_params": math.log10(measures.count_params(model) + 1)}
    nan = math.nan
    try:
        if kind is None:
            total, matmul, largest, volume = _counts(model, nodes, None)
            per_node, per_edge = 1, None
        else:
            total, matmul, largest, volume = _counts(model, nodes, interface.reference_sizes(kind))
            wider = _counts(model, nodes, interface.reference_sizes(kind, 2 * interface.REFERENCE_EDGES))
            per_node, per_edge = interface.REFERENCE_NODES, (wider[0] - total, wider[3] - volume)
    except (Unfollowable, GraphRejected, *BROKEN):
        return {**found, **dict.fromkeys(("graph.log_flops", "graph.log_matmul_flops"), nan),
                "graph.log_activation_max": nan, "graph.log_activations": nan,
                "graph.mp.log_flops_per_edge": nan if kind else 0.0,
                "graph.mp.log_activations_per_edge": nan if kind else 0.0}  # fmt: skip
    if per_edge is not None:
        found["graph.mp.log_flops_per_edge"] = math.log10(max(per_edge[0], 0) / interface.REFERENCE_EDGES + 1)
        found["graph.mp.log_activations_per_edge"] = math.log10(max(per_edge[1], 0) / interface.REFERENCE_EDGES + 1)
    return {
        **found,
        "graph.log_flops": math.log10(total / per_node + 1),
        "graph.log_matmul_flops": math.log10(matmul / per_node + 1),
        "graph.log_activation_max": math.log10(largest / per_node + 1),
        "graph.log_activations": math.log10(volume / per_node + 1),
    }


def _counts(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], sizes: interface.Bound | None
) -> tuple[int, int, int, int]:
    """FLOPs, matmul FLOPs, the largest activation and all activations' elements, per example (`sizes` None) or on
    the graph `sizes` binds."""
    infos = shapes.propagate(model, sizes)
    total, matmul = measures.count_flops(model, infos)
    elements = [infos[name].numel(1) for node in nodes for name in node.output if name in infos]
    return total, matmul, max(elements, default=0), sum(elements)


SCATTERS = {"ScatterElements", "ScatterND"}
GATHERS = {"Gather", "GatherElements", "GatherND"}
PASSING = measures.MOVEMENT | {"Gather", "GatherElements", "GatherND"}
"""What a tensor passes through unchanged in value (layout, casts, gathers) when the message-passing rules follow it."""


def _message_passing(
    model: onnx.ModelProto, live: list[onnx.NodeProto], weights: dict[str, tuple[int, ...]]
) -> dict[str, float]:
    """What a network of graphs does between nodes, read from which input each tensor's value comes from (x: node
    features; edge_index and batch: structure). A scatter (ScatterElements, ScatterND: index_add_, scatter_reduce,
    index_put) of node features is an aggregation (`mp.aggregations`) where its indices come from the edges, a readout
    (`mp.readouts`) where they come from `batch` only; one of structure alone (a degree, a graph's node count) is
    neither. Aggregations and readouts by what they reduce with: a max (or min) scatter is `max` (a max whose result
    is subtracted before an Exp is the softmax's stabiliser, not an aggregation of its own); a sum scatter is `mean`
    where its result is divided or scaled by structure after it (a count, a degree), else `sum`; a sum of Exp
    outputs along the edges is an edge softmax (`mp.attention`, GAT). `mp.degree_norms`: a product or quotient of
    features by structure from the edges (GCN's normalisation, a mean's division); `mp.messages`: gathers of features
    along the edges (x[src]); `mp.layers`: the most aggregations on one path from the input to the output, those with
    no linear map between them counted once (an attention layer's softmax and its messages are one step, as is a
    mean's sum and count). A network of examples has none of them: every count 0."""
    stored = {t.name for t in model.graph.initializer}
    origins: dict[str, frozenset[str]] = {
        v.name: frozenset({v.name}) for v in model.graph.input if v.name not in stored
    }
    producers: dict[str, onnx.NodeProto] = {}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in live:
        came = frozenset().union(*(origins.get(name, frozenset()) for name in node.input if name))
        for name in node.output:
            origins[name], producers[name] = came, node
        for name in node.input:
            users.setdefault(name, []).append(node)

    def features(name: str) -> bool:
        return "x" in origins.get(name, ())

    def structure(name: str) -> bool:
        return bool(origins.get(name)) and not features(name)

    scaled = _downstream(
        live,
        users,
        {"Div", "Mul"},
        measures.MOVEMENT,
        lambda user, read: any(structure(other) for other in user.input if other and other != read),
    )
    softmaxed = _downstream(live, users, {"Exp"}, PASSING | {"Sub", "Neg"}, lambda user, read: True)
    source: dict[str, str] = {}
    for node in live:
        moved = node.op_type in measures.MOVEMENT and node.input
        for name in node.output:
            source[name] = source.get(node.input[0], node.input[0]) if moved else name

    def from_exp(name: str) -> bool:
        first = source.get(name, name)
        return first in producers and producers[first].op_type == "Exp"

    found: Counter[str] = Counter()
    steps: set[int] = set()
    for node in live:
        ins = list(node.input)
        if node.op_type in GATHERS and len(ins) > 1 and features(ins[0]) and "edge_index" in origins.get(ins[1], ()):
            found["graph.mp.messages"] += 1
        if node.op_type in ("Mul", "Div") and len(ins) == 2:
            if any(features(a) and structure(b) and "edge_index" in origins[b] for a, b in (ins, ins[::-1])):
                found["graph.mp.degree_norms"] += 1
        if node.op_type not in SCATTERS or len(ins) < 3 or not (features(ins[0]) or features(ins[2])):
            continue
        reduction = shapes.attributes(node).get("reduction", b"none")
        reduction = reduction.decode() if isinstance(reduction, bytes) else str(reduction)
        indices, out = origins.get(ins[1], frozenset()), node.output[0]
        if "edge_index" in indices:
            found["graph.mp.aggregations"] += 1
            steps.add(id(node))
            if reduction == "add" and from_exp(ins[2]):
                found["graph.mp.attention"] += 1
            elif reduction in ("max", "min"):
                found["graph.mp.max"] += not softmaxed.get(out, False)
            elif reduction == "add":
                found["graph.mp.mean" if scaled.get(out, False) else "graph.mp.sum"] += 1
        elif "batch" in indices:
            found["graph.mp.readouts"] += 1
            if reduction in ("max", "min"):
                found["graph.mp.readout_max"] += 1
            elif reduction == "add":
                found["graph.mp.readout_mean" if scaled.get(out, False) else "graph.mp.readout_sum"] += 1
    found["graph.mp.layers"] = _message_layers(model.graph, live, weights, steps)
    return {key: float(value) for key, value in found.items()}


def _downstream(
    live: list[onnx.NodeProto],
    users: dict[str, list[onnx.NodeProto]],
    targets: set[str],
    through: set[str],
    hit: Callable[[onnx.NodeProto, str], bool],
) -> dict[str, bool]:
    """For each tensor a node makes, whether a node of `targets` that `hit` accepts (given the name it reads) reads
    it through nodes of `through` only. One pass over the graph backwards (a node's flag is its outputs' flags, worked
    out before it): a walk from every scatter instead costs scatters x chain: 1,000 scatters into one chain of 1,000
    Identity nodes held the host 5 s, so 30,000 and 30,000 (within the checks' 100,000 nodes) over an hour
    (tests/security/test_redteam_round5.py). A graph out of order (checks.py refuses one) gets False, never a loop."""
    found: dict[str, bool] = {}
    passes: dict[int, bool] = {}
    for node in reversed(live):
        for name in node.output:
            found[name] = any(
                hit(user, name) if user.op_type in targets else user.op_type in through and passes.get(id(user), False)
                for user in users.get(name, [])
            )
        passes[id(node)] = any(found[name] for name in node.output)
    return found


def _message_layers(
    graph: onnx.GraphProto, live: list[onnx.NodeProto], weights: dict[str, tuple[int, ...]], steps: set[int]
) -> int:
    """The most aggregations (`steps`, by node id) on one input-to-output path, consecutive ones with no linear map
    between them counted once: each tensor carries (aggregations so far, whether one came after the last linear
    map), in graph order (topological), so no graph can make this loop."""
    state: dict[str, tuple[int, bool]] = {}
    for node in live:
        count, open_ = max((state.get(name, (0, False)) for name in node.input if name), default=(0, False))
        if id(node) in steps:
            count, open_ = count + (not open_), True
        elif node.op_type in LINEAR and _is_map(node, weights):
            open_ = False
        for name in node.output:
            state[name] = (count, open_)
    return max((state.get(value.name, (0, False))[0] for value in graph.output), default=0)


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
