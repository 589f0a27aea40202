"""The trained network's way out of the sandbox under graph scoring: one ONNX file, exported in eval mode.

The runner (sandbox/runner.py) calls `export_graph` after the smoke stage (the untrained network, for the host to
measure before training) and after training; a clean evaluator that runs no candidate code checks and scores the file
(agentarch/evaluation/graphs/). A separate module so the runner stays one job: running the candidate's stages.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from torch import nn

from . import scatter_ops, trainer
from .errors import CandidateError
from .graphbatch import GraphSplit

OPSET = 18
"""ONNX opset of the exported graph: 18 exports every seed as fast as 17 (docs/sandbox.md, "Graph scoring")."""
EXPORT_BATCH = 2
"""Training examples the exporter traces with; the batch axis is dynamic, and a batch of 1 could be specialised."""
TORCH_DIR = Path(torch.__file__).parent
"""Where torch's own Python lives: a tracer warning raised there is one of its shape checks, not the network's."""


def without_onnx_package() -> None:
    """Let torch's TorchScript exporter write a graph without the onnx package.

    The exporter parses its own output with onnx for one step only, `_add_onnxscript_fn`, which embeds the
    onnxscript functions of operators in custom domains; the host refuses any domain but the standard ones
    (agentarch/evaluation/graphs/checks.py), so here that step returns the bytes it is given. The onnx package then
    stays out of the candidate's runtime view, and no sandbox pays its import (1.1 s here, most of it ml_dtypes').
    On a torch that moved the step, nothing is replaced and the export says what it lacks.
    """
    try:
        from torch.onnx._internal.torchscript_exporter import onnx_proto_utils
    except ImportError:
        return
    if hasattr(onnx_proto_utils, "_add_onnxscript_fn"):
        onnx_proto_utils._add_onnxscript_fn = lambda model_bytes, custom_opsets: model_bytes


def export_inputs(inputs: trainer.Inputs) -> list[tuple[str, torch.Tensor, dict[int, str]]]:
    """The graph's named inputs in forward's order, each with the tensor the exporter traces and its dynamic axes, as
    agentarch/evaluation/graphs/interface.py expects them (a new input of a kind is one more entry here and there):
    `x` with a dynamic batch axis (EXPORT_BATCH training examples); a graph task's whole training graph, `x` (nodes, F)
    and `edge_index` (2, edges); a graphs task's EXPORT_BATCH training graphs, `x`, `edge_index` and `batch`."""
    if isinstance(inputs.train_x, GraphSplit):
        graphs = inputs.train_x[:EXPORT_BATCH].cpu()
        named = zip(("x", "edge_index", "batch"), graphs.args(), ({0: "nodes"}, {1: "edges"}, {0: "nodes"}))
        return [(name, tensor.contiguous(), axes) for name, tensor, axes in named]
    if inputs.edge_index is None:
        return [("x", inputs.train_x[:EXPORT_BATCH].cpu().contiguous(), {0: "batch"})]
    return [
        ("x", inputs.train_x.cpu().contiguous(), {0: "nodes"}),
        ("edge_index", inputs.edge_index.cpu().contiguous(), {1: "edges"}),
    ]


def export_graph(model: nn.Module, inputs: trainer.Inputs, path: Path) -> float:
    """Write the trained network, in eval mode with its weights inside, to `path` as ONNX; the seconds it took.

    torch's TorchScript-based exporter (`dynamo=False`) traces one forward pass on the inputs of `export_inputs`, on
    the CPU, with their dynamic axes, output `y` (its axis 0 the first input's), without constant folding (ONNX Runtime
    folds when it loads a graph), a graph network's scatters as scatter_ops.py writes them. A trace records the
    operators that ran, not Python's decisions, so a
    value read back from a tensor (a branch on it, `.item()`, `int(tensor)`) would be frozen into the graph as a
    constant: the tracer's warning about it is an error here when the network's own code raised it, as is an
    operator ONNX lacks. The same warning from torch's own code is one of its checks on shapes (GroupNorm's on the
    batch size), which the graph does not need, so it passes.
    """
    model = model.cpu().eval()
    named = export_inputs(inputs)
    dynamic = {name: axes for name, _, axes in named}
    dynamic["y"] = {0: "graphs" if isinstance(inputs.train_x, GraphSplit) else named[0][2][0]}  # a row per graph
    started = time.perf_counter()
    try:
        without_onnx_package()
        scatter_ops.register(OPSET)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("ignore")  # the exporter's own deprecation notices
            warnings.filterwarnings(
                "always", message="Converting a tensor to a Python", category=torch.jit.TracerWarning
            )
            torch.onnx.export(
                model,
                tuple(tensor for _, tensor, _ in named),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[name for name, _, _ in named],
                output_names=["y"],
                dynamic_axes=dynamic,
                training=torch.onnx.TrainingMode.EVAL,
                do_constant_folding=False,  # folding fuses BatchNorm into the convolution before it: the graph's
                # parameter count (agentarch/evaluation/graphs/measures.py) would miss the BN scales
            )
        frozen = [w for w in seen if not Path(w.filename).is_relative_to(TORCH_DIR)]
        if frozen:  # torch's own checks (GroupNorm's batch-size check) branch on shapes: no frozen decision
            first = str(frozen[0].message).split(" might ")[0]  # "Converting a tensor to a Python boolean"
            raise frozen[0].category(f"at line {frozen[0].lineno} of {Path(frozen[0].filename).name}: {first}")
    except Exception as err:
        found: BaseException | None = err  # a warning raised inside torch's C code arrives wrapped in a SystemError
        while found is not None and not isinstance(found, Warning):
            found = found.__cause__ or found.__context__
        cause = found or err
        said = (str(cause).strip().splitlines() or [""])[0][:1000]
        raise CandidateError(
            "export",
            f"the network could not be exported to ONNX: {type(cause).__name__}: {said}; avoid Python control flow "
            "that depends on tensor values (if/while on a tensor, .item(), int(tensor)) and operators ONNX lacks "
            "(FFT, complex or sparse tensors): forward must be the same tensor operations for every input",
        ) from err
    return time.perf_counter() - started
