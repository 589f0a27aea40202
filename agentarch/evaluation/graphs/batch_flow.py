"""Prove, from the graph alone, that each example's output depends on that example only.

A network that mixes the entries of a batch can score what it should not: normalising a test batch with its own
statistics, or reading the other test examples, lifts a score without learning anything (issue 25). As the seed
paper "Architectural Backdoors for Within-Batch Data Stealing" does, this module follows the batch axis through
the graph, an information-flow analysis. Every tensor is one of:

- const: independent of the examples' values and of the batch size (weights, constants, the fixed dimensions of
  a shape);
- size: depends on the batch size but on no example's value (Shape(x)[0], and arithmetic on it); it may size a
  Reshape, Expand or ConstantOfShape, and nothing else: as data, the batch size is a value every example sees;
- data(axis, inner): slice b along `axis` depends on example b alone. The axis holds `c * B` entries laid out as
  (outer, B, inner): an export that folds the heads into the batch (B*h) has inner = h. A constant expanded to
  the batch (Expand, Tile, ConstantOfShape sized by Shape(x)[0]) is data too, the same for every example, laid
  out with outer 1.

Each allowed operator has a rule that either carries the batch axis to its output or refuses the graph with a
`GraphRejected` naming the node and what it does, such as "the ReduceMean node '/ReduceMean' reduces over axis 0,
the batch axis". The rules are conservative: an operator or a use of one that the module cannot prove safe
refuses, whatever it would have computed. What mixes, by rule: a reduction, softmax, normalization, cumulative
sum or Trilu mask along the batch axis; BatchNormalization in training mode; a MatMul, Gemm or Einsum that
contracts the batch axis or pairs two examples' axes; a convolution or pooling over any axis but 0 while it
carries examples; Gather, Slice, Split, Concat, Pad or Tile along the batch axis; a Reshape or Flatten that folds
the batch axis into another (a leading 0 or -1, or the batch size taken from Shape, keeps it, as torch exports
x.flatten(1) and x.view(x.size(0), -1)); a constant that varies along the batch axis (an example's output would
depend on its place in the batch); the batch size used as a value.

The graph's output must carry the batch on axis 0, one row per example, in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from agentarch.evaluation.graphs import shapes, sizes
from agentarch.evaluation.graphs.checks import GraphRejected
from agentarch.evaluation.graphs.shapes import Info, attributes, describe
from agentarch.evaluation.graphs.sizes import Sym, Unfollowable, normalize

HINT = (
    "each example's output must depend on that example alone: compute statistics over an example's own axes (or "
    "use running statistics, BatchNorm in eval mode), and never reduce, sort, index or reshape across the batch axis"
)


@dataclass(frozen=True)
class Flow:
    kind: str  # "const", "size" or "data"
    axis: int = -1
    inner: int = 1


CONST, SIZE = Flow("const"), Flow("size")
ELEMENTWISE = shapes.BROADCAST | {
    "Abs", "Ceil", "Celu", "Cos", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity",
    "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid",
    "Sign", "Sin", "Softplus", "Softsign", "Sqrt", "Tanh", "ThresholdedRelu", "Cast", "Clip",
}  # fmt: skip
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Conv", "ConvTranspose", "DepthToSpace",
         "SpaceToDepth", "InstanceNormalization", "GroupNormalization", "BatchNormalization"}  # fmt: skip
SIZED = {"Expand", "ConstantOfShape", "Tile"}


class Refused(Exception):
    """A rule's refusal: the reason, completed with the node's name by `prove_batch_independence`."""


def prove_batch_independence(model: onnx.ModelProto) -> None:
    """Return if no operator of `model` (a graph check_graph passed) lets one example's output depend on another
    example of its batch; else raise GraphRejected naming the first node that mixes, or that cannot be proved not
    to, and why."""
    graph = model.graph
    infos: dict[str, Info] = {}
    flows: dict[str, Flow] = {}
    for tensor in graph.initializer:
        infos[tensor.name], flows[tensor.name] = shapes.tensor_info(tensor), CONST
    for value in graph.input:
        if value.name not in flows:
            try:
                infos[value.name] = shapes.input_info(value)
            except Unfollowable as err:
                raise GraphRejected(f"the batch-independence proof cannot start: {err}") from None
            flows[value.name] = Flow("data", 0, 1)
    for index, node in enumerate(graph.node):
        if any(name and name not in flows for name in node.input):
            raise GraphRejected(f"{describe(node, index)} reads a tensor no earlier node makes")
        ins = [flows[name] if name else None for name in node.input]
        in_infos = [infos[name] if name else None for name in node.input]
        outs: list[Info] | None
        try:
            outs, problem = shapes.infer(node, in_infos), None
        except Unfollowable as err:
            outs, problem = None, str(err)
        except sizes.BROKEN as err:
            outs, problem = None, f"its inputs do not fit ({type(err).__name__}: {err})"
        try:
            result = rule(node, ins, in_infos, outs, problem)
            if outs is None:  # a rule that needed no shapes still cannot let the analysis go on without them
                raise Refused(f"the analysis cannot follow it: {problem}")
            for flow, info in zip(result, outs):
                _check_layout(flow, info)
        except Refused as err:
            raise GraphRejected(f"{describe(node, index)} {err}; {HINT}") from None
        except Unfollowable as err:
            raise GraphRejected(f"{describe(node, index)}: the analysis cannot follow it: {err}; {HINT}") from None
        except sizes.BROKEN as err:
            raise GraphRejected(
                f"{describe(node, index)} cannot be followed by the batch-independence proof ({type(err).__name__}); "
                f"{HINT}"
            ) from None
        for name, flow, info in zip(node.output, result, outs):
            if name:
                flows[name], infos[name] = flow, info
    for output in graph.output:
        flow, info = flows.get(output.name, CONST), infos.get(output.name)
        if flow.kind != "data" or flow.axis != 0 or (info is not None and info.dims[0] != sizes.B):
            raise GraphRejected(
                f"the graph's output {output.name!r} does not hold one row per example on axis 0 in batch order; {HINT}"
            )
        if flow.inner != 1:
            raise GraphRejected(f"the graph's output {output.name!r} folds the batch axis with another; {HINT}")


def _check_layout(flow: Flow, info: Info) -> None:
    """The invariant of a data tensor: its batch axis, and that axis only, is sized by B (to the first power)."""
    symbolic = [i for i, d in enumerate(info.dims) if isinstance(d, Sym)]
    if flow.kind != "data":
        if symbolic:
            raise Refused("makes a tensor sized by the batch that does not come from the examples")
        return
    if symbolic != [flow.axis] or info.dims[flow.axis].power != 1:
        raise Refused("leaves the batch axis where the analysis cannot follow it")
    if info.dims[flow.axis].coef % flow.inner:
        raise Refused("leaves the batch axis in a layout the analysis cannot follow")


def _need(outs: list[Info] | None, problem: str | None) -> list[Info]:
    if outs is None:
        raise Refused(f"the analysis cannot follow it: {problem}")
    return outs


def rule(node: onnx.NodeProto, ins: list[Flow | None], infos: list[Info | None], outs, problem) -> list[Flow]:  # noqa: C901
    """The flows of a node's outputs from its inputs' flows, or Refused."""
    op, attrs = node.op_type, attributes(node)
    count = len(node.output)
    data = [(i, f) for i, f in enumerate(ins) if f is not None and f.kind == "data"]
    if op in ("Shape", "Size"):
        value = _need(outs, problem)[0].value
        return [SIZE if value is None or value.dtype == object else CONST]
    if not data:
        outs = _need(outs, problem)
        symbolic = [i for i, d in enumerate(outs[0].dims) if isinstance(d, Sym)]
        if symbolic and op in SIZED:
            if op != "ConstantOfShape" and ins[0].kind == "size":
                raise Refused("spreads the batch size as a value over the examples")
            sym = outs[0].dims[symbolic[0]]
            return [Flow("data", symbolic[0], sym.coef if isinstance(sym, Sym) else 1)]
        if symbolic:
            raise Refused("makes a tensor sized by the batch that does not come from the examples (it numbers them)")
        tainted = any(f is not None and f.kind == "size" for f in ins)
        return [_by_value(info, tainted) for info in outs]
    x, first = ins[0], infos[0]
    if op in ELEMENTWISE:
        return [_broadcast(op, ins, infos, _need(outs, problem)[0].rank)] * count
    if op == "CastLike":
        return [x]
    if op in ("Range", "ConstantOfShape"):
        raise Refused("takes its size from the examples' values")
    if x is None or x.kind != "data":
        if op == "Gather" and ins[1].kind == "data":  # an embedding: a fixed table looked up by each example's ids
            _const(ins[0], "its table")
            return [Flow("data", normalize(attrs.get("axis", 0), first.rank) + ins[1].axis, ins[1].inner)]
        if op == "MatMul":
            return [_matmul(ins, infos, _need(outs, problem)[0].rank)]
        if op == "Gemm":
            return [_gemm(ins, infos, attrs)]
        if op == "Einsum":
            return [_einsum(node, ins, infos)]
        raise Refused("takes example data in an input where the analysis cannot prove it safe")
    a = x.axis
    if op in shapes.RECURRENT:
        return _recurrent(attrs, ins, count)
    for f in ins[1:]:
        if f is not None and f.kind == "data" and op not in ("MatMul", "Gemm", "Einsum", "Concat"):
            raise Refused("combines two tensors that carry examples in a way that mixes them")
    if op in POOLS:
        if op == "BatchNormalization" and (attrs.get("training_mode", 0) or count > 1):
            raise Refused(
                "is in training mode: BatchNormalization normalises with the statistics of the batch, so it mixes "
                "the examples of a batch (export the network in eval mode, so it uses its running statistics)"
            )
        if a != 0:
            raise Refused(f"runs over the axes of a tensor whose axis {a} carries the examples (it mixes them)")
        for f in ins[1:]:
            _const(f, "its weights")
        return [x] * count
    if op == "LayerNormalization":
        axis = normalize(attrs.get("axis", -1), first.rank)
        if a >= axis:
            raise Refused(f"normalises over axes {axis}..{first.rank - 1}, which include the batch axis ({a})")
        for f in ins[1:]:
            _const(f, "its scale and bias")
        return [x] * count
    if op in ("Softmax", "LogSoftmax", "CumSum", "ArgMax", "ArgMin") or op in shapes.REDUCE:
        return [_along(op, node, attrs, ins, infos, a, x)]
    if op == "Trilu":
        if a >= first.rank - 2:
            raise Refused("masks by position along the batch axis (an example's output would depend on its place)")
        _const(ins[1] if len(ins) > 1 else None, "its diagonal")
        return [x]
    if op == "MatMul":
        return [_matmul(ins, infos, _need(outs, problem)[0].rank)]
    if op == "Gemm":
        return [_gemm(ins, infos, attrs)]
    if op == "Einsum":
        return [_einsum(node, ins, infos)]
    if op == "Transpose":
        perm = list(attrs.get("perm", range(first.rank - 1, -1, -1)))
        return [Flow("data", perm.index(a), x.inner)]
    if op in ("Reshape", "Flatten"):
        if op == "Reshape" and ins[1].kind == "data":
            raise Refused("takes its target shape from the examples' values")
        return [_reshape(x, first, _need(outs, problem)[0])]
    if op == "Squeeze":
        _const(ins[1] if len(ins) > 1 else None, "its axes")
        axes = shapes.axes_of(node, infos, attrs, 1)
        if axes is None:
            raise Refused("has no axes, so it would also remove the batch axis of a batch of one; name the axes")
        axes = {normalize(v, first.rank) for v in axes}
        if a in axes:
            raise Refused("removes the batch axis")
        return [Flow("data", a - sum(v < a for v in axes), x.inner)]
    if op == "Unsqueeze":
        _const(ins[1] if len(ins) > 1 else None, "its axes")
        rank = _need(outs, problem)[0].rank
        added = {normalize(v, rank) for v in shapes.axes_of(node, infos, attrs, 1)}
        kept = [i for i in range(rank) if i not in added]
        return [Flow("data", kept[a], x.inner)]
    if op == "Concat":
        return [_concat(ins, infos, attrs)]
    if op == "Split":
        if normalize(attrs.get("axis", 0), first.rank) == a:
            raise Refused("splits along the batch axis (it separates the examples of a batch)")
        _const(ins[1] if len(ins) > 1 else None, "its sizes")
        return [x] * count
    if op == "Slice":
        return [_slice(ins, infos, a, x)]
    if op == "Gather":
        axis = normalize(attrs.get("axis", 0), first.rank)
        _const(ins[1], "its indices")
        if axis == a:
            raise Refused("picks entries along the batch axis (it selects examples by index)")
        return [Flow("data", a if axis > a else a - 1 + infos[1].rank, x.inner)]
    if op == "Expand":
        _size_or_const(ins[1], "its shape")
        return [Flow("data", a + _need(outs, problem)[0].rank - first.rank, x.inner)]
    if op == "Tile":
        _const(ins[1], "its repeats")
        if shapes.int_values(infos[1], "repeats")[a] != 1:
            raise Refused("repeats along the batch axis")
        return [x]
    if op == "Pad":
        return [_pad(node, ins, infos, attrs, a, x)]
    raise Refused("is an operator the batch-flow analysis has no rule for")


def _by_value(info: Info, tainted: bool) -> Flow:
    if info.value is not None:
        return SIZE if info.value.dtype == object else CONST
    return SIZE if tainted else CONST


def _const(flow: Flow | None, what: str) -> None:
    if flow is not None and flow.kind != "const":
        kind = "the batch size" if flow.kind == "size" else "the examples' values"
        raise Refused(f"takes {what} from {kind}")


def _size_or_const(flow: Flow | None, what: str) -> None:
    if flow is not None and flow.kind == "data":
        raise Refused(f"takes {what} from the examples' values")


def _broadcast(op: str, ins: list[Flow | None], infos: list[Info | None], rank: int) -> Flow:
    axis, inner = None, None
    for flow, info in zip(ins, infos):
        if flow is None:
            continue
        if flow.kind == "size":
            raise Refused("computes with the batch size as a value (every example's output would depend on it)")
        if flow.kind == "data":
            aligned = flow.axis + rank - info.rank
            if axis is not None and axis != aligned:
                raise Refused("combines values of different examples (their batch axes do not line up)")
            axis = aligned
            if inner is not None and inner != flow.inner:
                raise Refused("combines two layouts of the batch axis")
            inner = flow.inner
    for flow, info in zip(ins, infos):
        if flow is not None and flow.kind == "const":
            position = axis - (rank - info.rank)
            if position >= 0 and info.dims[position] != 1:
                raise Refused(
                    "applies a constant that varies along the batch axis (an example's output would depend on its "
                    "place in the batch)"
                )
    return Flow("data", axis, inner)


def _along(op, node, attrs, ins, infos, a: int, x: Flow) -> Flow:
    """Softmax, LogSoftmax, CumSum, ArgMax, ArgMin and the reductions: refused along the batch axis."""
    rank = infos[0].rank
    keep = True
    if op in ("Softmax", "LogSoftmax"):
        axes = [attrs.get("axis", -1)]
    elif op == "CumSum":
        _const(ins[1], "its axis")
        axes = shapes.int_values(infos[1], "axis")
    elif op in ("ArgMax", "ArgMin"):
        axes, keep = [attrs.get("axis", 0)], bool(attrs.get("keepdims", 1))
    else:
        _const(ins[1] if len(ins) > 1 else None, "its axes")
        axes = shapes.axes_of(node, infos, attrs, 1)
        keep = bool(attrs.get("keepdims", 1))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            raise Refused("reduces over every axis, the batch axis included (it mixes the examples of a batch)")
    axes = [normalize(v, rank) for v in axes]
    if a in axes:
        what = {"Softmax": "normalises", "LogSoftmax": "normalises", "CumSum": "sums cumulatively"}.get(op, "reduces")
        raise Refused(f"{what} over axis {a}, the batch axis: it mixes the examples of a batch")
    return Flow("data", a if keep else a - sum(v < a for v in axes), x.inner)


def _matmul(ins: list[Flow | None], infos: list[Info | None], rank: int) -> Flow:
    """numpy's matmul: the batch may ride in the broadcast (leading) axes of either operand, or in the rows of the
    left one or the columns of the right one while the other operand is constant; never in a contracted axis."""
    (fa, fb), (ia, ib) = ins[:2], infos[:2]
    full = max(ia.rank, ib.rank, 2)  # the rank with 1-D operands promoted to matrices
    out_axis, inner = None, None
    for flow, info, other, contracted, free in ((fa, ia, fb, -1, -2), (fb, ib, fa, -2, -1)):
        if flow.kind == "size":
            raise Refused("multiplies by the batch size as a value")
        if flow.kind != "data":
            continue
        r = info.rank
        if r == 1 or flow.axis == r + contracted:
            raise Refused("contracts the batch axis: it sums products over the examples of a batch")
        if flow.axis == r + free:
            if other.kind == "data":
                raise Refused("multiplies two tensors that carry examples across each other (pairs of examples)")
            position = full + free
        else:
            position = flow.axis + full - r
        if ia.rank == 1 and position == full - 1:
            position -= 1  # a 1-D left operand's row axis is dropped from the output
        if out_axis is not None and out_axis != position:
            raise Refused("multiplies two tensors whose batch axes do not line up (it mixes examples)")
        if inner is not None and inner != flow.inner:
            raise Refused("multiplies two layouts of the batch axis")
        out_axis, inner = position, flow.inner
    for flow, info in ((fa, ia), (fb, ib)):
        if flow.kind == "const" and info.rank > 2:
            position = out_axis - (full - info.rank)
            if 0 <= position < info.rank - 2 and info.dims[position] != 1:
                raise Refused("applies a constant that varies along the batch axis")
    return Flow("data", out_axis, inner)


def _gemm(ins, infos, attrs) -> Flow:
    fa, fb = ins[0], ins[1]
    fc = ins[2] if len(ins) > 2 else None
    if fa.kind == "data" and fb.kind == "data":
        raise Refused("multiplies two tensors that carry examples across each other (pairs of examples)")
    if fa.kind == "data":
        rows = 1 if attrs.get("transA", 0) else 0
        if fa.axis != rows:
            raise Refused("contracts the batch axis: it sums products over the examples of a batch")
        out = Flow("data", 0, fa.inner)
    elif fb.kind == "data":
        cols = 0 if attrs.get("transB", 0) else 1
        if fb.axis != cols:
            raise Refused("contracts the batch axis: it sums products over the examples of a batch")
        out = Flow("data", 1, fb.inner)
    else:
        raise Refused("has no input that carries examples")
    if fc is not None:
        if fc.kind == "data":
            if fc.axis + 2 - infos[2].rank != out.axis:
                raise Refused("adds a tensor whose batch axis does not line up")
        else:
            _const(fc, "its bias")
            position = out.axis - (2 - infos[2].rank)
            if position >= 0 and infos[2].dims[position] != 1:
                raise Refused("adds a constant that varies along the batch axis")
    return out


def _einsum(node, ins, infos) -> Flow:
    terms, out = shapes.einsum_terms(node, infos)
    letter, inner = None, None
    for flow, term in zip([f for f in ins if f is not None], terms):
        if flow.kind == "size":
            raise Refused("computes with the batch size as a value")
        if flow.kind == "data":
            mine = term[flow.axis]
            if letter is not None and mine != letter:
                raise Refused("pairs the batch axes of two operands with different letters (it mixes examples)")
            if term.count(mine) > 1:
                raise Refused("takes a diagonal through the batch axis")
            if inner is not None and inner != flow.inner:
                raise Refused("pairs two layouts of the batch axis")
            letter, inner = mine, flow.inner
    if letter not in out:
        raise Refused(f"sums over the batch axis ({letter!r}): it mixes the examples of a batch")
    for flow, term, info in zip([f for f in ins if f is not None], terms, [i for i in infos if i is not None]):
        if flow.kind == "const" and letter in term and info.dims[term.index(letter)] != 1:
            raise Refused("applies a constant that varies along the batch axis")
    return Flow("data", out.index(letter), inner)


def _reshape(x: Flow, before: Info, after: Info) -> Flow:
    """Where a Reshape (or Flatten) leaves the examples: the layout is kept when what lies before the batch and
    what lies after it keep their sizes, so example b's entries are the same elements before and after."""
    symbolic = [j for j, d in enumerate(after.dims) if isinstance(d, Sym)]
    if len(symbolic) != 1 or after.dims[symbolic[0]].power != 1:
        raise Refused("folds the batch axis into another axis (the examples would no longer be rows of their own)")
    j = symbolic[0]
    a = x.axis
    before_prefix = math.prod(before.dims[:a]) * (before.dims[a].coef // x.inner)
    before_suffix = x.inner * math.prod(before.dims[a + 1 :])
    after_prefix = math.prod(after.dims[:j])
    if before_prefix % after_prefix or after.dims[j].coef % (before_prefix // after_prefix):
        raise Refused("moves the batch axis into another axis (it interleaves the examples of a batch)")
    inner = after.dims[j].coef // (before_prefix // after_prefix)
    if inner * math.prod(after.dims[j + 1 :]) != before_suffix:
        raise Refused("moves the batch axis into another axis (it interleaves the examples of a batch)")
    return Flow("data", j, inner)


def _concat(ins, infos, attrs) -> Flow:
    rank = infos[0].rank
    axis = normalize(attrs["axis"], rank)
    flows = [f for f in ins if f is not None]
    if any(f.kind != "data" for f in flows):
        raise Refused("concatenates the examples with a tensor that does not carry them")
    axes = {f.axis for f in flows}
    inners = {f.inner for f in flows}
    if len(axes) > 1 or len(inners) > 1:
        raise Refused("concatenates tensors whose batch axes do not line up (it mixes examples)")
    (a,) = axes
    if axis == a:
        raise Refused("concatenates along the batch axis (it adds or reorders examples)")
    return Flow("data", a, inners.pop())


def _recurrent(attrs, ins: list[Flow | None], count: int) -> list[Flow]:
    """LSTM, GRU and RNN run along the sequence axis, each example on its own: the batch must ride on their batch
    axis (1, or 0 with layout=1), the weights be constant, and an initial state carry the same examples."""
    x, layout = ins[0], attrs.get("layout", 0)
    if x.axis != (0 if layout else 1):
        raise Refused(f"runs its recurrence over a tensor whose axis {x.axis} carries the examples (it mixes them)")
    for position, flow in enumerate(ins[1:], start=1):
        if flow is None:
            continue
        if position in (5, 6) and flow.kind == "data":  # initial_h, initial_c
            if flow.axis != (0 if layout else 1) or flow.inner != x.inner:
                raise Refused("starts from a state whose batch axis does not line up with the input's")
            continue
        _const(flow, "its weights" if position != 4 else "its sequence lengths")
        if position in (5, 6):
            raise Refused("starts from a state that does not carry the examples")
    y = Flow("data", 0 if layout else 2, x.inner)
    state = Flow("data", 0 if layout else 1, x.inner)
    return [y, state, state][:count]


def _slice(ins, infos, a: int, x: Flow) -> Flow:
    for f in ins[1:]:
        _const(f, "its bounds")
    starts = infos[1].value.ravel().tolist()
    ends = infos[2].value.ravel().tolist()
    axes = shapes.int_values(infos[3], "axes") if len(infos) > 3 and infos[3] is not None else list(range(len(starts)))
    steps = shapes.int_values(infos[4], "steps") if len(infos) > 4 and infos[4] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if normalize(axis, infos[0].rank) == a:
            whole = end == infos[0].dims[a] or (isinstance(end, int) and end >= shapes.INT64_MAX // 2)
            if not (start == 0 and step == 1 and whole):
                raise Refused("slices the batch axis (it keeps, drops or reorders examples)")
    return x


def _pad(node, ins, infos, attrs, a: int, x: Flow) -> Flow:
    for f in ins[1:]:
        _const(f, "its pads")
    pads = shapes.int_values(infos[1], "pads")
    axes = shapes.axes_of(node, infos, attrs, 3)
    axes = [normalize(v, infos[0].rank) for v in axes] if axes is not None else list(range(infos[0].rank))
    if a in axes:
        k = axes.index(a)
        if pads[k] or pads[k + len(axes)]:
            raise Refused("pads the batch axis (it adds examples)")
    return x
