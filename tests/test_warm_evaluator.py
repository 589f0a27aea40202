"""The clean evaluator started ahead (issue 26): a slot's warm evaluator scores one graph as a cold one does, no other.

While a candidate trains, its slot starts the clean evaluator that will score it (agentarch/isolation/warm.py,
stages.py); scoring hands it the graph and the probe inputs after its launch. In both isolation modes: a warm
evaluator's scores are a cold one's for the same graph, files written into its scratch after the launch are read
(under a umask that would hide them), it serves one graph and is then closed (the next scoring gets another process
or starts cold), one started for another configuration or dead is closed and never used, and nothing of any of them
is left. Through a real warm LocalExecutor: two candidates in a row on one slot are both scored by warm evaluators,
each its own, and two screening jobs' latencies are measured so too; and `agentarch baseline` runs on the settings'
warm executor and closes it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.evaluation import executors
from agentarch.evaluation.executors import LocalExecutor
from agentarch.evaluation.graphs import scoring
from agentarch.evaluation.graphs.scoring import WORKER, GraphWorker, evaluator_launch, score_graph
from agentarch.evaluation.stages import RunRequest
from agentarch.isolation.policy import Limits, SandboxError
from agentarch.isolation.warm import Launch, WarmSlot
from agentarch.tasks.registry import get_task
from tests.conftest import assert_nothing_left, requires_bubblewrap
from tests.security.test_training_budget import MODES, SEED_MLP
from tests.test_warm_sandboxes import started

LIMITS = Limits(timeout_s=120, smoke_timeout_s=90, threads=2)
DIGITS = get_task("digits")


@pytest.fixture(autouse=True)
def _both_modes_run_untrusted_code(monkeypatch):
    monkeypatch.setenv("AGENTARCH_WEAK_SANDBOX_OK", "1")  # what is tested is the sandbox, in both modes


@pytest.fixture
def workers(monkeypatch) -> list[GraphWorker]:
    """Every clean evaluator this test's scoring used, in order (each GraphWorker once it is ready)."""
    seen: list[GraphWorker] = []
    real_init = GraphWorker.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        seen.append(self)

    monkeypatch.setattr(GraphWorker, "__init__", spy)
    return seen


@pytest.fixture(scope="module")
def linear_graph(tmp_path_factory) -> bytes:
    """A digits graph that passes the host's checks: a linear layer of fixed random weights, any batch size."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    path = tmp_path_factory.mktemp("graph") / "linear.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(
            net,
            (torch.zeros(2, 1, 8, 8),),
            str(path),
            dynamo=False,
            opset_version=18,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path.read_bytes()


def assert_same_scoring(warm: scoring.GraphScores, cold: scoring.GraphScores) -> None:
    """What ranks a candidate is the same whichever evaluator computed it (latency is a measurement: it varies)."""
    assert warm.scores == cold.scores and warm.secondary == cold.secondary
    assert warm.functional_hash == cold.functional_hash
    np.testing.assert_array_equal(warm.probe_outputs, cold.probe_outputs)
    assert warm.measures == cold.measures


@pytest.mark.parametrize("isolation", MODES)
def test_a_warm_evaluator_scores_one_graph_as_a_cold_one_and_serves_no_other(
    isolation, digits, linear_graph, own_jobs, workers
):
    slot = WarmSlot("test")
    launch = evaluator_launch(digits, LIMITS, isolation)
    try:
        slot.order(launch)
        started(slot, WORKER)
        ahead = slot._ready[WORKER][1]
        mask = os.umask(0o077)  # the graph and probe files are written after the launch: readable whatever the umask
        try:
            warm = score_graph(linear_graph, DIGITS, digits, LIMITS, isolation, slot)
        finally:
            os.umask(mask)
        assert warm.warm_start and workers[0].job is ahead
        assert WORKER not in slot._ready  # taken: nobody else gets it
        cold = score_graph(linear_graph, DIGITS, digits, LIMITS, isolation, slot)  # nothing ordered: a cold start
        assert not cold.warm_start and workers[1].job is not ahead
        assert_same_scoring(warm, cold)
        assert cold.scores["val_accuracy"] < 0.5  # random weights: a score the two could only share by scoring alike
        assert not ahead.scratch.exists()  # closed with its one graph

        slot.order(launch)
        started(slot, WORKER)
        taken = slot.take(launch)
        assert taken is not None and taken.waiting()
        with taken:
            taken.hand(None, {}, {scoring.GRAPH_FILE: linear_graph})
            with pytest.raises(SandboxError, match="one candidate only"):
                taken.hand(None, {}, {scoring.GRAPH_FILE: linear_graph})
    finally:
        slot.close()
    pids = [worker.job.proc.pid for worker in workers]
    assert len(set(pids)) == len(pids) == 2
    assert_nothing_left(own_jobs)


@pytest.mark.parametrize("isolation", MODES)
def test_an_evaluator_started_for_another_configuration_or_dead_is_closed_and_never_used(
    isolation, digits, own_jobs, workers
):
    slot = WarmSlot("test")
    launch = evaluator_launch(digits, LIMITS, isolation)
    try:
        slot.order(launch)
        started(slot, WORKER)
        other_limits = Limits(timeout_s=121, smoke_timeout_s=90, threads=2)
        with GraphWorker(digits, other_limits, isolation, warm=slot) as worker:
            assert not worker.warm_start  # started for other limits: a cold one instead
        assert slot._ready == {} and not own_jobs[0].exists()  # and the one started ahead is closed

        slot.order(launch)
        started(slot, WORKER)
        runner = Launch(digits.inputs_dir, LIMITS, isolation)  # a runner of the same data and limits
        assert slot.take(runner) is None
        assert WORKER in slot._ready  # the evaluator is not the runner's, nor closed for it

        slot._ready[WORKER][1].kill()  # died waiting
        with GraphWorker(digits, LIMITS, isolation, warm=slot) as worker:
            assert not worker.warm_start
            modules = worker.modules()
        assert "onnxruntime" in modules and not any(name.split(".")[0] == "torch" for name in modules)
    finally:
        slot.close()
    assert len(own_jobs) == 4
    assert_nothing_left(own_jobs)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_two_candidates_on_a_warm_slot_are_each_scored_by_their_own_warm_evaluator(
    isolation, digits, cache_dir, own_jobs, workers
):
    def request(seed: int) -> RunRequest:
        return RunRequest(
            code=SEED_MLP,
            task="digits",
            train={"epochs": 2, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0, "seed": seed},
            limits=LIMITS,
            isolation=isolation,
            cache_dir=cache_dir,
            data_dir=None,
            split_seed=0,
            scoring="graph",
        )

    executor = LocalExecutor(1, warm=True)
    try:
        first, second = executor.run(request(0)), executor.run(request(1))
    finally:
        executor.close()
    assert first.status == second.status == "trained", (first.reason, second.reason)
    for result in (first, second):  # each ordered as its job trained, and taken by its scoring
        host = result.trained["host"]
        assert host["evaluator_warm_start"] is True and result.trained["graph"]["evaluator_start_seconds"] > 0
    assert second.trained["host"]["warm_start"] is True
    assert [worker.warm_start for worker in workers] == [True, True]
    assert workers[0].job is not workers[1].job and workers[0].job.proc.pid != workers[1].job.proc.pid

    cold = score_graph(second.graph, DIGITS, digits, LIMITS, isolation)
    assert not cold.warm_start
    assert second.scores == cold.scores and second.scores["val_accuracy"] > 0.5
    assert second.smoke["functional_hash"] == cold.functional_hash
    assert_nothing_left(own_jobs)


@pytest.mark.parametrize("isolation", MODES)
def test_a_screening_job_measures_its_latency_in_a_warm_evaluator_of_its_own(isolation, cache_dir, own_jobs, workers):
    """A screening job (smoke only) has its evaluator ordered at its hand-off: its latency is measured right after."""
    request = RunRequest(
        code=SEED_MLP,
        task="digits",
        train={"epochs": 1, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0, "seed": 0},
        limits=LIMITS,
        isolation=isolation,
        cache_dir=cache_dir,
        data_dir=None,
        split_seed=0,
        scoring="graph",
        smoke_only=True,
    )
    executor = LocalExecutor(1, warm=True)
    try:
        first, second = executor.run(request), executor.run(request)
    finally:
        executor.close()
    assert first.status == second.status == "smoked", (first.reason, second.reason)
    assert first.smoke["latency_ms"] > 0 and second.smoke["latency_ms"] > 0
    assert [worker.warm_start for worker in workers] == [True, True]
    assert workers[0].job.proc.pid != workers[1].job.proc.pid
    assert_nothing_left(own_jobs)


@pytest.mark.slow
@requires_bubblewrap
def test_agentarch_baseline_evaluates_through_the_settings_warm_executor_and_closes_it(
    tmp_path, cache_dir, monkeypatch, own_jobs
):
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    made: list = []
    real = executors.executor_for

    def spy(settings):
        made.append(real(settings))
        return made[-1]

    monkeypatch.setattr(executors, "executor_for", spy)  # where `agentarch baseline` looks it up when it runs
    args = ["baseline", "--algo", "random", "--space", "nb201", "--task", "digits", "--budget", "2", "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--scoring", "graph", "--json", "--archive", str(tmp_path / "a.db")])
    assert result.exit_code == 0, result.output
    (executor,) = made
    assert isinstance(executor, LocalExecutor) and executor.warm  # Settings.warm_sandboxes, on by default
    assert all(slot._closed for slot in executor.warm.values())
    rows = sqlite3.connect(tmp_path / "a.db").execute("SELECT status, timings FROM evaluations ORDER BY id").fetchall()
    assert [status for status, _ in rows] == ["trained", "trained"], rows
    timings = [json.loads(t) for _, t in rows]
    assert [t["warm_start"] for t in timings] == [False, True] and timings[1]["evaluator_warm_start"] is True
    assert_nothing_left(own_jobs)
