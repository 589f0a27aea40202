"""A prepared task's data on its way to Ray workers that share no disk with the orchestrator.

The orchestrator prepares a task once (its cache, its --data-dir, a task file's own data) and puts the prepared
splits into Ray's object store once per run; each job carries the task with a loader that fetches them from there.
A worker prepares the task into its node's own cache folder (`node_cache`, by the data's fingerprint) the first
time a job of it lands on that node, with the very code a local run uses (`prepare`: the format checks, the atomic
rename, labels in a folder of their own), and every later job on that node reads the cache and fetches nothing.
So a worker needs neither the task file nor the data set nor the orchestrator's --data-dir, and a built-in task
and a task file travel the same way.

The labels travel with the inputs, to the process that scores (`stages` on the worker, outside the sandbox): the
sandbox mounts only the prepared inputs folder (or the training split), never the labels folder beside it, on a
worker node as on this machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentarch.errors import AgentarchError
from agentarch.evaluation.stages import RunRequest
from agentarch.tasks.preparation import PreparedTask, prepare
from agentarch.tasks.registry import get_task
from agentarch.tasks.task import SplitData, Task

NODE_CACHE_ENV = "AGENTARCH_NODE_CACHE"
"""Where a worker node keeps the task data it was sent (set it in the environment Ray's node starts with)."""


def node_cache() -> Path:
    """This node's folder for task data sent through the object store: AGENTARCH_NODE_CACHE, else
    $XDG_CACHE_HOME/agentarch/ray-data (~/.cache/agentarch/ray-data). A cache: deleting it costs one fetch."""
    given = os.environ.get(NODE_CACHE_ENV)
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agentarch" / "ray-data"


@dataclass(frozen=True)
class FromObjectStore:
    """A shipped task's `Task.build`: the prepared splits, fetched from the object store.

    The reference sits in a tuple so that Ray passes it through as a reference instead of fetching the data
    before every job starts: only a node without the data in its cache asks for it (`prepare` calls this)."""

    refs: tuple[Any, ...]

    def __call__(self, task: Task, data_dir: Path | None, download: bool, split_seed: int) -> SplitData:
        import ray

        splits: SplitData = ray.get(self.refs[0])
        return splits


def fingerprint(prepared: PreparedTask) -> str:
    """A short hash of the prepared files' names and bytes (inputs and labels): a node's cache folder is named by
    it, so a changed data set, split or builder never reads an older copy."""
    digest = hashlib.sha256()
    for folder in (prepared.inputs_dir, prepared.labels_dir):
        for path in sorted(folder.iterdir()):
            digest.update(f"{folder.name}/{path.name}\n".encode())
            with path.open("rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


class Shipments:
    """The orchestrator's side: each (task, cache, data folder, split seed) of a run put into the object store once.

    Jobs start from many threads (the loop's parallel branches), so the first one ships while the others wait."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self.lock = threading.Lock()
        self.shipped: dict[tuple[str, str, str, int], Task | None] = {}

    def task_for(self, request: RunRequest) -> Task | None:
        """The request's task with a loader that reads the object store (and the data's fingerprint); None where
        this process cannot prepare it, in which case the worker prepares it itself and its result says why not."""
        key = (request.task, str(request.cache_dir), str(request.data_dir), request.split_seed)
        with self.lock:
            if key not in self.shipped:
                self.shipped[key] = self._ship(request)
            return self.shipped[key]

    def _ship(self, request: RunRequest) -> Task | None:
        try:
            task = get_task(request.task)
            prepared = prepare(task, request.cache_dir, request.data_dir, False, request.split_seed)
            splits = prepared.split_data()
            version = fingerprint(prepared)
        except (AgentarchError, OSError):
            return None
        return dataclasses.replace(task, build=FromObjectStore((self.ray.put(splits),)), fingerprint=version)


def on_node(request: RunRequest) -> RunRequest:
    """The request as a worker runs it with a shipped task: prepared into this node's cache, from no data folder."""
    return dataclasses.replace(request, cache_dir=node_cache(), data_dir=None)
