"""The training budget the host holds (issue 25): a job that computes past its grant is killed and `failed`.

A candidate's code runs in the trainer's process, so what the runner reports about training is the candidate's
word. The host grants each job CPU seconds (agentarch/evaluation/budget.py), reads what the job's processes use from
outside them (agentarch/isolation/cputime.py) and kills a job past its grant. The attacks train a 256-wide MLP on
digits for 1000 extra epochs (about 16 CPU seconds here, four times its grant, so that a loaded host's slower
reference job cannot hide it) where no budget looks: in the first eval-mode forward pass (the export's in graph scoring, the held-out prediction's in trusted scoring), and whenever the network is switched
to eval mode (the smoke stage's trace, before the host's word to train, and the export). Each ends `failed` with a
`[train:budget]` reason in both isolation modes; an honest seed trains, and its timings carry the host's figures.
The meter's own tests are hermetic: it counts the processes of the job it is given, and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentarch.evaluation import budget
from agentarch.evaluation.evaluator import Evaluator
from agentarch.isolation.bubblewrap import bubblewrap_problem
from agentarch.isolation.cputime import CpuMeter, cgroup_usage_s, descendants
from agentarch.isolation.policy import Limits
from agentarch.isolation.process_mode import process_mode_gaps
from agentarch.store.archive import Archive
from tests.security.harness import attack_settings

MODES = [
    pytest.param("bubblewrap", marks=pytest.mark.skipif(bubblewrap_problem() is not None, reason="no bubblewrap")),
    pytest.param("process", marks=pytest.mark.skipif(bool(process_mode_gaps()), reason="process mode has gaps")),
]

SEED_MLP = (Path(__file__).resolve().parents[2] / "archive" / "seeds" / "image" / "mlp.py").read_text()

OVERTRAIN = '''
import math
import torch
from torch import nn
_B = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
_imp = _B["__import__"]
_json, _np = _imp("json"), _imp("numpy")

def _overtrain(net, epochs=1000):
    """What the trainer would do for `epochs` more epochs, on the training split the spec names."""
    spec = _json.load(_B["open"]("spec.json"))
    folder = spec["inputs_dir"]
    meta = _json.load(_B["open"](folder + "/meta.json"))
    x = torch.from_numpy(_np.load(folder + "/train_x.npy")).float() / meta["scale"]
    x = (x - meta["mean"][0]) / meta["std"][0]
    y = torch.from_numpy(_np.load(folder + "/train_y.npy")).long()
    was = net.training
    nn.Module.train(net, True)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    with torch.enable_grad():
        for _ in range(epochs):
            for start in range(0, len(x) - 63, 64):
                optimizer.zero_grad()
                nn.functional.cross_entropy(net.body(x[start : start + 64]), y[start : start + 64]).backward()
                optimizer.step()
    nn.Module.train(net, was)
'''

IN_EVAL_FORWARD = (
    OVERTRAIN
    + """
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), 256), nn.ReLU(), nn.Linear(256, 10))
        self.steps, self.cheated = 0, False
    def forward(self, x):
        if self.training:
            self.steps += 1
        elif self.steps > 1 and not self.cheated:  # the first eval-mode forward once trained
            self.cheated = True
            tracing = torch._C._get_tracing_state()  # the export's trace records nothing of it
            torch._C._set_tracing_state(None)
            try:
                _overtrain(self)
            finally:
                torch._C._set_tracing_state(tracing)
        return self.body(x)
"""
)
"""Trains 1000 more epochs inside its first eval-mode forward pass after training: the export's trace in graph
scoring (hidden from the tracer), the held-out prediction's in trusted scoring."""

ON_EVAL_SWITCH = (
    OVERTRAIN
    + """
_done = []

class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), 256), nn.ReLU(), nn.Linear(256, 10))
    def train(self, mode=True):
        if not mode and not _done:  # the first switch to eval mode: the smoke stage's, before the word to train
            _done.append(True)
            _overtrain(self)
        return super().train(mode)
    def forward(self, x):
        return self.body(x)
"""
)
"""Trains 1000 more epochs when it is first switched to eval mode, in the smoke stage, before the host's word to
train (weights it could carry over into the network that trains): charged too, since the whole job counts."""


def settings(tmp_path: Path, cache_dir: Path, isolation: str, scoring: str = "graph", **extra: Any) -> Any:
    return attack_settings(
        tmp_path,
        cache_dir,
        isolation,
        scoring=scoring,
        timeout_s=120,
        smoke_timeout_s=90,
        novelty_threshold=1.0,
        **extra,
    )


@pytest.fixture(autouse=True)
def _both_modes_run_untrusted_code(monkeypatch):
    monkeypatch.setenv("AGENTARCH_WEAK_SANDBOX_OK", "1")  # what is tested is the budget, in both modes


def assert_over_budget(result: Any, archive: Archive) -> None:
    assert result.status == "failed", (result.status, result.reason)
    assert result.reason.startswith("[train:budget] the job used "), result.reason
    assert "CPU seconds" in result.reason and "training steps asked for (1 epoch x" in result.reason
    assert result.metrics["val_accuracy"] is None and result.metrics["test_accuracy"] is None  # never scored
    assert all(e["val_accuracy"] is None for e in archive.evaluations(result.id))


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
@pytest.mark.parametrize("scoring", ["graph", "trusted"])
def test_training_inside_the_first_eval_forward_is_stopped(isolation, scoring, tmp_path, cache_dir, digits):
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, settings(tmp_path, cache_dir, isolation, scoring)).evaluate(IN_EVAL_FORWARD, "x")
        assert_over_budget(result, archive)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_training_on_every_switch_to_eval_mode_is_stopped(isolation, tmp_path, cache_dir, digits):
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, settings(tmp_path, cache_dir, isolation)).evaluate(ON_EVAL_SWITCH, "switch")
        assert_over_budget(result, archive)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_an_honest_seed_trains_and_its_timings_are_the_hosts(isolation, tmp_path, cache_dir, digits):
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, settings(tmp_path, cache_dir, isolation)).evaluate(SEED_MLP, "mlp")
        assert result.status == "trained", result.reason
        (evaluation,) = archive.evaluations(result.id)
        timings = evaluation["timings"]
        granted = timings["budget"]
        assert 0 < timings["train_cpu_seconds"] and 0 < timings["smoke_cpu_seconds"]
        assert timings["smoke_cpu_seconds"] + timings["train_cpu_seconds"] <= granted["cpu_grant_seconds"]
        assert granted["steps_granted"] == timings["steps"] and granted["startup_cpu_seconds"] > 0
        assert timings["cpu_source"] in ("cgroup", "proc")
        # what every listing reports as training seconds is the host's wall clock, the runner's kept beside it
        assert evaluation["train_seconds"] == timings["train_seconds"] == result.metrics["train_seconds"] > 0
        assert "reported_train_seconds" in timings


@pytest.mark.slow
def test_the_budget_off_records_the_figures_and_stops_nothing(tmp_path, cache_dir, digits):
    with Archive(tmp_path / "a.db") as archive:
        evaluator = Evaluator(archive, settings(tmp_path, cache_dir, "process", budget_slack=0))
        result = evaluator.evaluate(SEED_MLP, "mlp")
        assert result.status == "trained", result.reason
        (evaluation,) = archive.evaluations(result.id)
        assert evaluation["timings"]["train_cpu_seconds"] > 0 and "budget" not in evaluation["timings"]


# -- the meter, hermetic -------------------------------------------------------------------------------------------

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def burner(seconds: float) -> list[str]:
    return [sys.executable, "-c", BURN.format(seconds=seconds)]


def test_the_process_tree_is_the_jobs_own():
    """descendants() follows parent pids down from the job's first process, and no further."""
    root = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while len(found := descendants(root.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert root.pid in found and len(found) == 3
        assert stranger.pid not in found and os.getpid() not in found
    finally:
        for proc in (root, stranger):
            proc.kill()
            proc.wait()


def test_the_proc_meter_counts_the_jobs_processes_and_nothing_else():
    """A job whose child burns 0.6 CPU seconds and exits (reaped by the job's shell, so in its cutime too), beside a
    stranger that burns as much at the same time: the meter counts the job's child and not the stranger."""
    script = f"{sys.executable} -c '{BURN.format(seconds=0.6)}'; sleep 30"
    job = subprocess.Popen(["sh", "-c", script])
    stranger = subprocess.Popen(burner(0.6))
    try:
        meter = CpuMeter(lambda: None, lambda: descendants(job.pid))
        assert meter.source == "proc"
        readings = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            readings.append(meter.seconds())
            if readings[-1] >= 0.6 and stranger.poll() is not None:
                break
            time.sleep(0.05)
        stranger.wait()
        assert readings == sorted(readings)  # never goes back
        # the job's child at least once (at most twice: seen alive, then in its reaper's cutime), none of the stranger's
        assert 0.55 <= meter.seconds() < 1.5
    finally:
        for proc in (job, stranger):
            proc.kill()
            proc.wait()


def test_a_process_that_is_gone_keeps_the_time_it_was_seen_with(tmp_path):
    """A child whose parent never waits for it (so no cutime gets its time) is still counted once seen."""
    child = tmp_path / "child.py"
    child.write_text(BURN.format(seconds=0.4) + "time.sleep(0.5)\n")
    job = subprocess.Popen(["sh", "-c", f"{sys.executable} {child} & exec sleep 30"])
    try:
        meter = CpuMeter(lambda: None, lambda: descendants(job.pid))
        deadline = time.monotonic() + 20
        while meter.seconds() < 0.35 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the child is gone (a zombie of `sleep`, which never reaps it)
        assert meter.seconds() >= 0.35
    finally:
        job.kill()
        job.wait()


def test_the_cgroup_counter_is_read_in_either_version(tmp_path):
    v1, v2, none = tmp_path / "v1", tmp_path / "v2", tmp_path / "none"
    for d in (v1, v2, none):
        d.mkdir()
    (v1 / "cpuacct.usage").write_text("2500000000\n")
    (v2 / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    (none / "cpu.stat").write_text("nr_periods 0\nnr_throttled 0\nthrottled_time 0\n")  # a v1 cpu group: no usage
    assert cgroup_usage_s([v1]) == 2.5 and cgroup_usage_s([v2]) == 1.5
    assert cgroup_usage_s([none]) is None and cgroup_usage_s([none, v1]) == 2.5
    meter = CpuMeter(lambda: cgroup_usage_s([v2]), lambda: set())
    assert meter.source == "cgroup" and meter.seconds() == 1.5


# -- the grant -----------------------------------------------------------------------------------------------------

SMOKE = {"structure": {"Gemm": 3, "Relu": 2}, "flops": 200_000, "params": 85_000}
TRAIN = {"epochs": 2, "batch_size": 64}


def test_the_grant_grows_with_the_work_asked_for_and_says_its_figures():
    limits = Limits(threads=1)
    one = budget.grant(SMOKE, TRAIN, 1_000, 0, limits, 4.0, 1.5)
    assert one.steps == 2 * (1_000 // 64) and one.batches == 15
    assert budget.grant(SMOKE, {**TRAIN, "epochs": 20}, 1_000, 0, limits, 4.0, 1.5).cpu_seconds > one.cpu_seconds
    assert budget.grant({**SMOKE, "flops": 10**9}, TRAIN, 1_000, 0, limits, 4.0, 1.5).cpu_seconds > one.cpu_seconds
    assert budget.grant(SMOKE, TRAIN, 1_000, 700, limits, 4.0, 1.5).cpu_seconds > one.cpu_seconds  # it predicts too
    assert budget.grant(SMOKE, TRAIN, 1_000, 0, Limits(threads=4), 4.0, 1.5).cpu_seconds > one.cpu_seconds
    assert budget.grant(SMOKE, TRAIN, 1_000, 0, limits, 8.0, 1.5).cpu_seconds > one.cpu_seconds
    reason = one.reason(50.0, 3.0)
    assert "50.0 CPU seconds (3.0 of them before training)" in reason and f"{one.cpu_seconds:.1f} granted" in reason
    assert "30 training steps asked for (2 epochs x 15 batches)" in reason


def test_a_graph_tasks_grant_prices_one_step_per_epoch_of_the_whole_graph():
    """A graph task's one example is the whole graph: its measures are one step's, however many nodes the batch size
    counts, so the grant must not multiply them by the batch (600x over on sbm-nodes)."""
    limits, graph_train = Limits(threads=1), {"epochs": 100, "batch_size": 600}
    whole = budget.grant(SMOKE, graph_train, 600, 400, limits, 4.0, 1.5, whole_graph=True)
    assert whole.steps == 100 and whole.batches == 1
    per_node = budget.grant(SMOKE, graph_train, 600, 400, limits, 4.0, 1.5)
    assert per_node.step_seconds > 5 * whole.step_seconds
