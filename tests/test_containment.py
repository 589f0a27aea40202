"""Containment in the agent loop: no exception from one candidate's evaluation stops a run, and a candidate
the orchestrator keeps dying under is recorded as failed on resume, not replayed.

The fast tests put a stand-in executor where the sandbox would be (the host side of a buggy parse is
what they simulate: a TypeError, a MemoryError, a 5,000-digit parameter count, a 7 MiB message); the
LLM is the real scripted server. The slow tests run the real sandbox and SIGKILL a real `agentarch run`.
"""

import json
import re
import signal
import sqlite3
import threading
import time

import pytest

from agentarch.config import load_settings
from agentarch.evaluation.executors import LocalExecutor
from agentarch.evaluation.stages import RunRequest, RunResult
from agentarch.loop import context, graph, run
from agentarch.loop.containment import guarded
from agentarch.loop.nodes.evaluating import SANDBOX_STAGE, EvaluatingNodes
from agentarch.loop.nodes.recording import RecordingNodes
from agentarch.store.archive import Archive
from agentarch.store.decisions import code_sha256
from tests.conftest import requires_bubblewrap
from tests.llm_server import ScriptedLLMServer
from tests.scripted import MODEL, fenced, kind, mlp, start_run

HUGE_MESSAGE = "x" * (7 << 20)


class HostileExecutor:
    """Where the sandbox would be: results for marked code that a host-side parser bug would let through.

    Wrapping a real executor (`inner`), unmarked code really runs; without one, it passes with fixed
    scores. `requests` counts the sandbox jobs it started.
    """

    def __init__(self, inner=None) -> None:
        self.inner = inner
        self.capacity = inner.capacity if inner else 1
        self.requests: list[RunRequest] = []

    def start(self, request: RunRequest, ready=None):
        if self.inner:
            return HostileJob(request, self.inner.start(request, ready))
        if ready is not None:
            ready()
        self.requests.append(request)
        return HostileJob(request, None)

    def run(self, request: RunRequest) -> RunResult:
        return self.start(request).result()

    def close(self) -> None:
        if self.inner:
            self.inner.close()


class HostileJob:
    """One job's smoke verdict and result, as a buggy host-side parse would hand them on."""

    def __init__(self, request: RunRequest, inner) -> None:
        self.request, self.inner = request, inner

    def smoke(self) -> RunResult:
        code = self.request.code
        if "# host: TypeError" in code:
            raise TypeError("string indices must be integers, not 'str'")  # {"event": ["smoke"]} read as a dict
        if "# host: MemoryError" in code:
            raise MemoryError()  # a .npy header declaring 2**40 rows
        return self._hostile(self.inner.smoke() if self.inner else RunResult("smoked", smoke=_smoke(self.request)))

    def result(self) -> RunResult:
        if "# host: huge message" in self.request.code:
            raise RuntimeError(HUGE_MESSAGE)
        return self._hostile(self.inner.result() if self.inner else _passed(self.request))

    def _hostile(self, result: RunResult) -> RunResult:
        code = self.request.code
        if "# host: huge params" in code and result.smoke:
            result.smoke["params"] = 2**64 - 1  # the checkpoint stores it, SQLite cannot: the archive write raises
        if "# host: giant params" in code and result.smoke and result.status != "smoked":
            result.smoke["params"] = 10**5000  # not even the checkpoint can store it
        return result


def _smoke(request: RunRequest) -> dict:
    return {"functional_hash": code_sha256(request.code), "params": 1000, "flops": 1000, "seconds": 0.01}


def _passed(request: RunRequest) -> RunResult:
    trained = {
        "train_seconds": 0.1,
        "device": "cpu",
        "peak_memory_mb": 1.0,
        "curve": [],
        "steps": 1,
        "epochs_done": 1,
        "stopped_early": False,
    }
    return RunResult(
        "trained", smoke=_smoke(request), trained=trained, scores={"val_accuracy": 0.5, "test_accuracy": 0.5}
    )


def marked(width: int, mark: str) -> str:
    return fenced(mlp(width) + f"# host: {mark}\n")


HOSTILE = [
    marked(16, "TypeError"),  # the smoke step raises
    marked(20, "huge params"),  # recording raises (OverflowError)
    marked(22, "giant params"),  # training's result cannot be checkpointed
    marked(24, "huge message"),  # training raises with 7 MiB of message
    marked(28, "MemoryError"),  # the smoke step runs out of memory
    fenced(mlp(32), "Intent: an unpaired surrogate \ud800 in the answer."),  # not storable as UTF-8 as it is
    fenced(mlp(36)),
]


def scripted(script):
    answers = list(script)
    return lambda request: "Fine." if kind(request) == "analyze" else answers.pop(0)


@pytest.fixture
def hostile(monkeypatch):
    executor = HostileExecutor()
    monkeypatch.setattr(context, "executor_for", lambda *args: executor)
    return executor


def test_every_host_side_exception_becomes_that_candidates_failure_and_the_run_finishes(tmp_path, cache_dir, hostile):
    with ScriptedLLMServer(default=scripted(HOSTILE)) as server:
        settings = load_settings(
            task="digits",
            model=MODEL,
            api_base=server.url,
            budget=7,
            batch=2,
            repair_tries=0,
            archive=tmp_path / "a.db",
            cache_dir=cache_dir,
        )
        summary = run.start(settings)
    assert {k: summary[k] for k in ("status", "proposed", "failed", "trained", "stopped_by")} == {
        "status": "finished",
        "proposed": 7,
        "failed": 5,
        "trained": 2,
        "stopped_by": "max-candidates",
    }
    db = sqlite3.connect(tmp_path / "a.db")
    rows = dict(db.execute("SELECT substr(code, -30), reason FROM candidates WHERE status = 'failed'").fetchall())
    reasons = {
        mark: next(r for tail, r in rows.items() if mark in tail)
        for mark in ("TypeError", "huge params", "giant params", "huge message", "MemoryError")
    }
    assert reasons["TypeError"] == "[host] smoke raised TypeError: string indices must be integers, not 'str'"
    assert reasons["huge params"].startswith("[host] record raised OverflowError")
    assert reasons["giant params"] == "[host] train raised TypeError: Integer exceeds 64-bit range"
    assert reasons["MemoryError"] == "[host] smoke raised MemoryError: "
    assert reasons["huge message"].startswith("[host] train raised RuntimeError: xxx")
    said = len("[host] train raised RuntimeError: ") + len(HUGE_MESSAGE)
    assert len(reasons["huge message"]) < 4100 and f"of {said} characters cut" in reasons["huge message"]
    per_failed = db.execute(
        "SELECT COUNT(e.id), MAX(e.error) = MAX(c.reason) FROM candidates c JOIN evaluations e "
        "ON e.candidate_id = c.id WHERE c.status = 'failed' GROUP BY c.id"
    ).fetchall()
    assert per_failed == [(1, 1)] * 5  # each failure keeps one evaluation saying why
    surrogate = db.execute("SELECT response FROM candidates WHERE response LIKE '%unpaired surrogate%'").fetchone()[0]
    assert "surrogate ? in" in surrogate
    assert db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == 7


def test_a_candidate_the_orchestrator_died_under_twice_is_recorded_failed_not_run_again(tmp_path, cache_dir, hostile):
    settings = load_settings(task="digits", archive=tmp_path / "a.db", cache_dir=cache_dir, slots=1, queue=1)
    ctx = context.RunContext(settings, "run-1", time.time())
    nodes = EvaluatingNodes(ctx)
    code = mlp(16)
    state = {"plan": {"key": "run-1/0", "seq": 0, "island": 0, "arch": "a"}, "code": code, "tries": 0}
    with Archive(settings.archive) as db:
        db.evaluation_started("run-1", "run-1/0", code, SANDBOX_STAGE)  # the orchestrator died in this job
    assert nodes.smoke(state) == {"error": None} and len(hostile.requests) == 1  # one kill: replayed
    assert nodes.train(state)["verdict"] == "trained" and len(hostile.requests) == 1  # training went on in that job
    with Archive(settings.archive) as db:
        db.evaluation_started("run-1", "run-1/0", code, SANDBOX_STAGE)  # ... and, another time, once more
    fault = nodes.train(state)["fault"]  # resumed at train: no job of this process to go on with
    assert fault.startswith("[host] the orchestrator stopped 2 times while this candidate was in the sandbox")
    assert len(hostile.requests) == 1  # not run again
    recorded = RecordingNodes(ctx).fail({**state, "fault": fault})["outcomes"][0]
    assert (recorded["status"], recorded["reason"]) == ("failed", fault)


def test_a_candidate_waiting_for_a_slot_is_not_marked_as_in_the_sandbox(tmp_path, cache_dir, monkeypatch):
    settings = load_settings(
        task="digits", archive=tmp_path / "a.db", cache_dir=cache_dir, slots=1, epochs=1, threads=1
    )
    pool = LocalExecutor(1)
    monkeypatch.setattr(context, "executor_for", lambda *args: HostileExecutor(pool))
    nodes = EvaluatingNodes(context.RunContext(settings, "run-1", time.time()))
    state = {"plan": {"key": "run-1/1", "seq": 1, "island": 0, "arch": "a"}, "code": mlp(16), "tries": 0}

    def marks():
        return sqlite3.connect(settings.archive).execute("SELECT started, finished FROM evaluation_starts").fetchall()

    held = pool.free.get()  # another candidate holds the one slot
    waiting = threading.Thread(target=nodes.smoke, args=(state,))
    waiting.start()
    time.sleep(0.5)
    assert marks() == [] and waiting.is_alive()  # a death now would not be this candidate's
    pool.free.put(held)
    waiting.join(timeout=60)
    assert marks() == [(1, 0)]  # in the sandbox: its job trains on after the smoke verdict
    assert nodes.train(state)["verdict"] == "trained"
    assert marks() == [(1, 1)]


def test_an_abort_from_another_branch_is_not_contained(tmp_path):
    ctx = context.RunContext(load_settings(task="digits", archive=tmp_path / "a.db"), "run-1", time.time())
    serde = graph.open_checkpointer(ctx.settings.archive).serde

    def waiting(state):
        raise context.RunAborted("another candidate failed beyond containment")

    with pytest.raises(context.RunAborted):
        guarded(ctx, waiting, serde)({"plan": {"key": "k"}})
    assert guarded(ctx, lambda state: 1 / 0, serde)({"plan": {"key": "k"}}) == {
        "fault": "[host] <lambda> raised ZeroDivisionError: division by zero"
    }
    assert guarded(ctx, lambda state: {"params": 10**5000}, serde)({"plan": {"key": "k"}})["fault"].startswith(
        "[host] <lambda> raised TypeError: Integer exceeds 64-bit range"
    )  # what the checkpoint cannot store
    assert not ctx.aborted.is_set()


# -- end to end, with the real sandbox --------------------------------------------------------------------


def hangs() -> str:
    """A candidate that never finishes its forward pass: the orchestrator is killed while it is in the sandbox."""
    return mlp(12).replace(
        "return self.out(torch.relu(self.hidden(x.flatten(1))))", "while True:\n            x = x * 1.0"
    )


@pytest.mark.slow
@requires_bubblewrap
def test_a_hostile_scripted_run_with_the_real_sandbox_records_every_candidate_and_finishes(
    tmp_path, cache_dir, monkeypatch
):
    real = context.executor_for
    monkeypatch.setattr(context, "executor_for", lambda *args: HostileExecutor(real(*args)))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    script = [
        marked(16, "TypeError"),  # the host raises on its smoke result
        marked(20, "huge params"),  # really trained, then the archive write raises
        fenced(mlp(24, crash=True)),  # raises in its forward pass: failed
        fenced("import os\n" + mlp(28)),  # rejected by the static check: invalid
        "No code today.",  # invalid
        fenced(mlp(32), "Intent: an unpaired surrogate \ud800."),  # stored with '?': trained
    ]
    with ScriptedLLMServer(default=scripted(script)) as server:
        settings = load_settings(
            task="digits",
            model=MODEL,
            api_base=server.url,
            budget=6,
            batch=2,
            repair_tries=0,
            epochs=1,
            archive=tmp_path / "a.db",
            cache_dir=cache_dir,
        )
        summary = run.start(settings)
    assert {k: summary[k] for k in ("status", "proposed", "failed", "invalid", "trained", "stopped_by")} == {
        "status": "finished",
        "proposed": 6,
        "failed": 3,
        "invalid": 2,
        "trained": 1,
        "stopped_by": "max-candidates",
    }
    db = sqlite3.connect(tmp_path / "a.db")
    reasons = [r for (r,) in db.execute("SELECT reason FROM candidates WHERE status = 'failed' ORDER BY id")]
    assert sum(r.startswith("[host] ") for r in reasons) == 2 and len(reasons) == 3


def agentarch_run(archive, cache_dir, url, *extra):
    return start_run(
        archive,
        *("--model", MODEL, "--api-base", url, "--budget", "3", "--epochs", "1", *extra),
        cache_dir=cache_dir,
        AGENTARCH_SMOKE_TIMEOUT_S="300",
    )


def kill_once_in_the_sandbox(proc, archive, starts: int) -> None:
    """SIGKILL `proc` once the hanging candidate's smoke run was started `starts` times (so it is in the sandbox)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            row = (
                sqlite3.connect(archive)
                .execute(
                    "SELECT started FROM evaluation_starts WHERE code_sha256 = ? AND stage = 'sandbox'",
                    [code_sha256(hangs())],
                )
                .fetchone()
            )
        except sqlite3.OperationalError:  # not created yet
            continue
        if row and row[0] == starts:
            time.sleep(1.0)  # well inside the sandbox
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
    raise AssertionError(f"the hanging candidate never reached the sandbox: {proc.communicate()}")


@pytest.mark.slow
@requires_bubblewrap
def test_a_candidate_the_orchestrator_is_killed_under_twice_is_recorded_failed_on_resume(tmp_path, cache_dir):
    def answer(request):
        if kind(request) == "analyze":
            return "Fine."
        seq = int(re.search(r"This is proposal (\d+) of the run", request["messages"][-1]["content"]).group(1))
        return fenced(hangs() if seq == 1 else mlp(8 + 4 * seq))

    archive = tmp_path / "a.db"
    with ScriptedLLMServer(default=answer) as server:
        first = agentarch_run(archive, cache_dir, server.url)
        kill_once_in_the_sandbox(first, archive, starts=1)
        run_id = sqlite3.connect(archive).execute("SELECT id FROM runs").fetchone()[0]
        second = agentarch_run(archive, cache_dir, server.url, "--resume", run_id)  # one kill: it is replayed
        kill_once_in_the_sandbox(second, archive, starts=2)
        third = agentarch_run(archive, cache_dir, server.url, "--resume", run_id)
        out, errors = third.communicate(timeout=300)
    assert third.returncode == 0, errors
    summary = json.loads(out.splitlines()[-1])
    assert {k: summary[k] for k in ("status", "proposed", "failed", "trained")} == {
        "status": "finished",
        "proposed": 3,
        "failed": 1,
        "trained": 2,
    }
    db = sqlite3.connect(archive)
    code, reason = db.execute("SELECT code, reason FROM candidates WHERE status = 'failed'").fetchone()
    assert code == hangs()
    assert reason == (
        "[host] the orchestrator stopped 2 times while this candidate was in the sandbox; "
        "recorded as failed instead of run again"
    )
    keys = [k for (k,) in db.execute("SELECT proposal_key FROM candidates")]
    assert len(keys) == len(set(keys)) == 3
