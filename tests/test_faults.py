"""LLM-side fault injection: a 127.0.0.1 server that fails 30% of calls at random; the run still completes."""

import collections
import json
import random
import threading

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from tests.conftest import requires_bubblewrap
from tests.llm_server import Reply, ScriptedLLMServer
from tests.test_loop import fenced, kind, mlp

pytestmark = [pytest.mark.slow, requires_bubblewrap]

FAULTS = {
    "rate_limited": lambda: Reply(status=429, headers={"Retry-After": "0"}),
    "server_error": lambda: Reply(status=500),
    "timeout": lambda: Reply("too late", delay_s=2.5),
    "bad_response": lambda: Reply(raw_body='{"id": "chatcmpl-1", "choices": [{"message": {"content": "cut o'),
}


class FaultyLLM:
    """30% of calls fail with one of the faults above; the rest answer properly."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: collections.Counter[str] = collections.Counter()
        self.widths = iter(range(8, 400, 3))

    def __call__(self, request: dict) -> Reply | str:
        with self.lock:
            if self.rng.random() < 0.3:
                fault = self.rng.choice(sorted(FAULTS))
                self.injected[fault] += 1
                return FAULTS[fault]()
            if kind(request) == "analyze":
                return "Analysis: it trained."
            return fenced(mlp(next(self.widths)))


def test_a_run_completes_its_budget_through_a_faulty_llm_and_counts_the_faults(tmp_path, cache_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    monkeypatch.setenv("AGENTARCH_LLM_TIMEOUT_S", "1")
    monkeypatch.setenv("AGENTARCH_LLM_FIRST_TOKEN_TIMEOUT_S", "1")  # streamed calls: the first token
    monkeypatch.setenv("AGENTARCH_LLM_RETRIES", "8")
    llm = FaultyLLM(seed=7)
    with ScriptedLLMServer(default=llm) as server:
        result = CliRunner().invoke(
            app,
            [
                "run",
                "--json",
                "--task",
                "digits",
                "--model",
                "openai/faulty",
                "--api-base",
                server.url,
                "--budget",
                "6",
                "--archive",
                "a.db",
            ],
        )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    print(f"calls answered {len(server.requests)}, faults injected {dict(llm.injected)}, summary {summary}")
    assert summary["status"] == "finished" and summary["proposed"] == 6 and summary["trained"] == 6
    assert sum(llm.injected.values()) >= 3, llm.injected
    assert summary["llm_faults"] == dict(sorted(llm.injected.items())), (summary["llm_faults"], llm.injected)
