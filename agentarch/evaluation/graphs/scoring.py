"""Graph scoring on the host: a trained candidate's exported ONNX graph, checked, run by the clean evaluator, scored.

The training job (sandbox/runner.py, with `spec["scoring"] == "graph"`) sees the training split alone and hands
back `graph.onnx`. Here the host checks the graph (checks.py: size, opset, domains, operators, no external data;
batch_flow.py: no example's output depends on another's), starts the clean evaluator (worker.py) sandboxed through
agentarch.isolation, as its own program with ONNX Runtime and numpy in its runtime view and no torch, has it run the
graph on the task's held-out inputs and the host's fixed probe inputs, reads the outputs back as hostile input
(agentarch/isolation/protocol.py) and scores them with the task's metric against labels that never left the host
(agentarch/tasks/scoring.py): the same `val_accuracy` and `test_accuracy` the trusted path records.

One worker process per evaluation: a graph that subverted ONNX Runtime cannot outlive its own evaluation to touch
another candidate's outputs. Its start is measured (`GraphScores.timings["start_seconds"]`; docs/sandbox.md). On a
slot with warm sandboxes (agentarch/isolation/warm.py) the worker was started while the candidate trained, for this
configuration (`evaluator_launch`), and is handed the graph and probe inputs: still one graph per worker, closed
after it (`GraphScores.warm_start` says which).

What the host believes about the network comes from graphs too (`believed`): the runner also exports the untrained
network at its smoke stage (`SMOKE_GRAPH_FILE`), whose measures (measures.py: parameters, FLOPs, structure
signature) replace the runner's own report before any decision is taken on it (the parameter budget, novelty, a
screening pick), and the trained graph's measures, with the clean evaluator's latency and functional hash, replace
them again once it is scored. The two graphs must be one architecture (`measures.digest`), so the smoke stage's
measures are binding: a candidate that hands over one network to be measured and trains another is `failed`.

An lm task's graph is also checked for causality on the real held-out sequences (`CAUSAL_CHECK`, worker.py). A graph
task's graph (node classification) takes named inputs, x and edge_index (interface.py): it is checked against those
ports instead of the batch proof, measured at the task's node and edge counts, run once on the whole graph, and the
held-out nodes' rows of its output are scored. A graphs task's graph (graph classification) takes x, edge_index and
batch: it is measured on one graph of the training split's mean size, and each held-out graph is run alone
(interface.py says why), one row each.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from agentarch.errors import AgentarchError
from agentarch.evaluation.graphs import interface
from agentarch.isolation.job import Outcome, SandboxJob
from agentarch.isolation.launch import Program
from agentarch.isolation.policy import IsolationMode, Limits
from agentarch.isolation.protocol import ProtocolError, cap_text
from agentarch.isolation.warm import Launch, WarmSlot, handed
from agentarch.tasks.preparation import PreparedTask
from agentarch.tasks.scoring import output_shape, score, secondary
from agentarch.tasks.task import METRICS, Task, TaskError

if TYPE_CHECKING:
    import onnx

    from agentarch.evaluation.graphs.measures import GraphMeasures

Scoring = Literal["graph", "trusted"]
"""Where held-out outputs come from: the exported graph run by the clean evaluator, or the candidate's own process."""

WORKER = Program(module=Path(__file__).with_name("worker.py"), packages=("onnxruntime", "numpy"), log="worker.log")
"""The clean evaluator as a sandbox program: its module file, over a runtime view of ONNX Runtime and numpy."""

GRAPH_FILE = "graph.onnx"
SMOKE_GRAPH_FILE = "smoke_graph.onnx"
"""The untrained network the runner exports at its smoke stage in graph scoring: what the host measures before
training (sandbox/runner.py writes it under the same name)."""
PROBE_FILE = "probe_x.npy"
PROBE_BATCH = 4
PROBE_SEED = 1234
LATENCY_RUNS = 20
LATENCY_BUDGET_S = 2.0
MAX_GRAPH_BYTES = 512 * 2**20
"""The largest graph the host reads back: 128M float32 weights, far past any task's parameter budget."""
OUTPUT_ELEMENTS_PER_BATCH = 2**21
"""Output values per batch the worker runs (a batch of 256 digits, of 64 lm sequences of 128 x 256 logits)."""
CAUSAL_SEQUENCES = 1024
"""At most this many sequences of each held-out split are checked for causality (a random share of them where a
split holds more; every one of stdlib-bytes' 357 and 305)."""
CAUSAL_CHECK = """every validation and test sequence of an lm task (up to CAUSAL_SEQUENCES per split, a random share
of a bigger split; all 662 on stdlib-bytes), each with one cut drawn uniformly from positions 1 to L-1 and every id
from the cut on replaced by a different random id, the sample, cuts and ids drawn from a seed the host picks afresh
for each evaluation (so no graph can know where they fall); the logits before each cut must stay within 1e-4
(absolute, plus 1e-4 relative). A look-ahead that moves the logits just before a random cut on a share f of the
sequences goes unseen with probability (1 - f)^N over N checked sequences: at f = 1% on stdlib-bytes, 0.13%
(N = 662), and at f = 0.5% with two full splits, 0.004% (N = 2048); what it could gain is bounded by that share f
of the positions. The cost is one more run of the graph over the checked sequences: the held-out pass of the lm
seeds on stdlib-bytes took 1.6 to 2.3 times as long with it (about 1.5 s more on this 2-core machine)."""
"""How the clean evaluator checks that an lm graph is causal (worker.py, `Worker.check_causal`)."""

REPORTED = ("params", "flops", "functional_hash", "structure", "latency_ms", "proxies")
"""What the runner reports about the network in its smoke event, from the candidate's own process: graph scoring
believes none of it (`believed`). Peak memory (a training-device measure no graph holds) stays the runner's word."""


class GraphFailed(AgentarchError):
    """The graph could not be scored; the message is the candidate's reason, written for the repair prompt."""


@dataclass
class GraphScores:
    """What the clean evaluator made of one graph."""

    scores: dict[str, float]  # val_accuracy, test_accuracy: the task's metric, as the trusted path records it
    latency_ms: float | None  # ONNX Runtime's median for a batch of one, on the evaluator's CPU
    functional_hash: str  # of the graph's outputs on the host's fixed probe inputs
    probe_outputs: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)  # start, load, run and wall seconds of the evaluator
    measures: GraphMeasures | None = None  # parameters, FLOPs, structure signature and digest of the graph
    secondary: dict[str, float] = field(default_factory=dict)  # a dense task's other metric per split: val_ssim, ...
    warm_start: bool = False  # whether the evaluator was a slot's, started ahead (warm.py), or started cold here


def max_graph_bytes(limits: Limits) -> int:
    """The largest graph read back: MAX_GRAPH_BYTES, or the job's file-size limit if that is smaller."""
    return min(MAX_GRAPH_BYTES, limits.max_file_mb * 2**20)


def probe_files(task: Task) -> tuple[dict[str, bytes], str | dict[str, str]]:
    """The probe inputs as files for the clean evaluator's scratch, and the request's `probe`: one batch of examples
    (`probe_inputs`), or a graph task's probe graph, one file per named input (interface.py, `probe_graph`), or a
    graphs task's probe graphs with their node offsets `ptr` (`probe_graphs`), run one by one."""
    if interface.interface(task) is None:
        return {PROBE_FILE: _npy(probe_inputs(task))}, PROBE_FILE
    made = interface.probe_graphs if task.kind == "graphs" else interface.probe_graph
    named = made(int(task.in_shape[0]), PROBE_SEED)
    return {f"probe_{name}.npy": _npy(value) for name, value in named.items()}, {n: f"probe_{n}.npy" for n in named}


def probe_rows(task: Task) -> int:
    """Rows of the graph's output on the probe inputs: its examples, the probe graph's nodes, or the probe graphs."""
    if task.kind == "graphs":
        return len(interface.probe_graphs(int(task.in_shape[0]), PROBE_SEED)["ptr"]) - 1
    return PROBE_BATCH if interface.interface(task) is None else interface.PROBE_NODES


def probe_inputs(task: Task, batch: int = PROBE_BATCH) -> np.ndarray:
    """The host's fixed probe inputs, the same for every candidate of a task: ids in the task's vocabulary for token,
    lm and id-sequence tasks, uniform pixel values in [0, 1) for dense tasks, standard normal floats (what normalised
    inputs look like) for the rest."""
    rng = np.random.default_rng(PROBE_SEED)
    if task.kind == "dense":
        return rng.random((batch, *task.in_shape), dtype=np.float32)
    vocab = task.num_classes if task.kind in ("token", "lm") else task.vocab_size
    if vocab is not None:
        return rng.integers(0, vocab, (batch, *task.in_shape), dtype=np.int64)
    return rng.standard_normal((batch, *task.in_shape), dtype=np.float32)


def logits_shape(task: Task, rows: int) -> tuple[int, ...]:
    """The graph's output for `rows` examples: logits (or values) per example, or per position for token and lm, or
    a dense task's restored images."""
    if task.kind == "dense":
        return (rows, *(task.out_shape or ()))
    if task.kind in ("token", "lm"):
        return (rows, task.in_shape[0], task.num_classes)
    return (rows, task.num_classes)


def functional_hash(task: Task, probe_outputs: np.ndarray) -> str:
    """What the graph computes, as a hash: its outputs on the probe inputs rounded to 4 decimals, with their shape."""
    digest = hashlib.sha256(json.dumps(list(task.in_shape)).encode())
    rounded = np.round(probe_outputs.astype(np.float64), 4) + 0.0  # + 0.0 folds -0.0 into 0.0
    digest.update(str(rounded.shape).encode())
    digest.update(rounded.tobytes())
    return digest.hexdigest()


def evaluator_launch(prepared: PreparedTask, limits: Limits, isolation: IsolationMode) -> Launch:
    """The configuration a clean evaluator is started for: the task's held-out inputs, the job's limits and isolation,
    no GPU (ONNX Runtime runs on the CPU). A warm one (warm.py) serves only a graph of exactly this configuration."""
    return Launch(prepared.inputs_dir, limits, isolation, None, WORKER)


class GraphWorker:
    """The host's side of one clean-evaluator process: started sandboxed with the task's held-out inputs (no labels)
    at its data folder and `files` in its scratch; it answers requests until closed. Use as a context manager.

    With `warm`, the slot's evaluator started ahead for this configuration is used if it has one (`warm_start`),
    handed `files` after its launch; else one is started here. Either way it serves this worker alone."""

    def __init__(
        self,
        prepared: PreparedTask,
        limits: Limits,
        isolation: IsolationMode,
        files: dict[str, bytes] | None = None,
        warm: WarmSlot | None = None,
    ) -> None:
        started = time.perf_counter()
        launch = evaluator_launch(prepared, limits, isolation)
        self.job, self.warm_start = handed(warm, None, {}, launch, files, again=False)
        self.limits = limits
        try:
            self._expect(self.job.read_event(limits.smoke_timeout_s), "ready", "start")
        except BaseException:
            self.job.close()
            raise
        self.start_seconds = time.perf_counter() - started

    def __enter__(self) -> GraphWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.job.close()

    def ask(self, request: dict[str, Any], answer: str) -> dict[str, Any]:
        """Send one request and return the worker's `answer` event; GraphFailed with the reason otherwise."""
        refused = self.job.send(json.dumps(request))
        if refused is not None:
            raise GraphFailed(f"the clean evaluator: {refused.reason}")
        return self._expect(self.job.read_event(), answer, request.get("op", "?"))

    def _expect(self, event: dict[str, Any] | Outcome, answer: str, stage: str) -> dict[str, Any]:
        if isinstance(event, Outcome):
            raise GraphFailed(f"the clean evaluator ({stage}): {event.reason}")
        if event["event"] == "error":
            raise GraphFailed(cap_text(f"[graph:{event.get('stage', stage)}] {event['message']}"))
        if event["event"] != answer:
            raise GraphFailed(f"the clean evaluator sent a {event['event']!r} event, expected {answer!r}")
        return event

    def modules(self) -> list[str]:
        """The modules the worker has imported (a debug request: the tests check that torch is not among them)."""
        return self.ask({"op": "modules"}, "modules")["names"]

    def output(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """An output file the worker wrote, read by the host's own .npy reader (float dtypes, exactly `shape`)."""
        try:
            return self.job.output(name, shape)
        except ProtocolError as err:
            raise GraphFailed(f"unusable outputs from the graph: {err}") from None


def score_graph(
    graph: bytes,
    task: Task,
    prepared: PreparedTask,
    limits: Limits,
    isolation: IsolationMode,
    warm: WarmSlot | None = None,
) -> GraphScores:
    """Check `graph`, run it in a fresh clean evaluator on the held-out and probe inputs, and score its outputs. The
    evaluator is `warm`'s, started ahead for this configuration, where the slot has one (GraphWorker).

    Raises GraphFailed with the reason (a rejected graph, one ONNX Runtime cannot run, outputs that do not fit the
    task); SandboxError goes up (no sandbox can run here).
    """
    began = time.perf_counter()
    measured = measure_graph(graph, task, limits, interface.sizes(task, prepared.inputs_dir))
    probes, probe = probe_files(task)
    labels = {split: prepared.labels(split) for split in ("val", "test")}
    lm = task.kind == "lm"
    per_example = math.prod(logits_shape(task, 1))
    request = {
        "op": "run",
        "graph": GRAPH_FILE,
        "splits": list(labels),
        "probe": probe,
        "batch": max(1, min(256, OUTPUT_ELEMENTS_PER_BATCH // per_example)),
        "nll": lm,
        "latency_runs": LATENCY_RUNS,
        "latency_budget_s": LATENCY_BUDGET_S,
    }
    if lm:  # the graph's causality, on the held-out sequences it is scored on (CAUSAL_CHECK)
        request.update(causal_seed=secrets.randbits(63), causal_sequences=CAUSAL_SEQUENCES)
    if interface.interface(task) is not None:  # a whole graph, run once; each split its rows (interface.py)
        request["feeds"] = interface.feeds(task, list(labels))
    files = {GRAPH_FILE: graph, **probes}
    with GraphWorker(prepared, limits, isolation, files, warm) as worker:
        ran = worker.ask(request, "ran")
        worker.job.kill()  # done: nothing left in the sandbox may change the outputs while they are read
        outputs = {split: worker.output(f"{split}_outputs.npy", output_shape(task, y)) for split, y in labels.items()}
        probe_outputs = worker.output("probe_outputs.npy", logits_shape(task, probe_rows(task)))
        start_seconds, warm_start = worker.start_seconds, worker.warm_start
    meta = json.loads((prepared.inputs_dir / "meta.json").read_text())
    try:
        scores = {
            f"{split}_accuracy": score(task, _in_units(task, meta, outputs[split]), y, prepared.byte_counts(split))
            for split, y in labels.items()
        }
        others = {
            f"{split}_{name}": value
            for split, y in labels.items()
            for name, value in secondary(task, outputs[split], y).items()
        }
    except TaskError as err:
        raise GraphFailed(f"unusable outputs from the graph: {err}") from None
    return GraphScores(
        scores=scores,
        latency_ms=ran.get("latency_ms"),
        functional_hash=functional_hash(task, probe_outputs),
        probe_outputs=probe_outputs,
        timings={
            "start_seconds": start_seconds,
            "load_seconds": ran["load_seconds"],
            "run_seconds": ran["run_seconds"],
            "wall_seconds": time.perf_counter() - began,
        },
        measures=measured,
        secondary=others,
        warm_start=warm_start,
    )


def graph_latency(
    graph: bytes,
    task: Task,
    prepared: PreparedTask,
    limits: Limits,
    isolation: IsolationMode,
    warm: WarmSlot | None = None,
) -> float:
    """ONNX Runtime's latency for a batch of one of a graph that `measure_graph` passed, measured as `score_graph`
    measures it (a fresh clean evaluator, `warm`'s where the slot has one, on the probe inputs): a screened
    candidate's latency, before training."""
    probes, probe = probe_files(task)
    request = {"op": "run", "graph": GRAPH_FILE, "splits": [], "probe": probe, "batch": PROBE_BATCH}
    request.update(latency_runs=LATENCY_RUNS, latency_budget_s=LATENCY_BUDGET_S)
    with GraphWorker(prepared, limits, isolation, {GRAPH_FILE: graph, **probes}, warm) as worker:
        ran = worker.ask(request, "ran")
    if ran.get("latency_ms") is None:
        raise GraphFailed("the clean evaluator measured no latency")
    return float(ran["latency_ms"])


def measure_graph(graph: bytes, task: Task, limits: Limits, sizes: interface.Bound | None = None) -> GraphMeasures:
    """`verify` the graph, then measure it (measures.py; `sizes`: a graph task's node and edge counts, interface.py);
    GraphFailed with the reason for a graph refused either way."""
    from agentarch.evaluation.graphs import checks, measures

    model = verify(graph, task, limits)
    try:
        return measures.measure(model, sizes)
    except checks.GraphRejected as err:
        raise GraphFailed(f"the exported graph was rejected: {err}") from None


def unreported(smoke: dict[str, Any]) -> dict[str, Any]:
    """A smoke event without the runner's own figures about the network (REPORTED): what graph scoring keeps of it
    where no graph was measured (a smoke stage whose graph was refused)."""
    return {key: value for key, value in smoke.items() if key not in REPORTED}


def believed(
    smoke: dict[str, Any],
    measured: GraphMeasures,
    latency_ms: float | None = None,
    functional_hash: str | None = None,
) -> dict[str, Any]:
    """A smoke record as graph scoring believes it: the runner's own figures (REPORTED) left out, the graph's
    measures in their place (parameters, FLOPs, structure signature, digest), and the clean evaluator's latency and
    functional hash where it ran the graph. What the runner said stays in `reported_params`, for a reason to cite."""
    kept = {key: value for key, value in unreported(smoke).items() if key != "digest"}
    kept.setdefault("reported_params", smoke.get("params"))
    kept.update(
        params=measured.params,
        flops=measured.flops,
        matmul_flops=measured.matmul_flops,
        structure=measured.structure,
        digest=measured.digest,
    )
    if latency_ms is not None:
        kept["latency_ms"] = latency_ms
    if functional_hash is not None:
        kept["functional_hash"] = functional_hash
    return kept


def smoke_graph(
    job: SandboxJob,
    event: dict[str, Any],
    task: Task,
    prepared: PreparedTask,
    limits: Limits,
    isolation: IsolationMode,
    latency: bool = False,
    warm: WarmSlot | None = None,
) -> dict[str, Any]:
    """The smoke stage as the host believes it: the graph the runner exported at its smoke stage, read while the job
    waits for the host's word (the host checks all of it, so a file changed under the read is only another graph the
    checks refuse or the trained graph's digest must match), checked and measured (`believed`); with `latency` (a
    screening job, which ends after its smoke stage: it is killed first, so one sandbox runs at a time), its latency
    measured in a clean evaluator too (`warm`'s where the slot has one), and its features for the predictor that screens it (`graph_features`:
    features.py, those that apply; the predictor learns from the trained graphs' own). GraphFailed says why not."""
    try:
        graph = job.read_file(SMOKE_GRAPH_FILE, max_graph_bytes(limits))
    except ProtocolError as err:
        raise GraphFailed(f"the smoke stage's graph: {err}") from None
    measured = measure_graph(graph, task, limits, interface.sizes(task, prepared.inputs_dir))
    if not latency:
        return believed(event, measured)
    job.kill()
    found = believed(event, measured, graph_latency(graph, task, prepared, limits, isolation, warm))
    from agentarch.evaluation.graphs import checks, features

    try:  # the predictor's input only: a graph whose features cannot be read is screened without them
        described = features.graph_features(graph, max_graph_bytes(limits))
    except checks.GraphRejected:
        return found
    return {**found, "graph_features": {name: v for name, v in described.items() if math.isfinite(v)}}


def trained_smoke(smoke: dict[str, Any], scored: GraphScores) -> dict[str, Any]:
    """The smoke record after training: the trained graph's measures, latency and functional hash in place of the
    smoke graph's. GraphFailed when the trained graph is not the architecture the smoke stage exported (its digest
    differs, or its parameter count: the digest names no tensor, so one weight read twice and two weights of its
    shape are one digest, and a smoke graph that untied its trained twin's weights showed twice their parameters to
    the training budget): the measures that decided the candidate's way must be those of the network that was
    scored."""
    measured = scored.measures
    assert measured is not None
    if smoke.get("digest") is not None and (smoke["digest"], smoke.get("params")) != (measured.digest, measured.params):
        raise GraphFailed(
            "the trained network's graph is not the network the smoke stage exported (another architecture: "
            f"{smoke.get('params')} parameters then, {measured.params} now); export what you train"
        )
    return believed(smoke, measured, scored.latency_ms, scored.functional_hash)


def verify(graph: bytes, task: Task, limits: Limits) -> onnx.ModelProto:
    """The host's checks of a graph before any process loads it, as GraphFailed with the reason: the file, its
    operators and its interface against the task (checks.py), then the proof that no example's output depends on
    another example of its batch (batch_flow.py); the parsed graph. A graph task's graph is one example whose nodes
    mix by design: it has no batch to prove anything about (docs/sandbox.md says what holds instead); a graphs task's
    graphs are evaluated one by one, so none has another graph in its input (interface.py). Imported here:
    they import onnx (1.1 s, most of it ml_dtypes'), which only graph scoring needs, and every command imports this
    module through the executors."""
    from agentarch.evaluation.graphs import batch_flow, checks

    ports = interface.interface(task)
    try:
        model = checks.check_graph(
            graph,
            max_bytes=max_graph_bytes(limits),
            in_shape=tuple(task.in_shape),
            ids=task.kind in ("token", "lm") or task.vocab_size is not None,
            out_shape=logits_shape(task, 1)[1:],
            interface=ports,
            extra_ops=interface.extra_ops(task),
        )
        if ports is None:
            batch_flow.prove_batch_independence(model)
    except checks.GraphRejected as err:
        raise GraphFailed(f"the exported graph was rejected: {err}") from None
    return model


def _in_units(task: Task, meta: dict[str, Any], outputs: np.ndarray) -> np.ndarray:
    """A regression's predictions back in the targets' units (the trainer standardises its targets, as
    sandbox/trainer.py's `predict` undoes in trusted scoring); other outputs as they are."""
    if not METRICS[task.metric].regression:
        return outputs
    mean = np.asarray(meta["target_mean"], dtype=np.float32)
    std = np.asarray(meta["target_std"], dtype=np.float32)
    return (outputs.astype(np.float32) * std + mean).astype(np.float32)


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
