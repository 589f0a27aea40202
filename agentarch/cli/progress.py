"""What `agentarch run` shows while it works, from the loop's events (agentarch/loop/events.py), and how it stops.

Three ways to show a run, one per kind of output:

- a live view on a terminal (rich): a header with the run's counts, the slots busy, the LLM calls in flight and
  queued at the models' gates, the spend and the LLM seconds; then one line per proposal in flight with its number,
  model, step and seconds in that step, and while it calls its model, whether the call waits for its turn, for the
  first token, or streams (and how many tokens so far);
- a plain line per event on stderr when the output is not a terminal (a log file, a pipe);
- with `--json`, one JSON line per event on stdout as it happens (the pulse left out), the summary object last.

The run id and the command that resumes it are said first. Every text a model or a candidate wrote reaches the
terminal through agentarch.formats (`line`, `untrusted`), never as markup.

Signals (`stop_on_signals`): the first Ctrl-C or SIGTERM asks the run to stop at its checkpoints
(agentarch/loop/stopping.py); the second stops at once, still resumable, and says how to resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentarch import formats
from agentarch.loop.events import Event, Paused, ProposalStep, Pulse, Recorded, RunEnded, RunStarted, Stopping
from agentarch.loop.stopping import RunControl

Mode = Literal["live", "plain", "json", "quiet"]  # quiet: keeps what it heard (the run id), shows nothing

LLM_STATES = {
    "queued": "waits for its turn at the model",
    "waiting": "waits for the first token",
    "streaming": "streams",
}


def resume_command(run_id: str, archive: str | Path) -> str:
    """The command that goes on with a stopped run, as a shell reads it."""
    return f"agentarch run --resume {shlex.quote(run_id)} --archive {shlex.quote(str(archive))}"


def mode_for(as_json: bool, out: Console, err: Console) -> Mode:
    if as_json:
        return "json"
    return "live" if out.is_terminal and err.is_terminal else "plain"


class Watcher:
    """Listens to a run's events (from any thread) and shows them in its mode; use it as a context manager, which
    starts and ends the live view."""

    def __init__(self, mode: Mode, err: Console) -> None:
        self.mode, self.err = mode, err
        self.run_id: str | None = None
        self.archive: str | None = None
        self.started: RunStarted | None = None
        self.proposals: dict[str, dict[str, Any]] = {}  # key -> step row (and `llm` from the latest pulse)
        self.pulse: Pulse | None = None
        self.recorded = 0
        self.spent_usd = 0.0
        self.stopping: Stopping | None = None
        self._lock = threading.RLock()
        self._live: Live | None = None

    # -- the context: the live view -----------------------------------------------------------------

    def __enter__(self) -> Watcher:
        if self.mode == "live":
            self._live = Live(
                get_renderable=self.render, console=self.err, refresh_per_second=2, transient=True, auto_refresh=True
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    # -- events -------------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._keep(event)
            if self.mode == "json":
                if not isinstance(event, Pulse):
                    print(json.dumps(self._json(event)), flush=True)
            elif self.mode == "plain" or (self.mode == "live" and isinstance(event, (RunStarted, Stopping))):
                shown = self._line(event)
                if shown is not None:
                    self.err.print(shown, soft_wrap=True)  # one line each, whatever the width: a log is grepped

    def _keep(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.started, self.run_id, self.archive, self.recorded = event, event.run_id, event.archive, event.recorded
        elif isinstance(event, ProposalStep):
            row = self.proposals.setdefault(event.key, {})
            if row.get("step") != event.step:
                row.pop("llm", None)
            row.update(key=event.key, seq=event.seq, model=event.model, step=event.step, since=event.since)
        elif isinstance(event, (Recorded, Paused)):
            self.proposals.pop(event.key, None)
            if isinstance(event, Recorded):
                self.recorded, self.spent_usd = event.recorded, event.spent_usd
        elif isinstance(event, Pulse):
            self.pulse = event
            self.proposals = {p["key"]: dict(p) for p in event.proposals}
            self.recorded, self.spent_usd = event.recorded, event.spent_usd
        elif isinstance(event, Stopping):
            self.stopping = event

    def _json(self, event: Event) -> dict[str, Any]:
        data = event.as_dict()
        if isinstance(event, RunStarted) or (isinstance(event, RunEnded) and event.status == "interrupted"):
            data["resume"] = resume_command(event.run_id, self.archive or "")
        return data

    def _line(self, event: Event) -> Text | None:
        """The plain line of one event (the outcome line of a recorded proposal is the outcome printer's)."""
        if isinstance(event, RunStarted):
            models = ", ".join(event.models) or "offline evolution"
            what = "resumed" if event.resumed else "started"
            done = f" ({event.recorded} of {event.proposed} proposals already ended)" if event.resumed else ""
            return formats.line(
                (f"run {event.run_id} {what}", "bold"),
                f" on {event.task} with {models}{done}; to resume it after a stop: ",
                (resume_command(event.run_id, event.archive), "bold"),
            )
        if isinstance(event, ProposalStep):
            return formats.line(
                f"{_clock(event.since)} proposal {event.seq}",
                f" ({event.model})" if event.model else "",
                f": {event.step}",
            )
        if isinstance(event, Paused):
            where = f" (it was in {event.step})" if event.step else ""
            return formats.line(
                f"{_clock(time.time())} proposal {event.seq} stopped at its last checkpoint{where}; a resume goes on there"
            )
        if isinstance(event, Stopping):
            return formats.line(
                (f"stopping ({event.reason}):", "bold yellow"),
                f" no new proposals, LLM calls cancelled, sandbox jobs killed; {event.in_flight} proposal(s) stop at "
                "their last checkpoint. Press Ctrl-C again to stop at once (the run stays resumable).",
            )
        return None

    # -- the live view --------------------------------------------------------------------------------

    def render(self) -> Any:
        with self._lock:
            now = time.time()
            header = self._header()
            table = Table.grid(padding=(0, 2))
            for column in ("proposal", "model", "step", "seconds", "call"):
                table.add_column(column, justify="right" if column in ("proposal", "seconds") else "left")
            for row in sorted(self.proposals.values(), key=lambda r: r["seq"]):
                table.add_row(
                    formats.line(f"#{row['seq']}"),
                    formats.untrusted(row.get("model") or "-", style="cyan"),
                    formats.untrusted(row["step"], style="bold"),
                    formats.line(f"{max(0.0, now - row['since']):.0f}s"),
                    self._call(row.get("llm")),
                )
            parts: list[Any] = [header]
            if self.proposals:
                parts.append(table)
            if self.stopping is not None:
                parts.append(
                    formats.line(
                        (f"stopping ({self.stopping.reason})", "bold yellow"),
                        f": {len(self.proposals)} proposal(s) reaching their checkpoints; Ctrl-C again stops at once",
                    )
                )
            return Group(*parts)

    def _header(self) -> Text:
        pulse, started = self.pulse, self.started
        parts: list[Any] = [(f"run {self.run_id or '...'}", "bold")]
        if started is not None:
            proposed = pulse.proposed if pulse is not None else started.proposed
            parts.append(f"  {proposed}/{started.budget} proposed  {self.recorded} recorded")
        if pulse is not None:
            parts.append(f"  slots {pulse.slots_busy}/{pulse.slots} busy")
            if pulse.llm_in_flight or pulse.llm_queued or (started is not None and started.models):
                parts.append(f"  LLM {pulse.llm_in_flight} in flight, {pulse.llm_queued} queued")
            parts.append(f"  {formats.usd(self.spent_usd)}  LLM {formats.seconds(pulse.llm_seconds)}")
        return formats.line(*parts)

    @staticmethod
    def _call(llm: dict[str, Any] | None) -> Text:
        if not llm:
            return Text("")
        state = LLM_STATES.get(str(llm.get("state")), str(llm.get("state")))
        tokens = f", {llm['tokens']} tokens" if llm.get("tokens") else ""
        attempt = f" (attempt {llm['attempt']})" if (llm.get("attempt") or 1) > 1 else ""
        return formats.line(f"{llm.get('purpose')}: {state} {llm.get('seconds', 0):.0f}s{tokens}{attempt}")

    # -- a stop at once ---------------------------------------------------------------------------------

    def said_at_exit(self, reason: str) -> None:
        """What a run stopped at once says, written straight to the streams (no lock, no live view: this runs in a
        signal handler and the process exits next)."""
        resume = resume_command(self.run_id, self.archive or "") if self.run_id else None
        if self._live is not None:
            _write(2, "\x1b[?25h\n")  # the live view hid the cursor; it is not stopped, only left
        if self.mode == "json":
            line = {"event": "run_ended", "run_id": self.run_id, "status": "interrupted", "stopped_by": reason}
            _write(1, json.dumps({**line, "resume": resume}) + "\n")
        if resume:
            said = f"stopped at once ({reason}); the run is interrupted and resumable: {resume}\n"
        else:
            said = f"stopped at once ({reason}) before the run opened\n"
        _write(2, formats.printable(said))


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _write(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    except OSError:
        pass


@contextlib.contextmanager
def stop_on_signals(control: RunControl, watcher: Watcher) -> Iterator[None]:
    """While the block runs: the first SIGINT or SIGTERM stops the run at its checkpoints (in a thread of its own, so
    the handler returns at once), the second stops the process at once (exit 128 + the signal's number), the run
    marked `interrupted` first. Outside the main thread (where Python cannot take signals) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if not control.stopping:
            threading.Thread(target=control.stop, args=(name,), name="stop", daemon=True).start()
            return
        control.halt(f"a second {name}")
        at_once(signum, frame)

    def at_once(signum: int, frame: Any) -> None:
        """Say so and exit now: a second signal, in the run or while it winds up after its block."""
        watcher.said_at_exit(f"a second {signal.Signals(signum).name}")
        with contextlib.suppress(Exception):  # the interrupted code may be inside a write to stdout
            sys.stdout.flush()
        os._exit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, was in previous.items():  # once stopping, a second signal while the run winds up still exits at once
            signal.signal(sig, at_once if control.stopping else was)


def exit_code(control: RunControl) -> int:
    """The exit status of a run that was stopped: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
    try:
        return 128 + signal.Signals[control.reason or "SIGINT"].value
    except KeyError:
        return 130
