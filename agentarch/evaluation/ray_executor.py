"""Evaluations on Ray: a pool of actors, one per slot of the cluster, each streaming its candidates' stages.

Its own module because Ray's part (the job that survives a lost worker, the data sent through the object store,
locking a local Ray down) grew apart from the local slots' (agentarch/evaluation/executors.py, which builds this
executor for `--executor ray`). docs/cluster.md says what a cluster's nodes need and how to secure them.

Why actors and not a task per candidate: an actor lives from the run's start to its end, so it can keep a warm
sandbox (agentarch/isolation/warm.py) started for its next candidate while the current one runs, as a local slot
does; a task's process has no "next". With warm sandboxes off the actors hold no WarmSlot and every job starts cold:
one path either way.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import ipaddress
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from agentarch.errors import AgentarchError
from agentarch.evaluation import ray_data
from agentarch.evaluation.checkpoints import Checkpoint
from agentarch.evaluation.jobs import StreamedJob
from agentarch.evaluation.stages import RunRequest, RunResult, stages
from agentarch.isolation.policy import SandboxError
from agentarch.isolation.protocol import MAX_REASON_BYTES, cap_text
from agentarch.isolation.warm import WarmSlot
from agentarch.tasks.task import Task

log = logging.getLogger(__name__)

RETRIES = 2
"""How many times one job starts again after Ray lost its worker (a node gone, a worker process killed): a
preemption costs the lost job's time, not the candidate; a job that keeps losing its worker is `failed`."""

CLOSE_TIMEOUT_S = 10.0
"""How long `close` waits for the actors to close their warm sandboxes (a dead node's never answer)."""
TAKE_POLL_S = 0.5
"""How often a wait for a free actor looks whether the executor was closed meanwhile."""

Stages = Callable[..., Iterator[RunResult | Checkpoint]]
"""What an actor runs for a job: `stages(request, gpu, task, warm=slot)` (agentarch/evaluation/stages.py)."""


class Evaluations:
    """The Ray actor of one slot: it runs its jobs' stages one at a time, on the node and GPU Ray placed it on.

    With `warm` it keeps a WarmSlot, so each job after its first takes the sandbox started during the one before
    (the slot's starter thread lives as long as the actor; the sandbox dies with the actor's process anyway).
    `stages` is what runs a job: the evaluation's stages, or a test's stand-in that loses its worker on purpose.
    """

    def __init__(self, warm: bool, run: Stages = stages) -> None:
        self.slot = WarmSlot(f"ray-{os.getpid()}") if warm else None
        self.run = run

    def node(self) -> str:
        """The Ray node this actor runs on (answering at all says it is up)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def evaluate(self, request: RunRequest, task: Task | None) -> Iterator[RunResult | Checkpoint]:
        """The job's stages over this node's copy of the task's data (prepared from the object store the first time;
        without a shipped task, the orchestrator's own cache and data paths), with the GPU Ray assigned, if any,
        pinned for the sandbox; each result names the Ray node it ran on."""
        import ray

        gpus = [str(g) for g in ray.get_gpu_ids()]
        node = ray.get_runtime_context().get_node_id()[:12]
        local = request if task is None else ray_data.on_node(request)
        for result in self.run(local, ",".join(gpus) if gpus else None, task, warm=self.slot):
            yield (
                result
                if isinstance(result, Checkpoint)
                else dataclasses.replace(result, worker=f"{result.worker} ray node {node}")
            )

    def close(self) -> None:
        """Close the sandbox started ahead and never used, if any."""
        if self.slot is not None:
            self.slot.close()


class RayJob(StreamedJob):
    """A sandbox job on an actor of the pool, streaming the smoke verdict, the checkpoints and the result back.

    A thread of its own reads the actor's stream (`StreamedJob`), so the actor goes back to the pool as soon as the job
    ends, whether or not the caller has asked for the result yet. A worker lost at any point (its node gone, its
    process killed) is replaced in the pool (`RayExecutor.replace`), and the job starts again on another free actor
    (`restart`), up to RETRIES times. Lost after the smoke verdict was handed out, the restarted job's own smoke
    verdict is passed over (the one given stands; a restart that now fails its smoke run gives that failure as the
    result), so the caller sees one smoke verdict and one result whatever happened in between. Training checkpoints
    on the stream are handed to `checkpointed`, and a restart resumes from the latest, so a lost node costs at most
    one checkpoint interval of training.
    """

    def __init__(self, executor: RayExecutor, actor: Any, request: RunRequest, task: Task | None) -> None:
        self.executor, self.actor, self.request, self.task = executor, actor, request, task
        self.lost: list[str] = []  # what Ray said each time this job lost its worker
        super().__init__(self._stream(), self._release)

    def restart(self, latest: Checkpoint | None) -> Any:
        """Start the job (again) on its actor: the one place a job is submitted. A restart continues from the job's
        latest training checkpoint where it streamed one (the new worker's host side checks it again before use)."""
        if latest is not None:
            self.request = dataclasses.replace(self.request, resume=latest.data)
        return self.actor.evaluate.options(num_returns="streaming").remote(self.request, self.task)

    def _release(self) -> None:
        """The job is over: its actor is free for the next one."""
        if self.actor is not None:
            self.executor.free.put(self.actor)
            self.actor = None

    def _stream(self) -> Iterator[RunResult | Checkpoint]:
        """The job's results, starting it again on another actor while Ray loses the one it ran on."""
        errors = self.executor.ray.exceptions
        latest: Checkpoint | None = None
        smoked = False
        while True:
            try:
                for ref in self.restart(latest):
                    item: RunResult | Checkpoint = self.executor.ray.get(ref)
                    if isinstance(item, Checkpoint):
                        latest = item
                    elif item.status == "smoked" and smoked:
                        continue  # a restarted job's smoke verdict is not news
                    else:
                        smoked = smoked or item.status == "smoked"
                        if self.lost:
                            item.worker += f" (restart {len(self.lost)}: the worker before was lost)"
                    yield item
                return
            except (
                errors.RayActorError,
                errors.WorkerCrashedError,
                errors.NodeDiedError,
                errors.RaySystemError,
                errors.ObjectLostError,
            ) as err:
                self.lost.append(f"{type(err).__name__}: {err}")
                self.executor.replace(self.actor)
                self.actor = None
                if len(self.lost) > RETRIES or self.executor.closed:  # closed: no actor will come back to the pool
                    reason = f"[executor] the Ray worker was lost {len(self.lost)} times ({self.lost[-1]})"
                    yield RunResult(
                        "failed", cap_text(reason + "; check the cluster's nodes and memory", MAX_REASON_BYTES)
                    )
                    return
                self.actor = self.executor.take()
                if self.actor is None:
                    yield RunResult("failed", "[executor] the executor was closed while this job waited for a worker")
                    return
            except errors.RayTaskError as err:  # raised in the job, outside its own net (or a SandboxError)
                if isinstance(err.cause, SandboxError):
                    raise err.cause from err
                reason = f"[executor] the Ray task raised {type(err.cause).__name__}: {err.cause}"
                yield RunResult("failed", cap_text(reason, MAX_REASON_BYTES))
                return
            except errors.OutOfMemoryError as err:  # Ray's memory monitor killed the actor's worker
                self.executor.replace(self.actor)
                self.actor = None
                yield RunResult("failed", cap_text(f"[executor] {type(err).__name__}: {err}", MAX_REASON_BYTES))
                return


class RayExecutor:
    """A pool of actors (`Evaluations`), one per slot of the cluster (`num_gpus` per task on GPU clusters, else one
    CPU), each running one evaluation at a time and streaming its smoke verdict and result.

    With an `address` it joins that cluster (securing it is the cluster's own: docs/cluster.md); without
    one it starts a local Ray that listens on loopback only, its dashboard off unless `dashboard` asks
    (`start_local_ray`). Workers need agentarch and its sandbox installed, nothing else: the task's data goes
    through the object store (agentarch/evaluation/ray_data.py), and a worker gets a RunRequest and that
    task (no API key, no archive).

    `start` takes a free actor, waiting for one as a local slot is waited for, so at most `capacity` jobs run and the
    rest queue here, not in Ray. The actors hold their slot's resources for the run's whole length: a second run on
    the same cluster waits until this one closes. `slots` holds fewer actors than the cluster has room for (None: as
    many as it has when the executor starts); `warm` gives each actor a WarmSlot (Settings.warm_sandboxes).
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        gpus_per_task: float = 0.0,
        dashboard: bool = False,
        warm: bool = False,
        slots: int | None = None,
        run: Stages = stages,
    ) -> None:
        import ray

        self.ray = ray
        self.joined = not ray.is_initialized()  # whether this executor connected this process to Ray (close leaves)
        if self.joined:
            if address:
                join_cluster(ray, address)
            else:
                start_local_ray(ray, num_cpus, dashboard)
        options: dict[str, Any] = {"num_gpus": gpus_per_task} if gpus_per_task else {"num_cpus": 1}
        self.actor_class = ray.remote(max_restarts=0, max_task_retries=0, **options)(Evaluations)
        self.warm, self.run_stages = warm, run
        self.shipments = ray_data.Shipments(ray)
        resources = ray.cluster_resources()
        per_task = gpus_per_task or 1.0
        self.capacity = slots or max(1, int(resources.get("GPU" if gpus_per_task else "CPU", 1) / per_task))
        self.free: queue.LifoQueue[Any] = queue.LifoQueue()  # the last freed first: its warm sandbox is up
        self.actors: list[Any] = []
        self.closed = False
        for _ in range(self.capacity):
            self.free.put(self._actor())
        if warm:
            atexit.register(self.close)

    def _actor(self) -> Any:
        actor = self.actor_class.remote(self.warm, self.run_stages)
        self.actors.append(actor)
        return actor

    def replace(self, lost: Any) -> None:
        """A new actor for one whose worker was lost, so the pool keeps its size: it joins the free ones once Ray has
        placed it (on a node with room, maybe one that joins later), never before, so no job waits on it meanwhile."""
        if self.closed:
            return
        self.actors.remove(lost)
        with contextlib.suppress(Exception):  # dead already, as a rule
            self.ray.kill(lost, no_restart=True)
        actor = self._actor()
        if self.closed:  # closed meanwhile, from another thread: its close may have listed the actors before this one
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
            return
        threading.Thread(target=self._when_up, args=(actor,), name="ray-actor-replacement", daemon=True).start()

    def _when_up(self, actor: Any) -> None:
        try:
            self.ray.get(actor.node.remote())
        except Exception as err:  # lost before it came up (its node died too): replace it again
            if not self.closed and self.ray.is_initialized():
                log.warning("a replacement Ray actor was lost before it came up (%s); starting another", err)
                self.replace(actor)
            return
        self.free.put(actor)

    def take(self) -> Any | None:
        """A free actor, waiting for one as long as the executor is open; None once it is closed (a closed pool gets
        no actor back, so a plain wait could last forever)."""
        while not self.closed:
            with contextlib.suppress(queue.Empty):
                return self.free.get(timeout=TAKE_POLL_S)
        return None

    def start(self, request: RunRequest, ready: Callable[[], None] | None = None) -> RayJob:
        task = self.shipments.task_for(request)
        actor = self.take()
        if actor is None:
            raise ExecutorClosedError("this Ray executor was closed; no job can start on it")
        try:
            if ready is not None:
                ready()
        except BaseException:
            self.free.put(actor)
            raise
        return RayJob(self, actor, request, task)

    def run(self, request: RunRequest) -> RunResult:
        return self.start(request).result()

    def close(self) -> None:
        """Close every actor's sandbox started ahead (a dead node's cannot answer, and its sandboxes died with it),
        then leave Ray, which ends the actors; or, where this process was already connected when the executor
        was made (another executor's Ray), end only this executor's actors, so the other's go on."""
        if self.closed or not self.ray.is_initialized():
            self.closed = True
            return
        self.closed = True
        if self.warm:
            closing = [actor.close.remote() for actor in list(self.actors)]
            with contextlib.suppress(Exception):
                self.ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)
        if self.joined:
            self.ray.shutdown()
            return
        for actor in list(self.actors):
            with contextlib.suppress(Exception):
                self.ray.kill(actor)


LOOPBACK = "127.0.0.1"


class ExecutorClosedError(AgentarchError):
    """A job was started on an executor already closed (its run is ending)."""


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
