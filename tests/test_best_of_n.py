"""The best-of-N control: the LLM sampled from the seed architectures alone, with no archive feedback, through the
same sandbox and archive, summarised like every baseline."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from tests.conftest import requires_bubblewrap
from tests.llm_server import ScriptedLLMServer
from tests.scripted import MODEL, fenced, kind, mlp


@pytest.mark.slow
@requires_bubblewrap
def test_best_of_n_prompts_from_the_seeds_only_and_reports_per_seed(tmp_path, cache_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    prompts: list[str] = []
    widths = iter(range(8, 200, 4))

    def answer(request: dict) -> str:
        if kind(request) == "analyze":
            return "Fine."
        prompts.append(request["messages"][-1]["content"])
        return fenced(mlp(next(widths)))

    with ScriptedLLMServer(default=answer) as server:
        result = CliRunner().invoke(
            app,
            [
                *("baseline", "--algo", "best-of-n", "--task", "digits", "--budget", "2", "--seeds", "0-1"),
                *("--model", MODEL, "--api-base", server.url, "--epochs", "1", "--archive", "a.db", "--json"),
            ],
        )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["algo"], summary["seeds"], summary["budget"]) == ("best-of-n", 2, 2)
    assert summary["mean_test"] is not None
    assert len(prompts) == 4 and all("seed image/cnn.py" in p and "the parent" not in p for p in prompts)
    db = sqlite3.connect(tmp_path / "a.db")
    assert db.execute("SELECT DISTINCT proposer, parents FROM candidates").fetchall() == [("best-of-n", "[]")]
    runs = db.execute("SELECT kind, proposer, json_extract(config, '$.feedback') FROM runs").fetchall()
    assert runs == [("baseline", "best-of-n", 0)] * 2
