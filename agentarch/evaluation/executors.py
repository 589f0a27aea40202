"""Where sandboxed evaluations run: a local pool of slots (one per GPU, or N CPU workers) or a Ray cluster.

An executor takes a `RunRequest` (plain data: code, training config, limits) and starts one sandbox
job for it: a `Pending` that gives the smoke verdict first and the final `RunResult` later, so the
agent loop's `smoke` and `train` steps are two looks at one job (one sandbox start per candidate).
It never touches the archive. The orchestrator alone reads the archive (it passes the
task's known functional hashes and members' structure signatures along, so a worker can stop a
functional duplicate or a near-copy after its smoke run) and alone writes it, so a cluster needs no
shared database.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from agentarch.errors import AgentarchError, UsageError
from agentarch.evaluation.checkpoints import Checkpoint
from agentarch.evaluation.stages import RunRequest, RunResult, stages
from agentarch.isolation.policy import SandboxError
from agentarch.isolation.protocol import MAX_REASON_BYTES, cap_text


class Pending(Protocol):
    """One started sandbox job: `smoke()` waits for its smoke verdict, `result()` for its final result.

    The smoke verdict is `smoked` when training goes on; otherwise it is already the final result,
    and `result()` returns it again. Either may raise SandboxError (no sandbox can run here). The training
    checkpoints that come in while the caller waits go to `checkpointed` (set it before waiting), the latest kept in
    `checkpoint`.
    """

    checkpointed: Callable[[Checkpoint], None] | None
    checkpoint: Checkpoint | None

    def smoke(self) -> RunResult: ...

    def result(self) -> RunResult: ...


class Executor(Protocol):
    """Starts sandbox jobs; `start` blocks the calling thread until the job has a place to run (call it from
    many threads), `run` until its result is in. `capacity` is how many jobs run at once: local slots (GPUs x
    per_gpu on a GPU host), or what the Ray cluster holds when it starts; the run keeps that many proposals
    in flight, plus its queue."""

    capacity: int

    def start(self, request: RunRequest, ready: Callable[[], None] | None = None) -> Pending:
        """Start the job once it has a place to run, calling `ready` just before (if it raises, nothing starts)."""
        ...

    def run(self, request: RunRequest) -> RunResult: ...

    def close(self) -> None: ...


class _StreamedJob:
    """A job's results as they come (`_next`: the smoke verdict, then, if smoked, the final result), each taken
    once and kept, so `smoke()` and `result()` may be asked in any order and again. Training checkpoints in between
    are handed to `checkpointed` as they are taken, the latest kept in `checkpoint` (a retried job resumes from it)."""

    _seen: list[RunResult]
    checkpointed: Callable[[Checkpoint], None] | None = None
    checkpoint: Checkpoint | None = None

    def _next(self) -> RunResult | Checkpoint:
        raise NotImplementedError

    def _take(self) -> RunResult:
        item = self._next()
        while isinstance(item, Checkpoint):
            self.checkpoint = item
            if self.checkpointed is not None:
                self.checkpointed(item)
            item = self._next()
        self._seen.append(item)
        return item

    def smoke(self) -> RunResult:
        return self._seen[0] if self._seen else self._take()

    def result(self) -> RunResult:
        first = self.smoke()
        if first.status != "smoked":
            return first
        return self._seen[1] if len(self._seen) > 1 else self._take()


class LocalJob(_StreamedJob):
    """A sandbox job driven by a thread of its own, so that training goes on while the caller does other work
    between the smoke verdict and the result (the agent loop checkpoints its `smoke` step in between)."""

    def __init__(self, results: Generator[RunResult | Checkpoint, None, None], done: Callable[[], None]) -> None:
        self._results: queue.Queue[RunResult | Checkpoint | BaseException] = queue.Queue()
        self._seen: list[RunResult] = []
        threading.Thread(target=self._drive, args=(results, done), name="sandbox-job", daemon=True).start()

    def _drive(self, results: Generator[RunResult | Checkpoint, None, None], done: Callable[[], None]) -> None:
        """Hand on each result; the sandbox is cleaned up and the slot given back before the final one is."""
        try:
            for result in results:
                if not isinstance(result, Checkpoint) and result.status != "smoked":
                    results.close()
                    break
                self._results.put(result)
        except BaseException as err:  # a SandboxError (or a bug) reaches the caller, not a dead thread
            done()
            self._results.put(err)
            return
        done()
        self._results.put(result)

    def _next(self) -> RunResult | Checkpoint:
        item = self._results.get()
        if isinstance(item, BaseException):
            raise item
        return item


class LocalExecutor:
    """Slots on this machine: one per GPU (each evaluation sees only its GPU) or `slots` CPU workers.

    Callers are threads (the agent loop's parallel branches); a caller waits for a free slot, so at
    most `slots` sandboxes run at once and the rest queue. A slot is held from the sandbox's start to
    its final result.
    """

    def __init__(self, slots: int = 1, gpus: list[str] | None = None) -> None:
        self.free: queue.Queue[tuple[int, str | None]] = queue.Queue()
        for slot, gpu in enumerate(gpus if gpus else [None] * slots):
            self.free.put((slot, gpu))
        self.capacity = self.free.qsize()
        self.busy: list[tuple[int, float, float]] = []  # (slot, start, end) of every run: slot utilisation

    def start(self, request: RunRequest, ready: Callable[[], None] | None = None) -> LocalJob:
        slot, gpu = self.free.get()
        try:
            if ready is not None:
                ready()
        except BaseException:
            self.free.put((slot, gpu))
            raise
        began = time.monotonic()

        def done() -> None:
            self.busy.append((slot, began, time.monotonic()))
            self.free.put((slot, gpu))

        return LocalJob(stages(request, gpu), done)

    def run(self, request: RunRequest) -> RunResult:
        return self.start(request).result()

    def close(self) -> None:
        """Nothing to release: slots are just tokens."""


def visible_gpus() -> list[str]:
    """GPU indices this process may use (CUDA_VISIBLE_DEVICES, else every /dev/nvidiaN)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    return sorted((p.name.removeprefix("nvidia") for p in Path("/dev").glob("nvidia[0-9]*")), key=int)


class RayJob(_StreamedJob):
    """A sandbox job as a Ray streaming-generator task: the smoke verdict, then the result, as object refs.

    A worker lost before the smoke verdict is retried once (the job starts again on another worker, from the latest
    checkpoint taken, if any); lost later, the candidate is `failed` with what Ray said.
    """

    def __init__(self, executor: RayExecutor, request: RunRequest) -> None:
        self.executor, self.request = executor, request
        self.refs = executor.remote.remote(request)
        self._seen: list[RunResult] = []

    def _next(self) -> RunResult | Checkpoint:
        return self._receive(retry=not self._seen)

    def _receive(self, retry: bool) -> RunResult | Checkpoint:
        ray = self.executor.ray
        errors = ray.exceptions
        try:
            item: RunResult | Checkpoint = ray.get(next(self.refs))
        except (
            errors.WorkerCrashedError,
            errors.NodeDiedError,
            errors.RaySystemError,
            errors.ObjectLostError,
        ) as err:
            if retry:
                if self.checkpoint is not None:  # the job starts again where its last checkpoint left it
                    self.request = replace(self.request, resume=self.checkpoint.data)
                self.refs = self.executor.remote.remote(self.request)
                return self._receive(retry=False)
            item = RunResult(
                "failed",
                f"[executor] the Ray worker was lost ({type(err).__name__}: {err}); check the cluster's nodes and memory",
            )
        except errors.RayTaskError as err:  # raised in the task, outside its own net (or a SandboxError)
            if isinstance(err.cause, SandboxError):
                raise err.cause from err
            item = RunResult(
                "failed",
                cap_text(f"[executor] the Ray task raised {type(err.cause).__name__}: {err.cause}", MAX_REASON_BYTES),
            )
        except errors.OutOfMemoryError as err:  # Ray's memory monitor killed the task's worker
            item = RunResult("failed", cap_text(f"[executor] {type(err).__name__}: {err}", MAX_REASON_BYTES))
        return item


class RayExecutor:
    """One Ray task per evaluation (`num_gpus=1` on GPU clusters), streaming its smoke verdict and result.

    With an `address` it joins that cluster (securing it is the cluster's own: docs/cluster.md); without
    one it starts a local Ray that listens on loopback only, its dashboard off unless `dashboard` asks
    (`start_local_ray`). Workers need agentarch installed and, for file-based tasks, the data at the same
    --data-dir; they get a RunRequest and nothing else (no API key, no archive).
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
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                start_local_ray(ray, num_cpus, dashboard)
        options: dict[str, Any] = {"num_gpus": gpus_per_task} if gpus_per_task else {"num_cpus": 1}
        self.remote = ray.remote(max_retries=0, num_returns="streaming", **options)(_ray_stages)
        resources = ray.cluster_resources()
        per_task = gpus_per_task or 1.0
        self.capacity = max(1, int(resources.get("GPU" if gpus_per_task else "CPU", 1) / per_task))

    def start(self, request: RunRequest, ready: Callable[[], None] | None = None) -> RayJob:
        if ready is not None:
            ready()
        return RayJob(self, request)

    def run(self, request: RunRequest) -> RunResult:
        return self.start(request).result()

    def close(self) -> None:
        self.ray.shutdown()


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
    try:
        from ray._private import ray_constants
    except ImportError:  # a Ray without the module: the check below decides
        ray_constants = None
    switch = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if ray_constants is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            _node_ip_address=LOOPBACK,
            include_dashboard=dashboard,
            dashboard_host=LOOPBACK,
            log_to_driver=False,
        )
    finally:
        if ray_constants is not None:
            ray_constants.ENABLE_RAY_CLUSTER = switch
    node_ip = ray.util.get_node_ip_address()
    if not is_loopback(node_ip):
        ray.shutdown()
        raise ExposedRayError(
            f"the local Ray came up on {node_ip}, not on loopback, so its ports would be open to the network; "
            "it was shut down. Start Ray yourself, firewalled and with token auth (docs/cluster.md), and "
            "pass its address with --ray-address"
        )


def is_loopback(host: str) -> bool:
    """Whether an address (IPv4, IPv6 or IPv4-mapped IPv6, as /proc and Ray write them) is loopback."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _ray_stages(request: RunRequest) -> Iterator[RunResult]:
    """The Ray task: the GPU Ray assigned, if any, pinned for the sandbox."""
    import ray

    gpus = [str(g) for g in ray.get_gpu_ids()]
    yield from stages(request, ",".join(gpus) if gpus else None)


def make_executor(kind: str, slots: int = 1, ray_address: str | None = None, per_gpu: int = 1) -> Executor:
    """The executor a run asked for: `local` (slots, or `per_gpu` slots on each visible GPU) or `ray` (the cluster
    at `ray_address`, else a local Ray bound to loopback).

    `per_gpu` > 1 packs several small candidates on one GPU (each sandbox still sees only that GPU;
    the memory cgroup caps each one, so size it to the GPU's share).
    """
    gpus = visible_gpus()
    if kind == "local":
        return LocalExecutor(slots, [g for g in gpus for _ in range(per_gpu)] or None)
    if kind == "ray":
        return RayExecutor(ray_address, gpus_per_task=1.0 / per_gpu if gpus else 0.0)
    raise UsageError(f"unknown executor {kind!r}; use local or ray")
