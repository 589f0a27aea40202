"""Every tensor's shape in a graph, and the value of each small one, with the batch size as a symbol.

ONNX's own shape inference leaves most dimensions of a TorchScript export unknown once the batch axis is
dynamic: `x.view(b, l, 3, h, d)` becomes Shape -> Gather -> Unsqueeze -> Concat -> Reshape, and it does not carry
the values through. This module does, for the operators checks.py allows: a dimension or a small integer value is
an `int`, or a `Sym`, `coef * B ** power`, where B is the batch size. The batch-flow proof reads where B sits (and
what a Reshape does with it); the measures put B = 1 to count per example.

Values are kept for tensors of at most MAX_VALUE_ELEMENTS elements whose inputs' values are known (shapes, axes,
indices, pads, small constants); a large tensor's value (a weight) is never read. Anything this module cannot
follow (an operator it does not know, a dimension that is not a monomial in B such as B + 1, a Reshape whose
target it cannot work out) raises `Unfollowable`; callers turn it into a refusal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from agentarch.evaluation.graphs.sizes import (
    BROKEN,
    B,
    Size,
    Sym,
    Unfollowable,
    add,
    as_object,
    broadcast,
    div,
    einsum_letters,
    equal,
    evaluate,
    mul,
    normalize,
    product,
    sub,
    tidy,
    window,
)

MAX_VALUE_ELEMENTS = 4096
"""The largest tensor whose value is tracked; larger ones (weights, activations) keep only their shape."""
INT64_MAX = 2**63 - 1


@dataclass
class Info:
    """What is known of one tensor: its element type (TensorProto enum), its shape, and its value when small."""

    dtype: int
    dims: tuple[Size, ...]
    value: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return len(self.dims)

    def numel(self, batch: int = 1) -> int:
        return math.prod(evaluate(d, batch) for d in self.dims)

    def symbolic(self) -> bool:
        return any(isinstance(d, Sym) for d in self.dims)


INTEGER = {TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8}
BOOL_OUT = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not", "IsNaN", "IsInf"}
INT64_OUT = {"Shape", "Size", "ArgMax", "ArgMin"}
UNARY = {
    "Abs", "Ceil", "Celu", "Cos", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity",
    "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid",
    "Sign", "Sin", "Softplus", "Softsign", "Sqrt", "Tanh", "ThresholdedRelu", "Cast", "CastLike", "Clip", "Softmax",
    "LogSoftmax", "CumSum", "Trilu", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
}  # fmt: skip
BROADCAST = {
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Where", "PRelu",
}  # fmt: skip
REDUCE = {
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare",
    "ReduceLogSumExp",
}  # fmt: skip
NUMPY_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Pow": np.power, "Max": np.maximum,
                "Min": np.minimum, "Equal": np.equal, "Less": np.less, "Greater": np.greater,
                "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal, "And": np.logical_and,
                "Or": np.logical_or, "Xor": np.logical_xor, "Mod": np.mod, "Fmod": np.fmod}  # fmt: skip
NUMPY_UNARY = {"Neg": np.negative, "Abs": np.abs, "Sqrt": np.sqrt, "Not": np.logical_not, "Floor": np.floor,
               "Ceil": np.ceil, "Exp": np.exp, "Log": np.log, "Reciprocal": np.reciprocal, "Sign": np.sign,
               "Relu": lambda x: np.maximum(x, 0), "Identity": lambda x: x}  # fmt: skip
VALUE_REDUCE = {"ReduceMax": np.max, "ReduceMin": np.min, "ReduceSum": np.sum}  # whose values are followed
RECURRENT = {"LSTM": 4, "GRU": 3, "RNN": 1}
"""The recurrent layers, with their gates per step."""
SYMBOLIC_BINARY = {"Add": add, "Sub": sub, "Mul": mul, "Div": div}


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def tensor_info(tensor: onnx.TensorProto) -> Info:
    dims = tuple(int(d) for d in tensor.dims)
    value = None
    if math.prod(dims) <= MAX_VALUE_ELEMENTS:
        value = numpy_helper.to_array(tensor)
    return Info(tensor.data_type, dims, value)


def input_info(value_info: onnx.ValueInfoProto, bound: dict[int, int] | None = None) -> Info:
    """A graph input: an axis `bound` gives (a whole graph's node or edge count) is that size, else axis 0 is B,
    every other axis a number."""
    kind = value_info.type.tensor_type
    dims: list[Size] = []
    for axis, dim in enumerate(kind.shape.dim):
        if bound and axis in bound:
            dims.append(int(bound[axis]))
        elif axis == 0 and not bound:
            dims.append(B)
        elif dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        else:
            raise Unfollowable(f"input {value_info.name!r} axis {axis} has no fixed size")
    return Info(kind.elem_type, tuple(dims))


def propagate(model: onnx.ModelProto, sizes: dict[str, dict[int, int] | np.ndarray] | None = None) -> dict[str, Info]:
    """Each tensor's `Info` by name: the graph's input, initializers, and every node's outputs in graph order (a checked
    graph is topologically sorted); Unfollowable at the first node it cannot follow. `sizes` binds dynamic axes per
    input and axis, or an input's value (interface.py): every shape is a number then, a count from `batch` too."""
    known: dict[str, Info] = {t.name: tensor_info(t) for t in model.graph.initializer}
    initializers = set(known)
    for value_info in model.graph.input:
        if value_info.name not in initializers:
            bound = (sizes or {}).get(value_info.name)  # axes' sizes, or the input's value (and so its shape)
            value, bound = (bound, dict(enumerate(bound.shape))) if isinstance(bound, np.ndarray) else (None, bound)
            info = input_info(value_info, bound)
            if value is not None and info.dims != value.shape:  # its element type is the port's (checks.py)
                raise Unfollowable(f"input {value_info.name!r} does not take an array of shape {value.shape}")
            known[value_info.name] = Info(info.dtype, info.dims, value)
    for index, node in enumerate(model.graph.node):
        inputs = [known[name] if name else None for name in node.input]
        if any(name and name not in known for name in node.input):
            raise Unfollowable(f"node {index} ({node.op_type}) reads a tensor no earlier node makes")
        try:
            outputs = infer(node, inputs)
        except Unfollowable as err:
            raise Unfollowable(f"{describe(node, index)}: {err}") from None
        except BROKEN as err:
            raise Unfollowable(
                f"{describe(node, index)}: its inputs do not fit ({type(err).__name__}: {err})"
            ) from None
        for name, info in zip(node.output, outputs):
            if name:
                if info.value is not None and info.value.size > MAX_VALUE_ELEMENTS:
                    info.value = None
                known[name] = info
    return known


def describe(node: onnx.NodeProto, index: int) -> str:
    """How a message names a node: its operator and its name (which says the module in a torch export)."""
    return f"the {node.op_type} node {node.name or f'#{index}'!r}"


# -- the rules, one per operator family ------------------------------------------------------------------


def _value(info: Info | None, what: str) -> np.ndarray:
    if info is None or info.value is None:
        raise Unfollowable(f"its {what} is not a known constant")
    return info.value


def int_values(info: Info | None, what: str) -> list[int]:
    values = [x.item() if isinstance(x, np.generic) else x for x in _value(info, what).ravel().tolist()]
    if not all(isinstance(v, int) for v in values):
        raise Unfollowable(f"its {what} depends on the batch size")
    return values


def axes_of(node: onnx.NodeProto, inputs: list[Info | None], attrs: dict[str, Any], position: int) -> list[int] | None:
    """The `axes` of a node: the input at `position` (newer opsets) or the attribute; None when neither is given."""
    if len(inputs) > position and inputs[position] is not None:
        return int_values(inputs[position], "axes")
    return list(attrs["axes"]) if "axes" in attrs else None


def _spatial(node: onnx.NodeProto, attrs: dict[str, Any], x: Info, kernel: list[int], ceil: bool) -> list[int]:
    n = len(kernel)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    pads = list(attrs.get("pads", [0] * 2 * n))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    return [
        window(x.dims[2 + i], kernel[i], strides[i], (pads[i], pads[i + n]), dilations[i], auto_pad, ceil)
        for i in range(n)
    ]


def einsum_terms(node: onnx.NodeProto, inputs: list[Info | None]) -> tuple[list[str], str]:
    equation = attributes(node)["equation"]
    equation = equation.decode() if isinstance(equation, bytes) else equation
    return einsum_letters(equation, [i.rank for i in inputs if i is not None])


def _dtype(node: onnx.NodeProto, inputs: list[Info | None], attrs: dict[str, Any]) -> int:
    op = node.op_type
    if op == "Cast":
        return int(attrs["to"])
    if op == "CastLike":
        return inputs[1].dtype
    if op in BOOL_OUT:
        return TensorProto.BOOL
    if op in INT64_OUT:
        return TensorProto.INT64
    if op == "Where":
        return inputs[1].dtype
    if op == "ConstantOfShape":
        return attrs["value"].data_type if "value" in attrs else TensorProto.FLOAT
    return inputs[0].dtype


def infer(node: onnx.NodeProto, inputs: list[Info | None]) -> list[Info]:
    """The outputs of one node from its inputs."""
    op, attrs = node.op_type, attributes(node)
    if op == "Constant":
        return [_constant(attrs)]
    if not inputs or inputs[0] is None:
        raise Unfollowable("its first input is missing")
    x = inputs[0]
    dtype = _dtype(node, inputs, attrs)
    dims, value = _dims_and_value(node, op, attrs, inputs, dtype)
    if isinstance(dims, list):  # several outputs
        for info in dims:
            info.value = tidy(info.value)
        return dims
    dims, value = tuple(dims), tidy(value)
    if value is not None and (any(isinstance(d, Sym) for d in dims) or tuple(np.shape(value)) != dims):
        value = None  # a value is kept only when its shape is concrete: it never holds a batch of examples
    first = Info(dtype, dims, None if value is None else np.asarray(value))
    extra = [Info(TensorProto.INT64 if op == "MaxPool" else x.dtype, first.dims)] * (len(node.output) - 1)
    return [first, *extra]


def _constant(attrs: dict[str, Any]) -> Info:
    if "value" in attrs:
        return tensor_info(attrs["value"])
    for name, kind in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):  # fmt: skip
        if name in attrs:
            value = np.asarray(attrs[name], dtype=kind)
            return Info(onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape, value)
    raise Unfollowable("a Constant without a numeric value")


def _numeric(*values: np.ndarray) -> bool:
    return all(v is not None and v.dtype != object for v in values)


def _dims_and_value(node, op, attrs, inputs, dtype):  # noqa: C901 - one branch per operator family reads best
    x = inputs[0]
    vals = [i.value if i is not None else None for i in inputs]
    small = all(i is None or i.value is not None for i in inputs)  # every input's value is known
    if op in UNARY:
        value = None
        if op in ("Identity", "Cast") and small:
            value = vals[0] if op == "Identity" else _cast(vals[0], dtype)
        elif op in NUMPY_UNARY and small and _numeric(vals[0]):
            with np.errstate(all="ignore"):
                value = NUMPY_UNARY[op](vals[0])
        return x.dims, value
    if op in BROADCAST:
        present = [i for i in inputs if i is not None]
        dims = broadcast(*(i.dims for i in present))
        value = None
        if small and _fits(dims):
            value = _binary("Fmod" if op == "Mod" and attrs.get("fmod", 0) else op, [i.value for i in present], dtype)
        return dims, value
    if op == "MatMul":
        a, b = (i.dims for i in inputs[:2])
        if not a or not b:
            raise Unfollowable("MatMul of a scalar")
        a2, b2 = (a if len(a) > 1 else (1, *a)), (b if len(b) > 1 else (*b, 1))
        if a2[-1] != b2[-2]:
            raise Unfollowable(f"inner sizes {a2[-1]!r} and {b2[-2]!r} differ")
        out = (*broadcast(a2[:-2], b2[:-2]), a2[-2], b2[-1])
        if len(a) == 1:
            out = out[:-2] + out[-1:]
        if len(b) == 1:
            out = out[:-1]
        return out, None
    if op == "Gemm":
        a, b = inputs[0].dims, inputs[1].dims
        m = a[1] if attrs.get("transA", 0) else a[0]
        n = b[0] if attrs.get("transB", 0) else b[1]
        return (m, n), None
    if op in ("Conv", "ConvTranspose"):
        w = inputs[1].dims
        kernel = list(attrs.get("kernel_shape", [int(d) for d in w[2:]]))
        if op == "Conv":
            return (x.dims[0], w[0], *_spatial(node, attrs, x, kernel, False)), None
        group, n = attrs.get("group", 1), len(kernel)
        if "output_shape" in attrs:
            return (x.dims[0], w[1] * group, *attrs["output_shape"][-n:]), None
        strides = attrs.get("strides", [1] * n)
        dil = attrs.get("dilations", [1] * n)
        pads = attrs.get("pads", [0] * 2 * n)
        extra = attrs.get("output_padding", [0] * n)
        spatial = [
            strides[i] * (x.dims[2 + i] - 1) + extra[i] + (kernel[i] - 1) * dil[i] + 1 - pads[i] - pads[i + n]
            for i in range(n)
        ]
        return (x.dims[0], w[1] * group, *spatial), None
    if op in ("MaxPool", "AveragePool", "LpPool"):
        kernel = list(attrs["kernel_shape"])
        return (*x.dims[:2], *_spatial(node, attrs, x, kernel, bool(attrs.get("ceil_mode", 0)))), None
    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        return (*x.dims[:2], *[1] * (x.rank - 2)), None
    if op == "LayerNormalization":
        axis = normalize(attrs.get("axis", -1), x.rank)
        stats = Info(TensorProto.FLOAT, (*x.dims[:axis], *[1] * (x.rank - axis)))
        return [Info(dtype, x.dims), *[stats] * (len(node.output) - 1)], None
    if op in REDUCE or op in ("ArgMax", "ArgMin"):
        if op in REDUCE:
            axes = axes_of(node, inputs, attrs, 1)
            if not axes:
                axes = [] if attrs.get("noop_with_empty_axes", 0) else list(range(x.rank))
        else:
            axes = [attrs.get("axis", 0)]
        axes = {normalize(a, x.rank) for a in axes}
        keep = attrs.get("keepdims", 1)
        dims = tuple(1 if i in axes else d for i, d in enumerate(x.dims) if keep or i not in axes)
        known = op in VALUE_REDUCE and _numeric(vals[0]) and _fits(dims)  # a count from a bound value: max(batch)
        return dims, VALUE_REDUCE[op](vals[0], axis=tuple(sorted(axes)), keepdims=bool(keep)) if known else None
    if op == "Shape":
        start, end = attrs.get("start", 0), attrs.get("end", x.rank)
        chosen = list(x.dims)[slice(start, end)]
        return (len(chosen),), np.array(chosen, dtype=object if any(isinstance(d, Sym) for d in chosen) else np.int64)
    if op == "Size":
        total = product(x.dims)
        return (), np.array(total, dtype=object if isinstance(total, Sym) else np.int64)
    if op == "Reshape":
        return _reshape(x, _value(inputs[1], "target shape"), attrs.get("allowzero", 0)), _reshaped(x, inputs[1])
    if op == "Flatten":
        axis = normalize(attrs.get("axis", 1), x.rank + 1) if x.rank else 0
        dims = (product(x.dims[:axis]), product(x.dims[axis:]))
        return dims, None if x.value is None or not isinstance(dims[0], int) else x.value.reshape(dims)
    if op == "Transpose":
        perm = list(attrs.get("perm", range(x.rank - 1, -1, -1)))
        if sorted(perm) != list(range(x.rank)):
            raise Unfollowable(f"perm {perm} is not a permutation of {x.rank} axes")
        return tuple(x.dims[p] for p in perm), None if x.value is None else np.transpose(x.value, perm)
    if op == "Squeeze":
        axes = axes_of(node, inputs, attrs, 1)
        axes = {normalize(a, x.rank) for a in axes} if axes is not None else {i for i, d in enumerate(x.dims) if d == 1}
        if any(x.dims[a] != 1 for a in axes):
            raise Unfollowable("it squeezes an axis whose size is not 1")
        dims = tuple(d for i, d in enumerate(x.dims) if i not in axes)
        return dims, None if x.value is None else x.value.reshape([evaluate(d, 0) for d in dims])
    if op == "Unsqueeze":
        axes = axes_of(node, inputs, attrs, 1)
        rank = x.rank + len(axes)
        axes = sorted({normalize(a, rank) for a in axes})
        if len(axes) != rank - x.rank:
            raise Unfollowable("repeated axes")
        rest = iter(x.dims)
        dims = tuple(1 if i in axes else next(rest) for i in range(rank))
        return dims, None if x.value is None else x.value.reshape([evaluate(d, 0) for d in dims])
    if op == "Concat":
        axis = normalize(attrs["axis"], x.rank)
        for other in inputs[1:]:
            if other.rank != x.rank or any(a != b for i, (a, b) in enumerate(zip(x.dims, other.dims)) if i != axis):
                raise Unfollowable("the inputs' shapes differ off the concatenation axis")
        total = x.dims[axis]
        for other in inputs[1:]:
            total = add(total, other.dims[axis])
        dims = (*x.dims[:axis], total, *x.dims[axis + 1 :])
        value = None
        if small and _fits(dims):
            values = [i.value for i in inputs]
            value = np.concatenate(values if _numeric(*values) else [as_object(v) for v in values], axis=axis)
        return dims, tidy(value)
    if op == "Split":
        return _split_outputs(node, inputs, attrs, dtype), None
    if op == "Slice":
        return _slice(x, inputs)
    if op == "Gather":
        axis = normalize(attrs.get("axis", 0), x.rank)
        idx = inputs[1]
        dims = (*x.dims[:axis], *idx.dims, *x.dims[axis + 1 :])
        value = None
        if x.value is not None and idx.value is not None and _fits(dims):
            size = x.value.shape[axis]
            indices = np.asarray(idx.value, dtype=np.int64)
            if np.any(indices < -size) or np.any(indices >= size):
                raise Unfollowable("an index is out of range")
            value = np.take(x.value, np.where(indices < 0, indices + size, indices), axis=axis)
        return dims, value
    if op in ("Expand", "ConstantOfShape", "Tile", "Range"):
        return _sized(op, attrs, inputs)
    if op == "Pad":
        pads = int_values(inputs[1], "pads")
        axes = axes_of(node, inputs, attrs, 3)
        axes = [normalize(a, x.rank) for a in axes] if axes is not None else list(range(x.rank))
        dims = list(x.dims)
        for k, axis in enumerate(axes):
            if pads[k] or pads[k + len(axes)]:
                dims[axis] = add(add(dims[axis], pads[k]), pads[k + len(axes)])
        return tuple(dims), None
    if op == "Einsum":
        terms, out = einsum_terms(node, inputs)
        sizes: dict[str, Size] = {}
        for term, info in zip(terms, [i for i in inputs if i is not None]):
            for letter, size in zip(term, info.dims):
                if size != 1 and sizes.get(letter, 1) not in (1, size):
                    raise Unfollowable(f"Einsum letter {letter!r} has sizes {sizes[letter]!r} and {size!r}")
                if size != 1 or letter not in sizes:
                    sizes[letter] = size
        return tuple(sizes[c] for c in out), None
    if op in RECURRENT:
        layout, hidden = attrs.get("layout", 0), attrs["hidden_size"]
        directions = 2 if attrs.get("direction", b"forward") in (b"bidirectional", "bidirectional") else 1
        seq, batch = (x.dims[1], x.dims[0]) if layout else (x.dims[0], x.dims[1])
        y = (batch, seq, directions, hidden) if layout else (seq, directions, batch, hidden)
        state = (batch, directions, hidden) if layout else (directions, batch, hidden)
        return [Info(x.dtype, y), Info(x.dtype, state), Info(x.dtype, state)][: len(node.output)], None
    if op in ("ScatterElements", "ScatterND"):  # a graph network's messages into their nodes: the data's shape
        return x.dims, None
    if op == "GatherElements":
        return inputs[1].dims, None
    if op == "GatherND":
        depth, skip = inputs[1].dims[-1], attrs.get("batch_dims", 0)
        return (*inputs[1].dims[:-1], *x.dims[skip + int(depth) :]), None
    if op in ("DepthToSpace", "SpaceToDepth"):
        n, c, h, w = x.dims
        k = attrs["blocksize"]
        if op == "DepthToSpace":
            return (n, div(c, k * k), mul(h, k), mul(w, k)), None
        return (n, mul(c, k * k), div(h, k), div(w, k)), None
    raise Unfollowable("this operator is not one the analysis knows")


def _fits(dims: tuple[Size, ...]) -> bool:
    """Whether a value of this shape is small enough to compute (and concrete: no batch axis)."""
    return not any(isinstance(d, Sym) for d in dims) and math.prod(dims) <= MAX_VALUE_ELEMENTS


def _cast(value: np.ndarray, dtype: int) -> np.ndarray | None:
    if value.dtype == object:
        return value if dtype in INTEGER or dtype in (TensorProto.FLOAT, TensorProto.DOUBLE) else None
    try:
        return value.astype(onnx.helper.tensor_dtype_to_np_dtype(dtype))
    except (TypeError, KeyError, ValueError):
        return None


def _binary(op: str, values: list[np.ndarray], dtype: int) -> np.ndarray | None:
    if not _numeric(*values):
        objects = [as_object(v) for v in values]
        if op in SYMBOLIC_BINARY and len(values) == 2:
            return tidy(np.frompyfunc(SYMBOLIC_BINARY[op], 2, 1)(*objects))
        if op == "Equal":  # torch's expand(x.size(0), -1) compares the target with -1 to keep those sizes
            try:
                return np.frompyfunc(equal, 2, 1)(*objects).astype(bool)
            except Unfollowable:
                return None
        if op == "Where" and _numeric(values[0]):
            return tidy(np.where(values[0], objects[1], objects[2]))
        return None
    with np.errstate(all="ignore"):
        if op == "Where":
            return np.where(*values)
        if op == "Div":
            a, b = values
            if a.dtype.kind in "iu" and b.dtype.kind in "iu":
                if np.any(b == 0):
                    return None
                return (np.trunc(a / b)).astype(a.dtype)
            return np.divide(a, b)
        if op in NUMPY_BINARY and len(values) == 2:
            result = NUMPY_BINARY[op](*values)
            return result.astype(values[0].dtype) if op not in BOOL_OUT else result
    return None


def _reshape(x: Info, target: np.ndarray, allowzero: int) -> tuple[Size, ...]:
    wanted = [v.item() if isinstance(v, np.generic) else v for v in target.ravel().tolist()]
    dims: list[Size | None] = []
    for i, v in enumerate(wanted):
        if v == 0 and not allowzero:
            if i >= x.rank:
                raise Unfollowable("a 0 in the target shape copies an axis the input lacks")
            dims.append(x.dims[i])
        elif v == -1:
            dims.append(None)
        elif isinstance(v, Sym) or (isinstance(v, int) and v >= 0):
            dims.append(v)
        else:
            raise Unfollowable(f"target size {v!r} is not allowed")
    total = product(x.dims)
    if dims.count(None) > 1:
        raise Unfollowable("more than one -1 in the target shape")
    if None in dims:
        dims[dims.index(None)] = div(total, product(d for d in dims if d is not None))
    if product(dims) != total:
        raise Unfollowable(f"{[repr(d) for d in dims]} holds another number of elements than the input")
    return tuple(dims)


def _reshaped(x: Info, target: Info) -> np.ndarray | None:
    if x.value is None or target.value is None or target.value.dtype == object:
        return None
    return x.value.reshape([s if s != 0 else x.value.shape[i] for i, s in enumerate(target.value.tolist())])


def _split_outputs(node, inputs, attrs, dtype) -> list[Info]:
    x = inputs[0]
    axis = normalize(attrs.get("axis", 0), x.rank)
    count = len(node.output)
    if len(inputs) > 1 and inputs[1] is not None:
        sizes: list[Size] = int_values(inputs[1], "split sizes")
    elif "split" in attrs:
        sizes = list(attrs["split"])
    else:
        whole = x.dims[axis]
        if isinstance(whole, Sym):
            raise Unfollowable("it splits the batch axis")
        part = -(-whole // count)
        sizes = [part] * (count - 1) + [whole - part * (count - 1)]
    if len(sizes) != count:
        raise Unfollowable(f"{len(sizes)} split sizes for {count} outputs")
    values = None
    if x.value is not None:
        values = np.split(x.value, np.cumsum(sizes)[:-1], axis=axis)
    return [
        Info(dtype, (*x.dims[:axis], size, *x.dims[axis + 1 :]), None if values is None else values[k])
        for k, size in enumerate(sizes)
    ]


def _slice(x: Info, inputs: list[Info | None]) -> tuple[tuple[Size, ...], np.ndarray | None]:
    starts = _value(inputs[1], "starts").ravel().tolist()
    ends = _value(inputs[2], "ends").ravel().tolist()
    axes = int_values(inputs[3], "axes") if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = int_values(inputs[4], "steps") if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    dims = list(x.dims)
    cuts: list[slice] = [slice(None)] * x.rank
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = normalize(axis, x.rank)
        size = dims[axis]
        if isinstance(size, Sym) or isinstance(start, Sym) or isinstance(end, Sym):
            if step == 1 and start == 0 and (end == size or (isinstance(end, int) and end >= INT64_MAX // 2)):
                continue  # the whole axis
            raise Unfollowable("it slices an axis whose size depends on the batch size")
        if step == 0:
            raise Unfollowable("a step of 0")
        cut = slice(start, end, step)  # Python clamps as ONNX does, negative steps included
        dims[axis] = len(range(*cut.indices(size)))
        cuts[axis] = cut
    value = x.value[tuple(cuts)] if x.value is not None else None
    return tuple(dims), value


def _sized(op: str, attrs: dict[str, Any], inputs: list[Info | None]):
    """Expand, ConstantOfShape, Tile and Range: operators whose output shape is an input's value."""
    x = inputs[0]
    if op == "Expand":
        shape = [v.item() if isinstance(v, np.generic) else v for v in _value(inputs[1], "shape").ravel().tolist()]
        dims = broadcast(x.dims, tuple(shape))
        value = None
        if x.value is not None and not any(isinstance(d, Sym) for d in dims) and math.prod(dims) <= MAX_VALUE_ELEMENTS:
            value = np.broadcast_to(x.value, dims).copy()
        return dims, value
    if op == "ConstantOfShape":
        shape = [v.item() if isinstance(v, np.generic) else v for v in _value(x, "shape").ravel().tolist()]
        if any(isinstance(s, int) and s < 0 for s in shape):
            raise Unfollowable("a negative size")
        fill = numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
        value = None
        if not any(isinstance(s, Sym) for s in shape) and math.prod(shape) <= MAX_VALUE_ELEMENTS:
            value = np.full(shape, fill.ravel()[0], dtype=fill.dtype)
        return tuple(shape), value
    if op == "Tile":
        repeats = int_values(inputs[1], "repeats")
        dims = tuple(mul(d, r) for d, r in zip(x.dims, repeats))
        concrete = x.value is not None and not any(isinstance(d, Sym) for d in dims)
        return dims, np.tile(x.value, repeats) if concrete and math.prod(dims) <= MAX_VALUE_ELEMENTS else None
    start, limit, delta = (_value(i, "range bound").ravel()[0] for i in inputs[:3])
    start, limit, delta = (v.item() if isinstance(v, np.generic) else v for v in (start, limit, delta))
    if isinstance(limit, Sym) and start == 0 and delta == 1:
        return (limit,), None
    if any(isinstance(v, Sym) for v in (start, limit, delta)) or delta == 0:
        raise Unfollowable("its bounds depend on the batch size")
    count = max(int(math.ceil((limit - start) / delta)), 0)
    value = np.arange(start, limit, delta, dtype=inputs[0].value.dtype) if count <= MAX_VALUE_ELEMENTS else None
    return (count,), value
