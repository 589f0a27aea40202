"""Ray across machines that share no disk (issue 26): a real three-node cluster on this machine.

A head and two worker nodes (`ray.cluster_utils.Cluster`, each its own raylet, object store and workers), every
one bound to 127.0.0.1 with no dashboard, each with its own data folder (AGENTARCH_NODE_CACHE) where it keeps
what it was sent: the nodes share this machine's disk, but nothing of agentarch's reaches a worker except through
Ray. The orchestrator (this process, or `agentarch run` in its own) joins with --ray-address.

- candidates spread over the three nodes (each evaluation records the node it ran on);
- a worker node killed while its candidate trains: the job starts again on another node, and the archive holds
  every candidate once with one evaluation each;
- the orchestrator killed with SIGKILL mid-run and resumed with --resume against the same cluster: every proposal
  recorded once;
- a task file whose data exists only in the orchestrator's folder (then not even there) trains on the workers,
  which got it through the object store; and a candidate on a worker node finds no label file from its sandbox.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from agentarch.config import load_settings
from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.ray_data import NODE_CACHE_ENV, fingerprint
from agentarch.evaluation.ray_executor import LOOPBACK, RayExecutor, no_other_node
from agentarch.evaluation.stages import RunRequest
from agentarch.isolation.policy import Limits
from agentarch.store.archive import Archive
from agentarch.tasks.preparation import prepare
from tests.conftest import SPEC, requires_bubblewrap
from tests.llm_server import ScriptedLLMServer
from tests.scripted import MODEL, start_run
from tests.security.harness import Case, candidate_code
from tests.test_signals import BUDGET, Answers, assert_finished_once_each, until
from tests.test_warm_sandboxes import LEAVES_TRACES, LOOKS_AROUND, report

ray = pytest.importorskip("ray")

HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}
"""The head notices a lost node within about two seconds (Ray's default waits tens of seconds)."""

EPOCHS = 120  # a few seconds of training per candidate on a loaded machine: long enough to kill a node during it


def candidate(width: int) -> str:
    """A digits MLP; the width makes each one a different function."""
    return f"""import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.a = nn.Linear(64, {width})
        self.b = nn.Linear({width}, {width})
        self.out = nn.Linear({width}, num_classes)

    def forward(self, x):
        return self.out(torch.relu(self.b(torch.relu(self.a(x.flatten(1))))))
"""


@pytest.mark.parametrize("name", ["digits", "mqar"])
def test_a_node_s_copy_prepared_from_the_sent_splits_is_the_orchestrator_s_byte_for_byte(name, tmp_path, request):
    """What a worker prepares from the object store (`split_data`, through `prepare`) has the same fingerprint as
    the orchestrator's prepared copy: the same inputs, labels and meta.json, so a node scores as this machine does."""
    here = request.getfixturevalue(name)
    sent = here.split_data()
    shipped = dataclasses.replace(here.task, build=lambda *_: sent, fingerprint=fingerprint(here))
    there = prepare(shipped, tmp_path / "node")
    assert there.inputs_dir != here.inputs_dir and fingerprint(there) == fingerprint(here)
    assert sorted(p.name for p in there.labels_dir.iterdir()) == sorted(p.name for p in here.labels_dir.iterdir())


class Nodes:
    """The cluster: its head, its worker nodes and each node's own data folder."""

    def __init__(self, root: Path) -> None:
        from ray.cluster_utils import Cluster

        self.root, self.count = root, 0
        with no_other_node():  # keep every node on 127.0.0.1, as agentarch keeps its own local Ray
            self.cluster = Cluster(
                initialize_head=True,
                head_node_args={**self._args("head"), "include_dashboard": False, "_system_config": HEALTH},
            )
            self.workers = [self.add() for _ in range(2)]
        self.head = self.cluster.head_node
        self.address = self.cluster.address

    def _args(self, name: str) -> dict:
        return {"node_ip_address": LOOPBACK, "num_cpus": 1, "env_vars": {NODE_CACHE_ENV: str(self.root / name)}}

    def add(self):
        self.count += 1
        with no_other_node():
            return self.cluster.add_node(**self._args(f"worker{self.count}"))

    def named(self, worker: str) -> str:
        """Which node an evaluation's `worker` names: head, worker1, ..."""
        for name, node in [("head", self.cluster.head_node), *((self.cache(n).name, n) for n in self.workers)]:
            if f"ray node {node.node_id[:12]}" in worker:
                return name
        raise AssertionError(f"no live node ran {worker!r}")

    def cache(self, node) -> Path:
        return Path(node._ray_params.env_vars[NODE_CACHE_ENV])


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    found = Nodes(tmp_path_factory.mktemp("nodes"))
    yield found
    if ray.is_initialized():
        ray.shutdown()
    found.cluster.shutdown()


@pytest.fixture(scope="module")
def executor(nodes):
    """The orchestrator's pool: one actor on each node (one CPU each), each keeping a warm sandbox for its next job."""
    pool = RayExecutor(nodes.address, warm=True)
    yield pool
    pool.close()


def evaluator(archive: Path, executor: RayExecutor, cache_dir: Path, task: str = "digits") -> Evaluator:
    settings = load_settings(
        task=task, epochs=EPOCHS, threads=1, cache_dir=cache_dir, archive=archive, budget_slack=0.0, checkpoint_s=0.0
    )
    return Evaluator(Archive(archive), settings, executor=executor)


@pytest.mark.slow
@requires_bubblewrap
def test_a_task_file_whose_data_only_the_orchestrator_has_trains_on_the_workers(tmp_path, nodes, executor):
    """The task file and its data live in the orchestrator's folder, which is gone by the time the workers start:
    they prepare the task from the object store into their own data folders."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "orchestrator-only"
    folder.mkdir()
    x = rng.normal(size=(300, 8)).astype(np.float32)
    np.savez(folder / "blobs.npz", x=x, y=(x[:, 0] + x[:, 1] > 0).astype(np.int64))
    (folder / "task.toml").write_text(
        'name = "blobs"\ndescription = "two blobs"\nkind = "table"\nmax_params = 50000\n'
        '[data]\nsource = "npz"\npath = "blobs.npz"\n'
    )
    ev = evaluator(tmp_path / "a.db", executor, tmp_path / "cache", str(folder / "task.toml"))
    rows = [ev.row(TABLE.format(k=k), f"t{k}") for k in (1, 2, 3)]
    for row in rows:
        assert ev.check(row) is None
    runs = [ev.start(rows[0], epochs=3)]  # prepared on the orchestrator and put into the object store
    folder.rename(tmp_path / "gone")  # no worker can read it from here now
    runs += [ev.start(row, epochs=3) for row in rows[1:]]
    verdicts = [run.result() for run in runs]
    assert [v.status for v in verdicts] == ["trained"] * 3, [v.reason for v in verdicts]
    ran_on = {nodes.named(v.evaluation["worker"]) for v in verdicts}
    print(f"the task file's candidates ran on {sorted(ran_on)}")
    assert len(ran_on) >= 2 and ran_on != {"head"}, ran_on
    for name in ran_on:
        copies = list((nodes.root / name).glob("blobs-*-split0/inputs/train_x.npy"))
        assert len(copies) == 1, f"{name} holds {copies}"


TABLE = """import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.f = nn.Linear(8 * {k}, num_classes)

    def forward(self, x):
        return self.f(torch.cat([x] * {k}, 1))
"""


@pytest.mark.slow
@requires_bubblewrap
def test_labels_reach_a_worker_node_s_scorer_and_never_its_sandbox(nodes, executor, cache_dir, digits):
    """On a worker node the labels lie in its data folder, beside the inputs, for `stages` (the Ray task's own
    process) to score with; the sandbox it starts mounts the inputs alone, so a candidate that searches the whole
    file system for a label file, and opens the node's own label path, finds nothing."""
    worker = nodes.workers[-1]
    labels = nodes.cache(worker) / f"digits-{fingerprint(digits)}-split0" / "labels"
    probe = Case(
        "labels-on-a-worker",
        """
        found = []
        for root, dirs, files in os.walk("/"):
            dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/usr", "/dev")]
            found += [os.path.join(root, f) for f in files if f in ("val_y.npy", "test_y.npy")]
        report(attempt(lambda: _open(HOST["labels_dir"] + "/test_y.npy", "rb").read()), f"found={found}")
    """,
        "module",
        ("failed",),
        None,
        "mount namespace",
    )
    request = RunRequest(
        code=candidate_code(probe, {"labels_dir": str(labels)}),
        task="digits",
        train=SPEC["train"],
        limits=Limits(),
        isolation="bubblewrap",
        cache_dir=cache_dir,
        data_dir=None,
        split_seed=0,
    )
    idle = [executor.free.get() for _ in range(executor.capacity)]  # one actor on each node, none busy
    try:
        (there,) = [actor for actor in idle if ray.get(actor.node.remote()) == worker.node_id]
        job = there.evaluate.options(num_returns="streaming").remote(request, executor.shipments.task_for(request))
        result = ray.get(next(job))
    finally:
        for actor in idle:
            executor.free.put(actor)
    assert f"ray node {worker.node_id[:12]}" in result.worker
    assert result.status == "failed" and "FileNotFoundError" in result.reason and "found=[]" in result.reason
    assert sorted(p.name for p in labels.iterdir()) == ["test_y.npy", "val_y.npy"]  # there, for the scorer only
    assert labels.stat().st_mode & 0o077 == 0


@pytest.mark.slow
@requires_bubblewrap
def test_an_actor_s_next_candidate_gets_its_warm_sandbox_and_nothing_of_the_one_before(
    tmp_path, nodes, executor, cache_dir, digits
):
    """One candidate after another go to the same actor (the last one freed), whose WarmSlot started the next
    sandbox while the one before ran: the third trains in a warm sandbox, and the second, a warm one too, sees no
    file or process of the first, which left them behind on purpose (tests/test_warm_sandboxes.py's probes)."""
    settings = load_settings(
        task="digits", epochs=3, threads=1, cache_dir=cache_dir, archive=tmp_path / "a.db", budget_slack=0.0
    )
    with Archive(tmp_path / "a.db") as archive:
        ev = Evaluator(archive, settings, executor=executor)
        first = ev.evaluate(LEAVES_TRACES, "traces")
        previous_scratch, _ = report(first.reason).split()
        probe = ev.evaluate(LOOKS_AROUND.replace("PREVIOUS", repr(previous_scratch)), "probe")
        seen = json.loads(report(probe.reason))
        assert "left-behind" not in seen["scratch"] and not seen["tmp"] and not seen["previous_scratch"], seen
        assert len(seen["pids"]) <= 2, seen  # its own pid namespace: bubblewrap's init and the runner, nothing else
        seed = ev.evaluate(candidate(32), "mlp")
        assert seed.status == "trained", seed.reason
        (evaluation,) = archive.evaluations(seed.id)
        assert evaluation["timings"]["warm_start"] is True
        ran = [archive.evaluations(r.id) for r in (first, probe, seed)]
    assert [len(evaluations) for evaluations in ran] == [1, 1, 1]
    ran_on = {nodes.named(evaluations[0]["worker"]) for evaluations in ran}
    assert len(ran_on) == 1, ran_on  # one actor, one node


@pytest.mark.slow
@requires_bubblewrap
def test_candidates_spread_over_the_nodes_and_a_lost_node_costs_a_restart_not_a_candidate(
    tmp_path, nodes, executor, cache_dir, digits
):
    assert executor.capacity == 3
    archive = tmp_path / "a.db"
    ev = evaluator(archive, executor, cache_dir)
    rows = [ev.row(candidate(width), f"w{width}") for width in (96, 112, 128, 144)]
    for row in rows:
        assert ev.check(row) is None
    runs = [ev.start(row) for row in rows[:3]]  # one on each node's actor
    beyond = ThreadPoolExecutor(1)  # the fourth waits for a free actor, as a run's branch beyond capacity does
    fourth = beyond.submit(ev.start, rows[3])
    arrived: dict[str, float] = {}

    def placed(run) -> str:
        where = nodes.named(run.pending.smoke().worker)
        arrived[where] = time.monotonic()
        return where

    with ThreadPoolExecutor(3) as pool:
        first = list(pool.map(placed, runs[:3]))
    assert len(set(first)) == 3 and "head" in first, first  # one job on each node
    doomed_name = max((name for name in first if name != "head"), key=arrived.__getitem__)  # most training left
    doomed = next(node for node in nodes.workers if nodes.cache(node).name == doomed_name)
    doomed_job = runs[first.index(doomed_name)].pending
    with ThreadPoolExecutor(len(rows)) as pool:
        waiting = [pool.submit(run.result) for run in runs]  # the loop's train steps: each reads its job's stream
        waiting.append(pool.submit(lambda: fourth.result().result()))
        until(lambda: doomed_job.checkpoint is not None, timeout=300, what="the doomed job's first checkpoint")
        checkpointed = doomed_job.checkpoint.epoch
        killed_at = time.monotonic()
        nodes.cluster.remove_node(doomed, allow_graceful=False)  # mid-training, after a checkpoint
        verdicts = [future.result() for future in waiting]
    restarted = [a for a in verdicts if "restart 1" in a.evaluation["worker"]]
    trained = [round(a.metrics["train_seconds"], 1) for a in verdicts]
    print(
        f"killed {doomed_name} after its job's epoch-{checkpointed} checkpoint; restarted "
        f"{[a.evaluation['worker'] for a in restarted]} at epoch "
        f"{[a.evaluation['timings'].get('resumed_epoch') for a in restarted]}, "
        f"done {time.monotonic() - killed_at:.1f}s after the kill"
    )
    print(f"training seconds of each candidate: {trained}")
    assert [a.status for a in verdicts] == ["trained"] * 4, [a.reason for a in verdicts]
    assert len(restarted) == 1 and doomed_name not in [nodes.named(a.evaluation["worker"]) for a in restarted]
    resumed_at = restarted[0].evaluation["timings"].get("resumed_epoch")
    assert resumed_at is not None and resumed_at >= checkpointed, restarted[0].evaluation["timings"]
    assert restarted[0].evaluation["timings"]["epochs_done"] == EPOCHS  # continued to the end, not started over
    for verdict in verdicts:
        ev.record(verdict)
    db = sqlite3.connect(archive)
    per_candidate = db.execute(
        "SELECT c.name, COUNT(e.id) FROM candidates c JOIN evaluations e ON e.candidate_id = c.id GROUP BY c.id"
    ).fetchall()
    assert sorted(per_candidate) == [("w112", 1), ("w128", 1), ("w144", 1), ("w96", 1)]  # none lost, none twice
    beyond.shutdown()
    nodes.workers[nodes.workers.index(doomed)] = nodes.add()  # three nodes again for the tests after this one
    until(lambda: executor.free.qsize() == 3, timeout=120, what="the lost actor's replacement on the new node")
    assert len(executor.actors) == 3


@pytest.mark.slow
@requires_bubblewrap
def test_the_orchestrator_killed_and_resumed_against_the_same_cluster_loses_nothing(
    tmp_path, nodes, executor, cache_dir, digits
):
    executor.close()  # its actors hold every CPU of the cluster: `agentarch run` brings its own
    archive = tmp_path / "a.db"
    with ScriptedLLMServer(default=Answers()) as server:
        killed = launch(archive, server.url, cache_dir, nodes.address)
        until(lambda: recorded(archive) >= 1, timeout=300, what="the first candidate recorded")
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=60)
        in_flight = BUDGET - recorded(archive)
        run_id = sqlite3.connect(archive).execute("SELECT id FROM runs").fetchone()[0]
        resumed = launch(archive, server.url, cache_dir, nodes.address, "--resume", run_id)
        out, err = resumed.communicate(timeout=600)
    print(f"SIGKILL with {in_flight} of {BUDGET} proposals not yet recorded; the resume finished them")
    assert_finished_once_each(archive, subprocess.CompletedProcess(resumed.args, resumed.returncode, out, err))
    workers = [w for (w,) in sqlite3.connect(archive).execute("SELECT worker FROM evaluations")]
    assert all("ray node" in w for w in workers), workers


def launch(archive: Path, url: str, cache_dir: Path, address: str, *extra: str) -> subprocess.Popen:
    """`agentarch run` against the cluster, as tests/test_signals.py runs it against its scripted LLM."""
    return start_run(
        archive,
        *("--model", MODEL, "--api-base", url, "--budget", str(BUDGET), "--queue", "0", "--repair-tries", "0"),
        *("--notebook-every", "0", "--epochs", "3", "--executor", "ray", "--ray-address", address, *extra),
        cache_dir=cache_dir,
    )


def recorded(archive: Path) -> int:
    try:
        return sqlite3.connect(archive).execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    except sqlite3.Error:  # not made yet
        return 0
