"""A started sandbox job as its caller sees it: the smoke verdict, then the result, with checkpoints in between.

Its own module because both executors hand out the same kind of job (executors.py's local slots and
ray_executor.py's actors), and the Ray one must not import the module that picks between them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from typing import Protocol

from agentarch.evaluation.checkpoints import Checkpoint, CheckpointKeeper
from agentarch.evaluation.stages import RunResult


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


class StreamedJob(CheckpointKeeper):
    """A sandbox job driven by a thread of its own, so that training goes on while the caller does other work
    between the smoke verdict and the result (the agent loop checkpoints its `smoke` step in between), and the slot
    is given back when the job ends, whenever the caller asks (a Ray job reads its actor's stream the same way).

    Its results are taken as they come (the smoke verdict, then, if smoked, the final result), each once and kept,
    so `smoke()` and `result()` may be asked in any order and again. Training checkpoints in between are handed to
    `checkpointed` as they are taken, the latest kept in `checkpoint` (a retried job resumes from it)."""

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

    def _take(self) -> RunResult:
        item = self._next()
        while isinstance(item, Checkpoint):
            self._keep(item)
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
