"""Graph scoring (issue 25): the sandbox trains on the training split alone and exports ONNX; a clean evaluator that
never imports torch runs the graph on the held-out inputs; the host scores it.

The sandboxed tests run in both isolation modes where they prove a boundary (what the training job can read, what
the worker imports), and in bubblewrap alone where they check arithmetic.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from agentarch.runner import trainer

from agentarch.evaluation.graphs import scoring
from agentarch.evaluation.graphs.worker import Worker
from agentarch.evaluation.stages import RunRequest, execute
from agentarch.isolation.job import SandboxJob
from agentarch.isolation.policy import Limits
from agentarch.isolation.protocol import parse_event
from agentarch.tasks.preparation import TRAIN_FILES
from agentarch.tasks.registry import get_task
from tests.conftest import SPEC, requires_bubblewrap

MLP = (Path(__file__).resolve().parent.parent / "archive" / "seeds" / "image" / "mlp.py").read_text()
"""The seed MLP: exports and passes every graph check."""

SPY = """
import json as _json, os as _os
_spec = _json.load(open("spec.json"))
_data = _spec["inputs_dir"]
print("SEEN", _json.dumps(sorted(_os.listdir(_data))), flush=True)
for _name in ("val_x.npy", "test_x.npy"):
    for _where in (_data, _os.path.join(_data, "..", "inputs")):
        try:
            open(_os.path.join(_where, _name), "rb").close()
            print("READ", _name, flush=True)
        except OSError as _err:
            print("DENIED", _name, type(_err).__name__, flush=True)
"""
"""What a candidate can learn of the held-out inputs from where the training job's data lies (the job's own spec
names the folder): it lists it and tries the held-out files there and in the full inputs folder beside it."""

UNEXPORTABLE = """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)
    def forward(self, x):
        out = self.fc(x.flatten(1))
        if out.mean() > 0:  # a branch on a tensor's value: a trace would freeze one side
            return out
        return -out
"""

GROUP_NORM = """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, num_classes)
    def forward(self, x):
        return self.fc(self.body(x).flatten(1))
"""

LIMITS = Limits(memory_mb=4096, timeout_s=240, smoke_timeout_s=120, threads=1)
TRAIN = {"epochs": 3, "batch_size": 64, "lr": 0.003, "weight_decay": 0.01, "seed": 0}
MODES = [pytest.param("bubblewrap", marks=requires_bubblewrap), "process"]


def request(code: str, cache_dir: Path, scoring_mode: str, isolation: str = "bubblewrap") -> RunRequest:
    return RunRequest(
        code=code,
        task="digits",
        train=TRAIN,
        limits=LIMITS,
        isolation=isolation,  # type: ignore[arg-type]
        cache_dir=cache_dir,
        data_dir=None,
        split_seed=0,
        scoring=scoring_mode,  # type: ignore[arg-type]
    )


def outside(graph: bytes, x: np.ndarray) -> np.ndarray:
    """The graph's outputs as onnxruntime gives them outside agentarch: one session, the whole array at once."""
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


# -- the host's pieces, without a sandbox ------------------------------------------------------------


def test_the_training_split_alone_is_hard_links_into_the_inputs(digits):
    assert sorted(p.name for p in digits.train_dir.iterdir()) == sorted(TRAIN_FILES)
    for name in TRAIN_FILES:
        assert (digits.train_dir / name).stat().st_ino == (digits.inputs_dir / name).stat().st_ino


def test_the_worker_normalises_held_out_inputs_exactly_as_the_trainer_does(digits, mqar, tmp_path):
    for prepared in (digits, mqar):
        worker = Worker({"threads": 1, "inputs_dir": str(prepared.inputs_dir), "output_dir": str(tmp_path)})
        loaded = trainer.load_inputs(prepared.inputs_dir, torch.device("cpu"))
        for split, x in (("val", loaded.val_x), ("test", loaded.test_x)):
            mine = worker.held_out(split)
            assert mine.dtype == x.numpy().dtype
            np.testing.assert_array_equal(mine, x.numpy())  # bit for bit


def test_the_workers_likelihood_is_the_trainers(tmp_path, digits):
    worker = Worker({"threads": 1, "inputs_dir": str(digits.inputs_dir), "output_dir": str(tmp_path)})
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 16, 256, generator=gen) * 4
    ids = torch.randint(0, 256, (3, 16), generator=gen)
    want = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).double(), ids[:, 1:], reduction="none")
    np.testing.assert_allclose(worker._nll(logits.numpy(), ids.numpy()), want.sum(dim=1).numpy(), rtol=1e-12)


def test_the_protocol_keeps_the_export_and_the_workers_events():
    trained = {"event": "trained", "curve": [], "train_seconds": 1.0, "steps": 1, "epochs_done": 1.0}
    trained |= {"stopped_early": False, "peak_memory_mb": 1.0, "device": "cpu", "export_seconds": 0.2}
    assert parse_event(json.dumps({**trained, "graph_bytes": 10}).encode())["export_seconds"] == 0.2
    ran = {"event": "ran", "load_seconds": 0.1, "run_seconds": 0.2, "latency_ms": 0.3, "extra": "dropped"}
    assert parse_event(json.dumps(ran).encode()) == {k: v for k, v in ran.items() if k != "extra"}
    assert parse_event(b'{"event": "modules", "names": ["numpy"]}')["names"] == ["numpy"]
    with pytest.raises(ValueError):
        parse_event(json.dumps({"event": "modules", "names": ["x" * 201]}).encode())


# -- the sandbox and the clean evaluator -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_the_clean_evaluator_scores_the_graph_as_onnxruntime_does_and_training_sees_no_held_out_input(
    digits, isolation
):
    task = get_task("digits")
    spec = {**SPEC, "train": TRAIN, "scoring": "graph"}
    with SandboxJob(SPY + MLP, spec, digits.train_dir, LIMITS, isolation) as job:
        assert job.read_event(LIMITS.smoke_timeout_s)["event"] == "smoke"
        assert job.send("train") is None
        trained = job.read_event()
        assert trained["event"] == "trained", trained
        job.kill()
        log = job.log_tail()
        graph = job.read_file(scoring.GRAPH_FILE, scoring.max_graph_bytes(LIMITS))
        assert not (job.scratch / "val_outputs.npy").exists()
    # The training job's data folder holds the training split alone, and the full inputs beside it are out of reach.
    assert f"SEEN {json.dumps(sorted(TRAIN_FILES))}" in log
    assert "READ" not in log and log.count("DENIED") == 4
    assert 0 < trained["export_seconds"] < 30 and trained["graph_bytes"] == len(graph)

    scored = scoring.score_graph(graph, task, digits, LIMITS, isolation)
    loaded = trainer.load_inputs(digits.inputs_dir, torch.device("cpu"))
    test_outputs = outside(graph, loaded.test_x.numpy())
    accuracy = float((test_outputs.argmax(axis=1) == digits.labels("test")).mean())
    assert scored.scores["test_accuracy"] == accuracy  # exactly: the same graph, the same runtime
    assert scored.scores["val_accuracy"] > 0.5 and accuracy > 0.5
    np.testing.assert_allclose(scored.probe_outputs, outside(graph, scoring.probe_inputs(task)), rtol=0, atol=1e-6)
    assert scored.latency_ms is not None and 0 < scored.latency_ms < 1000
    assert scored.functional_hash == scoring.functional_hash(task, scored.probe_outputs)


@pytest.mark.slow
@requires_bubblewrap
def test_graph_scoring_agrees_with_trusted_scoring(cache_dir, digits):
    graph = execute(request(MLP, cache_dir, "graph"))
    trusted = execute(request(MLP, cache_dir, "trusted"))
    assert graph.status == trusted.status == "trained", (graph.error, trusted.error)
    for key in ("val_accuracy", "test_accuracy"):
        assert abs(graph.scores[key] - trusted.scores[key]) <= 0.01, (graph.scores, trusted.scores)
    record = graph.trained["graph"]
    assert record["export_seconds"] > 0 and record["evaluator_start_seconds"] > 0 and record["latency_ms"] > 0
    assert "graph" not in trusted.trained


@pytest.mark.slow
@requires_bubblewrap
def test_a_network_that_cannot_be_exported_fails_with_what_to_change(cache_dir, digits):
    result = execute(request(UNEXPORTABLE, cache_dir, "graph"))
    assert result.status == "failed"
    assert result.reason.startswith("[smoke:export] the network could not be exported to ONNX")
    assert "Python boolean" in result.reason and "control flow that depends on tensor values" in result.reason
    assert "TracerWarning: at line 10 of candidate.py" in result.reason  # where: the network's own `if` on a tensor


@pytest.mark.slow
@requires_bubblewrap
def test_torchs_own_shape_checks_do_not_stop_an_export(cache_dir, digits):
    """GroupNorm checks its batch size with a Python `if` on a traced shape, which warns like a branch on a value;
    raised in torch's own code, it freezes no decision of the network's, and the network is scored."""
    result = execute(request(GROUP_NORM, cache_dir, "graph"))
    assert result.status == "trained", result.reason


@requires_bubblewrap
def test_a_graph_the_host_or_the_worker_refuses_fails_with_the_reason(digits, tmp_path):
    """A graph fixed to the batch it was traced with is refused by the host's checks before any process loads it;
    one ONNX Runtime cannot load is the worker's error, and the worker goes on answering."""

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.linear(x.reshape(2, 64), torch.ones(10, 64))

    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(Fixed(), (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, opset_version=18)
    with pytest.raises(scoring.GraphFailed, match="fixed batch size"):
        scoring.score_graph(path.read_bytes(), get_task("digits"), digits, LIMITS, "bubblewrap")
    with scoring.GraphWorker(digits, LIMITS, "bubblewrap", {scoring.GRAPH_FILE: b"not a graph"}) as worker:
        with pytest.raises(scoring.GraphFailed, match=r"^\[graph:load\] ONNX Runtime cannot load the graph"):
            worker.ask({"op": "run", "graph": scoring.GRAPH_FILE, "splits": ["val"]}, "ran")
        assert "numpy" in worker.modules()


@pytest.mark.parametrize("isolation", MODES)
def test_the_worker_never_imports_torch(digits, isolation):
    with scoring.GraphWorker(digits, LIMITS, isolation) as worker:
        modules = worker.modules()
        assert worker.start_seconds < 30
    assert "onnxruntime" in modules and "numpy" in modules
    assert not any(name == "torch" or name.startswith("torch.") for name in modules)
