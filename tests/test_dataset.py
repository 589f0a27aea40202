"""`agentarch dataset --out FILE` (issue 28): the archive's LLM proposals as chat fine-tuning data, filtered right,
with credentials and local paths scrubbed, on a real archive file."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.store import dataset
from agentarch.store.archive import Archive
from agentarch.tasks.registry import get_task
from tests.scripted import fenced, mlp

HOME = str(Path.home())


def chat_prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a researcher."}, {"role": "user", "content": text}]


@pytest.fixture
def archive(tmp_path) -> Path:
    """Eight candidates: a digits seed (no parent), three children of it (better with local paths in its prompt, worse,
    better and old with secrets), an untrained one, an offline one (no prompt), and on stdlib-bytes (bits per byte,
    lower is better) a seed and its better child."""
    path = tmp_path / "runs" / "a.db"
    with Archive(path) as db:
        for name in ("digits", "stdlib-bytes"):
            db.register_task(get_task(name))

        def add(val, parent=None, task="digits", status="trained", prompt="Improve it.", response=None, when=None):
            candidate = {
                "name": f"c{val}",
                "task": task,
                "code": mlp(int(val * 100) if val else 8),
                "status": status,
                "proposer": "llm" if prompt else "rea",
                "parents": [parent] if parent else [],
                "prompt": chat_prompt(prompt) if prompt else None,
                "response": response or (fenced(mlp(int((val or 0) * 100) + 1)) if prompt else None),
            }
            evaluation = {"status": status, "val_accuracy": val, "test_accuracy": val, "fidelity": 1}
            cid = db.record(candidate, evaluation if status == "trained" else None)
            if when:
                db.db.execute("UPDATE candidates SET created_at = ? WHERE id = ?", [when, cid])
                db.db.conn.commit()
            return cid

        seed = add(0.80)
        add(0.85, seed, prompt=f"Improve {path} from {HOME}/agentarch/runs and /home/alice/notes.md")  # 2: better
        add(0.70, seed)  # 3: worse than its parent
        add(
            0.90,
            seed,
            prompt="key sk-abcdefghijklmnopqrstuvwxyz012345 and OPENAI_API_KEY = 'hunter2hunter2'",
            response="Bearer abcdefghijklmnopqrstuvwxyz\n" + fenced(mlp(90)),
            when="2020-01-01T00:00:00.000+00:00",
        )  # 4: better, old, with secrets
        add(None, seed, status="failed")  # 5: did not train
        add(0.95, seed, prompt=None)  # 6: offline, no prompt
        mse_parent = add(0.50, task="stdlib-bytes")
        add(0.40, mse_parent, task="stdlib-bytes")  # 8: lower is better, so it improved
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_improved_trained_proposals_become_chats_in_the_trainers_format(archive, tmp_path):
    out = tmp_path / "out" / "d.jsonl"
    with Archive(archive) as db:
        done = dataset.write(db, out)
    chats = lines(out)
    assert done.examples == len(chats) == 3 and done.left_out == 3  # 2, 4 and 8 kept; 1, 3 and 7 left out
    for chat in chats:
        assert list(chat) == ["messages"]
        assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant"]
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in chat["messages"])
        assert "```python" in chat["messages"][-1]["content"]


def test_filters_by_task_score_date_and_improvement(archive, tmp_path):
    def count(**filters) -> int:
        with Archive(archive) as db:
            return dataset.write(db, tmp_path / "f.jsonl", **filters).examples

    assert count(improved=False) == 6  # every trained proposal with a prompt (not the failed or the offline one)
    assert count(task="digits") == 2 and count(task="stdlib-bytes") == 1
    assert count(task="digits", min_score=0.88) == 1  # 0.90 only
    assert count(task="stdlib-bytes", min_score=0.45, improved=False) == 1  # lower is better: 0.40, not 0.50
    assert count(since=date(2024, 1, 1)) == 2  # the 2020 one is left out
    assert count(task="nothing") == 0


def test_secrets_and_local_paths_are_scrubbed(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "s3cr3t-value-from-env")
    with Archive(archive) as db:
        db.db.execute(
            "UPDATE candidates SET response = response || ? WHERE id = 2", ["# token from s3cr3t-value-from-env\n"]
        )
        db.db.conn.commit()
        dataset.write(db, tmp_path / "d.jsonl")
    text = (tmp_path / "d.jsonl").read_text()
    for secret in ("sk-abcdefghijklmnop", "hunter2hunter2", "Bearer abcdefghij", "s3cr3t-value-from-env"):
        assert secret not in text
    assert "OPENAI_API_KEY = '[REDACTED]" in text and "[REDACTED]" in text
    assert str(archive.parent) not in text and HOME not in text and "/home/alice" not in text
    assert "<archive>/a.db" in text and "~/agentarch/runs" in text and "~/notes.md" in text


def test_the_cli_writes_the_file_and_says_what_it_did(archive, tmp_path):
    out = tmp_path / "cli.jsonl"
    runner = CliRunner()
    done = runner.invoke(app, ["dataset", "--out", str(out), "--archive", str(archive), "--task", "digits", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"out": str(out), "examples": 2, "left_out": 2}
    assert len(lines(out)) == 2
    every = runner.invoke(app, ["dataset", "-o", str(out), "--archive", str(archive), "--all", "--since", "2024-01-01"])
    assert every.exit_code == 0 and "5 examples written" in every.stdout and len(lines(out)) == 5
    bad = runner.invoke(app, ["dataset", "-o", str(out), "--archive", str(archive), "--since", "yesterday"])
    assert bad.exit_code == 2 and "not a date" in bad.output
    missing = runner.invoke(app, ["dataset", "-o", str(out), "--archive", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no archive" in missing.output
