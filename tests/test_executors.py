"""Executors: local slots (GPU pinning, one sandbox per slot) and a real local Ray cluster."""

import os
import re
import threading
import time
from pathlib import Path

import pytest

from agentarch.config import load_settings
from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.executors import LocalExecutor
from agentarch.evaluation.stages import RunRequest, RunResult, execute, stages
from agentarch.isolation import warm as warm_module
from agentarch.isolation.policy import Limits, resolve_isolation
from agentarch.store.archive import Archive
from tests.conftest import REPO, job_processes, requires_bubblewrap

SEEDS = REPO / "archive" / "seeds" / "image"
SHOW_GPU = """import os
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        raise RuntimeError("GPU=" + os.environ.get("CUDA_VISIBLE_DEVICES", "none"))

    def forward(self, x):
        return x
"""


def request(code: str, cache_dir: Path, **extra) -> RunRequest:
    return RunRequest(
        code=code,
        task="digits",
        train={"epochs": 1, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0, "seed": 0, "max_seconds": 60},
        limits=Limits(timeout_s=90, smoke_timeout_s=60, threads=1),
        isolation=resolve_isolation("auto"),
        cache_dir=cache_dir,
        data_dir=None,
        split_seed=0,
        **extra,
    )


def test_each_slot_pins_its_own_gpu_and_every_slot_comes_back(digits, cache_dir):
    """Four evaluations on two GPU slots: each sandbox sees exactly one GPU, each GPU serves two."""
    pool = LocalExecutor(gpus=["0", "1"])
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(pool.run(request(SHOW_GPU, cache_dir)))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = sorted(r.reason.split("GPU=")[1][:1] for r in results)
    assert seen == ["0", "0", "1", "1"], [r.reason for r in results]
    assert pool.free.qsize() == 2  # every slot came back


def test_a_known_function_stops_after_its_smoke_run(digits, cache_dir):
    code = (SEEDS / "mlp.py").read_text()
    runs = stages(request(code, cache_dir))
    first = next(runs)
    runs.close()  # the job is killed: its smoke verdict was all this test wanted
    assert first.status == "smoked" and first.trained is None
    again = execute(request(code, cache_dir, known_functional={first.smoke["functional_hash"]: 7}))
    assert (again.status, again.duplicate_of, again.trained) == ("duplicate", 7, None)


def test_one_sandbox_gives_the_smoke_verdict_then_trains_on(digits, cache_dir, monkeypatch):
    started = []

    class Counted(warm_module.SandboxJob):
        def __init__(self, *args, **kwargs):
            started.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(warm_module, "SandboxJob", Counted)  # where a job's sandbox is started
    pool = LocalExecutor(1)
    job = pool.start(request((SEEDS / "mlp.py").read_text(), cache_dir))
    smoked = job.smoke()
    assert smoked.status == "smoked" and smoked.trained is None and smoked.smoke["params"] > 0
    done = job.result()
    assert done.status == "trained" and done.smoke == smoked.smoke and done.scores["val_accuracy"] > 0.1
    assert job.smoke() is smoked and job.result() is done  # asking again waits for nothing
    assert len(started) == 1 and pool.free.qsize() == 1  # one sandbox, and its slot came back


def test_a_job_that_ends_at_its_smoke_run_gives_that_verdict_as_its_result(digits, cache_dir):
    pool = LocalExecutor(1)
    job = pool.start(request(SHOW_GPU, cache_dir))
    assert job.smoke().status == "failed" and job.result() is job.smoke()
    assert "GPU=none" in job.result().reason


def test_a_start_refused_by_its_caller_starts_nothing_and_frees_the_slot(cache_dir):
    pool = LocalExecutor(1)

    def refuse():
        raise RuntimeError("not again")

    with pytest.raises(RuntimeError, match="not again"):
        pool.start(request(SHOW_GPU, cache_dir), ready=refuse)
    assert pool.free.qsize() == 1 and pool.busy == []


@pytest.mark.slow
@requires_bubblewrap
def test_ray_records_the_same_results_as_the_local_pool_and_retries_a_lost_worker(tmp_path, cache_dir, digits):
    ray = pytest.importorskip("ray")
    from agentarch.evaluation.ray_executor import ExecutorClosedError, RayExecutor

    settings = load_settings(task="digits", epochs=3, threads=1, cache_dir=cache_dir)
    codes = [(SEEDS / name).read_text() for name in ("mlp.py", "cnn.py")]
    results = {}
    # four CPUs: two slots for the real evaluations, one for a one-actor pool fed a hanging and a flooding candidate,
    # one for the executor whose worker is lost on purpose below
    executor = RayExecutor(num_cpus=4, slots=2, warm=True)
    try:
        for kind in ("local", "ray"):
            pool = LocalExecutor(1) if kind == "local" else executor
            with Archive(tmp_path / f"{kind}.db") as db:
                evaluator = Evaluator(
                    db, settings.model_copy(update={"archive": tmp_path / f"{kind}.db"}), executor=pool
                )
                results[kind] = [
                    (r.status, r.metrics["val_accuracy"], r.metrics["test_accuracy"], r.metrics["params"])
                    for r in (evaluator.evaluate(code, f"seed{i}.py") for i, code in enumerate(codes))
                ]
        assert results["ray"] == results["local"] and all(r[0] == "trained" for r in results["ray"])
        ahead = started_ahead()  # the sandbox the actor that ran both started for its next job
        assert len(ahead) == 1 and all(scratch.exists() for scratch in ahead), ahead
        one = RayExecutor(slots=1, warm=True)  # the same Ray: its fourth CPU, one actor for everything below
        try:
            hostile = settings.model_copy(
                update={"archive": tmp_path / "one.db", "smoke_timeout_s": 6, "max_file_mb": 8}
            )
            with Archive(tmp_path / "one.db") as db:
                evaluator = Evaluator(db, hostile, executor=one)
                hung = evaluator.evaluate(codes[0].replace(HANG_AT, HANG), "hangs.py")
                flooded = evaluator.evaluate(codes[0].replace(HANG_AT, FLOOD), "floods.py")
                honest = Evaluator(db, settings.model_copy(update={"archive": tmp_path / "one.db"}), executor=one)
                honest = honest.evaluate(codes[0], "after.py")
            assert hung.status == "timeout", hung.reason  # the host's wall clock, on the actor's node
            assert flooded.status == "failed" and "File too large" in flooded.reason, flooded.reason
            assert (honest.status, honest.metrics.get("val_accuracy")) == ("trained", results["local"][0][1]), (
                honest.reason
            )
            assert len(one.actors) == 1 and one.free.qsize() == 1  # one actor served all three, and is free
            theirs = started_ahead() - ahead
            assert len(theirs) == 1, theirs  # its actor's next sandbox, started ahead after all that
        finally:
            one.close()
        # closing an executor that found Ray running ends its own actors and warm sandboxes, not Ray: the rest of
        # this test goes on on the same Ray
        assert ray.is_initialized() and not any(scratch.exists() for scratch in theirs)
        with pytest.raises(ExecutorClosedError, match="closed"):  # a wait for a free actor would last forever
            one.start(request((SEEDS / "mlp.py").read_text(), cache_dir))
        lossy = RayExecutor(slots=1, run=losing_its_worker(tmp_path))  # the same Ray: its third CPU
        once = lossy.run(request("crash once", cache_dir)).worker
        assert once.startswith("second try ray node ") and once.endswith("(restart 1: the worker before was lost)")
        job = lossy.start(request("crash in training", cache_dir))
        assert job.smoke().worker.startswith("smoke ")
        (tmp_path / "smoke-verdict-seen").touch()  # lost after the smoke verdict: started again, not `failed`
        trained = job.result().worker
        assert trained.startswith("trained ") and trained.endswith("(restart 1: the worker before was lost)")
        assert job.smoke().worker.startswith("smoke ") and job.checkpoint is None
        started = time.time()
        lost = lossy.run(request("crash always", cache_dir))
        assert lost.status == "failed" and "was lost 3 times" in lost.reason and time.time() - started < 90
        assert lossy.run(request("crash never", cache_dir)).worker.startswith("second try")  # the pool is whole
        assert len(lossy.actors) == 1

        def refuse():
            raise RuntimeError("not again")

        with pytest.raises(RuntimeError, match="not again"):  # a start its caller refused gives its actor back
            lossy.start(request("crash never", cache_dir), ready=refuse)
        assert lossy.free.qsize() == 1
    finally:
        executor.close()
    assert not any(scratch.exists() for scratch in ahead), "the executor left a sandbox started ahead"
    assert job_processes([scratch.name for scratch in ahead]) == []


HANG_AT = "        super().__init__()\n"
"""Where the hostile variants of the seed MLP act: building the network, in its smoke stage."""
HANG = "        while True:\n            pass\n" + HANG_AT
"""Spins forever: the host's wall clock stops it."""
FLOOD = "        for _ in range(10 * 1024):\n            print('y' * 2**20)\n" + HANG_AT
"""10 GiB to stdout, the job's log file: the host's file limit stops it."""


def started_ahead() -> set[Path]:
    """The scratch folders of the sandboxes below this test's own local Ray (its actors' warm ones), from bubblewrap's
    command line: nothing of another test's or run's."""
    from tests.test_ray_loopback import descendants

    found = set()
    for pid in descendants(os.getpid()):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if args and args[0].endswith("bwrap"):
            found |= {Path(m) for arg in args for m in re.findall(r"/\S*?/agentarch-job-[^/\s]+", arg)}
    return found


def losing_its_worker(tmp_path: Path):
    """A job that kills its actor's process, as a lost node does: once before its smoke verdict ("crash once"),
    once in training after the caller saw that verdict ("crash in training"), every time ("crash always")."""

    def run(req, gpu, task, warm=None):
        crashed = tmp_path / f"crashed-{req.code.replace(' ', '-')}"
        if req.code == "crash always" or (req.code == "crash once" and not crashed.exists()):
            crashed.touch()
            os._exit(1)
        if req.code == "crash in training":
            yield RunResult("smoked", worker="smoke")
            if not crashed.exists():
                while not (tmp_path / "smoke-verdict-seen").exists():
                    time.sleep(0.05)
                crashed.touch()
                os._exit(1)
            yield RunResult("trained", worker="trained")
            return
        yield RunResult("trained", worker="second try")

    return run


def test_per_gpu_packs_several_slots_on_each_gpu(monkeypatch):
    from agentarch.evaluation.executors import make_executor

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    pool = make_executor("local", slots=1, per_gpu=3)
    tokens = sorted(pool.free.get_nowait()[1] for _ in range(6))
    assert tokens == ["0", "0", "0", "1", "1", "1"] and pool.free.empty()


def test_a_local_ray_is_asked_for_loopback_and_refused_when_it_comes_up_elsewhere():
    """`start_local_ray` asks Ray for a loopback node with no dashboard, and shuts down a node that came up on an
    outward IP instead of running with its ports open (tests/test_ray_loopback.py checks a real one's sockets)."""
    pytest.importorskip("ray")
    from ray._private import ray_constants

    from agentarch.errors import AgentarchError
    from agentarch.evaluation.ray_executor import ExposedRayError, start_local_ray

    class FakeRay:
        def __init__(self, node_ip):
            self.node_ip, self.calls, self.switch, self.down = node_ip, {}, None, False
            self.util = self

        def init(self, **kwargs):
            self.calls, self.switch = kwargs, ray_constants.ENABLE_RAY_CLUSTER

        def get_node_ip_address(self):
            return self.node_ip

        def shutdown(self):
            self.down = True

    switch = ray_constants.ENABLE_RAY_CLUSTER
    fine = FakeRay("127.0.0.1")
    start_local_ray(fine, num_cpus=2)
    assert fine.calls["address"] == "local" and fine.calls["_node_ip_address"] == "127.0.0.1"
    assert fine.calls["include_dashboard"] is False and fine.calls["dashboard_host"] == "127.0.0.1"
    assert fine.switch is False and ray_constants.ENABLE_RAY_CLUSTER == switch  # off while it starts, then back
    assert not fine.down
    start_local_ray(asked := FakeRay("::1"), dashboard=True)
    assert asked.calls["include_dashboard"] is True and not asked.down

    exposed = FakeRay("192.0.2.2")
    with pytest.raises(ExposedRayError, match="192.0.2.2") as refused:
        start_local_ray(exposed)
    assert exposed.down and isinstance(refused.value, AgentarchError)
