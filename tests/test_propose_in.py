"""`agentarch run --propose-in SPACE` (issue 24): the agent loop asks the model for an architecture of a declared search
space instead of a whole module, through the real scripted server (tests/llm_server.py, real HTTP through litellm).

Every proposal leaves a candidate row with its space and architecture, proposed by `llm-space`, its calls linked; an
answer that is no architecture of the space takes a uniform sample, counted in the run's summary; the request carries
the space's JSON schema; proposals in flight never take the same architecture; bad settings are refused before a run
is opened, with what to change.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from agentarch import cli
from agentarch.cli.run import run_summary_line
from agentarch.config import load_settings
from agentarch.llm.client import LLMClient
from agentarch.loop import run
from agentarch.search.proposers.llm_space import IN_SPACE, PURPOSE, InSpaceLLM, InSpaceModel
from agentarch.search.spaces import get_space
from agentarch.tasks.registry import get_task
from tests.conftest import requires_bubblewrap
from tests.llm_server import Reply, ScriptedLLMServer
from tests.scripted import MODEL

MLP = get_space("mlp")
MACRO = get_space("macro")


def answer(space, arch: str) -> str:
    """A model's answer: the architecture as the JSON object of the space's fields."""
    return json.dumps(space.to_fields(arch))


def table_task(folder) -> str:
    """A small table task file (60 rows of 4 features, 3 classes): an MLP trains on it in a moment."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    np.savez(folder / "t.npz", x=x, y=(x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5))
    path = folder / "rows.toml"
    path.write_text(
        'name = "rows"\ndescription = "a small table"\nkind = "table"\n[data]\nsource = "npz"\npath = "t.npz"\n'
    )
    return str(path)


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli.app, ["run", *args], env=env)


# -- what the loop does -------------------------------------------------------------------------------------------


@requires_bubblewrap
def test_the_cli_flag_runs_the_loop_inside_the_space_and_every_proposal_leaves_a_row(tmp_path, cache_dir):
    first = "d2-w64-relu-p0.1-batch"
    script = [answer(MLP, first), "I would use a wide network with dropout."]  # the second is no architecture
    archive = tmp_path / "a.db"
    with ScriptedLLMServer(script) as server:
        args = ["--task", table_task(tmp_path), "--propose-in", "mlp", "--model", MODEL, "--api-base", server.url]
        args += ["--budget", "2", "--schedule", "rounds", "--batch", "1", "--epochs", "1", "--archive", str(archive)]
        result = invoke(*args, "--json", env={"AGENTARCH_CACHE_DIR": str(cache_dir), "AGENTARCH_THREADS": "1"})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["proposed"] == 2 and summary["trained"] == 2, summary
    stats = summary["in_space"]
    assert (stats["queries"], stats["asks"], stats["valid"], stats["invalid"], stats["fallbacks"]) == (2, 2, 1, 1, 1)
    assert stats["fallback_reasons"] == {"invalid": 1} and stats["valid_rate"] == 0.5 and stats["schema_sent"] == 2
    assert "in space: 1 valid answers of 2 calls (50%), 1 of 2 proposals fell back" in run_summary_line(summary).plain

    # the requests carried the space's JSON schema; the second showed the first's score, from the archive
    assert len(server.requests) == 2
    for request in server.requests:
        assert request["response_format"]["json_schema"]["schema"] == MLP.schema()
    assert answer(MLP, first) in server.requests[1]["messages"][1]["content"]

    db = sqlite3.connect(archive)
    rows = db.execute(
        "SELECT id, proposer, space, arch, status, model, response, prompt, edit FROM candidates ORDER BY id"
    ).fetchall()
    assert [r[1:3] for r in rows] == [(IN_SPACE, "mlp")] * 2 and rows[0][3] == first
    assert MLP.validate(rows[1][3]) == rows[1][3] != first  # the fallback's uniform sample
    assert all(r[4] == "trained" and r[5] == MODEL and r[8] is None for r in rows)
    assert rows[1][6] == script[1] and "d<depth>-w<width>" in rows[1][7]  # the answer and the prompt are kept
    calls = db.execute("SELECT candidate_id, purpose, status FROM llm_calls ORDER BY id").fetchall()
    assert calls == [(rows[0][0], PURPOSE, "ok"), (rows[1][0], PURPOSE, "ok")]  # each call linked to its candidate


@pytest.mark.slow
@requires_bubblewrap
def test_proposals_in_flight_never_take_one_architecture_and_a_failed_call_falls_back(tmp_path, cache_dir):
    """Three proposals in flight at once (one slot, a queue of 2) ask a model that always answers the same network:
    one takes it, the others are told it is taken, asked again, and fall back to samples nobody holds; a call that
    fails for good also falls back. Nothing trains twice."""
    same = answer(MACRO, "d2-w8-k3-skip0-avg")
    # the first takes it (1 call), the two beside it are told twice it is taken (4), the fourth, started once the
    # first trains, is told it is evaluated (1) and its second call fails for good (1)
    script = [same] * 6 + [Reply(status=500, content="the model crashed")]
    with ScriptedLLMServer(script, default=same) as server:
        settings = load_settings(
            task="digits",
            propose_in="macro",
            model=MODEL,
            api_base=server.url,
            llm_retries=0,
            budget=4,
            epochs=1,
            threads=1,
            archive=tmp_path / "a.db",
            cache_dir=cache_dir,
        )
        summary = run.start(settings)
    assert summary["proposed"] == 4 and summary["trained"] == 4 and summary["duplicate"] == 0, summary
    stats = summary["in_space"]
    assert stats["queries"] == 4 and stats["asks"] == len(server.requests) == 7
    assert stats["valid"] == 6 and stats["no_answer"] == 1 and stats["repeats"] == 5 and stats["fallbacks"] == 3
    assert stats["fallback_reasons"] == {"repeat": 2, "no answer": 1}
    db = sqlite3.connect(settings.archive)
    archs = [a for (a,) in db.execute("SELECT arch FROM candidates WHERE space = 'macro' AND proposer = ?", [IN_SPACE])]
    assert len(archs) == 4 and len(set(archs)) == 4 and "d2-w8-k3-skip0-avg" in archs
    linked = db.execute("SELECT COUNT(*) FROM llm_calls WHERE candidate_id IS NOT NULL AND purpose = ?", [PURPOSE])
    assert linked.fetchone()[0] == 7


def test_an_architecture_another_proposal_holds_is_a_repeat_and_never_drawn():
    held, fresh = "d2-w64-relu-p0.1-batch", "d1-w128-gelu-p0.0-none"
    taken = {MLP.identity(held)}
    with ScriptedLLMServer([answer(MLP, held), answer(MLP, fresh)]) as server:
        model = InSpaceModel(LLMClient(MODEL, api_base=server.url, max_retries=0), get_task("digits"))
        search = InSpaceLLM(MLP, 0, model, claim=lambda arch: MLP.identity(arch) not in taken, tag="proposal 3")
        (proposal,) = search.propose(1, avoid=[held])
    assert proposal.arch == fresh and search.stats.repeats == 1 and len(search.exchanges) == 2
    assert answer(MLP, held) in server.requests[0]["messages"][1]["content"].split("do not propose these again")[1]
    assert search.exchanges[0].text == answer(MLP, held) and search.exchanges[1].messages[0]["role"] == "system"
    sampler = InSpaceLLM(MLP, 1, None, initial=50, claim=lambda arch: MLP.identity(arch) not in taken)
    assert held not in {p.arch for p in sampler.propose(50, avoid=[held])}


# -- what it refuses ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, said",
    [
        (["--propose-in", "lattice", "--model", MODEL], "--propose-in lattice: unknown search space 'lattice'"),
        (["--propose-in", "mlp", "--model", MODEL], "space 'mlp' builds table networks but task 'digits' is a image"),
        (["--propose-in", "macro"], "asks a model to choose architectures: give --model"),
        (["--propose-in", "macro", "--model", MODEL, "--edit-mode", "diff"], "give one or the other"),
        (
            ["--propose-in", "macro", "--model", MODEL, "--objective", "val:max", "--objective", "params:min"],
            "leave out --objective and --constraint",
        ),
    ],
)
def test_bad_settings_are_refused_before_a_run_opens_and_say_what_to_change(tmp_path, cache_dir, args, said):
    archive = tmp_path / "a.db"
    result = invoke("--task", "digits", *args, "--archive", str(archive), env={"AGENTARCH_CACHE_DIR": str(cache_dir)})
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split())
    if archive.exists():
        assert sqlite3.connect(archive).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_resume_cannot_change_the_space():
    stored = load_settings(task="digits", propose_in="macro", model=MODEL).model_dump(mode="json")
    with pytest.raises(run.RunError, match="--resume cannot change propose_in"):
        run.check_overrides(stored, {"propose_in": "nb201"})
    assert run.check_overrides(stored, {"propose_in": "macro", "queue": 0}) == {"queue": 0}
