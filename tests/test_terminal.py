"""What a model, a candidate or a task file wrote reaches the terminal as visible text, never as markup or as an
escape sequence (issue 23, item 2).

Archives are recorded with hostile strings in every field a command prints (names, reasons, analyses, code, the
prompt and the answer, intents, run ids, evaluation errors, class labels), then the commands run: through Typer's
CliRunner, and, for `run` and `archive`, as the real console script in a pseudo-terminal with TERM=xterm-256color,
where rich writes its own colours, so the raw bytes a person's terminal would receive are read and checked. Rich's
styling (SGR colours and bold) is allowed; a window title (OSC 0), a clipboard write (OSC 52), a hyperlink (OSC 8),
blinking or hidden text (SGR 5, 8), a one-byte CSI (C1 0x9b) or a right-to-left override is not, and the hostile
text itself, brackets and all, must still be there to read.
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentarch import formats
from agentarch.cli import app, common
from agentarch.cli import baseline as baseline_cli
from agentarch.cli import run as run_cli
from agentarch.evaluation.evaluator import EvalResult
from agentarch.loop import run as run_lib
from agentarch.loop.baseline import SeedResult, Trial
from agentarch.store.archive import Archive
from agentarch.tasks.builtin import TASKS
from tests.conftest import requires_bubblewrap

HOSTILE = (
    "[link=http://evil.example]x[/link] [blink]blinking[/blink] \x1b]0;pwned-title\x07 "
    "\x1b]52;c;cHduZWQ=\x07 \x1b[8mhidden\x1b[0m \x1b[5mflash \x9b5m \u202eevil"
)
"""Rich markup (a hyperlink, blinking text), OSC 0 (window title, BEL-terminated), OSC 52 (clipboard write), SGR 8
(hidden text), SGR 5 (blink), a C1 CSI, and a right-to-left override: what a jailbroken or confused model writes."""

VISIBLE = (
    "[link=http://evil.example]x[/link]",
    "[blink]blinking[/blink]",
    "\\x1b]0;pwned-title\\x07",
    "\\x1b]52;c;cHduZWQ=\\x07",
    "\\x1b[8mhidden",
    "\\x9b5m",
    "\\u202eevil",
)
"""How HOSTILE reads on a terminal: the markup as brackets, each control character as its code."""

FORBIDDEN = (
    b"\x1b]0;",
    b"\x1b]52;",
    b"\x1b]8;",
    b"\x1b[5m",
    b"\x1b[8m",
    b"\x07",
    b"\xc2\x9b",  # U+009B (a one-byte CSI to a terminal in UTF-8 mode) as Python writes it
    "\u202e".encode(),
)
"""Byte sequences of the hostile text that must never reach the output. A raw b"\\x9b" is checked as a code point
(below), since it is also a continuation byte of ordinary UTF-8 (box drawing)."""

SGR = re.compile(r"\x1b\[([0-9;:]*)m")
ESCAPE = re.compile(r"\x1b(\[[0-9;:?]*[@-~]|.)", re.DOTALL)
CSI_FINALS_RICH_USES = set("mKAGJhl")  # colours; erase line, cursor moves and show/hide for live displays


def assert_inert(output: bytes | str, visible: tuple[str, ...] = VISIBLE) -> None:
    """No escape sequence of the hostile text in `output`, every escape in it one that rich writes for its own
    styling (SGR without blink or conceal), and the hostile text there to read."""
    data = output.encode("utf-8", "surrogateescape") if isinstance(output, str) else output
    for sequence in FORBIDDEN:
        assert sequence not in data, f"{sequence!r} reached the terminal"
    text = data.decode("utf-8", "replace")
    assert not [c for c in text if "\x80" <= c <= "\x9f"], "a C1 control character reached the terminal"
    for found in ESCAPE.finditer(text):
        sequence = found.group(0)
        assert sequence.startswith("\x1b[") and sequence[-1] in CSI_FINALS_RICH_USES, f"escape {sequence!r}"
        if sequence.endswith("m"):
            _assert_plain_sgr(sequence)
    shown = SGR.sub("", text).replace("\r\n", "\n")
    for part in visible:
        assert part in shown, f"{part!r} not shown; output:\n{shown}"


def _assert_plain_sgr(sequence: str) -> None:
    params = [int(p) if p else 0 for p in re.split(r"[;:]", sequence[2:-1])]
    i = 0
    while i < len(params):
        if params[i] in (38, 48, 58) and i + 1 < len(params):
            i += 3 if params[i + 1] == 5 else 5 if params[i + 1] == 2 else 1
            continue
        assert params[i] not in (5, 6, 8), f"rich would not write {sequence!r}: blink or hidden text"
        i += 1


def invoke(*args: str, input: str | None = None):
    result = CliRunner().invoke(app, list(args), input=input, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return result


def record_hostile_archive(path: Path) -> dict[str, int]:
    """An archive whose every printed field holds HOSTILE: a run, an LLM candidate with an evaluation error, a
    failed candidate, its child waiting for review."""
    with Archive(path) as db:
        db.register_task(TASKS["digits"])
        db.db["runs"].insert(
            {
                "id": "llm-" + HOSTILE,
                "kind": "llm",
                "task": "digits",
                "proposer": HOSTILE,
                "config": "{}",
                "status": "finished",
                "started_at": "2025-01-01T00:00:00",
                "summary": json.dumps({"proposed": 2, "trained": 1, "stopped_by": HOSTILE}),
            }
        )
        trained = db.record(
            {
                "task": "digits",
                "name": "wide " + HOSTILE,
                "proposer": "llm",
                "run_id": "llm-" + HOSTILE,
                "code": f"x = {HOSTILE!r}\n# {HOSTILE}\n",
                "status": "trained",
                "text_hash": "h1",
                "parents": [],
                "reason": "reason " + HOSTILE,
                "model": "openai/" + HOSTILE,
                "analysis": "analysis " + HOSTILE,
                "prompt": [{"role": "user", "content": "prompt " + HOSTILE}],
                "response": "response " + HOSTILE,
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "cost_usd": 0.0,
                "examples": [],
                "repairs": 0,
            },
            {
                "status": "trained",
                "fidelity": 5,
                "seed": 0,
                "val_accuracy": 0.9,
                "test_accuracy": 0.89,
                "params": 10,
                "device": "cpu " + HOSTILE,
                "error": "error " + HOSTILE,
            },
        )
        failed = db.record(
            {
                "task": "digits",
                "name": HOSTILE,
                "proposer": "llm",
                "code": HOSTILE,
                "status": "failed",
                "text_hash": "h2",
                "parents": [trained],
                "reason": "[smoke:build] raised ValueError: " + HOSTILE,
            },
            {"status": "failed", "fidelity": 5, "seed": 0, "error": HOSTILE},
        )
        review = db.request_review(
            {
                "run_id": "llm-" + HOSTILE,
                "proposal_key": "k1",
                "parent_id": trained,
                "intent": "intent " + HOSTILE,
                "code": f"y = {HOSTILE!r}\n# {HOSTILE}\n",
            }
        )
    return {"trained": trained, "failed": failed, "review": review}


# -- the helper ---------------------------------------------------------------------------------------


def test_untrusted_text_is_never_markup_and_shows_control_characters_as_codes():
    assert formats.printable("a\x1b]0;t\x07b\tc\nd\x9b\u202e\r\x7f") == "a\\x1b]0;t\\x07b\tc\nd\\x9b\\u202e\\x0d\\x7f"
    assert formats.printable("x = 1\r\ny = 2\rhidden\r\n") == "x = 1\ny = 2\\x0dhidden\n"  # CR LF is a line end
    assert formats.printable(formats.printable(HOSTILE)) == formats.printable(HOSTILE)  # showing twice changes nothing
    text = formats.untrusted(HOSTILE, style="bold")
    assert text.plain == formats.printable(HOSTILE) and text.spans == [] and str(text.style) == "bold"
    line = formats.line(("#3", "bold"), " ", HOSTILE, ": ", ("failed", "red"))
    assert line.plain == f"#3 {formats.printable(HOSTILE)}: failed"
    assert sorted(str(span.style) for span in line.spans) == ["bold", "red"]  # only the parts the command styled
    assert_inert(line.plain)


def test_warnings_logged_during_a_command_are_shown_as_text(capsys):
    logger = logging.getLogger("agentarch.llm.client")
    common.show_logs_as_text()
    common.show_logs_as_text()  # once per process, however many commands run
    handlers = [h for h in logging.getLogger("agentarch").handlers if isinstance(h, common._PrintableStderr)]
    try:
        assert len(handlers) == 1
        logger.warning("provider said: %s", HOSTILE)
        assert_inert(capsys.readouterr().err)
    finally:
        for handler in handlers:
            logging.getLogger("agentarch").removeHandler(handler)


# -- every command, through CliRunner ------------------------------------------------------------------


def test_archive_listings_and_show_print_hostile_fields_as_text(tmp_path):
    path = tmp_path / "a.db"
    ids = record_hostile_archive(path)
    listed = invoke("archive", "ls", "--archive", str(path))
    assert_inert(listed.output, ("wide [link=http://evil.example]x[/link]", *VISIBLE))
    assert_inert(invoke("archive", "top", "--task", "digits", "--archive", str(path)).output)
    runs = invoke("archive", "runs", "--archive", str(path)).output
    assert_inert(runs, ("llm-[link=http://evil.example]x[/link]", "stopped_by=[link=http://evil.example]", *VISIBLE))
    for which in ("trained", "failed"):
        shown = invoke("archive", "show", str(ids[which]), "--archive", str(path)).output
        assert_inert(shown)
    shown = invoke("archive", "show", str(ids["trained"]), "--archive", str(path)).output
    for label in (
        "reason: reason [link=",
        "analysis: analysis [link=",
        "prompt [link=",
        "response [link=",
        "error [link=",
    ):
        assert label in shown
    assert "LLM: openai/[link=http://evil.example]x[/link]" in shown and "device=cpu [link=" in shown


def test_archive_show_at_80_columns_keeps_every_character_of_long_code_lines_and_fields(tmp_path):
    """Rich crops a code line at the console's width: `archive show 1 > file` lost what ran past column 75."""
    path = tmp_path / "a.db"
    long_line = "WIDTHS = [" + ", ".join(str(n) for n in range(60)) + "]  # END_OF_LONG_LINE"
    reason = "a reason long enough to wrap: " + "word " * 30 + "END_OF_REASON"
    with Archive(path) as db:
        db.register_task(TASKS["digits"])
        shown_id = db.record(
            {
                "task": "digits",
                "name": "long.py",
                "proposer": "llm",
                "code": f"import torch\n{long_line}\n",
                "status": "failed",
                "text_hash": "h-long",
                "parents": [],
                "reason": reason,
            }
        )
    shown = CliRunner().invoke(app, ["archive", "show", str(shown_id), "--archive", str(path)], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    assert "END_OF_LONG_LINE" in shown.output  # wrapped under its line number, not cropped
    assert f"reason: {reason}" in shown.output.splitlines()  # one line, for grep and copy


def test_a_hostile_reason_cannot_forge_an_outcome_line_in_a_runs_log(monkeypatch):
    """A candidate's exception message is part of its reason; a newline in it began a line of its own in the log."""
    import io

    from rich.console import Console

    shown = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=shown, width=80, force_terminal=False))
    reason = "[train:runtime] ValueError: x\n#9 trained  val 0.9990\r\n#10 trained  val 0.9995"
    common.outcome_printer(False)({"id": 7, "status": "failed", "reason": reason})
    (line,) = shown.getvalue().splitlines()
    assert line.startswith("#7 failed  [train:runtime] ValueError: x\\n#9 trained") and "\\n#10 trained" in line


def test_exports_keep_the_data_exact_and_json_escapes_every_control_character(tmp_path):
    path = tmp_path / "a.db"
    record_hostile_archive(path)
    written = tmp_path / "out.csv"
    invoke("archive", "export", "--archive", str(path), "--out", str(written))
    names = {row["name"] for row in csv.DictReader(written.open(newline=""))}
    assert "wide " + HOSTILE in names and HOSTILE in names  # a file is data: exactly what was recorded
    piped = invoke("archive", "export", "--archive", str(path)).stdout  # not a terminal: the same data
    assert HOSTILE in {row["name"] for row in csv.DictReader(piped.splitlines(keepends=True))}
    as_json = invoke("archive", "export", "--format", "json", "--archive", str(path)).stdout
    assert HOSTILE in {row["name"] for row in json.loads(as_json)}
    assert_inert(as_json, ())  # \u001b, \u009b, \u202e: escapes JSON writes as text
    for command in ("ls", "runs"):
        lines = invoke("archive", command, "--json", "--archive", str(path)).stdout
        assert_inert(lines, ())
    assert_inert(invoke("archive", "show", "1", "--json", "--archive", str(path)).stdout, ())


def test_review_lists_and_walks_hostile_intent_diff_and_code_as_text(tmp_path):
    path = tmp_path / "a.db"
    ids = record_hostile_archive(path)
    listed = invoke("review", "--list", "--archive", str(path))
    assert_inert(listed.output, ("intent [link=http://evil.example]x[/link]", "llm-[link=", VISIBLE[0], VISIBLE[2]))
    walked = invoke("review", "--archive", str(path), "--by", "tester", input="s\n")
    assert_inert(walked.output, ("intent: intent [link=", f"review {ids['review']}", "(run llm-[link=", *VISIBLE))
    assert "+y = " in walked.output and "-x = " in walked.output  # the diff against the parent, shown
    with Archive(path) as db:
        assert db.review(ids["review"])["status"] == "pending"  # skipped: nothing decided


def test_run_prints_outcomes_waiting_reviews_and_its_summary_as_text(tmp_path, monkeypatch):
    """The printing of `run --resume`, with the loop replaced by one that reports hostile outcomes (the real loop
    in a terminal is the pty test below)."""

    def fake_resume(run_id, archive, on_outcome, on_waiting, **given):
        assert run_id == HOSTILE
        on_outcome({"id": 4, "status": "failed", "reason": HOSTILE, "repaired": False, "val_accuracy": None})
        on_outcome({"id": 5, "status": "invalid", "reason": "[syntax] " + HOSTILE, "repaired": False})
        on_outcome({"id": 6, "status": "trained", "reason": None, "repaired": True, "val_accuracy": 0.5})
        on_waiting([{"id": 7}])
        return {
            "run_id": HOSTILE,
            "status": "finished",
            "stopped_by": HOSTILE,
            "metric": "accuracy",
            "proposed": 3,
            "trained": 1,
            "best": {"id": 6, "test_accuracy": 0.5},
            "cost_usd": 0.0,
            "objectives": {"objectives": [HOSTILE]},
            "front": [{"id": 6}],
            "hypervolume": 1.0,
            "edits": {HOSTILE: 1},
        }

    monkeypatch.setattr(run_lib, "resume", fake_resume)
    result = CliRunner().invoke(app, ["run", "--resume", HOSTILE, "--archive", str(tmp_path / "a.db")])
    assert result.exit_code == 0, result.output
    assert_inert(result.output, (*VISIBLE, "#5 invalid  [syntax] [link=", "resuming run [link=", "paused: 1 candidate"))
    assert (
        "run [link=http://evil.example]x[/link]" in result.output
        and "#6 trained  val 0.5000  (repaired)" in result.output
    )
    line = run_cli.run_summary_line(fake_resume(HOSTILE, None, lambda o: None, lambda p: None))
    assert "(stopped by [link=http://evil.example]x[/link]" in line.plain
    assert [str(span.style) for span in line.spans] == ["bold"]  # the label; nothing the run recorded is styled


def test_errors_quote_hostile_text_as_text(tmp_path):
    result = CliRunner().invoke(app, ["run", "--resume", HOSTILE, "--archive", str(tmp_path / "a.db")])
    assert result.exit_code == 2
    assert_inert(result.output, ("error:", "[link=http://evil.example]x"))


def test_task_files_class_labels_are_shown_as_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = ["a,label", *(f"{i},{HOSTILE if i % 2 else 'plain'}" for i in range(40))]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    body = 'name = "hostile-labels"\ndescription = "d"\nkind = "table"\n[data]\nsource = "csv"\npath = "t.csv"\n'
    (tmp_path / "labels.toml").write_text(body + 'target = "label"\n')
    checked = invoke("tasks", "check", "labels.toml", "--cache-dir", str(tmp_path / "cache"))
    assert_inert(checked.output, ("over 2 classes: [link=http://evil.example]x[/link]", *VISIBLE))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "broken.toml").write_text('name = "[blink]x[/blink]"\n' + body[body.index("description") :])
    listed = invoke("tasks")
    assert_inert(listed.output, ("tasks/broken.toml", "error"))


def test_baseline_summary_and_per_candidate_lines_are_text(capsys):
    task = TASKS["digits"]
    result = EvalResult(id=3, name=HOSTILE, status="failed", reason=HOSTILE)
    baseline_cli._candidate_printer(0, False, "accuracy")(None, result)  # type: ignore[arg-type]
    seed = SeedResult(seed=0, history=[Trial(arch="arch " + HOSTILE, val=0.5, test=0.4, candidate_id=3)])
    summary = {"algo": "rea", "task": HOSTILE, "seeds": 1, "budget": 1, "mean_test": None}
    baseline_cli._print_baseline_summary(summary, [seed], task)
    printed = capsys.readouterr()
    visible = ("#3 [link=http://evil.example]x[/link]", "rea on [link=", "arch [link=", *VISIBLE)
    assert_inert(printed.out + printed.err, visible)


@pytest.mark.slow
def test_eval_shows_a_hostile_file_name_and_exception_message_as_text(tmp_path, cache_dir, monkeypatch):
    """A real `eval` of a candidate whose file name and constructor's exception carry the hostile text."""
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    name = "net \x1b]0;pwned-title\x07 [blink]b \x9b5m.py"  # a file name holds no '/'
    (tmp_path / name).write_text(crashing_candidate(HOSTILE))
    result = invoke("eval", str(tmp_path / name), "--task", "digits", "--archive", str(tmp_path / "a.db"))
    assert_inert(result.output, ("net \\x1b]0;pwned-title\\x07 [blink]b \\x9b5m.py: failed", VISIBLE[0], VISIBLE[1]))


def crashing_candidate(message: str) -> str:
    """A digits candidate whose constructor raises `message`."""
    return f"""import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        raise ValueError({message!r})

    def forward(self, x):
        return x
"""


# -- the real console script in a pseudo-terminal --------------------------------------------------------------


def run_in_pty(args: list[str], cwd: Path, timeout_s: float = 300, **env: str) -> tuple[int, bytes]:
    """Run the `agentarch` console script with a pseudo-terminal as stdin, stdout and stderr (200 columns,
    TERM=xterm-256color, so rich styles its output) and return its exit code and every byte it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")}
    environ.update(TERM="xterm-256color", COLUMNS="200", LINES="50", **env)
    script = Path(sys.executable).parent / "agentarch"
    proc = subprocess.Popen(
        [str(script), *args], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=environ, start_new_session=True
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal is gone
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"agentarch {' '.join(args)} ran past {timeout_s}s: {b''.join(chunks)[-2000:]!r}")
        return proc.wait(timeout=30), b"".join(chunks)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_archive_commands_in_a_terminal_write_no_hostile_escape(tmp_path):
    """Each command in its own terminal, all at once: they only read the archive, and each process's start (most of
    its time) overlaps the others' instead of adding to them."""
    path = tmp_path / "a.db"
    ids = record_hostile_archive(path)
    commands = (
        ["archive", "ls"],
        ["archive", "show", str(ids["trained"])],
        ["archive", "show", str(ids["failed"])],
        ["archive", "runs"],
        ["archive", "export"],  # CSV to a terminal: control characters as codes, like every other command
        ["review", "--list"],
    )
    with ThreadPoolExecutor(len(commands)) as pool:
        written = list(pool.map(lambda args: run_in_pty([*args, "--archive", str(path)], tmp_path, 120), commands))
    for args, (code, raw) in zip(commands, written):
        assert code == 0, raw.decode("utf-8", "replace")
        assert_inert(raw, VISIBLE if args[0] == "archive" else ("[link=http://evil.example]",))
        if args[1] != "export":
            assert SGR.search(raw.decode("utf-8", "replace")), "rich styled nothing: not a terminal?"


@pytest.mark.slow
@requires_bubblewrap
def test_a_real_run_in_a_terminal_shows_what_the_model_wrote_as_text(tmp_path, cache_dir):
    """`agentarch run` against a scripted OpenAI-compatible server whose answers carry the hostile text in the
    intent (so the candidate's name), the analysis, the notebook and a candidate's exception: the outcome lines and
    the summary in the terminal, then `archive ls` and `archive show` of what the run recorded."""
    from tests.llm_server import ScriptedLLMServer
    from tests.scripted import MODEL, fenced, kind, mlp

    intent = "Intent: wider [blink]fast[/blink] \x1b]0;pwned-title\x07 \x1b]52;c;cHduZWQ=\x07 \x9b5m layer"
    script = [fenced(mlp(16), intent), fenced(crashing_candidate(HOSTILE), intent)]

    def answer(request: dict) -> str:
        return {"analyze": "analysis " + HOSTILE, "notebook": "note " + HOSTILE}.get(kind(request)) or script.pop(0)

    with ScriptedLLMServer(default=answer) as server:
        code, raw = run_in_pty(
            [
                *("run", "--task", "digits", "--model", MODEL, "--api-base", server.url, "--budget", "2"),
                *("--batch", "1", "--schedule", "rounds", "--repair-tries", "0", "--archive", "a.db"),
            ],
            tmp_path,
            AGENTARCH_CACHE_DIR=str(cache_dir),
            AGENTARCH_THREADS="1",
            AGENTARCH_LLM_TIMEOUT_S="30",
        )
    shown = raw.decode("utf-8", "replace")
    assert code == 0, shown
    assert script == [] and re.search(r"#\d+ .*trained", SGR.sub("", shown)), shown
    assert_inert(raw, ("failed", "[link=http://evil.example]x[/link]", "[blink]blinking[/blink]", "2 proposed"))
    with Archive(tmp_path / "a.db") as db:
        rows = db.candidates()
    assert sorted(r["status"] for r in rows) == ["failed", "trained"]
    name = next(r["name"] for r in rows if r["status"] == "trained")
    assert "\x1b]0;" in name  # the archive keeps what the model wrote; only the terminal shows it as codes
    commands = [["archive", "ls"], *(["archive", "show", str(row["id"])] for row in rows)]
    with ThreadPoolExecutor(len(commands)) as pool:  # read-only commands: their starts overlap
        written = list(pool.map(lambda args: run_in_pty([*args, "--archive", "a.db"], tmp_path, 120), commands))
    (listed_code, listed), *each_row = written
    assert listed_code == 0
    assert_inert(listed, ("wider [blink]fast[/blink] \\x1b]0;pwned-title\\x07",))
    for show_code, shown_row in each_row:
        assert show_code == 0
        assert_inert(shown_row, ("[blink]fast[/blink]", "\\x1b]52;c;cHduZWQ=\\x07", "\\x9b5m"))
