"""Ctrl-C and SIGTERM on a real `agentarch run` process, against the real HTTP server of tests/llm_server.py.

The first signal stops the run at its checkpoints: no proposal starts after it, the LLM call in flight is cancelled
(the server sees the connection close), a sandbox job is killed and its start mark closed, the run is marked
`interrupted` and the command that resumes it is printed; the process exits with 128 + the signal's number. The
second signal stops at once, the run still marked `interrupted` and resumable. Each test then runs the printed
command, which finishes the run with every proposal recorded exactly once.

Bounds: the run's own stop (signal to the `run_ended` event) within STOP_S, the process's exit within EXIT_S (the
interpreter's teardown of torch, litellm and LangGraph takes seconds of it on a loaded 2-core machine).
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, requires_bubblewrap
from tests.llm_server import Reply, ScriptedLLMServer
from tests.scripted import MODEL, fenced, kind, mlp, start_run

pytestmark = [pytest.mark.slow, requires_bubblewrap]

STOP_S = 6.0
EXIT_S = 20.0
BUDGET = 3

SLOW_TO_TRAIN = """import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.a = nn.Conv2d(in_shape[0], 64, 3, padding=1)
        self.b = nn.Conv2d(64, 64, 3, padding=1)
        self.out = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.out(torch.relu(self.b(torch.relu(self.a(x)))).mean(dim=(2, 3)))
"""
"""A digits candidate whose training takes about 15 s on one thread: a signal lands while it is in the sandbox."""


class Answers:
    """A deterministic answer per proposal number (a resumed run is asked the same things); the first propose
    request is answered slowly (`slow_s`), the first proposal's (proposal 1 in the prompt, key RUN/0) code can be
    `first_code`."""

    def __init__(self, slow_s: float = 0.0, first_code: str | None = None) -> None:
        self.slow_s, self.first_code = slow_s, first_code
        self.slowed = False
        self.lock = threading.Lock()

    def __call__(self, request: dict):
        if kind(request) == "analyze":
            return "Fine."
        number = int(re.search(r"This is proposal (\d+) of the run", request["messages"][-1]["content"]).group(1))
        code = fenced(self.first_code if number == 1 and self.first_code else mlp(8 + 4 * number))
        with self.lock:
            slow, self.slowed = self.slow_s and not self.slowed, True
        return Reply(content=code, delay_s=self.slow_s, first_token_delay_s=self.slow_s) if slow else code


class Watched:
    """A run process with its stdout (JSON lines, each with the time it arrived) and stderr read as they come."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[tuple[float, dict]] = []
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._read, args=(proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, False), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _read(self, stream, is_json: bool) -> None:
        for line in stream:
            if is_json and line.startswith("{"):
                self.lines.append((time.monotonic(), json.loads(line)))
            elif not is_json:
                self.errors.append(line)

    def events(self, name: str) -> list[tuple[float, dict]]:
        return [(t, e) for t, e in self.lines if e.get("event") == name]

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for thread in self.threads:
            thread.join(timeout=10)
        return code

    @property
    def stderr(self) -> str:
        return "".join(self.errors)


def run(archive: Path, url: str, cache_dir: Path, *extra: str) -> Watched:
    return Watched(
        start_run(
            archive,
            *("--model", MODEL, "--api-base", url, "--budget", str(BUDGET), "--slots", "1", "--queue", "0"),
            *("--repair-tries", "0", "--notebook-every", "0", *extra),
            cache_dir=cache_dir,
        )
    )


def until(condition, timeout: float = 180.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"waited {timeout:.0f}s for {what}")


def printed_resume(stderr: str) -> list[str]:
    """The resume command the run printed last, as words."""
    found = re.findall(r"agentarch run --resume \S+ --archive \S+", stderr)
    assert found, f"no resume command printed: {stderr[-2000:]}"
    return shlex.split(found[-1])


def resume_as_printed(words: list[str], cache_dir: Path) -> subprocess.CompletedProcess:
    """Run the printed command (the console script is this interpreter's `-m agentarch.cli`)."""
    assert words[:3] == ["agentarch", "run", "--resume"]
    env = {"AGENTARCH_THREADS": "1", "AGENTARCH_CACHE_DIR": str(cache_dir), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "agentarch.cli", *words[1:], "--json"],
        cwd=REPO,
        env={**__import__("os").environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def status(archive: Path) -> str:
    return sqlite3.connect(archive).execute("SELECT status FROM runs").fetchone()[0]


def assert_finished_once_each(archive: Path, resumed: subprocess.CompletedProcess) -> dict:
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.splitlines()[-1])
    db = sqlite3.connect(archive)
    keys = [k for (k,) in db.execute("SELECT proposal_key FROM candidates")]
    assert len(keys) == len(set(keys)) == BUDGET == summary["proposed"], keys  # none lost, none twice
    assert db.execute("SELECT COUNT(*) FROM proposals WHERE outcome IS NULL").fetchone()[0] == 0
    per_trained = db.execute(
        "SELECT COUNT(e.id) FROM candidates c LEFT JOIN evaluations e ON e.candidate_id = c.id "
        "WHERE c.status = 'trained' GROUP BY c.id"
    ).fetchall()
    assert per_trained and all(n == 1 for (n,) in per_trained)
    assert summary["status"] == "finished" == status(archive)
    return summary


def test_sigint_cancels_the_call_in_flight_marks_the_run_interrupted_and_its_resume_command_finishes_it(
    tmp_path, cache_dir, digits
):
    archive = tmp_path / "a.db"
    with ScriptedLLMServer(default=Answers(slow_s=120), stream=True) as server:
        watched = run(archive, server.url, cache_dir)
        until(lambda: server.requests, what="the first propose call")
        time.sleep(1.0)  # the call is in flight: the server holds its first token back for 120 s
        sent = time.monotonic()
        watched.proc.send_signal(signal.SIGINT)
        code = watched.wait(EXIT_S)
        exited = time.monotonic() - sent
        ((ended_at, ended),) = watched.events("run_ended")
        assert code == 130 and exited < EXIT_S and ended_at - sent < STOP_S, (code, exited, ended_at - sent)
        assert ended["status"] == "interrupted" and ended["stopped_by"] == "SIGINT"
        assert status(archive) == "interrupted"
        assert 0 in server.disconnects  # the call was cut: the server saw the client go
        assert [e["step"] for _, e in watched.events("paused")] == ["propose"]
        words = printed_resume(watched.stderr)
        started = watched.events("run_started")[0][1]
        assert shlex.split(started["resume"]) == words == shlex.split(ended["resume"])  # said at the start too
        assert sqlite3.connect(archive).execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == 0
        calls = sqlite3.connect(archive).execute("SELECT status FROM llm_calls").fetchall()
        assert calls == [("cancelled",)]
        resumed = resume_as_printed(words, cache_dir)
    summary = assert_finished_once_each(archive, resumed)
    assert summary["trained"] == BUDGET and summary["stopped_by"] == "max-candidates"
    print(f"SIGINT: run stopped {ended_at - sent:.2f}s after the signal, process exited after {exited:.2f}s")


def test_sigterm_kills_the_sandbox_job_closes_its_mark_and_the_resume_trains_it_again(tmp_path, cache_dir, digits):
    archive = tmp_path / "a.db"
    with ScriptedLLMServer(default=Answers(first_code=SLOW_TO_TRAIN)) as server:
        watched = run(archive, server.url, cache_dir)

        def in_the_sandbox() -> bool:
            try:
                rows = (
                    sqlite3.connect(archive).execute("SELECT proposal_key, started FROM evaluation_starts").fetchall()
                )
            except sqlite3.OperationalError:
                return False
            return any(key.endswith("/0") for key, _ in rows)

        until(in_the_sandbox, what="the slow candidate's sandbox job")
        time.sleep(3.0)  # smoke run done, training under way
        sent = time.monotonic()
        watched.proc.send_signal(signal.SIGTERM)
        code = watched.wait(EXIT_S)
        exited = time.monotonic() - sent
        ((ended_at, ended),) = watched.events("run_ended")
        assert code == 143 and exited < EXIT_S and ended_at - sent < STOP_S, (code, exited, ended_at - sent)
        assert ended["stopped_by"] == "SIGTERM" and status(archive) == "interrupted"
        db = sqlite3.connect(archive)
        marks = db.execute("SELECT proposal_key, started, finished FROM evaluation_starts").fetchall()
        assert all(started == finished for _, started, finished in marks), marks  # a stop is no host death
        paused = [e["seq"] for _, e in watched.events("paused")]
        assert 0 in paused  # (and proposal 1, if it was waiting for the slot)
        recorded = [k for (k,) in db.execute("SELECT proposal_key FROM candidates")]
        assert not any(k.endswith("/0") for k in recorded)  # the killed job left no row: it trains on resume
        started_after = [e for t, e in watched.events("step") if t > sent]
        assert not started_after, started_after  # nothing began after the signal
        resumed = resume_as_printed(printed_resume(watched.stderr), cache_dir)
    summary = assert_finished_once_each(archive, resumed)
    assert summary["trained"] == BUDGET
    print(f"SIGTERM: run stopped {ended_at - sent:.2f}s after the signal, process exited after {exited:.2f}s")


def test_a_second_sigint_stops_at_once_and_the_run_stays_resumable(tmp_path, cache_dir, digits):
    archive = tmp_path / "a.db"
    # a server that answers nothing before its whole answer is ready: the first stop waits a moment for the call
    with ScriptedLLMServer(default=Answers(slow_s=120)) as server:
        watched = run(archive, server.url, cache_dir)
        until(lambda: server.requests, what="the first propose call")
        time.sleep(1.0)
        sent = time.monotonic()
        watched.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        second = watched.proc.poll() is None  # the first stop may be over already: calls in flight are cut at once
        if second:
            watched.proc.send_signal(signal.SIGINT)
        code = watched.wait(EXIT_S)
        exited = time.monotonic() - sent
        assert code == 130 and exited < EXIT_S, (code, exited)  # never Python's own -2, whenever the second lands
        # the second stopped it at once (while the run wound down, or after), or the first had finished by then
        assert (
            "stopped at once (a second SIGINT)" in watched.stderr or "interrupted (SIGINT); to go on" in watched.stderr
        )
        assert not watched.events("run_ended") or watched.events("run_ended")[0][1]["status"] == "interrupted"
        assert status(archive) == "interrupted"
        resumed = resume_as_printed(printed_resume(watched.stderr), cache_dir)
    assert_finished_once_each(archive, resumed)
    print(f"second SIGINT: process exited {exited:.2f}s after the first signal")
