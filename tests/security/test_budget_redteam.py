"""Red team of the training budget the host holds (issue 25, agentarch/evaluation/budget.py, agentarch/isolation/cputime.py).

Each attack is a candidate whose goal is to train far more than its grant and still be scored `trained`, to make an
honest candidate fail, or to break the host's meter. The attacks that work are `xfail(strict=True)` with the fix they
need; the ones the budget contains, and the bugs fixed here, pass.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentarch.evaluation import budget
from agentarch.evaluation.evaluator import Evaluator
from agentarch.isolation.cgroups import Cgroup
from agentarch.isolation.cputime import CpuMeter, descendants, process_seconds
from agentarch.isolation.policy import Limits
from agentarch.store.archive import Archive
from tests.conftest import cgroups_work, requires_bubblewrap
from tests.security.test_training_budget import MODES, OVERTRAIN, assert_over_budget, settings
from tests.test_sandbox import message, run_hostile


@pytest.fixture(autouse=True)
def _both_modes_run_untrusted_code(monkeypatch):
    monkeypatch.setenv("AGENTARCH_WEAK_SANDBOX_OK", "1")  # what is tested is the budget, in both modes


# -- grant inflation: a dead branch in the smoke stage's graph ---------------------------------------------------

DEAD_BRANCH = (
    OVERTRAIN
    + '''
_real_export = torch.onnx.export


def _varint(data, i):
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(data):
    """(field number, raw bytes of the whole field, payload of a length-delimited one)."""
    i = 0
    while i < len(data):
        start = i
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        payload = None
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _varint(data, i)
            payload = data[i : i + size]
            i += size
        yield number, data[start:i], payload


def _length_field(number, payload):
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _drop_output(model, name):
    """ModelProto bytes with the graph output `name` removed (GraphProto.output is field 12, its name field 1)."""
    out = bytearray()
    for number, raw, payload in _fields(model):
        if number != 7:  # ModelProto.graph
            out += raw
            continue
        graph = bytearray()
        for g_number, g_raw, g_payload in _fields(payload):
            if g_number == 12 and any(n == 1 and p == name for n, _, p in _fields(g_payload)):
                continue
            graph += g_raw
        out += _length_field(7, bytes(graph))
    return bytes(out)


class _WithDeadBranch(nn.Module):
    """The network, and beside its output a batched 512 x 512 x 512 matrix product of its input that nothing reads."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        v = x.flatten(1)[:, :1].unsqueeze(-1)
        big = v.expand(-1, 512, 512)
        return self.net(x), torch.matmul(big, big)


def _export(model, args, f, **kwargs):
    if not str(f).endswith("smoke_graph.onnx"):  # the trained network's graph: exported as it is
        return _real_export(model, args, f, **kwargs)
    kwargs["output_names"] = ["y", "dead"]
    kwargs["dynamic_axes"] = {**kwargs["dynamic_axes"], "dead": {0: "batch"}}
    result = _real_export(_WithDeadBranch(model), args, f, **kwargs)
    with _B["open"](f, "rb") as fh:
        data = fh.read()
    with _B["open"](f, "wb") as fh:
        fh.write(_drop_output(data, b"dead"))
    return result


torch.onnx.export = _export


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), 256), nn.ReLU(), nn.Linear(256, 10))
        self.steps, self.cheated = 0, False

    def forward(self, x):
        if self.training:
            self.steps += 1
        elif self.steps > 1 and not self.cheated:  # the first eval-mode forward once trained: the export's
            self.cheated = True
            tracing = torch._C._get_tracing_state()
            torch._C._set_tracing_state(None)
            try:
                _overtrain(self)
            finally:
                torch._C._set_tracing_state(tracing)
        return self.body(x)
'''
)
"""The smoke stage's graph carries a dead branch (a 512^3 matrix product per example whose output is dropped from the
graph's outputs), priced at ~3 CPU seconds a step when measures.live_nodes counted every node that depends on the
input, reachable from the output or not (a grant of 725 CPU-s), while measures.digest hashes only what reaches the
output, so the trained graph, exported without the branch, was "the same architecture". Meanwhile the network trains
300 extra epochs in its export's forward pass. Now only nodes that reach an output count: over budget."""


@pytest.mark.slow
def test_a_dead_branch_in_the_smoke_graph_does_not_inflate_the_grant(tmp_path, cache_dir, digits):
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, settings(tmp_path, cache_dir, "process")).evaluate(DEAD_BRANCH, "dead")
        assert_over_budget(result, archive)


# -- the /proc meter: hostile process names --------------------------------------------------------------------

NAMED = "import ctypes, time\nctypes.CDLL(None).prctl(15, {name!r}, 0, 0, 0)\n" + (
    "end = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)\n"
)
"""A process that names itself (PR_SET_NAME, which seccomp allows in both isolation modes), burns 0.3 CPU seconds
and sleeps."""


def _named(name: bytes) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", NAMED.format(name=name)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{proc.pid}/stat").read_bytes().split(b" (", 1)[1].startswith(name[:4]):
                break
        except (OSError, IndexError):
            pass
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("name", [b"\xff\xfe) 1 2 (", b"\xc3(\xa0) R 1 ", b"a) b) c"])
def test_a_hostile_process_name_anywhere_on_the_host_does_not_break_a_jobs_meter(name):
    """descendants() reads every process's /proc/PID/stat, so one process anywhere on the host (another candidate's
    job) named with bytes that are not UTF-8 made every /proc meter raise UnicodeDecodeError: the honest job beside
    it failed (`[train] UnicodeDecodeError on the host`), its reference job too. Fixed: the file is read as bytes."""
    stranger = _named(name)
    job = subprocess.Popen(["sleep", "30"])
    try:
        assert job.pid in descendants(job.pid)
        meter = CpuMeter(lambda: None, lambda: descendants(job.pid))
        assert meter.seconds() < 0.2  # the job's own, not the stranger's
    finally:
        for proc in (stranger, job):
            proc.kill()
            proc.wait()


def test_a_job_process_with_a_hostile_name_is_still_counted():
    """The hostile name is the job's own: its CPU time is read past the name's parentheses and spaces."""
    job = _named(b"\xff) 9 9 9 (")
    try:
        deadline = time.monotonic() + 20
        meter = CpuMeter(lambda: None, lambda: descendants(job.pid))
        while meter.seconds() < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.25 <= meter.seconds() < 2
        found = process_seconds(job.pid)
        assert found is not None and found[0].isdigit()
    finally:
        job.kill()
        job.wait()


# -- the /proc meter: work it does not see, so no fork where it is the source ----------------------------------

FORK = """
import os
try:
    child = os.fork()
except PermissionError as err:
    raise RuntimeError(f"fork refused: {err}")
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
raise RuntimeError("fork allowed")
"""


@requires_bubblewrap
def test_a_bubblewrap_job_forks_only_where_its_cgroup_counts_cpu_time(monkeypatch, digits):
    """The /proc meter (cputime.py) cannot see a child that lives under one poll while its parent ignores SIGCHLD
    (nobody's cutime gets its time): 120 children of 10 ms hid about 95% of their CPU time from it (0.05 of 1.2 s
    seen). So a bubblewrap job whose cgroup keeps no CPU account is refused every fork by seccomp, as the process
    mode always is, and the attack has nowhere to run; where the cgroup counts every process's time, forks stay
    allowed (a child's time is charged however short it lives)."""
    with_counter = message(run_hostile(FORK, digits.inputs_dir, isolation="bubblewrap"))
    if cgroups_work():
        assert "fork allowed" in with_counter, with_counter
    monkeypatch.setattr(Cgroup, "cpu_seconds", lambda self: None)  # a host without a CPU account: /proc meters
    without = message(run_hostile(FORK, digits.inputs_dir, isolation="bubblewrap"))
    assert "fork refused" in without and "Operation not permitted" in without, without


FORKED_WORKERS = '''
import math
import torch
from torch import nn
_B = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
_imp = _B["__import__"]
_json, _np, _os, _mmap, _signal = (_imp(m) for m in ("json", "numpy", "os", "mmap", "signal"))


def _overtrain_in_children(net, epochs=300, per_child=2):
    """`epochs` more epochs in short-lived forked children (each lives well under the host's 0.2 s poll) that the
    kernel reaps itself (SIGCHLD ignored: no cutime gets their time), the weights shared with the parent through an
    anonymous shared mapping."""
    spec = _json.load(_B["open"]("spec.json"))
    folder = spec["inputs_dir"]
    meta = _json.load(_B["open"](folder + "/meta.json"))
    x = torch.from_numpy(_np.load(folder + "/train_x.npy")).float() / meta["scale"]
    x = (x - meta["mean"][0]) / meta["std"][0]
    y = torch.from_numpy(_np.load(folder + "/train_y.npy")).long()
    params = list(net.parameters())
    shared = _mmap.mmap(-1, sum(p.numel() for p in params) * 4)
    flat, at = torch.frombuffer(shared, dtype=torch.float32), 0
    for p in params:
        view = flat[at : at + p.numel()].view_as(p)
        view.copy_(p.data)
        p.data, at = view, at + p.numel()
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)
    for _ in range(epochs // per_child):
        done, exited = _os.pipe()
        pid = _os.fork()
        if pid == 0:
            try:
                _os.close(done)
                nn.Module.train(net, True)
                optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
                with torch.enable_grad():
                    for _ in range(per_child):
                        for start in range(0, len(x) - 63, 64):
                            optimizer.zero_grad()
                            loss = nn.functional.cross_entropy(net.body(x[start : start + 64]), y[start : start + 64])
                            loss.backward()
                            optimizer.step()
            finally:
                _os._exit(0)
        _os.close(exited)
        _os.read(done, 1)  # end of file once the child has exited: the parent waits without using CPU
        _os.close(done)


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
            tracing = torch._C._get_tracing_state()
            torch._C._set_tracing_state(None)
            try:
                _overtrain_in_children(self)
            finally:
                torch._C._set_tracing_state(tracing)
        return self.body(x)
'''
"""Trains 300 more epochs in its export's forward pass, in 150 forked children the kernel reaps itself."""

BUBBLEWRAP = MODES[0]


@pytest.mark.slow
@pytest.mark.parametrize("isolation", [BUBBLEWRAP])
def test_training_in_short_lived_forked_children_is_charged_by_the_cgroup_counter(
    isolation, tmp_path, cache_dir, digits
):
    """Contained where the job has an accounting cgroup: the kernel charges the children's time to the group."""
    if not cgroups_work():
        pytest.skip("no per-job cgroup here")
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, settings(tmp_path, cache_dir, isolation)).evaluate(FORKED_WORKERS, "forks")
        assert_over_budget(result, archive)


# -- grant inflation: trusted scoring's forged smoke report ----------------------------------------------------

FORGED_SMOKE = (
    OVERTRAIN
    + """
_sys = _imp("sys")
_runner = next(m for n, m in list(_sys.modules.items()) if n.endswith(".runner") and "load_candidate" in m.__dict__)
_real_smoke = _runner.smoke


def _forged(*args, **kwargs):
    report = _real_smoke(*args, **kwargs)
    # one operator token counted a million times (protocol.MAX_TOKEN_COUNT): each step is priced at 60 CPU seconds,
    # while the recorded parameters and FLOPs stay the network's own
    report["structure"] = {**report["structure"], "Linear(x)": 10**6}
    return report


_runner.smoke = _forged


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), 256), nn.ReLU(), nn.Linear(256, 10))
        self.steps, self.cheated = 0, False

    def forward(self, x):
        if self.training:
            self.steps += 1
        elif self.steps > 1 and not self.cheated:  # the first held-out prediction
            self.cheated = True
            _overtrain(self)
        return self.body(x)
"""
)
"""Trusted scoring: the runner's smoke report, which prices the grant, is rewritten by the candidate (the runner's
module is in its process) to claim a million operators (its FLOPs and parameters left true, so nothing in the
record looks odd); then it trains 300 more epochs while it predicts."""


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="documented (docs/sandbox.md): in trusted scoring the grant is priced from the runner's report, which "
    "candidate code rewrites (here its structure signature: a million operators, its params and FLOPs left true, so "
    "the record looks honest), so only the wall clock (timeout_s) bounds it. No sound fix inside budget.py: every "
    "figure a trusted grant could read is the candidate's; price trusted grants from the task and steps alone "
    "(a fixed per-step allowance) or measure the graph on the host as graph scoring does",
)
def test_a_forged_smoke_report_does_not_inflate_a_trusted_grant(tmp_path, cache_dir, digits):
    with Archive(tmp_path / "a.db") as archive:
        evaluator = Evaluator(archive, settings(tmp_path, cache_dir, "process", scoring="trusted"))
        result = evaluator.evaluate(FORGED_SMOKE, "forged")
        assert_over_budget(result, archive)


# -- the reference job ------------------------------------------------------------------------------------------


class _FakeJob:
    """A reference job whose smoke stage fails (a host too loaded for its wall clock) or succeeds, in 1.3 CPU s."""

    runs: list[bool] = []  # noqa: RUF012 - the test's record
    succeed = False

    def __init__(self, *args, **kwargs):
        self.cpu = type("Meter", (), {"seconds": lambda self: 1.3})()

    def __enter__(self):
        _FakeJob.runs.append(_FakeJob.succeed)
        return self

    def __exit__(self, *exc):
        return None

    def read_event(self, timeout_s=None):
        if _FakeJob.succeed:
            return {"event": "smoke"}
        return budget.Outcome("timeout", "no result within 90 s (wall-clock limit)")

    def send(self, word):
        return None


def test_a_failed_reference_job_does_not_inflate_every_later_grant(monkeypatch, tmp_path):
    """A reference job that failed once (a load spike, or another worker's candidate hogging the host while this
    process measured) left FALLBACK_STARTUP_S (10 s, several times the real 1.3) in place for the rest of the
    process: some 13 extra CPU seconds in every later grant, free training for every later candidate. Fixed: it is
    measured again after STARTUP_RETRY_S."""
    monkeypatch.setattr(budget, "SandboxJob", _FakeJob)
    _FakeJob.runs, _FakeJob.succeed = [], False
    spec = {"kind": "image", "in_shape": [1, 8, 8], "train": {"epochs": 1}}
    args = ("code", spec, tmp_path, Limits(threads=1), "process", None)
    assert budget.startup_seconds(*args) == budget.FALLBACK_STARTUP_S
    _FakeJob.succeed = True
    assert budget.startup_seconds(*args) == budget.FALLBACK_STARTUP_S  # within the retry window: not measured again
    assert _FakeJob.runs == [False]
    monkeypatch.setattr(budget, "STARTUP_RETRY_S", 0.0)
    time.sleep(0.01)
    assert budget.startup_seconds(*args) == 1.3  # measured again, and kept
    monkeypatch.setattr(budget, "STARTUP_RETRY_S", 600.0)
    assert budget.startup_seconds(*args) == 1.3 and _FakeJob.runs == [False, True]


def test_jobs_that_differ_only_in_their_bounds_share_one_reference_and_a_tight_bound_keeps_its_failure(
    monkeypatch, tmp_path
):
    """A bound stops a job; it does not change what an honest start costs. So jobs of one task, scoring, isolation and
    thread count measure once whatever their time, memory, process or file limits; but a reference that failed under
    a bound too tight for it (here a 64 MiB cap) keeps its fallback to itself, never raising the grants of jobs whose
    reference finishes."""
    monkeypatch.setattr(budget, "SandboxJob", _FakeJob)
    _FakeJob.runs, _FakeJob.succeed = [], False
    spec = {"kind": "image", "in_shape": [1, 8, 8], "train": {"epochs": 1}}
    tight = ("code", spec, tmp_path, Limits(threads=1, memory_mb=64), "process", None)
    assert budget.startup_seconds(*tight) == budget.FALLBACK_STARTUP_S
    _FakeJob.succeed = True
    assert budget.startup_seconds("code", spec, tmp_path, Limits(threads=1), "process", None) == 1.3  # measured
    for bounds in (Limits(threads=1, timeout_s=5, smoke_timeout_s=3), Limits(threads=1, max_pids=8, max_file_mb=1)):
        assert budget.startup_seconds("code", spec, tmp_path, bounds, "process", None) == 1.3
    assert budget.startup_seconds(*tight) == 1.3  # the configuration's cost is known now
    assert _FakeJob.runs == [False, True]
    assert budget.startup_seconds("code", spec, tmp_path, Limits(threads=2), "process", None) == 1.3
    assert _FakeJob.runs == [False, True, True]  # another thread count is another cost: measured on its own
