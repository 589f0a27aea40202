"""Graph scoring against a candidate that lies about itself (issue 25, "Measurements from the graph").

In graph scoring the host believes nothing the candidate's process says about its network: parameters, FLOPs,
latency, proxies, the structure signature and the functional hash come from the exported graphs (the smoke
stage's, then the trained one) and from the clean evaluator, which runs no candidate code. Each test is one attack
from inside the candidate's process (it rewrites what the runner measures, or hands over another graph), run
end to end through an Evaluator with `scoring="graph"` in both isolation modes. In trusted scoring the same attacks
succeed (docs/sandbox.md, "What neither mode stops"): a forger's claims are recorded, and a forged identity makes
the seed a duplicate.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from agentarch.runner import runner

from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.graphs import checks, measures
from agentarch.evaluation.graphs.scoring import GraphFailed, GraphScores, believed, logits_shape, trained_smoke
from agentarch.evaluation.graphs.worker import RequestError, Worker
from agentarch.evaluation.stages import RunRequest, stages, verdict
from agentarch.isolation.bubblewrap import bubblewrap_problem
from agentarch.isolation.policy import Limits
from agentarch.isolation.process_mode import process_mode_gaps
from agentarch.search.objectives import Goals
from agentarch.search.predictor import features_of
from agentarch.store.archive import Archive
from agentarch.tasks.registry import get_task
from tests.conftest import SPEC
from tests.security.harness import attack_settings

MODES = [
    pytest.param("bubblewrap", marks=pytest.mark.skipif(bubblewrap_problem() is not None, reason="no bubblewrap")),
    pytest.param("process", marks=pytest.mark.skipif(bool(process_mode_gaps()), reason="process mode has gaps")),
]

SEED_MLP = (Path(__file__).resolve().parents[2] / "archive" / "seeds" / "image" / "mlp.py").read_text()

STEP_AROUND = """
import math
import torch
from torch import nn
_B = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
_imp = _B["__import__"]
_sys, _os = _imp("sys"), _imp("os")
_runner = next(m for n, m in list(_sys.modules.items()) if n.endswith(".runner") and hasattr(m, "smoke"))
"""
"""What every attack starts with: the runner's own module, found in the process the candidate shares with it."""

FORGE_REPORT = (
    STEP_AROUND
    + SEED_MLP.split('"""', 2)[2].replace("class Net(", "class _Seed(")
    + """
_real_smoke = _runner.smoke

def _forged_smoke(net_cls, spec, inputs, device, deadline):
    own = _real_smoke(net_cls, spec, inputs, device, deadline)
    seed = _real_smoke(_Seed, spec, inputs, device, deadline)  # the seed MLP's honest figures, to claim as its own
    own.update(params=1, flops=1, latency_ms=0.001, functional_hash=seed["functional_hash"],
               structure=seed["structure"], proxies={"synflow": 1e30, "grad_norm": 1e30, "naswot": 1e30})
    return own

_runner.smoke = _forged_smoke
"""
)
"""Rewrites the runner's smoke report: one parameter, one FLOP, 1 µs, the best proxies, the seed MLP's functional
hash and structure signature (worked out by the runner's own code on the seed's class)."""

WIDE = """
class Net(nn.Module):  # 64*15000 + 15000 + 15000*10 + 10 = 1,125,010 parameters
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.hidden = nn.Linear(math.prod(in_shape), 15000)
        self.out = nn.Linear(15000, num_classes)
    def forward(self, x):
        return self.out(torch.relu(self.hidden(x.flatten(1))))
"""
WIDE_PARAMS = 1_125_010

SMALL = """
class Net(nn.Module):  # 64*32 + 32 + 32*10 + 10 = 2,410 parameters
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.hidden = nn.Linear(math.prod(in_shape), 32)
        self.out = nn.Linear(32, num_classes)
    def forward(self, x):
        return self.out(torch.relu(self.hidden(x.flatten(1))))
"""
SMALL_PARAMS = 2_410

CONSTANT = """
class Net(nn.Module):  # the same logits for every input: 10 parameters
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))
    def forward(self, x):
        return self.bias + 0.0 * x.flatten(1)[:, :1]
"""

BATCH_STATISTICS = """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)
    def forward(self, x):
        x = x.flatten(1)
        return self.fc(x - x.mean(0, keepdim=True))  # each batch centred on its own mean, at evaluation too
"""

BATCHNORM_TRAINING = """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_shape[0])
        self.fc = nn.Linear(64, num_classes)
    def train(self, mode=True):
        super().train(mode)
        self.norm.train(True)  # BatchNorm left in training mode: each batch normalised by its own statistics
        return self
    def forward(self, x):
        return self.fc(self.norm(x).flatten(1))
"""

BATCHNORM_BY_HAND = """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(in_shape[0], 1, 1))
        self.fc = nn.Linear(64, num_classes)
    def forward(self, x):  # BatchNorm in training mode, written out: the statistics of the batch, at evaluation too
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
        return self.fc((self.scale * (x - mean) / torch.sqrt(var + 1e-5)).flatten(1))
"""

SWAPPED_GRAPH = (
    STEP_AROUND
    + """
_real_export = _runner.export_graph
_exports = []

class _Tiny(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(math.prod(in_shape), num_classes)
    def forward(self, x):
        return self.fc(x.flatten(1))

def _export(model, inputs, path):  # the smoke stage is shown a tiny network; the trained one is what it is
    _exports.append(path)
    if len(_exports) == 1:
        model = _Tiny(tuple(inputs.train_x.shape[1:]), 10)
    return _real_export(model, inputs, path)

_runner.export_graph = _export
"""
    + WIDE.replace("15000", "2000")
)

HELD_OUT_SPY = """
import torch
from torch import nn
_B = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
_imp, _open = _B["__import__"], _B["open"]
_os, _json = _imp("os"), _imp("json")
_spec = _json.load(_open("spec.json"))
_data = _spec["inputs_dir"]
_places = {_data, _os.path.dirname(_data), "/data", %(cache)r} - {"/"}
_found = []
for _place in sorted(_places):
    for _root, _dirs, _files in _os.walk(_place):
        for _name in _files:
            if _name.startswith(("val_", "test_")) and _name.endswith(".npy"):
                try:
                    _open(_os.path.join(_root, _name), "rb").close()
                    _found.append(_os.path.join(_root, _name))
                except OSError:
                    pass
if _found:
    raise RuntimeError("FOUND held-out data " + " ".join(sorted(_found)))
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)
    def forward(self, x):
        return self.fc(x.flatten(1))
"""
"""Looks for any validation or test array it could read (inputs, labels, byte counts) in its data folder, the folder
above it, /data and the task cache, and fails loudly with what it found: transductive fitting needs them."""


def settings(tmp_path: Path, cache_dir: Path, isolation: str, scoring: str = "graph", **extra: Any) -> Any:
    return attack_settings(tmp_path, cache_dir, isolation, scoring=scoring, **extra)


@pytest.fixture(autouse=True)
def _both_modes_run_untrusted_code(monkeypatch):
    monkeypatch.setenv("AGENTARCH_WEAK_SANDBOX_OK", "1")  # what is tested is what the host believes, in both modes


def graph_measures(archive: Archive, evaluation: dict[str, Any]) -> measures.GraphMeasures:
    """The recorded graph, measured again here: what the row must hold."""
    task = get_task("digits")
    model = checks.check_graph(
        archive.graph_bytes(evaluation["graph_sha256"]),
        max_bytes=2**30,
        in_shape=tuple(task.in_shape),
        ids=False,
        out_shape=logits_shape(task, 1)[1:],
    )
    return measures.measure(model)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_forged_measures_are_replaced_by_the_graphs_and_a_forged_identity_makes_no_duplicate(
    isolation, tmp_path, cache_dir, digits
):
    """A 2,410-parameter network that says it has 1 parameter, 1 FLOP, 1 µs of latency, the best proxies and the seed
    MLP's functional hash and structure signature. Trusted scoring records all of it (it tops `params:min`, passes
    `params<=1000`, and the seed evaluated after it is recorded as its duplicate); graph scoring records the graph's
    count, FLOPs and structure and the clean evaluator's latency and hash, keeps no proxy, and trains the seed."""
    with Archive(tmp_path / "a.db") as archive:
        evaluator = Evaluator(archive, settings(tmp_path, cache_dir, isolation))
        forger = evaluator.evaluate(FORGE_REPORT + SMALL, "forger")
        assert forger.status == "trained", forger.reason
        row = archive.candidate(forger.id)
        (evaluation,) = archive.evaluations(forger.id)
        graph = graph_measures(archive, evaluation)
        assert row["params"] == graph.params == SMALL_PARAMS and forger.metrics["params"] == SMALL_PARAMS
        assert row["flops"] == graph.flops > 1
        assert row["structure"] == graph.structure
        assert evaluation["latency_ms"] == evaluation["timings"]["graph"]["latency_ms"] != 0.001
        assert row["functional_hash"] == evaluation["timings"]["graph"]["functional_hash"]
        assert evaluation["proxies"] is None

        goals = Goals.parse(["val:max", "params:min"], ["params<=1000"])
        listed = archive.candidates("digits", "trained")
        assert not goals.feasible(listed[0]) and goals.front(listed) == []

        seed = evaluator.evaluate(SEED_MLP, "seed")
        assert seed.status == "trained", seed.reason
        assert seed.duplicate_of is None
        assert archive.candidate(seed.id)["functional_hash"] != row["functional_hash"]


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_a_network_over_the_parameter_budget_that_reports_one_parameter_is_invalid(
    isolation, tmp_path, cache_dir, digits
):
    """1,125,010 parameters against digits' budget of 1,000,000, reported as 1: the smoke stage's graph is counted
    before training, and the candidate is invalid with the graph's count (and the claim) in its reason."""
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, settings(tmp_path, cache_dir, isolation)).evaluate(FORGE_REPORT + WIDE, "wide")
        assert result.status == "invalid", result.reason
        assert "[param-budget] the graph's 1,125,010 parameters exceed" in result.reason
        assert "(the network reported 1)" in result.reason
        assert archive.candidate(result.id)["params"] == WIDE_PARAMS
        assert archive.evaluations(result.id) == []  # never trained


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_a_screened_member_is_measured_from_its_graph(isolation, cache_dir, digits):
    """A constant-output network that claims the seed MLP's size and the best proxies, in a smoke-only job (what
    screening runs): the smoke record the loop's screening step reads holds the graph's 10 parameters and FLOPs,
    the clean evaluator's latency, and no proxy, so the predictor sees the network it is."""
    request = RunRequest(
        code=FORGE_REPORT + CONSTANT,
        task="digits",
        train=SPEC["train"],
        limits=Limits(timeout_s=90, smoke_timeout_s=60, threads=1, max_pids=32, memory_mb=4096, max_file_mb=64),
        isolation=isolation,
        cache_dir=cache_dir,
        data_dir=None,
        split_seed=0,
        smoke_only=True,
        scoring="graph",
    )
    (result,) = stages(request)
    assert result.status == "smoked", result.reason
    measured = result.smoke
    assert measured["params"] == 10 and measured["reported_params"] == 1
    assert measured["flops"] > 1 and measured["latency_ms"] != 0.001 and measured["latency_ms"] > 0
    assert "proxies" not in measured and "functional_hash" not in measured
    features = features_of(measured, {})
    assert features["log_params"] == pytest.approx(1.0) and not {"synflow", "naswot", "log_grad_norm"} & set(features)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (BATCH_STATISTICS, r"^\[smoke\] the exported graph was rejected: .*ReduceMean.*batch"),
        (BATCHNORM_BY_HAND, r"^\[smoke\] the exported graph was rejected: .*Reduce.*batch"),
        (BATCHNORM_TRAINING, r"^\[smoke\] the exported graph was rejected: .*BatchNormalization.*training mode"),
    ],
    ids=["batch-mean", "batchnorm-by-hand", "batchnorm-module-training"],
)
def test_batch_statistics_at_evaluation_fail_before_training(code, reason, isolation, tmp_path, cache_dir, digits):
    """Normalising with the batch's own statistics at evaluation lets one example's output depend on the others of
    its batch (trusted scoring: an honest 0.572 became 0.619). Written out, or as a BatchNorm module kept in training
    mode, the smoke stage's graph fails the batch proof, which names the node. Either way `failed` before training."""
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, settings(tmp_path, cache_dir, isolation)).evaluate(code, "batch")
        assert result.status == "failed", result.reason
        assert re.search(reason, result.reason), result.reason
        (evaluation,) = archive.evaluations(result.id)
        assert evaluation["val_accuracy"] is None and evaluation["train_seconds"] is None
        assert result.metrics["params"] is None


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_training_one_network_and_showing_the_smoke_stage_another_fails(isolation, tmp_path, cache_dir, digits):
    """The candidate swaps the runner's exporter: the smoke stage's graph is a 650-parameter network (under any
    budget, novel, cheap), the trained graph a 150,010-parameter one. Their digests differ: `failed`, not scored."""
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, settings(tmp_path, cache_dir, isolation)).evaluate(SWAPPED_GRAPH, "swap")
        assert result.status == "failed", result.reason
        assert "is not the network the smoke stage exported" in result.reason, result.reason
        assert result.metrics["val_accuracy"] is None


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_no_held_out_input_reaches_the_candidate(isolation, tmp_path, cache_dir, digits):
    """Transductive fitting (self-training on the test inputs, test-time statistics) needs the held-out inputs: in
    graph scoring the candidate's process finds no validation or test file anywhere it looks, and trains. The same
    spy under trusted scoring finds them (its data folder holds them), which shows it looks in the right place."""
    spy = HELD_OUT_SPY % {"cache": str(cache_dir)}
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, settings(tmp_path, cache_dir, isolation)).evaluate(spy, "spy")
        assert result.status == "trained", result.reason
        trusted = Evaluator(archive, settings(tmp_path, cache_dir, isolation, scoring="trusted"))
        control = trusted.evaluate(spy + "\n_TRUSTED = 1\n", "spy-trusted")
        assert control.status == "failed" and "FOUND held-out data" in control.reason, control.reason
        assert "val_x.npy" in control.reason and "labels" not in control.reason


# -- the host's side, without a sandbox ---------------------------------------------------------------------------

MEASURED = measures.GraphMeasures(params=2410, flops=4900, matmul_flops=4736, structure={"Gemm(...)": 2}, digest="d1")
RUNNERS_WORD = {"event": "smoke", "params": 1, "flops": 1, "latency_ms": 0.001, "functional_hash": "a" * 64,
                "structure": {"aten.addmm": 1}, "proxies": {"synflow": 1e30}, "seconds": 0.5, "peak_memory_mb": 9.0}  # fmt: skip


def request_for(known_functional=None, known_structures=(), threshold=0.99) -> RunRequest:
    return RunRequest(
        code="",
        task="digits",
        train={},
        limits=Limits(),
        isolation="process",
        cache_dir=Path("."),
        data_dir=None,
        split_seed=0,
        known_functional=known_functional or {},
        known_structures=list(known_structures),
        novelty_threshold=threshold,
        scoring="graph",
    )


def test_the_host_believes_the_graphs_measures_and_none_of_the_runners():
    smoke = believed(RUNNERS_WORD, MEASURED)
    assert {k: smoke[k] for k in ("params", "flops", "structure", "digest")} == {
        "params": 2410,
        "flops": 4900,
        "structure": {"Gemm(...)": 2},
        "digest": "d1",
    }
    assert not {"functional_hash", "latency_ms", "proxies"} & smoke.keys()  # unknown before the trained graph
    assert smoke["reported_params"] == 1 and smoke["seconds"] == 0.5 and smoke["peak_memory_mb"] == 9.0
    scored = GraphScores({"val_accuracy": 0.5}, 0.02, "f" * 64, np.zeros(1), measures=MEASURED)
    after = trained_smoke(smoke, scored)
    assert after["functional_hash"] == "f" * 64 and after["latency_ms"] == 0.02 and after["reported_params"] == 1
    other = GraphScores({}, 0.02, "f" * 64, np.zeros(1), measures=measures.GraphMeasures(9, 9, 9, {}, "d2"))
    with pytest.raises(GraphFailed, match="is not the network the smoke stage exported"):
        trained_smoke(smoke, other)


def test_the_verdicts_read_the_graphs_measures():
    smoke = believed(RUNNERS_WORD, MEASURED)
    assert verdict(smoke, request_for({"a" * 64: 1}), 1_000_000, "here") is None  # the claimed hash is not read
    over = verdict(smoke, request_for(), 1000, "here")
    assert over.status == "invalid"
    assert (
        over.reason
        == "[param-budget] the graph's 2,410 parameters exceed the task's budget of 1,000 (the network reported 1)"
    )
    copied = verdict(smoke, request_for(known_structures=[(7, {"Gemm(...)": 2})]), 1_000_000, "here")
    assert copied.status == "duplicate" and copied.duplicate_of == 7 and copied.dedup_level == "structural"
    trained = {**smoke, "functional_hash": "f" * 64}
    same = verdict(trained, request_for({"f" * 64: 3}, threshold=1.0), 1_000_000, "here")
    assert same.status == "duplicate" and same.duplicate_of == 3 and "after training" in same.reason


def test_graph_scoring_compares_only_with_graph_measured_rows(tmp_path):
    """A trusted row's hash and signature are its candidate's word: a graph-scored candidate is never compared with
    them (nor a trusted one with a graph's, which measures something else)."""
    with Archive(tmp_path / "a.db") as archive:
        ids = {}
        for name, graph in (("trusted", None), ("graph", "9" * 64)):
            ids[name] = archive.record(
                {"run_id": None, "task": "digits", "name": name, "proposer": "user", "parents": [], "code": name,
                 "text_hash": name, "ast_hash": name, "functional_hash": name[0] * 64, "status": "trained",
                 "structure": {name: 1}, "params": 10, "flops": 10, "space": None, "arch": None},
                {"status": "trained", "fidelity": 1, "seed": 0, "val_accuracy": 0.5, "graph_sha256": graph},
            )  # fmt: skip
        assert archive.functional_hashes("digits", scoring="graph") == {"g" * 64: ids["graph"]}
        assert archive.functional_hashes("digits", scoring="trusted") == {"t" * 64: ids["trusted"]}
        assert len(archive.functional_hashes("digits")) == 2
        assert archive.structures("digits", scoring="graph") == [(ids["graph"], {"graph": 1})]
        assert archive.structures("digits", scoring="trusted") == [(ids["trusted"], {"trusted": 1})]


LM = """
class Net(nn.Module):
    def __init__(self, vocab, peek):
        super().__init__()
        self.emb, self.fc, self.peek = nn.Embedding(vocab, 8), nn.Linear(8, vocab), peek
    def forward(self, x):
        out = self.fc(self.emb(x))
        if self.peek == "next":  # reads the id it predicts
            return out + 50.0 * nn.functional.one_hot(torch.roll(x, -1, dims=1), out.shape[-1]).float()
        if self.peek == "sometimes":  # reads it only where the next id is a small one
            ahead = torch.roll(x, -1, dims=1)
            return out + 50.0 * (ahead < 16).float().unsqueeze(-1)
        return out
"""


@pytest.mark.parametrize("peek", ["none", "next", "sometimes"])
def test_the_clean_evaluator_refuses_an_lm_graph_that_looks_ahead(peek, tmp_path):
    """The worker's causality check on real-looking sequences: a causal network passes; one that reads the next id
    everywhere, or only where it is small, moves the logits before a random cut and is refused."""
    namespace: dict[str, Any] = {"nn": torch.nn, "torch": torch}
    exec(LM, namespace)
    torch.manual_seed(0)
    model, vocab = namespace["Net"](64, peek), 64

    class Inputs:
        train_x = torch.randint(0, vocab, (2, 32))

    runner.export_graph(model, Inputs, tmp_path / "g.onnx")
    (tmp_path / "meta.json").write_text(json.dumps({"kind": "lm"}))
    worker = Worker({"threads": 1, "inputs_dir": str(tmp_path), "output_dir": str(tmp_path)})
    session = worker.session("g.onnx")
    ids = np.random.default_rng(0).integers(0, vocab, (40, 32))
    check = (np.random.default_rng(1), 1.0)
    if peek == "none":
        nll = worker.outputs(session, ids, 16, True, check)
        assert nll.shape == (40,) and np.isfinite(nll).all()
        return
    with pytest.raises(RequestError, match="the network looks ahead") as refused:
        worker.outputs(session, ids, 16, True, check)
    assert refused.value.stage == "causal"
