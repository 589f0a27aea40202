"""Bad input everywhere: each mistake gets a message that says what to fix, and nothing recorded is touched."""

import hashlib
import json
import sqlite3
import threading

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.store.archive import Archive
from agentarch.store.schema import SCHEMA_VERSION
from agentarch.web import create_app
from tests.web_client import Browser


@pytest.fixture
def archive(tmp_path, monkeypatch):
    """An archive holding one recorded candidate, and the working directory next to it."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "a.db"
    with Archive(path) as db:
        db.record(
            {
                "task": "digits",
                "name": "kept.py",
                "proposer": "user",
                "code": "x = 1",
                "status": "trained",
                "text_hash": "kept",
                "parents": [],
            },
            {"status": "trained", "val_accuracy": 0.9, "test_accuracy": 0.9, "fidelity": 1, "seed": 0},
        )
    return path


def digest(path) -> str:
    """The archive's whole content (schema and rows), independent of WAL bookkeeping."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    "args, says",
    [
        (["eval", "x.py", "--task", "imagenet"], "unknown task 'imagenet'; known tasks: digits"),
        (["run", "--task", "imagenet"], "unknown task 'imagenet'"),
        (["baseline", "--task", "imagenet"], "unknown task 'imagenet'"),
        (["run", "--task", "mnist"], "--data-dir"),
        (["eval", "missing.py", "--task", "digits"], "no such file: missing.py"),
        (["run", "--task", "nb201-cifar10", "--model", "openai/x"], "give --propose-in nb201"),
        (["run", "--resume", "no-such-run"], "no run 'no-such-run'"),
        (["run", "--batch", "0"], "batch"),
        (["archive", "show", "99"], "no candidate with id 99"),
    ],
)
def test_usage_errors_say_what_to_fix_and_touch_nothing(archive, args, says):
    before = digest(archive)
    result = cli(*args, "--archive", str(archive))
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()), result.output
    assert digest(archive) == before


def test_an_error_naming_a_long_path_keeps_it_whole_for_copying(archive, tmp_path):
    """Rich wrapped error lines at 80 columns and split the path a person must copy to fix the input."""
    missing = tmp_path / ("a" * 70) / "missing-task.toml"
    result = cli("run", "--task", str(missing), "--archive", str(archive))
    assert result.exit_code == 2 and str(missing) in result.output, result.output


def test_a_malformed_config_file_names_itself(archive, tmp_path):
    (tmp_path / "agentarch.toml").write_text("task = 'digits\nbatch = [\n")
    result = cli("run", "--archive", str(archive))
    assert result.exit_code == 2 and "agentarch.toml" in result.output
    (tmp_path / "agentarch.toml").write_text("batch = -3\n")
    result = cli("run", "--archive", str(archive))
    assert result.exit_code == 2 and "batch" in result.output and "agentarch.toml" in result.output


def test_an_archive_from_a_newer_agentarch_is_refused_untouched(archive, tmp_path):
    (tmp_path / "x.py").write_text("x = 1\n")
    with Archive(archive) as db:
        db.db["meta"].update("schema_version", {"value": str(SCHEMA_VERSION + 1)})
    before = digest(archive)
    for args in (["archive", "ls"], ["run"], ["eval", "x.py"]):
        result = cli(*args, "--archive", str(archive))
        assert result.exit_code == 2 and "newer agentarch" in result.output, args
    assert digest(archive) == before


def test_a_non_python_file_and_a_10_mb_file_are_recorded_as_invalid_with_the_reason(
    archive, tmp_path, cache_dir, monkeypatch
):
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    png = tmp_path / "figure.py"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    notes = tmp_path / "notes.py"
    notes.write_text("This is my idea for a network: use attention, then pool.\n")
    huge = tmp_path / "huge.py"
    huge.write_text("# padding\n" * (10 * 2**20 // 10))
    result = cli("eval", str(png), str(notes), str(huge), "--task", "digits", "--json", "--archive", str(archive))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["status"] for line in lines] == ["invalid"] * 3
    assert "[encoding]" in lines[0]["reason"] and "UTF-8" in lines[0]["reason"]
    assert "[syntax]" in lines[1]["reason"] and "line 1" in lines[1]["reason"]
    assert "[size]" in lines[2]["reason"]
    with Archive(archive) as db:
        assert db.scored(1)["val_accuracy"] == 0.9  # what was recorded before is untouched


def test_a_thousand_writes_while_others_read_and_review(tmp_path):
    """A run writing, `archive export` reading and a reviewer deciding in the web UI, each on its own connection."""
    path = tmp_path / "a.db"
    with Archive(path) as db:
        reviews = [
            db.request_review(
                {
                    "run_id": None,
                    "proposal_key": f"k{i}",
                    "interrupt_id": "i",
                    "code": "x",
                    "intent": None,
                    "parent_id": None,
                }
            )
            for i in range(50)
        ]
    errors: list[BaseException] = []
    done = threading.Event()

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as err:  # noqa: BLE001 - any error at all fails the test
                errors.append(err)

        return threading.Thread(target=run)

    def writer():
        with Archive(path) as db:
            for i in range(1000):
                db.record(
                    {
                        "task": "digits",
                        "name": f"c{i}",
                        "proposer": "llm",
                        "code": f"x = {i}",
                        "status": "trained",
                        "text_hash": f"h{i}",
                        "parents": [],
                        "proposal_key": f"run/{i}",
                    },
                    {"status": "trained", "val_accuracy": i / 1000, "fidelity": 1, "seed": 0},
                )
        done.set()

    exports = []

    def exporter():
        while not done.is_set():
            result = CliRunner().invoke(app, ["archive", "export", "--format", "json", "--archive", str(path)])
            assert result.exit_code == 0, result.output
            exports.append(len(result.stdout.splitlines()))

    def reviewer():  # through the web UI, as a person would
        client = Browser(create_app(path))  # at localhost, its forms carrying the page's CSRF token
        for review_id in reviews:
            response = client.post(
                f"/reviews/{review_id}", data={"decision": "approved", "by": "reviewer"}, follow_redirects=False
            )
            assert response.status_code == 303, response.text

    threads = [guarded(writer), guarded(exporter), guarded(reviewer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    with Archive(path) as db:
        assert db.db["candidates"].count == 1000 and db.db["evaluations"].count == 1000
        assert all(db.review(r)["status"] == "approved" for r in reviews)
    assert len(exports) >= 2 and exports == sorted(exports)  # readers see a growing, consistent archive
