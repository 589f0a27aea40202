"""What a run says while it works: one small event type per thing that happens, for whoever watches it.

The loop emits, the caller renders: the library never prints. `agentarch run` shows the events as a live view
on a terminal, a plain line each otherwise, or a JSON line each with `--json` (agentarch/cli/progress.py).

    RunStarted     the run is open (new or resumed): its id and archive, so a watcher can say how to resume it
    ProposalStep   a proposal entered a step (propose, repair, edit, fallback, analyze, smoke, train, ...)
    Recorded       a proposal ended: its candidate's row, and the run's counts and spend so far
    Paused         a stopping run left a proposal at its last checkpoint (a resume goes on from there)
    Stopping       the run was asked to stop (a signal): nothing new starts, calls are cancelled
    Pulse          about once a second: every proposal in flight with its step, its LLM call's state, the slots
                   busy, the calls queued at the models' gates and the spend (for a live view; plain and JSON
                   output leave it out)
    RunEnded       the run stopped: finished or interrupted, and why

Times are seconds since the epoch (`time.time()`), so a JSON line can be read by another process. Text a model
wrote (a reason) travels as it is: the renderer shows it through agentarch.formats, as every command does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

STEPS = {
    "select_context": "context",
    "render_prompt": "prompt",
    "propose": "propose",
    "extract": "extract",
    "static_check": "check",
    "dedup": "dedup",
    "review_gate": "review",
    "smoke": "smoke",
    "screen": "screen",
    "repair": "repair",
    "edit_retry": "edit",
    "fall_back": "fallback",
    "train": "train",
    "look_up": "table",
    "analyze": "analyze",
    "judge": "judge",
    "record": "record",
    "give_up": "record",
    "fail": "record",
}
"""The step a person reads for each node of the candidate graph (agentarch/loop/graph.py)."""

SLOT_WAIT = "slot wait"
"""The step of a proposal whose sandbox job waits for a free slot (its smoke or train step has not begun)."""


@dataclass(frozen=True)
class Event:
    """One thing a run says; `as_dict` is its JSON line (`event` names the kind)."""

    kind: ClassVar[str] = "event"

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    run_id: str
    archive: str
    task: str
    models: list[str]  # the model names (none: offline evolution)
    resumed: bool
    budget: int
    proposed: int  # proposals already started (a resumed run's ledger)
    recorded: int  # of which ended
    slots: int
    queue: int


@dataclass(frozen=True)
class ProposalStep(Event):
    kind: ClassVar[str] = "step"
    key: str
    seq: int
    model: str | None
    step: str
    since: float


@dataclass(frozen=True)
class Recorded(Event):
    kind: ClassVar[str] = "recorded"
    key: str
    seq: int
    model: str | None
    candidate_id: int | None
    status: str
    reason: str | None
    repairs: int
    val_accuracy: float | None
    cost_usd: float
    recorded: int  # proposals of the run ended so far
    spent_usd: float  # the run's LLM spend so far (every call, failed ones too)


@dataclass(frozen=True)
class Paused(Event):
    kind: ClassVar[str] = "paused"
    key: str
    seq: int
    step: str | None  # the step it was in when the run stopped (it resumes from its last checkpoint)


@dataclass(frozen=True)
class Stopping(Event):
    kind: ClassVar[str] = "stopping"
    reason: str  # SIGINT, SIGTERM, ...
    at: float
    in_flight: int  # proposals that will stop at their checkpoints


@dataclass(frozen=True)
class Pulse(Event):
    kind: ClassVar[str] = "pulse"
    at: float
    proposals: list[dict[str, Any]]  # key, seq, model, step, since, and `llm` (state, seconds, tokens) while calling
    slots: int
    slots_busy: int
    proposed: int
    recorded: int
    spent_usd: float
    llm_seconds: float
    llm_in_flight: int  # calls at the models' servers now
    llm_queued: int  # calls waiting for their model's turn (agentarch.llm.gate)
    stopping: bool = False


@dataclass(frozen=True)
class RunEnded(Event):
    kind: ClassVar[str] = "run_ended"
    run_id: str
    status: str  # finished or interrupted
    stopped_by: str | None


Listener = Callable[[Event], None]


@dataclass
class Emitter:
    """Hands events to a listener (none: dropped); a listener that raises never stops the run."""

    listener: Listener | None = None
    errors: list[str] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        if self.listener is None:
            return
        try:
            self.listener(event)
        except Exception as err:  # a display's bug must not cost a candidate
            if len(self.errors) < 10:
                self.errors.append(f"{type(err).__name__}: {err}")

    @property
    def wanted(self) -> bool:
        return self.listener is not None
