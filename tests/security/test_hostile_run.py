"""`agentarch run` against an LLM that answers with attacks: every one is recorded, the run finishes its budget.

A scripted OpenAI-compatible server on 127.0.0.1 answers each proposal with one hostile candidate
from the corpus (host root through /proc/sys, seccomp argument tricks, a foreign ABI, label
sources, the orchestrator's limits, a datagram to a host socket, and the runner output that
crashed or hung the host: a 200,000-deep JSON line, a .npy header of 2^40 rows, a zip bomb, a
full stdin pipe, a 7 MiB exception, a forged curve). The real loop, sandbox and archive run; the
run must end `finished` at its budget with each candidate `failed`, `invalid`, `timeout` or
`duplicate` (or trained at an honest, chance-level score) and the host unchanged.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentarch.config import load_settings
from agentarch.loop import run
from tests.conftest import requires_bubblewrap
from tests.llm_server import ScriptedLLMServer
from tests.security import test_construction, test_escapes, test_hostile_output
from tests.security.harness import SECRET_ENV, SECRET_FILE, SECRET_KEY, candidate_code
from tests.test_loop import MODEL, Responder, fenced

PICKED = [
    (
        test_construction.CASES,
        (
            "core-pattern",
            "socket-high-bits",
            "x32-abi-socket",
            "sklearn-digits-labels",
            "orchestrator-limits",
            "datagram-pair-to-a-host-socket",
            "pdeathsig-cleared",
        ),
    ),
    (test_escapes.CASES, ("labels", "env-secrets", "forged-events-on-event-pipe")),
    (
        test_hostile_output.E2E,
        (
            "deep-json-array",
            "npy-header-2-to-the-40-rows",
            "zip-central-directory-bomb",
            "stdin-filled-through-proc",
            "seven-mib-exception",
            "forged-curve",
        ),
    ),
]


@pytest.mark.slow
@requires_bubblewrap
def test_a_run_whose_llm_answers_with_attacks_records_each_and_finishes(
    host, listeners, tmp_path, cache_dir, monkeypatch
):
    cases = [case for cases, names in PICKED for case in cases if case.name in names]
    assert len(cases) == sum(len(names) for _, names in PICKED)
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    answers = [fenced(candidate_code(case, dict(host["values"])), f"Intent: {case.name}.") for case in cases]
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    with ScriptedLLMServer(default=Responder(answers)) as server:
        settings = load_settings(
            task="digits",
            model=MODEL,
            api_base=server.url,
            budget=len(cases),
            batch=3,
            repair_tries=0,
            epochs=1,
            archive=tmp_path / "a.db",
            cache_dir=cache_dir,
            timeout_s=60,
            smoke_timeout_s=30,
            max_file_mb=16,
            memory_mb=3072,
        )
        summary = run.start(settings)

    assert summary["status"] == "finished" and summary["stopped_by"] == "max-candidates", summary
    assert summary["proposed"] == len(cases)
    db = sqlite3.connect(tmp_path / "a.db")
    rows = db.execute(
        "SELECT c.name, c.status, c.reason, e.test_accuracy FROM candidates c "
        "LEFT JOIN evaluations e ON e.candidate_id = c.id ORDER BY c.id"
    ).fetchall()
    assert len(rows) == len(cases)
    for name, status, reason, accuracy in rows:
        # the corpus's Nets compute the same function, so a later one that reaches training is a duplicate
        assert status in ("failed", "invalid", "timeout", "duplicate", "trained"), (name, status, reason)
        if status == "trained":
            assert accuracy is not None and accuracy < 0.5, (name, accuracy)
        assert "ESCAPED" not in (reason or ""), (name, reason)
    assert sum(status in ("failed", "invalid", "timeout") for _, status, _, _ in rows) >= len(cases) - 3, rows
    dump = "\n".join(db.iterdump())
    assert not any(secret in dump for secret in (SECRET_ENV, SECRET_KEY, SECRET_FILE))
    assert len(dump.encode()) < 3 * 2**20, "the archive grew without bound"
    assert listeners.hits == [] and not any(Path(t).exists() for t in host["targets"])
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core_pattern
