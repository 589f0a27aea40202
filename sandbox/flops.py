"""What a network computes, counted in the sandbox: forward FLOPs by torch's own per-operator formulas, and the
operators themselves as the structure signature (agentarch/evaluation/novelty.py compares signatures).

Its own module because counting is one job, apart from running the candidate's stages (runner.py, which traces
each candidate once at its smoke stage and still offers `count_flops` and `FlopCount` to tests and benchmarks).
It imports torch and the standard library only.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

MAX_STRUCTURE_TOKENS = 256
MAX_TOKEN_CHARS = 120
MAX_TOKEN_COUNT = 10**6
"""Bounds on the structure signature, the same as the host's (agentarch/isolation/protocol.py), which drops a bigger one."""


class FlopCount(TorchDispatchMode):
    """Counts FLOPs by torch's own per-operator formulas (the registry behind torch.utils.flop_counter), and
    the operators themselves as the network's structure signature (`structure`).

    torch's FlopCounterMode gives the same totals, but its first use imports torch._dynamo (about 1 s
    here, most of a smoke run on a small network) only to keep Dynamo out of its dispatch hook; nothing
    is compiled inside a smoke run, so this mode opts out of that guard.
    """

    SHAPE_QUERIES = frozenset(
        {
            torch.ops.aten.sym_is_contiguous.default,
            torch.ops.aten.is_contiguous.default,
            torch.ops.aten.is_contiguous.memory_format,
            torch.ops.aten.is_strides_like_format.default,
            torch.ops.aten.is_non_overlapping_and_dense.default,
            torch.ops.aten.size.default,
            torch.ops.aten.sym_size.default,
            torch.ops.aten.stride.default,
            torch.ops.aten.sym_stride.default,
            torch.ops.aten.storage_offset.default,
            torch.ops.aten.sym_storage_offset.default,
            torch.ops.aten.numel.default,
            torch.ops.aten.sym_numel.default,
            torch.ops.aten.dim.default,
            torch.ops.prim.layout.default,
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.tokens: Counter[str] = Counter()

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in self.SHAPE_QUERIES:
            return NotImplemented
        formula = flop_registry.get(func._overloadpacket)
        if formula is None and func is not torch.ops.prim.device.default:
            with self:  # an operator without a formula may decompose into ones with formulas (as torch's counter does)
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        outputs = [leaf for leaf in tree_leaves(out) if isinstance(leaf, torch.Tensor)]
        if outputs:
            name = func._overloadpacket.__name__.removesuffix("_")
            self.tokens[f"{name}({','.join(map(_describe, tree_leaves((args, kwargs))))})->{_shapes(outputs)}"] += 1
        return out

    def structure(self) -> dict[str, int]:
        """The structure signature: how often each operator ran, keyed by its name, its arguments (`_describe`)
        and its outputs' shapes, e.g. `{"addmm([32],[1,64],[64,32])->[1,32]": 1}` (agentarch/evaluation/novelty.py).

        Operators are those that reached the dispatcher (a Linear is `t` and `addmm`), in-place and
        out-of-place forms alike (`relu_` counts as `relu`); shapes are of one example's forward pass in
        eval mode, so initialisation and constants leave no trace, while a width, kernel or stride change
        alters most tokens. Bounded as the host expects: the most frequent tokens, a long one cut to its
        head and a digest, each count capped.
        """
        signature: dict[str, int] = {}
        for token, count in self.tokens.most_common(MAX_STRUCTURE_TOKENS):
            if len(token) > MAX_TOKEN_CHARS:  # its head, and a digest of the whole so long tokens stay apart
                token = token[: MAX_TOKEN_CHARS - 17] + "#" + hashlib.sha256(token.encode()).hexdigest()[:16]
            signature[token] = min(MAX_TOKEN_COUNT, count)
        return signature


def _shapes(tensors: list[torch.Tensor]) -> str:
    return "".join(str(list(t.shape)).replace(" ", "") for t in tensors)


def _describe(arg: Any) -> str:
    """An operator argument as the structure signature keeps it: a tensor by its shape, an integer or flag (a kernel
    size, stride, dimension, group count) by its value, a float (a constant, an epsilon) only as being one."""
    if isinstance(arg, torch.Tensor):
        return _shapes([arg])
    if isinstance(arg, float):
        return "f"
    return str(arg)


def trace(
    model: nn.Module, x: torch.Tensor, edge_index: torch.Tensor | None = None, batch: torch.Tensor | None = None
) -> FlopCount:
    """One sample's forward pass under FlopCount: its FLOPs and structure signature (the smoke stage reads both). A
    graph task's one sample is its whole graph: with `edge_index`, the network runs on every node of `x`; a graphs
    task's is one small graph, `x` its nodes, called with its `batch` (all zeros) too.

    Dropout leaves no operator in eval mode, yet networks that differ in its rates train differently (as in the
    functional hash), so each dropout module with a non-zero rate adds a token of its own; `Dropout(0.0)` does not.
    """
    counter = FlopCount()
    with torch.no_grad(), counter:
        if edge_index is None:
            model(x[:1])
        else:
            model(x, edge_index) if batch is None else model(x, edge_index, batch)
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p != 0:
            counter.tokens[f"{type(module).__name__}(p={module.p})"] += 1
    return counter


def count_flops(
    model: nn.Module, x: torch.Tensor, edge_index: torch.Tensor | None = None, batch: torch.Tensor | None = None
) -> int:
    """Forward FLOPs for one sample (a graph task's: the whole graph; a graphs task's: the graphs `batch` names), as
    torch's FLOP counter sees them (matmuls and convolutions)."""
    return int(trace(model, x, edge_index, batch).total)
