"""The sandbox runner: the only place where candidate code executes.

It runs in its own process under the isolation the host set up (agentarch/isolation/, its job in job.py) and imports
torch, numpy, the standard library and its sibling trainer, nothing of the orchestrator. It talks to
the host over two pipes:

- stdout carries JSON lines, one per event: `smoke`, then `trained`, or `error` at any point; while training,
  a `checkpoint` now and then (sandbox/checkpoint.py: the file it names waits in scratch for the host to read).
  Before candidate code runs, stdout and stderr are pointed at a log file in the scratch
  directory, so whatever the candidate prints cannot be mistaken for an event.
- stdin carries the host's word after the smoke stage: `train` or `stop` (the host stops
  functional duplicates, near-copies and over-budget candidates without paying for training).

Test and validation labels are not in the data directory. A graph task (node classification) is one example, the
whole graph: its network is called `net(x, edge_index)` (`Inputs.args`) on every node at once, and its smoke stage
runs on the whole training graph; the functional hash runs on a small fixed graph of the runner's (`probe_graph`). A
graphs task (graph classification) batches graphs: `net(x, edge_index, batch)` (sandbox/graphbatch.py), its hash runs
on two fixed graphs (`probe_graphs`), and its smoke stage checks that a graph's output does not depend on the other
graphs of its batch (`graphbatch.mixed_row`). With trusted scoring the runner writes the held-out logits and the host
scores them; with graph scoring (`spec["scoring"] == "graph"`) the data directory holds the training split alone, and
the runner exports the trained network to ONNX (`export_graph`), which a clean evaluator scores
(agentarch/evaluation/graphs/).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import resource
import signal
import statistics
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from . import checkpoint, landlock, proxies, trainer
from .errors import CandidateError
from .flops import FlopCount as FlopCount  # the runner's counting, which tests and benchmarks reach through it
from .flops import count_flops as count_flops
from .flops import trace
from .graph_export import export_graph as export_graph  # run() calls it by this name: an attacker's patch is tested
from .graph_export import without_onnx_package
from .graphbatch import GraphBatch, mixed_row

FUNCTIONAL_BATCH = 4
PROBE_NODES = 12
"""Nodes of the fixed graph a graph task's functional hash runs on (`probe_graph`)."""
SMOKE_BATCH = 8
PROXY_BATCH = 32
"""Training examples the zero-cost proxies see: naswot's kernel is one row per example, and 8 say little."""

LATENCY_WARMUP = 2
LATENCY_REPS = 5
LATENCY_SHARE = 0.05
PROXY_SHARE = 0.2
"""Shares of the smoke stage's time left (after the forward and backward pass) that latency and proxies may take."""

GRAPH_FILE = "graph.onnx"
SMOKE_GRAPH_FILE = "smoke_graph.onnx"  # graph scoring: the untrained network, for the host to measure before training


def _die_with_parent() -> None:
    """Ask the kernel to kill this process if the host dies, so no evaluation outlives its orchestrator."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _load_seccomp(bpf_path: Path) -> None:
    """Install the host's compiled seccomp allowlist where bubblewrap (which installs it itself) is absent: the host
    compiles it once (agentarch.isolation.seccomp.seccomp_program), so both isolation modes enforce the same rules."""
    program = bpf_path.read_bytes()
    bpf_path.unlink()

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))  # struct sock_filter is 8 bytes
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    one, zero = ctypes.c_ulong(1), ctypes.c_ulong(0)
    if (
        libc.prctl(pr_set_no_new_privs, one, zero, zero, zero) != 0
        or libc.prctl(pr_set_seccomp, ctypes.c_ulong(seccomp_mode_filter), ctypes.byref(fprog), zero, zero) != 0
    ):
        raise OSError(ctypes.get_errno(), "could not install the seccomp filter")


def _redirect_output(log_path: Path) -> TextIO:
    """Keep the real stdout for events and send fd 1 and 2 (the candidate's prints) to the log."""
    events = os.fdopen(os.dup(1), "w", buffering=1)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    return events


def load_candidate(code_path: Path) -> type[nn.Module]:
    """Execute the candidate's module code and return its Net class."""
    module = types.ModuleType("candidate")
    module.__file__ = str(code_path)
    sys.modules["candidate"] = module
    try:
        exec(compile(code_path.read_text(), str(code_path), "exec"), module.__dict__)  # noqa: S102 - this is the sandbox
    except Exception as err:
        raise CandidateError("import", f"executing the module failed: {type(err).__name__}: {err}") from err
    net = getattr(module, "Net", None)
    if not (isinstance(net, type) and issubclass(net, nn.Module)):
        raise CandidateError("contract-net", "Net is not an nn.Module subclass")
    return net


def build(
    net_cls: type[nn.Module],
    in_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    vocab_size: int | None = None,
    out_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """`Net(in_shape, num_classes)`, seeded; a sequence task over ids also passes `vocab_size=`, a dense task
    `out_shape=` (the restored image's (C, H, W)), as the contract says."""
    torch.manual_seed(seed)
    extra: dict[str, Any] = {}
    if vocab_size is not None:
        extra["vocab_size"] = vocab_size
    if out_shape is not None:
        extra["out_shape"] = tuple(out_shape)
    try:
        return net_cls(in_shape, num_classes, **extra)
    except Exception as err:
        said = "".join(f", {key}={value}" for key, value in extra.items())
        raise CandidateError(
            "build", f"Net({tuple(in_shape)}, {num_classes}{said}) raised {type(err).__name__}: {err}"
        ) from err


def expected_shape(spec: dict[str, Any], batch: int) -> tuple[int, ...]:
    """What forward must return: an output per position for token and lm tasks, a restored image for dense tasks,
    else one per example."""
    if spec["kind"] == "dense":
        return (batch, *spec["out_shape"])
    if spec["kind"] in ("token", "lm"):
        return (batch, spec["in_shape"][0], spec["num_classes"])
    return (batch, spec["num_classes"])


def fixed_input(spec: dict[str, Any], batch: int) -> torch.Tensor:
    """The same input for every candidate of a task, independent of any global RNG state.

    Ids in the task's vocabulary for token, lm and id-sequence tasks, uniform pixel values in [0, 1) for dense
    tasks, standard normal floats (what normalized inputs look like) for the rest.
    """
    gen = torch.Generator().manual_seed(1234)
    if spec["kind"] == "dense":
        return torch.rand((batch, *spec["in_shape"]), generator=gen)
    vocab = spec["num_classes"] if spec["kind"] in ("token", "lm") else spec.get("vocab_size")
    if vocab is not None:
        return torch.randint(0, vocab, (batch, *spec["in_shape"]), generator=gen)
    return torch.randn((batch, *spec["in_shape"]), generator=gen)


def _ring_with_hub(nodes: int) -> torch.Tensor:
    """Edges (2, E) of a ring of `nodes`, both directions, with node 0 a hub joined to every other even node."""
    ring = torch.arange(nodes)
    hub = torch.arange(2, nodes, 2)
    src = torch.cat([ring, hub])
    dst = torch.cat([(ring + 1) % nodes, torch.zeros_like(hub)])
    return torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])


def probe_graph(spec: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """A graph task's fixed input, the same for every candidate: PROBE_NODES nodes of standard normal features on a
    ring, both directions, with node 0 a hub joined to every other even node, so degrees differ (on a regular graph
    mean, sum and degree-normalised aggregation would agree, and different networks could hash alike)."""
    return fixed_input(spec, PROBE_NODES), _ring_with_hub(PROBE_NODES)


def probe_graphs(spec: dict[str, Any]) -> GraphBatch:
    """A graphs task's fixed input: two graphs of different sizes (PROBE_NODES nodes and about half as many), each a
    ring with a hub as in `probe_graph`, so sum and mean pooling differ too."""
    small = PROBE_NODES // 2 + 1
    edges = torch.cat([_ring_with_hub(PROBE_NODES), _ring_with_hub(small) + PROBE_NODES], dim=1)
    batch = torch.cat([torch.zeros(PROBE_NODES, dtype=torch.long), torch.ones(small, dtype=torch.long)])
    return GraphBatch(fixed_input(spec, PROBE_NODES + small), edges, batch, 2)


class WithEdges(nn.Module):
    """A graph network called as the zero-cost proxies call any network, `model(x)`: the task's edges (and a graphs
    task's batch vector) bound in (plain attributes, not buffers, so a proxy that casts the network's floats leaves the
    ids alone)."""

    def __init__(self, net: nn.Module, edge_index: torch.Tensor, batch: torch.Tensor | None = None) -> None:
        super().__init__()
        self.net = net
        self.edge_index = edge_index
        self.batch = batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.edge_index) if self.batch is None else self.net(x, self.edge_index, self.batch)


def check_causal(model: nn.Module, spec: dict[str, Any]) -> None:
    """Refuse an lm candidate whose output at a position depends on later ids.

    Its held-out inputs are the very bytes it is scored on, so a network that looks ahead would
    score near 0 bits per byte without learning anything. The check changes the second half of
    the fixed input and requires the first half's outputs to stay put (in eval mode, as predicted).
    """
    x = fixed_input(spec, 2)
    half = x.shape[1] // 2
    changed = x.clone()
    changed[:, half:] = (changed[:, half:] + 1) % spec["num_classes"]
    with torch.no_grad():
        a, b = model(x), model(changed)
    if not torch.allclose(a[:, :half], b[:, :half], rtol=1e-4, atol=1e-5):
        raise CandidateError(
            "not-causal", f"changing ids from position {half} on changed the outputs before it: the network looks ahead"
        )


def functional_hash(net_cls: type[nn.Module], spec: dict[str, Any]) -> str:
    """Hash of what the network computes: seed-0 build, fixed input, outputs rounded, parameter shapes,
    dropout rates.

    Two programs that build the same layers in the same order compute the same function whatever
    their names and code style, and get the same hash.
    """
    in_shape, num_classes = tuple(spec["in_shape"]), spec["num_classes"]
    model = build(net_cls, in_shape, num_classes, 0, spec.get("vocab_size"), spec.get("out_shape")).eval()
    with torch.no_grad():
        if spec["kind"] == "graph":
            out = model(*probe_graph(spec))
        elif spec["kind"] == "graphs":
            out = model(*probe_graphs(spec).args())
        else:
            out = model(fixed_input(spec, FUNCTIONAL_BATCH))
    if not isinstance(out, torch.Tensor):
        raise CandidateError("output-type", f"forward returned {type(out).__name__}, expected a Tensor")
    digest = hashlib.sha256(json.dumps(spec["in_shape"]).encode())
    for p in model.parameters():
        digest.update(str(tuple(p.shape)).encode())
    # Dropout is the identity in eval mode, yet networks that differ only in their rates train differently.
    digest.update(str([m.p for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]).encode())
    rounded = np.round(out.detach().double().cpu().numpy(), 4) + 0.0  # + 0.0 folds -0.0 into 0.0
    digest.update(str(rounded.shape).encode())
    digest.update(rounded.tobytes())
    return digest.hexdigest()


def latency_ms(model: nn.Module, args: tuple[torch.Tensor, ...], device: torch.device, budget_s: float) -> float:
    """Milliseconds per forward pass of the batch `args` (`(x,)`, or a graph's `(x, edge_index)`) on `device`, in eval
    mode without gradients.

    The median of up to LATENCY_REPS timed passes after LATENCY_WARMUP untimed ones (first calls pay
    for allocations and kernel selection), the device synchronised around each; once `budget_s` is
    spent no further pass starts, but at least one is timed.
    """
    model.eval()
    times: list[float] = []
    started = time.perf_counter()
    with torch.no_grad():
        for call in range(LATENCY_WARMUP + LATENCY_REPS):
            began = time.perf_counter()
            model(*args)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if call >= LATENCY_WARMUP or time.perf_counter() - started >= budget_s:
                times.append(time.perf_counter() - began)
            if times and time.perf_counter() - started >= budget_s:
                break
    return statistics.median(times) * 1000


def peak_memory_mb(device: torch.device) -> float:
    """The most memory the process has held: on CUDA the tensors allocated on `device` since the last reset
    of its peak statistics; on CPU the process's peak resident set (ru_maxrss), which includes the
    interpreter, torch and the task's data, as the trainer's figure does."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def smoke(
    net_cls: type[nn.Module], spec: dict[str, Any], inputs: trainer.Inputs, device: torch.device, deadline: float
) -> dict[str, Any]:
    """Build, count, and run one forward and backward pass on real training data, checking the contract; then
    measure the network: latency and peak memory, and the zero-cost proxies (sandbox/proxies.py).

    Latency is timed on the smoke batch (SMOKE_BATCH training examples, whatever batch size the
    candidate trains with, so every candidate of a task is timed alike and the cost stays small).
    Peak memory covers the smoke stage up to the proxies, which run on their own copy of the network.
    `deadline` (time.monotonic) is when the host stops waiting for the smoke event; the measurements
    take shares of the time left before it. A graph task's smoke batch is its whole graph (one example), and its
    proxies see the network with the edges bound in (`WithEdges`), each node an example of the proxy batch. A graphs
    task's smoke batch is SMOKE_BATCH graphs, its FLOPs one graph's, and its proxies' batch PROXY_BATCH graphs.
    """
    in_shape, num_classes, seed = tuple(spec["in_shape"]), spec["num_classes"], spec["train"]["seed"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fhash = functional_hash(net_cls, spec)
    model = build(net_cls, in_shape, num_classes, seed, inputs.vocab_size, inputs.out_shape)
    params = sum(p.numel() for p in model.parameters())
    if params == 0:
        raise CandidateError("no-parameters", "Net has no trainable parameters")
    graph = inputs.edge_index is not None
    batch = len(inputs.train_x) if graph else SMOKE_BATCH
    x, y = inputs.train_x[:batch].cpu(), inputs.train_y[:batch].cpu()
    edges = inputs.edge_index.cpu() if inputs.edge_index is not None else None
    try:
        if isinstance(x, GraphBatch):  # one sample is one graph
            one = inputs.train_x[:1].cpu()
            traced = trace(model.eval(), one.x, one.edge_index, one.batch)
        else:
            traced = trace(model.eval(), x, edges)
    except Exception as err:
        raise CandidateError("forward", f"forward raised {type(err).__name__}: {err}") from err
    model.train().to(device)
    on_device = tuple(t.to(device) for t in inputs.args(x))
    try:
        out = model(*on_device)
    except Exception as err:
        raise CandidateError("forward", f"forward raised {type(err).__name__}: {err}") from err
    if not isinstance(out, torch.Tensor):
        raise CandidateError("output-type", f"forward returned {type(out).__name__}, expected a Tensor")
    want = expected_shape(spec, len(x))
    if tuple(out.shape) != want:
        raise CandidateError("output-shape", f"forward returned shape {tuple(out.shape)}, expected {want}")
    if not torch.isfinite(out).all():
        raise CandidateError("non-finite", "forward produced NaN or Inf on real inputs")
    loss = trainer.loss_fn(spec["kind"], out, y.to(device), 0.0, inputs.regression)
    try:
        loss.backward()
    except Exception as err:
        raise CandidateError("backward", f"backward raised {type(err).__name__}: {err}") from err
    if not torch.isfinite(loss):
        raise CandidateError("non-finite", "the loss on one batch is NaN or Inf")
    try:
        latency = latency_ms(model, on_device, device, LATENCY_SHARE * (deadline - time.monotonic()))
    except Exception as err:
        raise CandidateError("forward", f"forward in eval mode raised {type(err).__name__}: {err}") from err
    memory = peak_memory_mb(device)
    if isinstance(x, GraphBatch) and (row := mixed_row(model.eval(), x.to(device))) is not None:
        raise CandidateError(
            "graphs-mixed",
            f"graph {row} of a batch of {len(x)} got other outputs alone than inside the batch: each graph's output "
            "must depend on its own nodes only (pool per graph with `batch`, never over the whole batch)",
        )
    if spec["kind"] == "lm":
        try:
            check_causal(model.eval().cpu(), spec)
        except CandidateError:
            raise
        except Exception as err:
            raise CandidateError("forward", f"forward raised {type(err).__name__}: {err}") from err
    del model

    proxy_x = inputs.train_x[: batch if graph else PROXY_BATCH]

    def fresh() -> nn.Module:
        net = build(net_cls, in_shape, num_classes, seed, inputs.vocab_size, inputs.out_shape)
        if isinstance(proxy_x, GraphBatch):
            return WithEdges(net, proxy_x.edge_index, proxy_x.batch)
        return net if inputs.edge_index is None else WithEdges(net, inputs.edge_index)

    scores, proxy_seconds = proxies.compute(
        fresh,
        proxy_x.x if isinstance(proxy_x, GraphBatch) else proxy_x,
        inputs.train_y[: batch if graph else PROXY_BATCH],
        lambda output, target: trainer.loss_fn(spec["kind"], output, target, 0.0, inputs.regression),
        PROXY_SHARE * (deadline - time.monotonic()),
        seed,
    )
    return {
        "params": params,
        "flops": int(traced.total),
        "functional_hash": fhash,
        "structure": traced.structure(),
        "output_shape": list(out.shape),
        "latency_ms": latency,
        "peak_memory_mb": memory,
        "proxies": scores,
        "proxy_seconds": proxy_seconds,
    }


def run(spec: dict[str, Any], events: TextIO) -> None:
    """Smoke, wait for the host's word, train, write outputs."""

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event) + "\n")

    stage = "setup"
    deadline = time.monotonic() + spec["smoke_timeout_s"]
    try:
        torch.set_num_threads(spec["threads"])
        device = trainer.pick_device()
        inputs = trainer.load_inputs(Path(spec["inputs_dir"]), device)
        spec = {**spec, "vocab_size": inputs.vocab_size, "out_shape": inputs.out_shape}
        stage = "smoke"
        started = time.perf_counter()
        net_cls = load_candidate(Path(spec["code_path"]))
        report = smoke(net_cls, spec, inputs, device, deadline)
        out_dir = Path(spec["output_dir"])
        if spec.get("scoring") == "graph":  # the host measures this graph, not the report (its digest binds training's)
            untrained = build(
                net_cls,
                tuple(spec["in_shape"]),
                spec["num_classes"],
                spec["train"]["seed"],
                inputs.vocab_size,
                inputs.out_shape,
            )
            export_graph(untrained, inputs, out_dir / SMOKE_GRAPH_FILE)
        emit({"event": "smoke", **report, "device": str(device), "seconds": time.perf_counter() - started})
        if sys.stdin.readline().strip() != "train":
            return
        (out_dir / SMOKE_GRAPH_FILE).unlink(missing_ok=True)  # read by the host: room in scratch for the trained one
        stage = "train"
        cfg = trainer.TrainConfig(**spec["train"])
        trainer.seed_everything(cfg.seed, compiled=cfg.compile)
        shapes = (tuple(spec["in_shape"]), spec["num_classes"], cfg.seed, inputs.vocab_size, inputs.out_shape)
        model = build(net_cls, *shapes).to(device)
        saver = checkpoint.Saver(out_dir, spec["checkpoint_s"], emit) if spec.get("checkpoint_s") is not None else None
        resume = checkpoint.Resume.load(out_dir / checkpoint.RESUME_FILE) if spec.get("resume") else None
        result = trainer.train(model, inputs, cfg, device, saver, resume)
        graph: dict[str, Any] = {}
        if spec.get("scoring") == "graph":  # the held-out inputs are not here; the host scores the graph
            stage = "export"
            seconds = export_graph(model, inputs, out_dir / GRAPH_FILE)
            graph = {"export_seconds": seconds, "graph_bytes": (out_dir / GRAPH_FILE).stat().st_size}
        else:
            for split, x in (("val", inputs.val_x), ("test", inputs.test_x)):
                np.save(out_dir / f"{split}_outputs.npy", trainer.predict(model, x, cfg.batch_size, device, inputs))
        emit(
            {
                **graph,
                "event": "trained",
                "curve": result.curve,
                "train_seconds": result.train_seconds,
                "steps": result.steps,
                "epochs_done": result.epochs_done,
                "stopped_early": result.stopped_early,
                "notes": result.notes,
                "peak_memory_mb": result.peak_memory_mb,
                "device": str(device),
            }
        )
    except CandidateError as err:
        emit({"event": "error", "stage": stage, "kind": err.kind, "message": _clip(str(err))})
    except Exception as err:
        kind = "diverged" if type(err).__name__ == "TrainingDiverged" else "exception"
        emit(
            {
                "event": "error",
                "stage": stage,
                "kind": kind,
                "message": _clip(f"{type(err).__name__}: {err}"),
                "traceback": _clip(traceback.format_exc(limit=8)),
            }
        )


def _clip(text: str, limit: int = 16_000) -> str:
    """Head and tail of a long text: the host refuses an event line over 1 MiB, and an honest candidate's huge
    exception message should still arrive as a (shortened) error, not as a refusal."""
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]} …[{len(text) - limit:,} characters cut]… {text[-limit // 2 :]}"


def _warm_up() -> None:
    """Import what a job's first export needs (torch.onnx and its TorchScript exporter) while no job is waiting: a
    warm sandbox (agentarch/isolation/warm.py) does it before its candidate is known, a cold one before reading it."""
    import torch.onnx  # noqa: F401 - imported for its cost, here rather than in the candidate's smoke stage

    without_onnx_package()


def main() -> None:
    """Start up to "waiting for its job", then run the one job the host hands over.

    The sandbox's own part of the spec (its paths, threads, Landlock rules and seccomp filter) is in the file named on
    the command line from the launch; the job's part (task, training, scoring) arrives as one JSON line on stdin once
    the candidate's code is in scratch (agentarch/isolation/job.py, `hand`). The runner is confined before it waits,
    so a warm sandbox, started while another candidate trains, waits under its full isolation, and a cold one (handed
    its job at once) runs the very same start. End of input instead of a job: a warm sandbox nobody used; exit."""
    _die_with_parent()
    spec = json.loads(Path(sys.argv[1]).read_text())
    os.chdir(spec["output_dir"])
    if rules := spec.get("landlock"):  # the process mode: no mount namespace, so the runner confines itself
        landlock.restrict(rules["read"], rules["write"], rules["devices"])
    if spec.get("seccomp_bpf"):
        _load_seccomp(Path(spec["seccomp_bpf"]))
    events = _redirect_output(Path(spec["output_dir"]) / "candidate.log")
    _warm_up()
    job = sys.stdin.readline()
    if job.strip():
        run({**json.loads(job), **spec}, events)
    events.flush()
    os._exit(0)  # skip interpreter teardown: candidate objects may hang or crash in their finalizers


if __name__ == "__main__":
    main()
