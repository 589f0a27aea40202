"""How one candidate's failure stays that candidate's: a step that raises, or returns what the checkpoint cannot
store, becomes the candidate's `fault` (recorded `failed` by `fail`), capped and made storable.

Its own module because it wraps every node alike and belongs to none of them; what it cannot contain stops the run.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.errors import GraphBubbleUp

from agentarch.isolation.policy import SandboxError
from agentarch.loop.context import RunAborted, RunContext
from agentarch.loop.state import CandidateState

FAULT_CHARS = 4000
"""A fault's reason is capped to this (head and tail kept): an exception message may be megabytes of hostile text."""


def guarded(ctx: RunContext, node: Any, serde: SerializerProtocol, contain: bool = True) -> Any:
    """A candidate step whose unexpected exception becomes the candidate's `fault` (recorded `failed` by `fail`),
    so that no exception from one candidate's evaluation stops a run.

    A step's update is serialized here once (`serde`, the checkpointer's), because a value the checkpoint
    cannot store (a 5,000-digit integer from a hostile runner) would otherwise fail the whole run outside
    every step.

    What cannot be contained (a SandboxError; `fail` itself raising, i.e. the archive refusing a write; Ctrl-C) frees the
    queue place and tells the waiting branches to stop, and the error reaches the user.
    """

    def run(state: CandidateState) -> dict[str, Any]:
        try:
            update = node(state)
            if contain:
                serde.dumps_typed(update)
            return update
        except (GraphBubbleUp, RunAborted):  # a review pause; another branch stopping the run
            raise
        except BaseException as err:
            if contain and isinstance(err, Exception) and ctx.stopping.is_set():
                # what a stop cut (a killed job, a cancelled call) is not the candidate's fault: it resumes here
                raise RunAborted(f"the run is stopping ({ctx.stop_reason})") from err
            # A SandboxError is the machine's, not the candidate's (no sandbox can run here, or the weak
            # one refuses untrusted code): every later candidate would fail the same way, so it stops the run.
            if contain and isinstance(err, Exception) and not isinstance(err, SandboxError):
                return {"fault": _fault(node.__name__, err)}
            ctx.aborted.set()
            ctx.leave_queue(state["plan"]["key"])
            ctx.inflight.release(state["plan"]["key"])
            raise

    run.__name__ = node.__name__
    return run


def _fault(step: str, err: Exception) -> str:
    """The reason recorded for a step that raised: the step, the exception type and its message, capped."""
    text = storable(f"[host] {step} raised {type(err).__name__}: {err}")
    if len(text) <= FAULT_CHARS:
        return text
    head, tail = text[: FAULT_CHARS * 3 // 4], text[-FAULT_CHARS // 4 :]
    return f"{head}\n[... {len(text) - len(head) - len(tail)} of {len(text)} characters cut ...]\n{tail}"


def storable(text: str | None) -> str | None:
    """Text as SQLite and every later reader can take it: unpaired surrogates (valid in a Python str, not in
    UTF-8; a JSON answer can carry them) become '?'."""
    return None if text is None else text.encode("utf-8", "replace").decode("utf-8")
