"""Evaluations on Ray: one streaming task per candidate, on agentarch's own loopback Ray or on a real cluster.

Its own module because Ray's part (the job that survives a lost worker, the data sent through the object store,
locking a local Ray down) grew apart from the local slots' (agentarch/evaluation/executors.py, which builds this
executor for `--executor ray`). docs/cluster.md says what a cluster's nodes need and how to secure them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from collections.abc import Callable, Iterator
from typing import Any

from agentarch.errors import AgentarchError
from agentarch.evaluation import ray_data
from agentarch.evaluation.checkpoints import Checkpoint, CheckpointKeeper
from agentarch.evaluation.stages import RunRequest, RunResult, stages
from agentarch.isolation.policy import SandboxError
from agentarch.isolation.protocol import MAX_REASON_BYTES, cap_text
from agentarch.tasks.task import Task

RETRIES = 2
"""How many times one job starts again after Ray lost its worker (a node gone, a worker process killed): a
preemption costs the lost job's time, not the candidate; a job that keeps losing its worker is `failed`."""


class RayJob(CheckpointKeeper):
    """A sandbox job as a Ray streaming-generator task: the smoke verdict, then the result, as object refs.

    A worker lost at any point is replaced: the job starts again on another worker (`restart`), up to RETRIES
    times. Lost after the smoke verdict was handed out, the restarted job's own smoke verdict is passed over
    (the one given stands; a restart that now fails its smoke run gives that failure as the result), so the
    caller sees one smoke verdict and one result whatever happened in between. Training checkpoints on the stream
    are handed to `checkpointed` and the latest kept: a restart resumes from it, so a lost node costs at most one
    checkpoint interval of training.
    """

    def __init__(self, executor: RayExecutor, request: RunRequest, task: Task | None) -> None:
        self.executor, self.request, self.task = executor, request, task
        self.lost: list[str] = []  # what Ray said each time this job lost its worker
        self._smoke: RunResult | None = None
        self._final: RunResult | None = None
        self.refs = self.restart()

    def restart(self) -> Any:
        """Start the job (again): the one place a job is submitted. A restart continues from the job's latest
        training checkpoint where it streamed one (the new worker's host side checks it again before use)."""
        if self.checkpoint is not None:
            self.request = dataclasses.replace(self.request, resume=self.checkpoint.data)
        return self.executor.remote.remote(self.request, self.task)

    def smoke(self) -> RunResult:
        if self._smoke is None:
            self._smoke = self._receive()
            if self._smoke.status != "smoked":
                self._final = self._smoke
        return self._smoke

    def result(self) -> RunResult:
        self.smoke()
        while self._final is None:
            item = self._receive()
            if item.status != "smoked":  # a restarted job's smoke verdict is not news
                self._final = item
        return self._final

    def _receive(self) -> RunResult:
        """The job's next result, starting it again on another worker while Ray loses the one it ran on."""
        ray = self.executor.ray
        errors = ray.exceptions
        while True:
            try:
                item: RunResult | Checkpoint = ray.get(next(self.refs))
            except (
                errors.WorkerCrashedError,
                errors.NodeDiedError,
                errors.RaySystemError,
                errors.ObjectLostError,
            ) as err:
                self.lost.append(f"{type(err).__name__}: {err}")
                if len(self.lost) <= RETRIES:
                    self.refs = self.restart()
                    continue
                reason = f"[executor] the Ray worker was lost {len(self.lost)} times ({self.lost[-1]})"
                return RunResult(
                    "failed", cap_text(reason + "; check the cluster's nodes and memory", MAX_REASON_BYTES)
                )
            except errors.RayTaskError as err:  # raised in the task, outside its own net (or a SandboxError)
                if isinstance(err.cause, SandboxError):
                    raise err.cause from err
                reason = f"[executor] the Ray task raised {type(err.cause).__name__}: {err.cause}"
                return RunResult("failed", cap_text(reason, MAX_REASON_BYTES))
            except errors.OutOfMemoryError as err:  # Ray's memory monitor killed the task's worker
                return RunResult("failed", cap_text(f"[executor] {type(err).__name__}: {err}", MAX_REASON_BYTES))
            if isinstance(item, Checkpoint):
                self._keep(item)
                continue
            if self.lost:
                item.worker += f" (restart {len(self.lost)}: the worker before was lost)"
            return item


class RayExecutor:
    """One Ray task per evaluation (`num_gpus=1` on GPU clusters), streaming its smoke verdict and result.

    With an `address` it joins that cluster (securing it is the cluster's own: docs/cluster.md); without
    one it starts a local Ray that listens on loopback only, its dashboard off unless `dashboard` asks
    (`start_local_ray`). Workers need agentarch and its sandbox installed, nothing else: the task's data goes
    through the object store (agentarch/evaluation/ray_data.py), and a worker gets a RunRequest and that
    task (no API key, no archive).
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        gpus_per_task: float = 0.0,
        dashboard: bool = False,
    ) -> None:
        import ray

        self.ray = ray
        if not ray.is_initialized():
            if address:
                join_cluster(ray, address)
            else:
                start_local_ray(ray, num_cpus, dashboard)
        options: dict[str, Any] = {"num_gpus": gpus_per_task} if gpus_per_task else {"num_cpus": 1}
        self.remote = ray.remote(max_retries=0, num_returns="streaming", **options)(_ray_stages)
        self.shipments = ray_data.Shipments(ray)
        resources = ray.cluster_resources()
        per_task = gpus_per_task or 1.0
        self.capacity = max(1, int(resources.get("GPU" if gpus_per_task else "CPU", 1) / per_task))

    def start(self, request: RunRequest, ready: Callable[[], None] | None = None) -> RayJob:
        task = self.shipments.task_for(request)
        if ready is not None:
            ready()
        return RayJob(self, request, task)

    def run(self, request: RunRequest) -> RunResult:
        return self.start(request).result()

    def close(self) -> None:
        self.ray.shutdown()


def _ray_stages(request: RunRequest, task: Task | None) -> Iterator[RunResult | Checkpoint]:
    """The Ray task: the job's stages over this node's copy of the task's data (prepared from the object store
    the first time; without a shipped task, the orchestrator's own cache and data paths), with the GPU Ray
    assigned, if any, pinned for the sandbox; each result names the Ray node it ran on."""
    import ray

    gpus = [str(g) for g in ray.get_gpu_ids()]
    node = ray.get_runtime_context().get_node_id()[:12]
    local = request if task is None else ray_data.on_node(request)
    for result in stages(local, ",".join(gpus) if gpus else None, task):
        yield (
            result
            if isinstance(result, Checkpoint)
            else dataclasses.replace(result, worker=f"{result.worker} ray node {node}")
        )


LOOPBACK = "127.0.0.1"


class ExposedRayError(AgentarchError):
    """The local Ray came up listening beyond this machine; it was shut down again."""


def start_local_ray(ray: Any, num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Start a one-node Ray for this run that listens on loopback only, never on every interface.

    Ray binds its gRPC servers (GCS, raylet and object manager, every worker's and the driver's own) and its
    agents to all interfaces unless the node's IP is a loopback address, and on Linux it turns a
    loopback `_node_ip_address` into the machine's outward IP so that other nodes could join. With
    Ray's own switch for "no other node will join" off (`ray_constants.ENABLE_RAY_CLUSTER`, which
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 sets at import) it keeps the loopback IP; the switch is off only
    while this node starts, and put back after. `address="local"` starts a new instance even where
    RAY_ADDRESS names another (joining a cluster is --ray-address's job). The dashboard stays off
    unless asked for, and then it too listens on loopback. No Ray client server is started.

    If the node still came up on another IP (a Ray that no longer honours the switch), it is shut down
    and this raises ExposedRayError rather than run with the cluster's ports open to the network.
    """
    with no_other_node():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            _node_ip_address=LOOPBACK,
            include_dashboard=dashboard,
            dashboard_host=LOOPBACK,
            log_to_driver=False,
        )
    node_ip = ray.util.get_node_ip_address()
    if not is_loopback(node_ip):
        ray.shutdown()
        raise ExposedRayError(
            f"the local Ray came up on {node_ip}, not on loopback, so its ports would be open to the network; "
            "it was shut down. Start Ray yourself, firewalled and with token auth (docs/cluster.md), and "
            "pass its address with --ray-address"
        )


def join_cluster(ray: Any, address: str) -> None:
    """Connect to the cluster at `address` (`auto`, or host:port) as its driver.

    A head at a loopback address is a cluster on this machine (every node bound to loopback, as the tests start
    one): Ray would turn that address into the machine's outward IP, where nothing listens, so the switch that
    `start_local_ray` turns off is off while this driver connects, and the driver stays on loopback too.
    """
    host = address.rpartition(":")[0] if ":" in address else address
    if address != "auto" and is_loopback(host):
        with no_other_node():
            ray.init(address=address, _node_ip_address=LOOPBACK, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)


@contextlib.contextmanager
def no_other_node() -> Iterator[None]:
    """Ray's switch for "no other node will join" off (it then keeps a loopback node IP as it is), and put back."""
    try:
        from ray._private import ray_constants
    except ImportError:  # a Ray without the module: the callers' checks decide
        yield
        return
    switch = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = switch


def is_loopback(host: str) -> bool:
    """Whether an address (IPv4, IPv6 or IPv4-mapped IPv6, as /proc and Ray write them) is loopback."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
