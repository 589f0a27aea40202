"""Refuse an exported graph that is not a plain network of standard operators, before any process loads it.

The graph arrives from a process that ran candidate code, so it is hostile input: `check_graph` parses it under
a size cap and refuses, with a `GraphRejected` whose message says what to change, anything outside a small,
known language:

- more bytes than the cap; bytes that are not an ONNX model; an IR version or a default-domain opset outside
  IR_VERSIONS and OPSETS (the TorchScript exporter writes IR 8 at opsets 17 and 18);
- any domain but the standard one ('' or 'ai.onnx'), in the opset imports or on a node: no custom operators, no
  'com.microsoft' contrib operators, no 'ai.onnx.ml';
- any operator outside ALLOWED_OPS (below: what every seed and every shipped search space exports to, and the
  common operators of the same families);
- tensors stored outside the file (data_location EXTERNAL: a path ONNX Runtime would open), sparse tensors,
  string tensors anywhere (a network computes on numbers; a string is how a graph would name a file), and
  string attributes that look like paths;
- model-local functions, nested graphs (If, Loop, Scan bodies, or any graph-valued attribute) and training
  information;
- other inputs and outputs than one float32 (or, for token tasks, int64) input whose axis 0 is the dynamic batch
  axis and whose other axes are fixed, and one floating-point output whose axis 0 is that same batch axis; or, for
  a kind with named inputs (interface.py: a graph task's x and edge_index, a graphs task's and batch), other inputs
  than its ports, by name and in order, each of its element type with its fixed axes and its dynamic ones;
- what `onnx.checker.check_model(full_check=True)` refuses (which includes strict shape inference).

The allowlist, and why each family is in or out. Derived by exporting every seed (archive/seeds) and samples of
the nb201, macro, mlp and mixer spaces with `torch.onnx.export(..., dynamo=False)` at opsets 17 and 18; they use
EXPORTED_OPS (tests/test_graphs.py keeps this true). The list adds the other activations, comparisons,
reductions, pools, normalizations, layout operators and recurrent layers (LSTM, GRU, RNN) that networks an LLM
writes commonly export to (a ViT, nn.MultiheadAttention, GroupNorm, squeeze-excitation: tests/test_graphs.py
exports each), all of which the batch-flow proof (batch_flow.py) and the shape analysis (shapes.py) follow. Out:

- control flow (If, Loop, Scan): tracing never exports it, and a body is a nested graph the analyses would have
  to follow; a network with data-dependent control flow fails export and is told to remove it;
- randomness (RandomNormal, RandomUniform and their -Like forms, Bernoulli, Multinomial, Dropout): an eval-mode
  network samples nothing, scores must be reproducible, and a probe's outputs must not change between runs;
- data-dependent shapes and index-driven moves (NonZero, Unique, TopK, NonMaxSuppression, Scatter*, GatherND,
  GatherElements, Compress): whether they move values between examples depends on the indices at run time, which
  a static proof cannot see. A graph task's network (node classification: one example, its nodes mixing by design,
  docs/sandbox.md) and a graphs task's (each held-out graph run alone) may use ScatterElements, ScatterND,
  GatherElements and GatherND (`extra_ops`, interface.py): message passing is made of them. Their indices are
  tensors of the graph, computed from its inputs and stored constants like any other (nothing in a graph reads
  outside it), and ONNX Runtime refuses an index out of range at run time, which fails the candidate;
- Resize and Upsample (F.interpolate, nn.Upsample): no seed needs them, and their region-of-interest semantics
  are easy to get subtly wrong; a transposed convolution or a pixel shuffle (DepthToSpace) upsamples instead;
- sequences, optionals, strings, quantization and anything that reads outside the graph: no operator of the
  standard domain opens files; external data is the only way a graph reaches one, and it is refused above.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, TensorProto

from agentarch.errors import AgentarchError
from agentarch.evaluation.graphs.interface import Interface

IR_VERSIONS = range(8, 11)
"""IR 8 (the TorchScript exporter, onnx 1.10+) through IR 10 (onnx 1.16, torch.export's exporter)."""
OPSETS = range(17, 22)
"""Default-domain opsets 17 to 21: LayerNormalization is a single operator from 17 on; the analyses read
every allowed operator's inputs and attributes as these opsets define them (axes as an input or an attribute)."""
STANDARD_DOMAINS = ("", "ai.onnx")
MAX_NODES = 100_000
"""More nodes than any network worth training: a graph made of a million scalar constants is refused here."""
ALLOWED_OPS = frozenset(
    {
        # arithmetic, comparison and logic, elementwise with broadcasting
        "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Neg", "Abs", "Reciprocal", "Sqrt",
        "Exp", "Log", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Clip", "Equal", "Less", "Greater",
        "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not", "Where", "IsNaN", "IsInf", "Cast", "CastLike",
        "Identity",
        # activations
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf",
        "Gelu", "Softplus", "Softsign", "Mish", "ThresholdedRelu",
        # linear maps
        "MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum",
        # recurrent layers
        "LSTM", "GRU", "RNN",
        # pooling, normalization, softmax
        "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "LayerNormalization",
        "InstanceNormalization", "GroupNormalization", "Softmax", "LogSoftmax",
        # reductions and scans along one axis
        "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
        "ReduceSumSquare", "ReduceLogSumExp", "ArgMax", "ArgMin", "CumSum", "Trilu",
        # layout and shape arithmetic
        "Shape", "Size", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice",
        "Gather", "Expand", "Tile", "Pad", "DepthToSpace", "SpaceToDepth",
        # constants
        "Constant", "ConstantOfShape", "Range",
    }
)  # fmt: skip
EXPORTED_OPS = frozenset(
    {
        "Add", "AveragePool", "BatchNormalization", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv", "CumSum",
        "DepthToSpace", "Div", "Einsum", "Elu", "Equal", "Erf", "Expand", "Flatten", "Gather", "Gemm", "GlobalAveragePool",
        "Identity", "LayerNormalization", "MatMul", "MaxPool", "Mul", "Pad", "Range", "ReduceMax", "ReduceMean",
        "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub",
        "Transpose", "Trilu", "Unsqueeze", "Where",
    }
)  # fmt: skip
"""The operators the seeds and the shipped spaces export to (a subset of ALLOWED_OPS)."""
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
EXPORT_HINT = (
    "export the network in eval mode with torch.onnx.export(model, (x,), f, dynamo=False, opset_version=17, "
    "input_names=['x'], output_names=['y'], dynamic_axes={'x': {0: 'batch'}, 'y': {0: 'batch'}})"
)


class GraphRejected(AgentarchError, ValueError):
    """An exported graph the host will not run or believe; the message says what to change in the network."""


def check_graph(
    data: bytes,
    *,
    max_bytes: int,
    in_shape: tuple[int, ...] | None = None,
    ids: bool | None = None,
    out_shape: tuple[int, ...] | None = None,
    interface: Interface | None = None,
    extra_ops: frozenset[str] = frozenset(),
) -> onnx.ModelProto:
    """The parsed model, with ONNX's inferred value_info, once it passes every check in the module docstring.

    `in_shape` and `out_shape` (without the batch axis) and `ids` (int64 token ids rather than float32 values;
    None accepts either) check the interface against the task when given. `interface` (interface.py: a graph task's
    named inputs) replaces that rule with its ports; `extra_ops` are allowed beyond ALLOWED_OPS (a graph network's
    scatters and gathers).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise GraphRejected(f"the graph must be the bytes of an ONNX file, not {type(data).__name__}")
    size = len(data)
    if size > max_bytes:
        raise GraphRejected(
            f"the exported graph is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB cap: "
            "make the network smaller (fewer or narrower layers, fewer parameters)"
        )
    model = onnx.ModelProto()
    try:
        model.ParseFromString(bytes(data))
    except (DecodeError, ValueError, RuntimeError) as err:
        raise GraphRejected(f"the graph is not a valid ONNX file ({err}); {EXPORT_HINT}") from None
    _check_versions(model)
    _check_contents(model, ALLOWED_OPS | extra_ops)
    if interface is None:
        _check_interface(model, in_shape, ids, out_shape)
    else:
        _check_ports(model, interface)
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as err:  # noqa: BLE001 - the checker raises ValidationError, InferenceError, ValueError...
        first = str(err).strip().splitlines()[0][:400] if str(err).strip() else type(err).__name__
        raise GraphRejected(f"the ONNX checker refuses the graph: {first}") from None
    return inferred


def _check_versions(model: onnx.ModelProto) -> None:
    if model.ir_version not in IR_VERSIONS:
        raise GraphRejected(
            f"the graph has ONNX IR version {model.ir_version}; supported: {IR_VERSIONS.start} to "
            f"{IR_VERSIONS.stop - 1}; {EXPORT_HINT}"
        )
    default = None
    for entry in model.opset_import:
        if entry.domain not in STANDARD_DOMAINS:
            raise GraphRejected(
                f"the graph imports the operator domain {entry.domain!r}; only the standard ONNX domain is "
                "allowed: no custom or contrib operators (write the network from standard torch layers)"
            )
        default = entry.version
    if default is None or default not in OPSETS:
        raise GraphRejected(
            f"the graph uses ONNX opset {default}; supported: {OPSETS.start} to {OPSETS.stop - 1} "
            "(opset_version=17 or 18)"
        )


def _check_contents(model: onnx.ModelProto, allowed: frozenset[str]) -> None:
    graph = model.graph
    if model.functions:
        raise GraphRejected("the graph defines its own functions; only plain standard operators are allowed")
    if model.training_info:
        raise GraphRejected("the graph carries training information; export the network in eval mode")
    if graph.sparse_initializer:
        raise GraphRejected("the graph stores sparse tensors; store weights as ordinary dense tensors")
    if len(graph.node) > MAX_NODES:
        raise GraphRejected(f"the graph has {len(graph.node)} nodes, more than {MAX_NODES}: make the network simpler")
    for tensor in graph.initializer:
        _check_tensor(tensor, f"the stored tensor {tensor.name!r}")
    for index, node in enumerate(graph.node):
        where = f"the {node.op_type} node {node.name or f'#{index}'!r}"
        if node.domain not in STANDARD_DOMAINS:
            raise GraphRejected(
                f"{where} is in the domain {node.domain!r}; only standard ONNX operators are allowed (no custom "
                "or contrib operators: write the network from standard torch layers)"
            )
        if node.op_type not in allowed:
            raise GraphRejected(
                f"{where} uses {node.op_type}, an operator outside the allowlist "
                f"({_reason(node.op_type)}); the allowed operators are {', '.join(sorted(allowed))}"
            )
        for attribute in node.attribute:
            _check_attribute(attribute, where)


def _reason(op: str) -> str:
    if op in ("If", "Loop", "Scan"):
        return "control flow: make the forward pass the same for every input, with no data-dependent branches or loops"
    if op.startswith("Random") or op in ("Bernoulli", "Multinomial", "Dropout"):
        return "randomness: an evaluated network must be deterministic, so sample nothing in eval mode"
    if op in ("NonZero", "Unique", "TopK", "NonMaxSuppression", "Compress", "GatherND", "GatherElements") or (
        op.startswith("Scatter")
    ):
        return "data-dependent indexing: use fixed slicing, masking with torch.where, or a weighted sum instead"
    if op in ("Resize", "Upsample"):
        return "upsampling by interpolation: use a transposed convolution or F.pixel_shuffle instead"
    return "not used by the networks this search evaluates"


def _check_attribute(attribute: AttributeProto, where: str) -> None:
    if attribute.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) or attribute.HasField("g") or attribute.graphs:
        raise GraphRejected(f"{where} holds a nested graph; only flat graphs of standard operators are allowed")
    if attribute.type in (AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS):
        raise GraphRejected(f"{where} stores a sparse tensor; store constants as dense tensors")
    for tensor in [attribute.t] if attribute.HasField("t") else []:
        _check_tensor(tensor, f"{where}'s attribute {attribute.name!r}")
    for tensor in attribute.tensors:
        _check_tensor(tensor, f"{where}'s attribute {attribute.name!r}")
    for text in _strings(attribute):
        if _looks_like_path(text):
            raise GraphRejected(f"{where}'s attribute {attribute.name!r} looks like a file path ({text[:60]!r})")


def _strings(attribute: AttributeProto) -> Iterator[str]:
    for raw in [attribute.s, *attribute.strings]:
        yield raw.decode("utf-8", errors="replace")


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith("~") or ":" in text


def _check_tensor(tensor: TensorProto, what: str) -> None:
    if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        raise GraphRejected(
            f"{what} keeps its data in an external file ({location[:60]!r}); every weight must be stored inside "
            "the graph (export without external data)"
        )
    if tensor.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        raise GraphRejected(f"{what} is a string tensor; a network's graph holds numbers only")


def _check_interface(
    model: onnx.ModelProto, in_shape: tuple[int, ...] | None, ids: bool | None, out_shape: tuple[int, ...] | None
) -> None:
    graph = model.graph
    stored = {t.name for t in graph.initializer}
    inputs = list(graph.input)
    if len(inputs) != 1 or inputs[0].name in stored:
        names = [i.name for i in inputs]
        raise GraphRejected(
            f"the graph has the inputs {names[:5]}; it must have exactly one, the batch of examples (weights "
            f"stored as initializers, not inputs); {EXPORT_HINT}"
        )
    if len(graph.output) != 1:
        raise GraphRejected(
            f"the graph has {len(graph.output)} outputs; forward must return one tensor (the logits or predictions)"
        )
    (x,), (y,) = inputs, graph.output
    dtypes = {True: (TensorProto.INT64,), False: (TensorProto.FLOAT,), None: (TensorProto.INT64, TensorProto.FLOAT)}
    x_type = x.type.tensor_type
    if not x.type.HasField("tensor_type") or x_type.elem_type not in dtypes[ids]:
        wanted = {True: "int64 token ids", False: "float32 values", None: "float32 values or int64 token ids"}[ids]
        raise GraphRejected(f"the graph's input {x.name!r} must be a tensor of {wanted}")
    batch = _batch_axis(x, "input")
    dims = x_type.shape.dim
    if len(dims) < 2 or any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims[1:]):
        raise GraphRejected(
            f"the graph's input must be (batch, *in_shape) with every axis but the batch axis fixed; got {_show(dims)}"
        )
    if in_shape is not None and tuple(d.dim_value for d in dims[1:]) != tuple(in_shape):
        raise GraphRejected(f"the graph's input is {_show(dims)}, the task's examples are {tuple(in_shape)}")
    if not y.type.HasField("tensor_type") or y.type.tensor_type.elem_type not in FLOAT_TYPES:
        raise GraphRejected("the graph's output must be a floating-point tensor (logits or predictions)")
    if _batch_axis(y, "output") != batch:
        raise GraphRejected(
            f"the graph's output axis 0 ({_batch_axis(y, 'output')!r}) is not the input's batch axis ({batch!r}); "
            f"{EXPORT_HINT}"
        )
    if out_shape is not None:
        got = [d.dim_value if d.HasField("dim_value") else None for d in y.type.tensor_type.shape.dim[1:]]
        if len(got) != len(out_shape) or any(g is not None and g != w for g, w in zip(got, out_shape)):
            raise GraphRejected(
                f"the graph's output is {_show(y.type.tensor_type.shape.dim)}, expected (batch, {out_shape})"
            )


def _check_ports(model: onnx.ModelProto, interface: Interface) -> None:
    """The graph's inputs are the interface's ports, by name and in order (a port the network never reads may be
    missing: the exporter drops an unused input, such as the edges of a network of node features alone), and its one
    output is the interface's output: each of an allowed element type, of the port's rank, a fixed axis of its size,
    a symbol's axis dynamic, and one symbol one dynamic axis wherever it appears (the node count of x is the node
    count of the output), another symbol another axis (a graph count is not the node count)."""
    graph = model.graph
    stored = {t.name for t in graph.initializer}
    names = [value.name for value in graph.input]
    wanted = interface.names
    if not names or [n for n in wanted if n in names] != names or stored & set(names):
        raise GraphRejected(
            f"the graph has the inputs {names[:5]}; it must have {wanted}, in forward's order (weights stored as "
            f"initializers, not inputs): export with input_names={wanted}"
        )
    if len(graph.output) != 1:
        raise GraphRejected(
            f"the graph has {len(graph.output)} outputs; forward must return one tensor (the logits or predictions)"
        )
    ports = {port.name: port for port in interface.inputs}
    symbols: dict[str, str] = {}
    for value, port in [*((value, ports[value.name]) for value in graph.input), (graph.output[0], interface.output)]:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor.elem_type not in port.dtypes:
            kinds = " or ".join(TensorProto.DataType.Name(t).lower() for t in port.dtypes)
            raise GraphRejected(f"the graph's {value.name!r} must be a tensor of {kinds}")
        dims = tensor.shape.dim if tensor.HasField("shape") else []
        if len(dims) != len(port.axes):
            raise GraphRejected(f"the graph's {value.name!r} is {_show(dims)}; expected {_show_axes(port.axes)}")
        for dim, axis in zip(dims, port.axes):
            fixed = dim.dim_value if dim.HasField("dim_value") else None
            if isinstance(axis, str):
                named = symbols.setdefault(axis, dim.dim_param)
                shared = any(other != axis and param == dim.dim_param for other, param in symbols.items())
                if fixed is not None or not dim.dim_param or named != dim.dim_param or shared:
                    raise GraphRejected(
                        f"the graph's {value.name!r} is {_show(dims)}; expected {_show_axes(port.axes)}, each named "
                        f"axis dynamic, the same across inputs and output, and distinct from the others: export with "
                        "dynamic_axes"
                    )
            elif fixed is None or fixed <= 0 or (axis is not None and fixed != axis):
                raise GraphRejected(f"the graph's {value.name!r} is {_show(dims)}; expected {_show_axes(port.axes)}")


def _show_axes(axes: tuple[str | int | None, ...]) -> str:
    return "(" + ", ".join("?" if a is None else str(a) for a in axes) + ")"


def _batch_axis(value: onnx.ValueInfoProto, what: str) -> str:
    """The name of the value's dynamic axis 0; a fixed batch size would run only batches of that size."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape") or not tensor.shape.dim:
        raise GraphRejected(f"the graph's {what} has no shape; {EXPORT_HINT}")
    first = tensor.shape.dim[0]
    if first.HasField("dim_value") or not first.dim_param:
        raise GraphRejected(
            f"the graph's {what} has a fixed batch size ({first.dim_value}); export it with a dynamic batch axis "
            "(dynamic_axes={'x': {0: 'batch'}, 'y': {0: 'batch'}})"
        )
    return first.dim_param


def _show(dims) -> str:
    return "(" + ", ".join(d.dim_param or str(d.dim_value) if d.dim_param or d.dim_value else "?" for d in dims) + ")"
