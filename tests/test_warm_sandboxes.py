"""Warm sandboxes (issue 26): a slot's next sandbox started while its job runs isolates exactly as a cold one.

A warm sandbox is the same launch as a cold one, started early (agentarch/isolation/warm.py): its own scratch,
cgroup, limits, namespaces or Landlock rules and seccomp filter. Through a real evaluator and a warm executor, in
both isolation modes: a hostile candidate leaves files and (where it may fork) a process behind; the next
candidate, handed the slot's warm sandbox, sees none of it; an honest seed then trains and is scored by graph
scoring; an over-training attack is still stopped by the host's CPU meter. A sandbox never used is closed at
shutdown, and each test counts only its own sandboxes' processes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agentarch.config import load_settings
from agentarch.evaluation import stages as stages_module
from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.executors import LocalExecutor, make_executor
from agentarch.isolation.launch import RUNNER, Program
from agentarch.isolation.policy import Limits, SandboxError, resolve_isolation
from agentarch.isolation.warm import Launch, WarmSlot
from agentarch.store.archive import Archive
from tests.conftest import NET, SPEC, assert_nothing_left
from tests.security.harness import attack_settings
from tests.security.test_training_budget import IN_EVAL_FORWARD, MODES, SEED_MLP

LEAVES_TRACES = """
import torch
from torch import nn

_B = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
_os, _time = _B["__import__"]("os"), _B["__import__"]("time")


def attack():
    for path in ("left-behind", "/tmp/left-behind"):
        try:
            with _B["open"](path, "w") as fh:
                fh.write("the previous candidate")
        except OSError:
            pass
    try:
        if _os.fork() == 0:  # refused in the process mode (no new processes); a sleeper under bubblewrap
            _os.setsid()
            _time.sleep(120)
    except OSError:
        pass
    raise RuntimeError("REPORT " + _os.getcwd() + " " + str(_os.getpid()))


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        attack()

    def forward(self, x):
        return x
"""

LOOKS_AROUND = """
import torch
from torch import nn

_B = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
_os, _json = _B["__import__"]("os"), _B["__import__"]("json")


def attack():
    try:  # the process mode's Landlock rules may refuse the listing
        pids = sorted(p for p in _os.listdir("/proc") if p.isdigit())
    except OSError as err:
        pids = str(err)
    seen = {
        "scratch": sorted(_os.listdir(".")),
        "tmp": _os.path.exists("/tmp/left-behind"),
        "previous_scratch": _os.path.exists(PREVIOUS + "/left-behind"),
        "pids": pids,
    }
    raise RuntimeError("REPORT " + _json.dumps(seen))


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        attack()

    def forward(self, x):
        return x
"""


@pytest.fixture(autouse=True)
def _both_modes_run_untrusted_code(monkeypatch):
    monkeypatch.setenv("AGENTARCH_WEAK_SANDBOX_OK", "1")  # what is tested is the sandbox, in both modes


@pytest.fixture
def starts(monkeypatch):
    """Whether each job of the test ran in a warm sandbox, in order."""
    seen: list[bool] = []
    real = stages_module.handed

    def spy(*args, **kwargs):
        job, warm = real(*args, **kwargs)
        seen.append(warm)
        return job, warm

    monkeypatch.setattr(stages_module, "handed", spy)
    return seen


def started(slot: WarmSlot, program: Program = RUNNER) -> None:
    """Wait until the slot's ordered sandbox of `program` is started and waiting."""
    deadline = time.monotonic() + 60
    while program not in slot._ready and time.monotonic() < deadline:
        time.sleep(0.05)
    assert program in slot._ready


def report(reason: str) -> str:
    assert "REPORT " in (reason or ""), reason
    return reason.split("REPORT ", 1)[1].split("\n")[0].strip()


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_a_warm_sandbox_isolates_trains_scores_and_meters_as_a_cold_one(
    isolation, tmp_path, cache_dir, digits, own_jobs, starts
):
    settings = attack_settings(
        tmp_path, cache_dir, isolation, scoring="graph", timeout_s=120, smoke_timeout_s=90, novelty_threshold=1.0
    )
    executor = LocalExecutor(1, warm=True)
    try:
        with Archive(tmp_path / "a.db") as archive:
            evaluator = Evaluator(archive, settings, executor=executor)
            first = evaluator.evaluate(LEAVES_TRACES, "traces")
            previous_scratch, previous_pid = report(first.reason).split()
            if isolation == "process":  # the host's pid: the candidate's one process is gone with its job
                assert not Path(f"/proc/{previous_pid}").exists()

            probe = evaluator.evaluate(LOOKS_AROUND.replace("PREVIOUS", repr(previous_scratch)), "probe")
            seen = json.loads(report(probe.reason))
            assert "left-behind" not in seen["scratch"] and not seen["tmp"] and not seen["previous_scratch"], seen
            if isolation == "bubblewrap":  # its own pid namespace: bubblewrap's init and the runner, nothing else
                assert len(seen["pids"]) <= 2, seen

            seed = evaluator.evaluate(SEED_MLP, "mlp")
            assert seed.status == "trained", seed.reason
            (evaluation,) = archive.evaluations(seed.id)
            assert evaluation["timings"]["warm_start"] is True and evaluation["timings"]["scoring"] == "graph"
            assert seed.metrics["val_accuracy"] > 0.5 and evaluation["graph_sha256"]

            cheat = evaluator.evaluate(IN_EVAL_FORWARD, "cheat")
            assert cheat.status == "failed" and cheat.reason.startswith("[train:budget] the job used "), cheat.reason
        assert starts == [False, True, True, True]  # the first job starts cold, every later one warm
    finally:
        executor.close()
    assert_nothing_left(own_jobs)


def test_a_warm_sandbox_serves_one_job_of_its_configuration_and_is_closed_unused(digits, own_jobs):
    isolation = resolve_isolation("auto")
    launch = Launch(digits.inputs_dir, Limits(timeout_s=60, smoke_timeout_s=60), isolation)
    slot = WarmSlot("test")
    slot.order(launch)
    job = slot.take(launch)  # waits for the one on its way
    assert job is not None and job.waiting()
    assert slot.take(launch) is None  # taken: nobody else gets it
    with job:
        job.hand(NET, SPEC)
        with pytest.raises(SandboxError, match="one candidate only"):
            job.hand(NET, SPEC)
        assert job.read_event(60)["event"] == "smoke"
        job.send("stop")

    slot.order(launch)
    started(slot)
    other = Launch(digits.inputs_dir, Limits(timeout_s=61, smoke_timeout_s=60), isolation)
    assert slot.take(other) is None  # started for another configuration: closed, never used
    assert slot._ready == {}
    slot.order(launch)
    started(slot)  # and waiting for a job that never comes
    slot.close()
    assert len(own_jobs) == 3
    assert_nothing_left(own_jobs)


def test_warm_sandboxes_are_on_by_default_and_one_setting_turns_them_off(monkeypatch):
    assert load_settings().warm_sandboxes is True
    monkeypatch.setenv("AGENTARCH_WARM_SANDBOXES", "0")
    off = load_settings()
    assert off.warm_sandboxes is False
    assert make_executor("local", warm=off.warm_sandboxes).warm == {}  # type: ignore[attr-defined]
    on = make_executor("local", slots=2, warm=True)
    assert len(on.warm) == 2  # type: ignore[attr-defined]
    on.close()
