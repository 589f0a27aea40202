"""What every command shares: the consoles, the options made from Settings fields, the error handler, the lines
more than one command prints.

Its own module so the command modules import one small base and none of them imports another.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from agentarch import formats
from agentarch.cli.fielddocs import field_doc
from agentarch.config import ConfigError, Settings, load_settings
from agentarch.errors import AgentarchError
from agentarch.tasks.builtin import TASKS

if TYPE_CHECKING:
    from agentarch.evaluation.evaluator import EvalResult
    from agentarch.store.archive import Archive


class App(typer.Typer):
    """A Typer app whose every command turns an AgentarchError into its message and exit code 2.

    One handler for every command: a problem the user can fix is a usage error that says what to do,
    and anything else (a bug) stays a traceback instead of posing as one.
    """

    def command(self, *args: Any, **kwargs: Any) -> Any:
        register = super().command(*args, **kwargs)

        def decorator(function: Any) -> Any:
            @functools.wraps(function)
            def handled(*call_args: Any, **call_kwargs: Any) -> Any:
                show_logs_as_text()
                try:
                    return function(*call_args, **call_kwargs)
                except AgentarchError as e:
                    raise fail(str(e)) from None

            register(handled)
            return function

        return decorator


err = Console(stderr=True)
out = Console()


class _PrintableStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """What Python's last-resort handler does for a command (a warning's message on stderr, whichever stream
    sys.stderr is when it is written), with the control characters of the message shown as codes: a warning can
    quote an LLM provider's error text, a notebook call's failure or a sandbox's output."""

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        return formats.printable(super().format(record))


def show_logs_as_text() -> None:
    """Route agentarch's warnings through `_PrintableStderr` (once per process): logged text reaches the terminal
    as visible text, like everything else a command prints."""
    logger = logging.getLogger("agentarch")
    if not any(isinstance(handler, _PrintableStderr) for handler in logger.handlers):
        logger.addHandler(_PrintableStderr())


def print_table(table: Table) -> None:
    """A table on stdout: within the terminal's width on a terminal (cells fold), as wide as its contents when piped,
    so a file, grep or less gets each row on one line instead of rows folded at Rich's default 80 columns."""
    if out.is_terminal:
        out.print(table)
        return
    width = Measurement.get(out, out.options.update(width=100_000), table).maximum
    Console(width=max(width, out.width)).print(table)


def setting(name: str, *flags: str, note: str = "", metavar: str | None = None) -> Any:
    """The Typer option for the Settings field `name`: its help, shown default, bounds and choices come from the field.

    The command's parameter is named like the field and defaults to None, so a flag that is not given
    falls through to agentarch.toml, AGENTARCH_* and the field's default (`load_settings` drops Nones).
    `note` adds what only a command line needs (the known tasks). The text is escaped because Typer
    reads help as Rich markup, which would swallow "[default: ...]" as a tag.
    """
    doc = field_doc(name)
    extras = "; ".join(part for part in (f"default: {doc.default}", doc.bounds) if part)
    return typer.Option(
        *flags,
        help=escape(f"{doc.description}{note} [{extras}]"),
        metavar=f"[{'|'.join(doc.choices)}]" if doc.choices else metavar,
        show_default=False,
    )


ArchiveOpt = Annotated[Optional[Path], setting("archive", "--archive")]
TaskOpt = Annotated[
    Optional[str], setting("task", "--task", "-t", note=f": {', '.join(TASKS)}, or a task file (path/to/task.toml)")
]
EpochsOpt = Annotated[Optional[int], setting("epochs", "--epochs")]
DataDirOpt = Annotated[Optional[Path], setting("data_dir", "--data-dir")]
IsolationOpt = Annotated[Optional[str], setting("isolation", "--isolation")]
ScoringOpt = Annotated[Optional[str], setting("scoring", "--scoring")]
TimeoutOpt = Annotated[Optional[float], setting("timeout_s", "--timeout")]
NoveltyOpt = Annotated[Optional[float], setting("novelty_threshold", "--novelty-threshold")]
# How a run talks to its models: flags of `run` and `baseline` (and overrides `run --resume` takes).
QueueOpt = Annotated[Optional[int], setting("queue", "--queue")]
LLMConcurrencyOpt = Annotated[Optional[int], setting("llm_concurrency", "--llm-concurrency")]
LLMStreamOpt = Annotated[Optional[bool], setting("llm_stream", "--llm-stream/--no-llm-stream")]
LLMTimeoutOpt = Annotated[Optional[float], setting("llm_timeout_s", "--llm-timeout")]
FirstTokenTimeoutOpt = Annotated[Optional[float], setting("llm_first_token_timeout_s", "--first-token-timeout")]
StallTimeoutOpt = Annotated[Optional[float], setting("llm_stall_timeout_s", "--stall-timeout")]
MinTokensOpt = Annotated[Optional[float], setting("llm_min_tokens_per_s", "--min-tokens-per-s")]
LLMRetriesOpt = Annotated[Optional[int], setting("llm_retries", "--llm-retries")]
MaxTokensOpt = Annotated[Optional[int], setting("max_tokens", "--max-tokens")]
MaxAnswerBytesOpt = Annotated[Optional[int], setting("max_answer_bytes", "--max-answer-bytes")]
ContextTokensOpt = Annotated[Optional[int], setting("context_tokens", "--context-tokens")]


def fail(message: str) -> typer.Exit:
    """Print a usage problem and return the exit to raise (exit code 2, like other usage errors).

    Soft-wrapped: the message is one line that the terminal folds, so a path in it stays whole when it is
    piped, logged or copied (rich's own wrapping at 80 columns split them mid-name)."""
    err.print(formats.line(("error:", "bold red"), " ", message), soft_wrap=True)
    return typer.Exit(2)


def warn_if_weak(isolation: str) -> None:
    """Say, on every command that runs candidates without bubblewrap, what the process mode does and lacks."""
    if isolation == "process":
        from agentarch.isolation.bubblewrap import bubblewrap_problem
        from agentarch.isolation.policy import FALLBACK_WARNING

        why = bubblewrap_problem() or "isolation=process was asked for"
        err.print(formats.untrusted(FALLBACK_WARNING.format(why=why), style="bold yellow"))


def settings_or_exit(**flags: Any) -> Settings:
    try:
        return load_settings(**flags)
    except ConfigError as e:
        raise fail(str(e)) from None


def evaluating_settings(**flags: Any) -> Settings:
    """`settings_or_exit` for a command that evaluates candidates, saying first when their scores will be unverified
    (`--scoring trusted`: the candidate's own process computes its outputs), so nobody learns it from the listings."""
    settings = settings_or_exit(**flags)
    if settings.scoring == "trusted":
        err.print(
            formats.line(
                ("⚠ scoring trusted: ", "bold red"),
                "each candidate's scores come from its own process and are marked unverified; "
                "graph scoring (the default) computes them where no candidate code runs",
            ),
            soft_wrap=True,
        )
    return settings


def open_archive(path: Path) -> Archive:
    from agentarch.store.archive import Archive
    from agentarch.store.handle import ArchiveError

    try:
        return Archive(path)
    except ArchiveError as e:
        raise fail(str(e)) from None


def archive_path(archive: Optional[Path]) -> Path:
    return settings_or_exit(archive=archive).archive


def print_result(r: EvalResult, metric: str) -> None:
    m = r.metrics
    color = {"trained": "green", "duplicate": "yellow"}.get(r.status, "red")
    line = formats.line((f"#{r.id}", "bold"), " ", r.name, ": ", (r.status, color))
    if r.status == "trained":
        line.append(
            f"  {formats.scored('val', m['val_accuracy'], metric)}  {formats.scored('test', m['test_accuracy'], metric)}  "
            f"params {formats.count(m['params'])}  flops {formats.count(m['flops'])}  "
            f"train {formats.seconds(m['train_seconds'])}"
        )
    if r.reason:
        line.append_text(formats.line("\n    ", r.reason))
    out.print(line)


def outcome_printer(as_json: bool) -> Any:
    def show(outcome: dict[str, Any]) -> None:
        if as_json:
            return
        color = {"trained": "green", "duplicate": "yellow"}.get(outcome["status"], "red")
        line = formats.line(f"#{outcome['id'] or '-'} ", (outcome["status"], color))
        if outcome["status"] == "trained":
            line.append(
                f"  {formats.scored('val', outcome['val_accuracy'], outcome.get('metric', 'accuracy'))}"
                + ("  (repaired)" if outcome["repaired"] else "")
            )
        elif outcome["reason"]:
            line.append_text(formats.line("  ", formats.one_line(str(outcome["reason"])[:160])))
        err.print(line, soft_wrap=True)  # one line each, whatever the width: a log is grepped

    return show
