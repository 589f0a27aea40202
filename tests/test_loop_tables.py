"""The agent loop on a NAS-Bench-201 table (issue 24): `agentarch run --task nb201-cifar10 --propose-in nb201` asks the
model for cells, and each proposal's evaluation is the table's answer, looked up in the graph's `look_up` step and
recorded as `agentarch baseline` records a table's answer (agentarch.loop.baseline.table_assessment); no sandbox job
starts. Offline, regularized evolution's cells are looked up the same way. A model asked to write modules for a table
is refused before a run opens, with what to give instead.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time

import pytest
from typer.testing import CliRunner

from agentarch import cli
from agentarch.cli.run import run_summary_line
from agentarch.config import load_settings
from agentarch.errors import UsageError
from agentarch.evaluation.evaluator import Evaluator
from agentarch.loop import run
from agentarch.loop.context import RunContext
from agentarch.loop.graph import build, open_checkpointer
from agentarch.loop.nodes.evaluating import EvaluatingNodes
from agentarch.loop.routers import Routers
from agentarch.search.proposers.llm_space import IN_SPACE, PURPOSE
from agentarch.search.spaces import get_space
from agentarch.tasks.registry import get_task
from agentarch.tasks.tabular import nb201_table
from tests.llm_server import Reply, ScriptedLLMServer
from tests.scripted import MODEL

NB201 = get_space("nb201")
TABLE = get_task("nb201-cifar10")


def answer(arch: str) -> str:
    return json.dumps(NB201.to_fields(arch))


def invoke(*args: str):
    return CliRunner().invoke(cli.app, ["run", *args])


@pytest.fixture
def no_sandbox(monkeypatch):
    """Any sandbox job the run would start fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a table's proposal started a sandbox job")

    monkeypatch.setattr(Evaluator, "start", refuse)


def scored(db: sqlite3.Connection) -> list[tuple]:
    return db.execute(
        "SELECT c.arch, c.proposer, c.status, c.params, c.flops, e.val_accuracy, e.test_accuracy, e.isolation, "
        "e.device, e.fidelity FROM candidates c JOIN evaluations e ON e.candidate_id = c.id ORDER BY c.id"
    ).fetchall()


def test_the_model_chooses_cells_and_the_table_answers_each_with_no_sandbox(tmp_path, no_sandbox):
    first, second = NB201.sample(random.Random(1)), NB201.sample(random.Random(2))
    script = [answer(first), "I would stack 3x3 convolutions.", answer(second)]  # the second is no cell
    archive = tmp_path / "a.db"
    with ScriptedLLMServer(script) as server:
        args = ["--task", "nb201-cifar10", "--propose-in", "nb201", "--model", MODEL, "--api-base", server.url]
        result = invoke(
            *args, "--budget", "3", "--schedule", "rounds", "--batch", "1", "--archive", str(archive), "--json"
        )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["proposed"] == summary["trained"] == 3, summary
    stats = summary["in_space"]
    assert (stats["queries"], stats["asks"], stats["valid"], stats["invalid"], stats["fallbacks"]) == (3, 3, 2, 1, 1)
    assert stats["fallback_reasons"] == {"invalid": 1} and stats["schema_sent"] == 3
    line = run_summary_line(summary).plain
    assert "3 proposed, 3 trained" in line
    assert (
        "in space: 2 valid answers of 3 calls (67%), 1 of 3 proposals fell back to a uniform sample (1 invalid)" in line
    )

    db = sqlite3.connect(archive)
    rows = scored(db)
    assert [r[0] for r in rows[::2]] == [first, second] and NB201.validate(rows[1][0]) == rows[1][0]
    table = nb201_table()
    for arch, proposer, status, params, flops, val, test, isolation, device, fidelity in rows:
        cell = table.query("cifar10", arch)  # the table's answer, in the archive's unit (a fraction)
        assert (proposer, status, isolation, device, fidelity) == (IN_SPACE, "trained", "table", "nas-bench-201", 200)
        assert (val, test, params, flops) == pytest.approx(
            (cell.val_accuracy / 100, cell.test_accuracy / 100, cell.params, cell.flops)
        )
    best = max(rows, key=lambda r: r[5])
    assert summary["best"]["test_accuracy"] == pytest.approx(best[6])
    assert db.execute("SELECT COUNT(*) FROM evaluation_starts").fetchone()[0] == 0  # no sandbox job was marked
    calls = db.execute("SELECT purpose, candidate_id FROM llm_calls ORDER BY id").fetchall()
    assert calls == [(PURPOSE, 1), (PURPOSE, 2), (PURPOSE, 3)]  # each call linked to its candidate
    # the second and third prompts showed the cells already scored, from the archive
    assert answer(first) in server.requests[1]["messages"][1]["content"]


def test_a_cell_answered_again_after_its_holder_was_looked_up_is_a_repeat_not_a_duplicate(tmp_path, no_sandbox):
    """The table answers at once, so a proposal whose call waited while another proposal's cell was looked up and
    recorded must not take that cell again: three proposals in flight ask a one-slot server (its calls one after
    another, as llama.cpp's) whose model always answers one cell."""
    same = NB201.sample(random.Random(7))
    with ScriptedLLMServer(default=Reply(answer(same), delay_s=0.2), slots=1) as server:
        settings = load_settings(
            task="nb201-cifar10",
            propose_in="nb201",
            model=MODEL,
            api_base=server.url,
            budget=6,
            archive=tmp_path / "a.db",
        )
        summary = run.start(settings)
    assert summary["proposed"] == summary["trained"] == 6 and summary["duplicate"] == 0, summary
    archs = [r[0] for r in scored(sqlite3.connect(settings.archive))]
    assert len(set(map(NB201.identity, archs))) == 6 and archs.count(same) == 1
    assert summary["in_space"]["fallback_reasons"] == {"repeat": 5}


def test_offline_the_evolutions_cells_are_looked_up(tmp_path, no_sandbox):
    settings = load_settings(task="nb201-cifar10", budget=6, archive=tmp_path / "a.db")
    summary = run.start(settings)
    assert summary["proposed"] == summary["trained"] == 6 and "in_space" not in summary, summary
    rows = scored(sqlite3.connect(settings.archive))
    assert len({r[0] for r in rows}) == 6 and {r[1] for r in rows} == {"rea"} and {r[7] for r in rows} == {"table"}


def test_batch_on_the_steady_schedule_is_named_as_ignored(tmp_path, no_sandbox):
    """--batch sizes rounds only; a run that passes it without --schedule rounds is told, not silently serial."""
    steady = invoke("--task", "nb201-cifar10", "--budget", "1", "--batch", "2", "--archive", str(tmp_path / "a.db"))
    assert steady.exit_code == 0, steady.output
    assert "--batch 2 sizes the rounds of --schedule rounds" in steady.output and "--slots" in steady.output
    # the run's lines are one line each at any width, as a log that is grepped needs (the summary is longer than 80)
    (summary,) = [line for line in steady.output.splitlines() if "finished (stopped by" in line]
    assert len(summary) > 80 and summary.endswith("cost $0.0000"), steady.output
    assert any(
        line.startswith("No LLM configured") and line.endswith("same loop.") for line in steady.output.splitlines()
    )
    rounds = invoke(
        "--task",
        "nb201-cifar10",
        "--budget",
        "1",
        "--schedule",
        "rounds",
        "--batch",
        "2",
        "--archive",
        str(tmp_path / "b.db"),
    )
    assert rounds.exit_code == 0 and "sizes the rounds" not in rounds.output, rounds.output
    from_env = CliRunner().invoke(
        cli.app,
        ["run", "--task", "nb201-cifar10", "--budget", "1", "--archive", str(tmp_path / "c.db")],
        env={"AGENTARCH_BATCH": "3"},
    )
    assert from_env.exit_code == 0 and "--batch 3 sizes the rounds" in from_env.output, from_env.output
    unset = invoke("--task", "nb201-cifar10", "--budget", "1", "--archive", str(tmp_path / "d.db"))
    assert unset.exit_code == 0 and "sizes the rounds" not in unset.output, unset.output


def test_a_passed_candidate_of_a_table_goes_to_the_table_not_the_sandbox(tmp_path):
    ctx = RunContext(load_settings(task="nb201-cifar10", archive=tmp_path / "a.db"), "run-1", time.time())
    route = Routers(ctx)
    assert ctx.table and route.after_review({"gate": "pass"}) == "look_up"
    assert (
        route.after_review({"gate": "edited"}) == "static_check"
        and route.after_review({"gate": "rejected"}) == "record"
    )
    assert "look_up" in build(ctx, open_checkpointer(ctx.settings.archive)).get_graph().nodes


def test_a_reviewers_edit_is_looked_up_as_the_cell_it_declares_and_code_of_no_cell_is_invalid(tmp_path):
    proposed, edited = NB201.sample(random.Random(3)), NB201.sample(random.Random(4))
    settings = load_settings(task="nb201-cifar10", archive=tmp_path / "a.db")
    ctx = RunContext(settings, "run-1", time.time())
    nodes = EvaluatingNodes(ctx)
    plan = {"key": "run-1/0", "seq": 0, "arch": proposed}

    looked = nodes.look_up({"plan": plan, "code": NB201.render(edited, TABLE)})
    assert looked["verdict"] == "trained" and looked["arch"] == edited
    assert looked["assessment"]["candidate"]["name"].startswith(f"nb201:{edited}")
    cell = nb201_table().query("cifar10", edited)
    assert looked["assessment"]["metrics"]["val_accuracy"] == pytest.approx(cell.val_accuracy / 100)

    bad = nodes.look_up({"plan": plan, "code": "import torch\n"})
    assert bad["verdict"] == "invalid" and bad["error"].startswith("[table] ")


@pytest.mark.parametrize(
    "options, said",
    [
        (
            {"model": MODEL},
            "a model cannot write a module for it, only choose one of its cells; give --propose-in nb201",
        ),
        ({"screen": 3}, "nothing trains there: leave out --screen"),
        ({"verify_top": 2}, "nothing trains there: leave out --verify-top"),
    ],
)
def test_what_a_table_cannot_do_is_refused_before_a_run_opens(tmp_path, options, said):
    archive = tmp_path / "a.db"
    with pytest.raises(UsageError, match=said):
        run.start(load_settings(task="nb201-cifar10", archive=archive, **options))
    assert not archive.exists()


def test_the_cli_says_why_a_model_cannot_write_modules_for_a_table(tmp_path):
    archive = tmp_path / "a.db"
    result = invoke("--task", "nb201-cifar10", "--model", MODEL, "--archive", str(archive))
    assert result.exit_code == 2, result.output
    assert "give --propose-in nb201" in " ".join(result.output.split()) and not archive.exists()
