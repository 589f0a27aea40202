"""What a network measures, from its graph alone: parameters, FLOPs per example, structure signature, digest.

These replace the numbers a candidate's own process used to report (issue 25): the graph is what gets scored,
so what it stores and computes is what it is.

- Parameters (`count_params`): the elements of every stored tensor that enters the computation as data, that
  is the graph's initializers and its Constant nodes, minus
  - BatchNormalization's running mean and variance (statistics, not weights; torch counts them as buffers);
  - tensors used only to steer an operator: shapes, axes, indices, pads, slice bounds, repeats, split sizes
    (Reshape's target, Gather's indices, ...), and the inputs of Shape;
  - one-element Constant nodes, and Constant nodes whose elements are all equal: the literals the TorchScript
    exporter writes for each Python number (GELU's 0.5, an epsilon, GroupNorm's scale of ones); a one-element
    initializer (a regression head's bias) counts. checks.py caps the node
    count, so weights cannot hide as millions of literals. (torch.export's exporter stores literals as
    initializers, so they count there: a few elements per network);
  and with each Identity of a stored tensor counted as a tensor of its own: the TorchScript exporter stores
  equal-valued parameters once and aliases the copies through Identity nodes (at initialisation every
  LayerNorm weight is all ones), while a tensor used twice (weight tying) counts once, as in torch. A stored
  tensor that is the transpose of another counted one (the copy constant folding makes of a tied weight) counts
  once. So the count equals torch's `sum(p.numel() for p in model.parameters())` plus the float buffers the
  forward pass reads (RoPE tables, masks stored as buffers): the graph cannot tell a trained weight from a
  stored table, and a network that needs the table stores it. Export without constant folding
  (do_constant_folding=False): with it, the exporter fuses each BatchNormalization into the convolution before
  it and the BN scale disappears from the count (about 0.2-0.4% of a CNN's parameters).
- FLOPs per example (`count_flops`), from shapes.py's shapes with the batch size 1 (a graph task's: on its whole
  graph, one example, its node and edge counts bound), for the nodes whose value
  depends on the input (a subgraph of constants is folded by any runtime): `matmul` counts 2 x the
  multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul and Einsum (and of LSTM, GRU and RNN: per step and
  direction, gates x hidden x (input + hidden)), what torch's FLOP counter (and so the smoke run's count)
  counts; `total` adds cheap counts for the rest: one per output element of an elementwise operator or
  activation and of a bias add, the window size per output of a pooling, one per input element of a reduction
  or global pooling, 2 per element for BatchNormalization (scale and shift), 3 for Softmax (exp, sum, divide),
  5 for LayerNorm, InstanceNorm and GroupNorm (mean, variance, normalise, scale, shift), 4 per gate element and
  step of a recurrent layer; data movement (Reshape, Transpose, Gather, Concat, Slice, Pad, Cast...) counts
  nothing.
- The structure signature (`structure`) is a drop-in for agentarch/evaluation/novelty.py: a token per operator
  on the input's path, its name, its inputs' shapes (batch 1), its attributes (integers by value, floats only as
  being one) and its outputs' shapes, e.g. `Conv([1,3,32,32],[16,3,3,3];group=1;...)->[1,16,32,32]`, counted,
  under the same bounds as the smoke run's signature (agentarch/isolation/protocol.py). Its tokens are ONNX
  operators, not the dispatcher's, so a signature from a graph should be compared with signatures from graphs.
  Eval-mode exports drop Dropout, so two networks that differ only in dropout rates share a signature.
- The digest (`digest`): a hash of the graph's computation with every name and every weight's value left out
  (a Merkle hash over the nodes from the input to the output: operator, attributes, small constants' values,
  stored tensors' types and shapes, every computed tensor's shape (batch 1; a graph task's at its sizes), inputs in
  order, sorted for commutative operators). Two exports of one
  architecture share it whatever their module names or training; what the network computes on fixed inputs
  (a functional hash) is the clean evaluator's to measure.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import onnx
from onnx import AttributeProto, numpy_helper

from agentarch.evaluation.graphs import shapes, sizes
from agentarch.evaluation.graphs.checks import GraphRejected
from agentarch.evaluation.graphs.shapes import Info
from agentarch.evaluation.graphs.sizes import Unfollowable
from agentarch.isolation.protocol import MAX_COUNT, MAX_STRUCTURE_TOKENS, MAX_TOKEN_CHARS, MAX_TOKEN_COUNT

T = TypeVar("T")

STEERING: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,),
    "Split": (1,), "Pad": (1, 3), "CumSum": (1,), "Trilu": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2),
    "Gather": (1,), "BatchNormalization": (3, 4), "Shape": (0,), "Size": (0,), "LSTM": (4,), "GRU": (4,), "RNN": (4,),
    **{op: (1,) for op in shapes.REDUCE}, **{op: (1,) for op in ("ScatterElements", "ScatterND", "GatherElements",
    "GatherND")},
}  # fmt: skip
"""Input positions that steer an operator (shapes, axes, indices, bounds) or are statistics: not weights."""
MOVEMENT = {
    "Identity", "Cast", "CastLike", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split",
    "Slice", "Gather", "Expand", "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "Shape", "Size", "Constant",
    "ConstantOfShape", "Range",
}  # fmt: skip
PER_ELEMENT = {"BatchNormalization": 2, "Softmax": 3, "LogSoftmax": 3, "LayerNormalization": 5,
               "InstanceNormalization": 5, "GroupNormalization": 5}  # fmt: skip
COMMUTATIVE = {"Add", "Mul", "Max", "Min", "Sum", "Mean", "Equal", "And", "Or", "Xor"}
SMALL_CONSTANT = 64
"""A Constant node of at most this many elements is part of the structure (a literal, an axis list) in the
digest; a larger one is a stored table, known by its type and shape only."""


@dataclass(frozen=True)
class GraphMeasures:
    params: int
    flops: int
    """Per example: 2 x multiply-accumulates of the linear maps plus the cheap counts of everything else."""
    matmul_flops: int
    """Per example: 2 x multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul, Einsum and the recurrent
    layers' matrix products only."""
    structure: dict[str, int]
    digest: str


def refusing(function: Callable[..., T]) -> Callable[..., T]:
    """A measure of a graph that cannot be measured (hostile input, or one that bypassed the checks) raises
    GraphRejected, never another exception."""

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        except GraphRejected:
            raise
        except Unfollowable as err:
            raise GraphRejected(f"the graph's shapes cannot be worked out: {err}") from None
        except sizes.BROKEN as err:
            raise GraphRejected(f"the graph cannot be measured ({type(err).__name__}: {str(err)[:200]})") from None

    return wrapped


@refusing
def measure(model: onnx.ModelProto, sizes: dict[str, dict[int, int] | np.ndarray] | None = None) -> GraphMeasures:
    """All four measures of a graph that check_graph passed; GraphRejected if it cannot be measured, or if a count
    is beyond what any real network has (MAX_COUNT). `sizes` (a graph task's node and edge counts, interface.py)
    measures one run on the task's whole graph instead of one example: its FLOPs are a training step's; a graphs
    task's measure one graph of the training split's mean size, `batch` bound to its value."""
    infos = shapes.propagate(model, sizes)
    total, matmul = count_flops(model, infos)
    found = GraphMeasures(count_params(model), total, matmul, structure(model, infos), digest(model, infos))
    if max(found.params, found.flops) > MAX_COUNT:
        raise GraphRejected(
            f"the graph's counts ({found.params} parameters, {found.flops} FLOPs) are beyond any network"
        )
    return found


# -- parameters -----------------------------------------------------------------------------------------------


@refusing
def count_params(model: onnx.ModelProto) -> int:
    graph = model.graph
    stored = {tensor.name: math.prod(tensor.dims) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output and (size := _constant_size(node)) > 1:
            stored[node.output[0]] = size
        elif node.op_type == "Identity" and node.input[0] in stored:
            stored[node.output[0]] = stored[node.input[0]]  # an alias of an equal-valued parameter: one of its own
    # Walk back from the nodes that compute on the input: whatever reaches them as data (directly, or through
    # constant-only nodes such as a weight's Transpose) is a weight; what reaches them only to steer is not.
    live = {name for node in live_nodes(model) for name in node.output}
    live.update(value.name for value in graph.input)
    feeding: set[str] = set()
    for node in reversed(graph.node):
        outputs_live = any(name in live for name in node.output)
        if not outputs_live and not any(name in feeding for name in node.output):
            continue
        if node.op_type == "Identity" and node.input[0] in stored:
            continue  # the alias counts on its own; its source only through its own uses
        steering = STEERING.get(node.op_type, ())
        for position, name in enumerate(node.input):
            if name and name not in live and position not in steering:
                feeding.add(name)
    weights = {name for name in stored if name in feeding}
    weights -= _transposed_copies(graph, weights)
    return sum(stored[name] for name in weights)


def _constant_size(node: onnx.NodeProto) -> int:
    """How many numbers a Constant node stores: its element count, or 1 when all its elements are equal (a literal
    spread over a shape, such as the ones and zeros GroupNorm's export scales by)."""
    for attribute in node.attribute:
        if attribute.type == AttributeProto.TENSOR:
            size = math.prod(attribute.t.dims)
            if size > 1:
                values = numpy_helper.to_array(attribute.t)
                return 1 if values.size and np.all(values == values.flat[0]) else size
            return size
        if attribute.type in (AttributeProto.FLOATS, AttributeProto.INTS):
            values = list(attribute.floats) or list(attribute.ints)
            return 1 if len(set(values)) <= 1 else len(values)
    return 1


def _transposed_copies(graph: onnx.GraphProto, weights: set[str]) -> set[str]:
    """Initializers that are exactly the transpose of another counted one (constant folding's copy of a tied
    weight): each such pair counts once."""
    matrices = {
        t.name: t for t in graph.initializer if t.name in weights and len(t.dims) == 2 and t.dims[0] != t.dims[1]
    }
    by_shape: dict[tuple[int, int], list[str]] = {}
    for name, tensor in matrices.items():
        by_shape.setdefault(tuple(tensor.dims), []).append(name)
    copies: set[str] = set()
    for (rows, cols), names in by_shape.items():
        for name in names:
            for other in by_shape.get((cols, rows), []):
                if other in copies or name in copies or other <= name:
                    continue
                if np.array_equal(numpy_helper.to_array(matrices[name]).T, numpy_helper.to_array(matrices[other])):
                    copies.add(other)
    return copies


# -- FLOPs ----------------------------------------------------------------------------------------------------


def live_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes whose outputs depend on the input's values (not only on its shape) and reach an output of the graph.
    A node that reaches no output is dead: ONNX Runtime skips it and `digest` does not see it, so counting it would
    let a graph buy FLOPs, structure and a bigger training budget (agentarch/evaluation/budget.py) with work it never
    does (tests/security/test_budget_redteam.py)."""
    live = {value.name for value in model.graph.input}
    found = []
    for node in model.graph.node:
        if node.op_type in ("Shape", "Size"):
            continue
        if any(name in live for name in node.input):
            live.update(node.output)
            found.append(node)
    needed = {value.name for value in model.graph.output}
    reaching = []
    for node in reversed(model.graph.node):
        if any(name in needed for name in node.output):
            needed.update(name for name in node.input if name)
            reaching.append(id(node))
    kept = set(reaching)
    return [node for node in found if id(node) in kept]


@refusing
def count_flops(model: onnx.ModelProto, infos: dict[str, Info] | None = None) -> tuple[int, int]:
    """(total, matmul) FLOPs per example, as the module docstring defines them."""
    infos = infos if infos is not None else shapes.propagate(model)
    total = matmul = 0
    for node in live_nodes(model):
        dense, cheap = _node_flops(node, infos)
        matmul += dense
        total += dense + cheap
    return total, matmul


def _numel(info: Info) -> int:
    return info.numel(1)


def _at1(info: Info) -> list[int]:
    return [sizes.evaluate(d, 1) for d in info.dims]


def _node_flops(node: onnx.NodeProto, infos: dict[str, Info]) -> tuple[int, int]:
    op, attrs = node.op_type, shapes.attributes(node)
    ins = [infos[name] if name else None for name in node.input]
    out = infos[node.output[0]]
    if op == "MatMul":
        return 2 * _numel(out) * _at1(ins[0])[-1], 0
    if op == "Gemm":
        k = _at1(ins[0])[0 if attrs.get("transA", 0) else 1]
        return 2 * _numel(out) * k, _numel(out) if len(ins) > 2 and ins[2] is not None else 0
    if op == "Conv":
        w = _at1(ins[1])
        return 2 * _numel(out) * math.prod(w[1:]), _numel(out) if len(ins) > 2 and ins[2] is not None else 0
    if op == "ConvTranspose":
        w = _at1(ins[1])
        return 2 * _numel(ins[0]) * math.prod(w[1:]), _numel(out) if len(ins) > 2 and ins[2] is not None else 0
    if op == "Einsum":
        operands = [i for i in ins if i is not None]
        if len(operands) < 2:
            return 0, _numel(operands[0])
        terms, _ = shapes.einsum_terms(node, operands)
        letters: dict[str, int] = {}
        for term, info in zip(terms, operands):
            for letter, size in zip(term, _at1(info)):
                letters[letter] = max(letters.get(letter, 1), size)
        return 2 * math.prod(letters.values()) * (len(operands) - 1), 0
    if op in shapes.RECURRENT:
        y = _at1(out)
        seq, directions, hidden = (y[1], y[2], y[3]) if attrs.get("layout", 0) else (y[0], y[1], y[3])
        gates = shapes.RECURRENT[op] * hidden * seq * directions
        return 2 * gates * (_at1(ins[0])[-1] + hidden), 4 * gates
    if op in MOVEMENT or op in ("GatherElements", "GatherND"):
        return 0, 0
    if op in ("ScatterElements", "ScatterND"):  # one add (or max...) per message moved into its node
        return 0, _numel(ins[2])
    if op in ("MaxPool", "AveragePool"):
        return 0, _numel(out) * math.prod(attrs["kernel_shape"])
    if op in ("GlobalAveragePool", "GlobalMaxPool", "ArgMax", "ArgMin") or op in shapes.REDUCE:
        return 0, _numel(ins[0])
    return 0, PER_ELEMENT.get(op, 1) * _numel(out)


# -- structure signature --------------------------------------------------------------------------------------


@refusing
def structure(model: onnx.ModelProto, infos: dict[str, Info] | None = None) -> dict[str, int]:
    """The structure signature (the module docstring), bounded as agentarch/isolation/protocol.py requires."""
    infos = infos if infos is not None else shapes.propagate(model)
    tokens: Counter[str] = Counter()
    for node in live_nodes(model):
        if node.op_type == "Identity":
            continue
        args = ["[" + ",".join(map(str, _at1(infos[name]))) + "]" if name else "_" for name in node.input]
        attrs = [f"{a.name}={_attribute_text(a)}" for a in sorted(node.attribute, key=lambda a: a.name)]
        outs = "".join("[" + ",".join(map(str, _at1(infos[name]))) + "]" for name in node.output if name)
        tokens[f"{node.op_type}({','.join(args)}{';' + ';'.join(attrs) if attrs else ''})->{outs}"] += 1
    signature: dict[str, int] = {}
    for token, count in tokens.most_common(MAX_STRUCTURE_TOKENS):
        if len(token) > MAX_TOKEN_CHARS:  # its head, and a digest of the whole so long tokens stay apart
            token = token[: MAX_TOKEN_CHARS - 17] + "#" + hashlib.sha256(token.encode()).hexdigest()[:16]
        signature[token] = min(MAX_TOKEN_COUNT, count)
    return signature


def _attribute_text(attribute: AttributeProto) -> str:
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float):
        return "f"
    if isinstance(value, (list, tuple)):
        return ",".join("f" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, onnx.TensorProto):
        return f"t{value.data_type}{list(value.dims)}"
    return str(value)


# -- digest ---------------------------------------------------------------------------------------------------


def _hash(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


def _tensor_label(tensor: onnx.TensorProto, with_values: bool) -> str:
    values = ""
    if with_values and math.prod(tensor.dims) <= SMALL_CONSTANT:
        values = numpy_helper.to_array(tensor).tobytes().hex()
    return _hash("tensor", tensor.data_type, list(tensor.dims), values)


def _attribute_label(attribute: AttributeProto) -> str:
    if attribute.type == AttributeProto.TENSOR:
        return _tensor_label(attribute.t, with_values=True)
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, (list, tuple)):
        return repr([v if not isinstance(v, bytes) else v.decode("utf-8", "replace") for v in value])
    return repr(value)


@refusing
def digest(model: onnx.ModelProto, infos: dict[str, Info] | None = None) -> str:
    """The digest (the module docstring); `infos`, shapes.py's shapes of the graph (followed here if not given), sets
    each computed tensor's shape into its label: a stored integer (an Expand's or a Reshape's shape) is left out with
    the weights, yet it says how much its node computes, so without the shapes a smoke graph that expands its input
    4,096 times had the digest of its trained twin that does not, and the FLOPs that priced its training budget
    (budget.py) were not those of the network scored (tests/security/test_redteam_round5.py)."""
    infos = infos if infos is not None else shapes.propagate(model)
    graph = model.graph
    labels: dict[str, str] = {t.name: _tensor_label(t, with_values=False) for t in graph.initializer}
    for value in graph.input:
        if value.name not in labels:
            kind = value.type.tensor_type
            dims = ["B" if i == 0 else d.dim_value for i, d in enumerate(kind.shape.dim)]
            labels[value.name] = _hash("input", kind.elem_type, dims)
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in labels:
            labels[node.output[0]] = labels[node.input[0]]
            continue
        inputs = [labels.get(name, "") for name in node.input]
        if node.op_type in COMMUTATIVE:
            inputs = sorted(inputs)
        attrs = [(a.name, _attribute_label(a)) for a in node.attribute]
        base = _hash(node.domain, node.op_type, sorted(attrs), inputs)
        for k, name in enumerate(node.output):
            labels[name] = _hash(base, k, _at1(infos[name]) if name in infos else None)
    return _hash("graph", *[labels.get(value.name, "") for value in graph.output])
