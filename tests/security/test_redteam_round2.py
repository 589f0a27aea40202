"""Red-team round 2: the smoke stage's new measurements, smoke-only jobs, lm likelihoods and noisy neighbours.

Each test is one attack and asserts the defence. The two that succeeded under trusted scoring (an lm candidate
forging its bits per byte by patching the likelihood or by looking ahead) were strict xfails until graph scoring,
now the default, closed them: their tests below run under it. Sandbox runs are batched and marked slow.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import replace

import numpy as np
import pytest

from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.stages import RunRequest, stages
from agentarch.isolation.job import SandboxJob
from agentarch.isolation.policy import Limits
from agentarch.isolation.process_mode import process_mode_gaps
from agentarch.isolation.protocol import MAX_PROXY_VALUE, ProtocolError, parse_event
from agentarch.search.predictor import Predictor
from agentarch.store.archive import Archive
from agentarch.tasks.registry import get_task
from agentarch.tasks.scoring import score
from agentarch.tasks.task import Task, TaskError
from tests.conftest import SPEC, cgroups_work, job_processes, requires_bubblewrap
from tests.security.harness import attack_settings

HONEST_SMOKE = {
    "event": "smoke",
    "functional_hash": "a" * 64,
    "params": 650,
    "flops": 1280,
    "seconds": 0.5,
    "device": "cpu",
    "latency_ms": 0.2,
    "peak_memory_mb": 300.0,
    "proxies": {"synflow": 3.7, "grad_norm": 1.9, "naswot": -12.0},
    "proxy_seconds": 0.01,
}

STEP_AROUND = """
_B = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
_imp = _B["__import__"]
os, json, sys, time = _imp("os"), _imp("json"), _imp("sys"), _imp("time")

def event_pipes():
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if int(fd) > 2 and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                found.append(int(fd))
        except OSError:
            pass
    return found
"""

NET = """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)
    def forward(self, x):
        return self.fc(x.flatten(1))
"""


def _line(event: dict) -> bytes:
    return json.dumps(event).encode()


# -- 1. the smoke stage's new fields, read as hostile input (no sandbox) ---------------------------------


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"latency_ms": -0.0001}, "latency_ms"),
        ({"latency_ms": "1"}, "latency_ms"),
        ({"latency_ms": True}, "latency_ms"),
        ({"latency_ms": [0.1]}, "latency_ms"),
        ({"latency_ms": 10**11}, "latency_ms"),
        ({"peak_memory_mb": 1e10}, "peak_memory_mb"),
        ({"peak_memory_mb": -1}, "peak_memory_mb"),
        ({"proxies": {"synflow": MAX_PROXY_VALUE * 10}}, r"proxies\.synflow"),
        ({"proxies": {"synflow": -MAX_PROXY_VALUE * 10}}, r"proxies\.synflow"),
        ({"proxies": {"naswot": {"nested": [1, 2]}}}, r"proxies\.naswot"),
        ({"proxies": {"grad_norm": None}}, r"proxies\.grad_norm"),
        ({"proxies": {"grad_norm": False}}, r"proxies\.grad_norm"),
        ({"proxies": {"__class__": 1}}, "unknown proxies"),
        ({"proxies": dict.fromkeys(["synflow", "grad_norm", "naswot", "zen"], 1.0)}, "at most 3"),
        ({"proxies": [["synflow", 1.0]]}, "proxies"),
        ({"proxies": "synflow=1"}, "proxies"),
        ({"proxy_seconds": -1}, "proxy_seconds"),
    ],
)
def test_forged_smoke_measurements_are_refused(change, pattern):
    with pytest.raises(ProtocolError, match=pattern):
        parse_event(_line({**HONEST_SMOKE, **change}))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event": "smoke", "latency_ms": NaN}',
        b'{"event": "smoke", "latency_ms": -Infinity}',
        b'{"event": "smoke", "latency_ms": 1e400}',
        b'{"event": "smoke", "proxies": {"synflow": 1e999}}',
        b'{"event": "smoke", "proxies": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}",
        b'{"event": "smoke", "params": ' + b"9" * 4300 + b"}",
    ],
    ids=["nan", "minus-infinity", "overflow", "proxy-overflow", "deep-proxies", "int-4300-digits"],
)
def test_non_finite_or_deep_smoke_fields_are_a_protocol_error(raw):
    """Each is a ProtocolError (a failed candidate), never ValueError, RecursionError or a stored inf."""
    with pytest.raises(ProtocolError):
        parse_event(raw)


def test_only_known_smoke_fields_reach_the_host():
    """Extra fields (a forged score, a rival's id, a structure bigger than the host's caps) are dropped unread,
    except those the host checks."""
    forged = {**HONEST_SMOKE, "val_accuracy": 1.0, "scores": {"test_accuracy": 1.0}, "duplicate_of": 1}
    parsed = parse_event(_line(forged))
    assert not {"val_accuracy", "scores", "duplicate_of"} & parsed.keys()


# -- 2. events out of turn, in a smoke-only (screening) job and a full one ---------------------------------

TRAINED_FIRST = (
    STEP_AROUND
    + """
trained = {"event": "trained", "curve": [], "train_seconds": 0.0, "steps": 1, "epochs_done": 1,
           "stopped_early": False, "peak_memory_mb": None, "device": "cpu"}
for fd in event_pipes():
    os.write(fd, (json.dumps(trained) + "\\n").encode())
"""
    + NET
)

SECOND_SMOKE = (
    STEP_AROUND
    + """
forged = {"event": "smoke", "functional_hash": "b" * 64, "params": 1, "flops": 1, "seconds": 0.0,
          "latency_ms": 0.0, "proxies": {"synflow": 1e30, "grad_norm": 1e30, "naswot": 1e30}}
for fd in event_pipes():  # a forged smoke event first, the runner's own after it, then a trained event
    os.write(fd, (json.dumps(forged) + "\\n").encode())
"""
    + NET
)


@pytest.mark.slow
@requires_bubblewrap
def test_events_out_of_turn_never_train_or_score(cache_dir, digits):
    """A trained event before the smoke event fails; in a smoke-only job (screening) the job ends with its first
    smoke event: whatever the candidate sends next is never read, and nothing is scored."""

    def request(code: str, smoke_only: bool) -> RunRequest:
        return RunRequest(
            code=code,
            task="digits",
            train=SPEC["train"],
            limits=Limits(timeout_s=40, smoke_timeout_s=30, threads=1, max_pids=32, memory_mb=3072, max_file_mb=16),
            isolation="bubblewrap",
            cache_dir=cache_dir,
            data_dir=None,
            split_seed=0,
            smoke_only=smoke_only,
        )

    results = list(stages(request(TRAINED_FIRST, smoke_only=True)))
    assert [r.status for r in results] == ["failed"]
    assert "sent a 'trained' event out of turn" in results[0].reason

    results = list(stages(request(SECOND_SMOKE, smoke_only=True)))
    assert [r.status for r in results] == ["smoked"]
    smoked = results[0]
    assert smoked.scores is None and smoked.trained is None
    # the forged smoke event is the one the host read: the candidate's own claims, bounded, about itself only
    assert smoked.smoke["params"] == 1 and smoked.smoke["proxies"]["synflow"] == 1e30

    results = list(stages(request(SECOND_SMOKE, smoke_only=False)))
    assert [r.status for r in results] == ["smoked", "failed"]
    assert "sent a 'smoke' event out of turn" in results[1].reason and results[1].scores is None


# -- 3. language modelling: the likelihood is computed in the candidate's process --------------------------

LM_PATCH_CROSS_ENTROPY = """
import torch
from torch import nn
_F = torch.nn.functional
_real = _F.cross_entropy
def _forged(input, target, *args, **kwargs):  # the runner's per-sequence NLL uses reduction="none"
    out = _real(input, target, *args, **kwargs)
    return out * 0.0 if kwargs.get("reduction") == "none" else out
_F.cross_entropy = _forged
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.emb = nn.Embedding(num_classes, 8)
        self.fc = nn.Linear(8, num_classes)
    def forward(self, x):
        return self.fc(self.emb(x))
"""

LM_LOOKAHEAD = """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.v = num_classes
        self.emb = nn.Embedding(num_classes, 8)
        self.fc = nn.Linear(8, num_classes)
    def forward(self, x):
        out = self.fc(self.emb(x))
        if self.training or x.shape[0] <= 2:  # training and the causality probe (a batch of 2): causal
            return out
        return out + torch.nn.functional.one_hot(torch.roll(x, -1, dims=1), self.v).float() * 50.0
"""


LM_GRAPH_LOOKAHEAD = """
import torch
from torch import nn
_B = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
_sys = _B["__import__"]("sys")
_runner = next(m for n, m in list(_sys.modules.items()) if n.endswith(".runner") and hasattr(m, "check_causal"))
_runner.check_causal = lambda model, spec: None  # the runner's own causality probe, switched off
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.emb = nn.Embedding(num_classes, 8)
        self.fc = nn.Linear(8, num_classes)
        self.peek = nn.Embedding(num_classes, num_classes)  # 50 on the diagonal: the next id, read as its logit
        with torch.no_grad():
            self.peek.weight.copy_(torch.eye(num_classes) * 50.0)
    def forward(self, x):
        out = self.fc(self.emb(x))
        if self.training:  # causal while it trains; in eval mode (what is exported) it reads the next byte
            return out
        return out + self.peek(torch.roll(x, -1, dims=1))
"""

LM_MODES = [
    pytest.param("bubblewrap", marks=requires_bubblewrap),
    pytest.param("process", marks=pytest.mark.skipif(bool(process_mode_gaps()), reason="process mode has gaps")),
]


def lm_settings(tmp_path, cache_dir, isolation: str = "bubblewrap", scoring: str | None = None):
    return attack_settings(tmp_path, cache_dir, isolation, task="stdlib-bytes", scoring=scoring)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", LM_MODES)
@pytest.mark.parametrize("code", [LM_PATCH_CROSS_ENTROPY, LM_LOOKAHEAD], ids=["patch-cross-entropy", "lookahead"])
def test_graph_scoring_computes_an_lm_likelihood_the_candidate_cannot_forge(code, isolation, tmp_path, cache_dir):
    """Two forgers that scored 0.0 bits per byte under trusted scoring: a patched torch.nn.functional.cross_entropy,
    and a network that is causal in training and in the smoke probe (batch 2) and reads the byte it predicts
    everywhere else. The clean evaluator computes the likelihood from the graph's logits,
    so a patched cross_entropy in the candidate's process changes nothing: it scores honestly (about 5 bits per
    byte). The probe-dodging network branches on its batch size, which the exporter refuses (a trace would freeze
    one branch): `failed` at the smoke stage, before training, with what to change."""
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, lm_settings(tmp_path, cache_dir, isolation, "graph")).evaluate(code, "forger")
    if code == LM_LOOKAHEAD:
        assert result.status == "failed", result.reason
        assert result.reason.startswith("[smoke:export] the network could not be exported"), result.reason
        assert result.metrics["val_accuracy"] is None
        return
    assert result.status == "trained", result.reason
    assert result.metrics["val_accuracy"] > 2 and result.metrics["test_accuracy"] > 2, result.metrics


@pytest.mark.slow
@pytest.mark.parametrize("isolation", LM_MODES)
def test_a_graph_that_looks_ahead_fails_the_causality_check_on_held_out_sequences(isolation, tmp_path, cache_dir):
    """A network that switches the runner's causality probe off and reads the next byte in eval mode, which is what
    the graph holds (it would score near 0 bits per byte): the clean evaluator cuts every held-out sequence at a
    random position, changes every id after it, sees the logits before the cut move, and the candidate is `failed`."""
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, lm_settings(tmp_path, cache_dir, isolation, "graph")).evaluate(
            LM_GRAPH_LOOKAHEAD, "peeker"
        )
        assert result.status == "failed", result.reason
        assert "[graph:causal]" in result.reason and "the network looks ahead" in result.reason, result.reason
        assert result.metrics["val_accuracy"] is None and archive.evaluations(result.id)[0]["val_accuracy"] is None


# -- 4. noisy neighbours: a candidate slowing the candidates that run beside it ----------------------------

RIVAL = """
import time
began, cpu = time.monotonic(), time.process_time()
while time.monotonic() - began < 3:
    pass
raise RuntimeError(f"SHARE {(time.process_time() - cpu) / (time.monotonic() - began):.3f}")
"""

SPINNERS = (
    STEP_AROUND
    + """
for _ in range(28):
    if os.fork() == 0:
        os.setsid()  # a session of its own is an autogroup of its own: the scheduler shares CPU between autogroups
        while True:
            pass
time.sleep(120)
"""
)


@pytest.mark.slow
@requires_bubblewrap
@pytest.mark.skipif(not cgroups_work(), reason="needs per-job cgroups")
def test_a_candidate_cannot_starve_the_jobs_beside_it_of_cpu(digits):
    """28 spinning processes, each in a session of its own, took a concurrent rival from about half a core to
    under a tenth of one (on two cores): its latency_ms measured several times slower (a worse `latency_ms:min`
    objective), its training cut short by max_seconds, its smoke stage pushed past its timeout. Each job's own
    cpu cgroup shares the CPU between jobs, however many processes or sessions one job makes."""
    limits = Limits(timeout_s=60, smoke_timeout_s=50, threads=1, max_pids=40, memory_mb=3072, max_file_mb=16)

    def rival_share() -> float:
        with SandboxJob(RIVAL, SPEC, digits.inputs_dir, limits, "bubblewrap") as job:
            event = job.read_event(50)
        assert isinstance(event, dict) and event["event"] == "error", event
        return float(re.search(r"SHARE ([0-9.]+)", event["message"]).group(1))

    alone = rival_share()
    with SandboxJob(SPINNERS, SPEC, digits.inputs_dir, limits, "bubblewrap") as attacker:
        for _ in range(100):  # wait for the spinners (the runner and 28 children)
            if len(attacker.cgroup.pids()) >= 28:
                break
            time.sleep(0.1)
        beside = rival_share()
        scratch = attacker.scratch
    alone = min(alone, rival_share())  # the machine's own load may change; the baseline is the lower of two
    assert job_processes([scratch.name]) == []
    # unconfined: about 0.1 of the rival's share alone; confined: about all of it (less what other load takes)
    assert beside >= 0.3 * alone, f"the rival had {beside:.3f} of a core beside the spinners, {alone:.3f} alone"


# -- 5. a score the host computes but cannot use: finite outputs whose metric overflows --------------------


def test_outputs_whose_metric_overflows_are_unusable_not_an_infinite_score():
    """float64 predictions of 1e200 are finite, so the npy reader and the finiteness check let them through, but
    their squared error overflows: mse = inf, r2 = -inf, and per-sequence NLLs near 1.8e308 sum to inf bits per
    byte. One such trained row made every later Predictor.fit raise ValueError (sklearn refuses an infinite
    target), so predictor-guided screening failed for every later group of the task. The host refuses it."""
    regression = Task("reg", "table", (4,), 1, "mse", 1, 8, 1e-3, 0.0, 1000, False, "a regression")
    targets = np.linspace(0, 1, 50, dtype=np.float32).reshape(50, 1)
    for metric in ("mse", "r2"):  # mae of 1e200 is a finite (and dreadful) score
        with pytest.raises(TaskError, match="not a finite"):
            score(replace(regression, metric=metric), np.full((50, 1), 1e200), targets)
    lm = get_task("stdlib-bytes")
    ids = np.zeros((4, lm.in_shape[0]), dtype=np.int64)
    with pytest.raises(TaskError, match="not a finite"):
        score(lm, np.full(4, np.finfo(np.float64).max), ids)
    assert score(regression, targets.astype(np.float64) + 1.0, targets) == pytest.approx(1.0)  # honest: as before


def test_an_infinite_score_already_in_the_archive_does_not_stop_the_predictor(tmp_path):
    """Archives written before that refusal may hold one; the predictor learns from the finite scores only."""
    with Archive(tmp_path / "a.db") as archive:
        for i in range(14):
            archive.record(
                {
                    "run_id": None,
                    "task": "digits",
                    "name": f"c{i}",
                    "proposer": "user",
                    "parents": [],
                    "code": f"pass # {i}",
                    "text_hash": f"h{i}",
                    "ast_hash": f"a{i}",
                    "functional_hash": f"f{i}",
                    "status": "trained",
                    "params": 100 * (i + 1),
                    "flops": 1000 * (i % 5 + 1),
                    "space": None,
                    "arch": None,
                },
                {
                    "status": "trained",
                    "fidelity": 1,
                    "seed": 0,
                    "val_accuracy": float("inf") if i == 13 else i / 20,
                    "test_accuracy": 0.1,
                },
            )
        predictor = Predictor.fit(archive, "digits")
    assert predictor is not None and predictor.n == 13
    assert math.isfinite(predictor.predict({"log_params": 3.0, "log_flops": 3.0}))
