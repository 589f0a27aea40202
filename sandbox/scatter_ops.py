"""How the runner exports a graph network's scatters to ONNX: `index_add` and `scatter_reduce` as one ScatterElements
with its reduction, the way ONNX Runtime computes what torch does.

torch's TorchScript exporter gets these wrong for a graph network (torch 2.13): `index_add` goes through its opset-9
`scatter_add`, a ScatterElements *without* a reduction, so of several edges into one node only the last message
arrives (the GCN seed's outputs moved by 0.9 in ONNX Runtime); `index_put(..., accumulate=True)` scatters into zeros
with a ScatterND without a reduction, the same loss; `scatter_reduce` is wrapped in an If node (a nested graph,
which the host refuses). Message passing is exactly these two operations (sum the messages into their target
nodes; a segment softmax's per-node maximum), so the runner registers these symbolics before it exports
(`register`). What any symbolic writes is still only a graph, which the host checks and measures like any other.

Imported by the runner only; it imports torch and nothing of the orchestrator.
"""

from __future__ import annotations

import torch

REDUCTIONS = {"sum": "add", "prod": "mul", "amax": "max", "amin": "min"}
"""torch's scatter_reduce reductions as ONNX's ScatterElements names them; "mean" has no ONNX counterpart."""


def _helper():
    try:
        from torch.onnx._internal.torchscript_exporter import symbolic_helper
    except ImportError:  # older torch
        from torch.onnx import symbolic_helper
    return symbolic_helper


def _as_updates(g, index, updates, dim: int, rank: int):
    """`index` (E,) laid along axis `dim` of an updates tensor of rank `rank` and expanded to its shape, as
    ScatterElements wants an index per updated element."""
    shape = [1] * rank
    shape[dim] = -1
    laid = g.op("Reshape", index, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))
    return g.op("Expand", laid, g.op("Shape", updates))


def index_add(g, self, dim, index, other, alpha=None):
    """`self.index_add(dim, index, other, alpha=alpha)`: every row of `other` added into row index[k] of `self`."""
    helper = _helper()
    dim = helper._maybe_get_const(dim, "i")
    rank = helper._get_tensor_rank(self)
    if not isinstance(dim, int) or rank is None or helper._get_tensor_rank(other) != rank:
        raise RuntimeError("index_add needs a constant dim and tensors of one known rank to be exported")
    dim %= rank
    if alpha is not None and helper._scalar(helper._maybe_get_scalar(alpha)) != 1:
        other = g.op("Mul", other, g.op("CastLike", alpha, other))
    return g.op("ScatterElements", self, _as_updates(g, index, other, dim, rank), other, axis_i=dim, reduction_s="add")


def scatter_reduce(g, self, dim, index, src, reduce, include_self):
    """`self.scatter_reduce(dim, index, src, reduce, include_self=True)` for sum, prod, amax and amin."""
    helper = _helper()
    dim = helper._maybe_get_const(dim, "i")
    reduce = helper._maybe_get_const(reduce, "s")
    include_self = helper._maybe_get_const(include_self, "b")
    if reduce not in REDUCTIONS or not include_self:
        raise RuntimeError(
            f"scatter_reduce(reduce={reduce!r}, include_self={include_self}) has no ONNX form; use sum, prod, amax or "
            "amin with include_self=True (a mean is a sum divided by index_add's counts)"
        )
    if helper._get_tensor_sizes(src) != helper._get_tensor_sizes(index):
        starts = g.op("Constant", value_t=torch.zeros(helper._get_tensor_rank(index), dtype=torch.int64))
        src = g.op("Slice", src, starts, g.op("Shape", index))
    return g.op("ScatterElements", self, index, src, axis_i=dim, reduction_s=REDUCTIONS[reduce])


def index_put(g, self, indices, values, accumulate=False):
    """`self.index_put(indices, values, accumulate)`: torch's own export, its ScatterND given the reduction `add`
    when it accumulates (repeated indices then sum, as in torch)."""
    try:
        from torch.onnx._internal.torchscript_exporter import symbolic_opset11
    except ImportError:  # older torch
        from torch.onnx import symbolic_opset11
    if not _helper()._maybe_get_const(accumulate, "b"):
        return symbolic_opset11.index_put(g, self, indices, values, accumulate)
    plain = g.op

    def op(name, *args, **kwargs):
        if name == "ScatterND":
            kwargs.setdefault("reduction_s", "add")
        return plain(name, *args, **kwargs)

    g.op = op
    try:
        return symbolic_opset11.index_put(g, self, indices, values, accumulate)
    finally:
        del g.op


def register(opset: int) -> None:
    """Use these symbolics for exports at `opset` (ScatterElements' reductions add and mul exist from opset 16, max
    and min from 18)."""
    torch.onnx.register_custom_op_symbolic("aten::index_add", index_add, opset)
    torch.onnx.register_custom_op_symbolic("aten::scatter_reduce", scatter_reduce, opset)
    torch.onnx.register_custom_op_symbolic("aten::index_put", index_put, opset)
