"""The CLI's tables as a person reads them: whole rows when piped (a file, grep, less), nothing cut to "…"."""

from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.store.archive import Archive

LONG_NAME = "depthwise-separable-stem-with-squeeze-excitation-and-a-wider-classifier-head.py"


def test_piped_tables_keep_each_row_on_one_line(tmp_path):
    path = tmp_path / "a.db"
    with Archive(path) as db:
        db.record(
            {
                "task": "digits",
                "name": LONG_NAME,
                "proposer": "user",
                "code": "x = 1\n",
                "status": "trained",
                "text_hash": "h",
                "parents": [],
            },
            {"status": "trained", "fidelity": 5, "seed": 0, "val_accuracy": 0.9, "test_accuracy": 0.89, "params": 10},
        )
    listed = CliRunner().invoke(app, ["archive", "ls", "--archive", str(path)])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if LONG_NAME in line)
    assert "0.9000" in row and "0.8900" in row  # the whole row on the name's line, past 80 columns
    assert max(len(line) for line in listed.output.splitlines()) > 80


def test_tasks_are_listed_in_full(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    listed = CliRunner().invoke(app, ["tasks"])
    assert listed.exit_code == 0, listed.output
    assert "…" not in listed.output
    digits = next(line for line in listed.output.splitlines() if line.startswith("│ digits"))
    assert all(cell in digits for cell in ("image", "(1, 8, 8)", "accuracy", "1,000,000", "no"))
    assert "nb201-imagenet16" in listed.output and "bits_per_byte" not in digits
