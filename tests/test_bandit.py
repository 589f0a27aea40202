"""The model bandit: spec parsing, rewards, UCB choices, the per-model summary, and its state read from a real archive."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from agentarch.config import ModelArm, parse_arms
from agentarch.errors import UsageError
from agentarch.loop.bandit import Outcome, choose, history_from_archive, summary, value
from agentarch.store.archive import Archive
from agentarch.tasks.registry import get_task

A, B, C = ModelArm("openai/cheap"), ModelArm("openai/dear"), ModelArm("ollama/local")


def outcome(model: str, val: float | None, reference: float | None = 0.5, usd: float = 0.001, seconds: float = 2.0):
    return Outcome(model, "trained" if val is not None else "invalid", val, reference, usd, seconds, "max")


# -- specs ------------------------------------------------------------------------------------------


def test_specs_name_the_model_its_server_and_its_key_variable():
    assert ModelArm.parse("openai/gpt-4o-mini") == ModelArm("openai/gpt-4o-mini")
    local = ModelArm.parse(" ollama/qwen2.5-coder:7b@http://127.0.0.1:11434 ")
    assert local == ModelArm("ollama/qwen2.5-coder:7b", "http://127.0.0.1:11434")
    keyed = ModelArm.parse("openai/x@https://host.example/v1#MY_KEY_VAR")
    assert keyed == ModelArm("openai/x", "https://host.example/v1", "MY_KEY_VAR")
    assert ModelArm.parse("openai/x#OTHER_KEY") == ModelArm("openai/x", None, "OTHER_KEY")
    assert ModelArm.parse("vertex_ai/claude-3-5-sonnet@20240620").name == "vertex_ai/claude-3-5-sonnet@20240620"
    assert ModelArm.parse(keyed.spec) == keyed and ModelArm.parse(local.spec) == local


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "'nothing' is not a model name"),
        ("open ai/x", "'open ai/x' is not a model name"),
        ("@http://127.0.0.1:8000/v1", "'nothing' is not a model name"),
        ("ollama/qwen@127.0.0.1:11434", "needs http:// or https:// after the @"),
        ("ollama/qwen@localhost", "needs http:// or https:// after the @"),
        ("openai/x@http://", "is not an http(s) URL with a host"),
        ("openai/x@http://user:pw@host/v1", "holds an @: a key belongs in an environment variable"),
        ("openai/x#", "needs the NAME of an environment variable"),
        ("openai/x#sk-abc123secret", "never the key itself"),
    ],
)
def test_bad_specs_say_what_to_write(spec, says):
    with pytest.raises(UsageError) as err:
        ModelArm.parse(spec)
    assert says in str(err.value) and "MODEL[@API_BASE][#KEY_VARIABLE]" in str(err.value)
    assert "abc123secret" not in str(err.value) and "pw@" not in str(err.value)


def test_a_model_given_twice_is_refused():
    assert parse_arms(["a/x", "b/y@http://h:1"]) == [ModelArm("a/x"), ModelArm("b/y", "http://h:1")]
    with pytest.raises(UsageError, match="model a/x is given more than once"):
        parse_arms(["a/x", "a/x@http://other:8000"])


def test_the_key_comes_from_the_named_variable(monkeypatch):
    arm = ModelArm.parse("openai/x#AGENTARCH_TEST_KEY")
    monkeypatch.delenv("AGENTARCH_TEST_KEY", raising=False)
    with pytest.raises(UsageError, match=r"\$AGENTARCH_TEST_KEY, which is not set"):
        arm.api_key()
    monkeypatch.setenv("AGENTARCH_TEST_KEY", "k")
    assert arm.api_key() == "k" and A.api_key() is None


# -- rewards ----------------------------------------------------------------------------------------


def test_gain_is_the_clipped_improvement_in_the_tasks_direction():
    assert outcome("m", 0.6).gain == pytest.approx(0.1)
    assert outcome("m", 0.4).gain == 0.0
    assert outcome("m", None).gain == 0.0 and outcome("m", 0.9, reference=None).gain == 0.0
    mse = Outcome("m", "trained", 0.2, 0.5, 0.0, 1.0, "min")
    assert mse.gain == pytest.approx(0.3)
    assert Outcome("m", "duplicate", 0.9, 0.5, 0.0, 1.0, "max").gain == 0.0


def test_cost_is_usd_else_llm_seconds_at_the_local_price():
    assert outcome("m", 0.6, usd=0.002).cost() == 0.002
    assert outcome("m", 0.6, usd=0.0, seconds=36.0).cost() == pytest.approx(0.01)  # $1 an hour
    assert outcome("m", 0.6, usd=0.0, seconds=36.0).cost(local_usd_per_hour=2.0) == pytest.approx(0.02)
    # improvement per dollar, a ratio of sums: 0.1 over $0.004
    assert value([outcome("m", 0.6, usd=0.001), outcome("m", None, usd=0.003)]) == pytest.approx(25.0)
    assert value([]) == 0.0


# -- choosing ---------------------------------------------------------------------------------------


def test_untried_arms_go_first_in_the_given_order():
    rng = random.Random(0)
    assert choose([A, B, C], [], rng) == A
    assert choose([A, B, C], [outcome(A.name, 0.9)], rng) == B
    assert choose([A, B, C], [outcome(A.name, 0.9)], rng, pending={B.name: 1}) == C
    history = [outcome(A.name, 0.9), outcome(B.name, None), outcome(C.name, None), outcome("old/model", 0.99)]
    assert choose([C, A, ModelArm("new/model")], history, rng).name == "new/model"


def test_pending_proposals_spread_a_batch_over_the_arms():
    history = [outcome(A.name, 0.55), outcome(B.name, 0.55)]
    picks = Counter()
    pending: Counter[str] = Counter()
    for _ in range(6):
        arm = choose([A, B], history, random.Random(1), pending=pending)
        pending[arm.name] += 1
        picks[arm.name] += 1
    assert picks == {A.name: 3, B.name: 3}


def test_ties_are_broken_by_the_rng():
    history = [outcome(A.name, None), outcome(B.name, None)]
    assert {choose([A, B], history, random.Random(seed)).name for seed in range(20)} == {A.name, B.name}


def simulate(arms: list[ModelArm], world: dict[str, tuple[float, float, float]], n: int, seed: int) -> Counter[str]:
    """`n` proposals where model m improves with probability p by about `gain` at `usd` (0: priced by seconds)."""
    rng, history = random.Random(seed), []
    for _ in range(n):
        arm = choose(arms, history, rng)
        p, gain, usd = world[arm.name]
        improved = rng.random() < p
        val = 0.5 + gain * rng.uniform(0.5, 1.5) if improved else 0.5 - rng.uniform(0, 0.05)
        history.append(outcome(arm.name, val if rng.random() > 0.1 else None, usd=usd, seconds=20.0))
    return Counter(o.model for o in history)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_most_proposals_go_to_the_model_that_improves_cheaply(seed):
    # A improves 30% of the time at $0.001; B 5% of the time, a little more, at $0.02.
    world = {A.name: (0.3, 0.01, 0.001), B.name: (0.05, 0.015, 0.02)}
    picks = simulate([A, B], world, 200, seed)
    assert picks[A.name] > 0.7 * 200 and picks[B.name] >= 2


def test_a_model_unlucky_at_first_is_not_starved():
    # A improved once in its first try, B (twice as good: 20% against 10%) failed its first three.
    picks = []
    for seed in range(3):
        rng, history = random.Random(seed), [outcome(A.name, 0.51)] + [outcome(B.name, 0.49)] * 3
        for _ in range(200):
            arm = choose([A, B], history, rng)
            history.append(outcome(arm.name, 0.51 if rng.random() < (0.1 if arm == A else 0.2) else 0.49))
        picks.append(Counter(o.model for o in history[4:])[B.name])
    assert min(picks) > 0.3 * 200 and sum(picks) > 0.5 * 600, picks  # locked in on A, B would get about 4%


def test_a_local_model_competes_by_its_seconds():
    # 20 s at $1/h is $0.0056 a proposal: the local model's 40% beat the paid one's 10% at $0.01.
    world = {B.name: (0.1, 0.01, 0.01), C.name: (0.4, 0.01, 0.0)}
    assert simulate([B, C], world, 200, 0)[C.name] > 0.7 * 200


# -- the summary ------------------------------------------------------------------------------------


def test_summary_counts_per_model_arms_first_then_dropped_models():
    history = [
        outcome(A.name, 0.6, usd=0.001, seconds=1.5),
        outcome(A.name, None, usd=0.001, seconds=1.0),
        outcome("old/model", 0.4, usd=0.5, seconds=10.0),
    ]
    rows = summary([B, A], history)
    assert [row["model"] for row in rows] == [B.name, A.name, "old/model"]
    assert rows[0] == {
        "model": B.name,
        "active": True,
        "proposals": 0,
        "trained": 0,
        "valid_rate": None,
        "improvements": 0,
        "spend_usd": 0.0,
        "llm_seconds": 0.0,
        "reward": 0.0,
    }
    assert rows[1] | {"reward": None} == {
        "model": A.name,
        "active": True,
        "proposals": 2,
        "trained": 1,
        "valid_rate": 0.5,
        "improvements": 1,
        "spend_usd": 0.002,
        "llm_seconds": 2.5,
        "reward": None,
    }
    assert rows[1]["reward"] == pytest.approx(50.0) and rows[2]["active"] is False and rows[2]["reward"] == 0.0


# -- state from the archive -------------------------------------------------------------------------


def fill(db: Archive) -> str:
    """A run where model a improves on its parent, model b falls short, a seed was verified longer, and model c's
    server never answered (two attempts, no candidate)."""
    db.register_task(get_task("digits"))
    run = db.start_run("llm", "digits", "llm", {})

    def evaluation(val: float, epochs: int = 5) -> dict:
        return {"status": "trained", "val_accuracy": val, "test_accuracy": val, "fidelity": epochs, "seed": 0}

    def add(model: str | None, val: float | None, parents: list[int], usd: float, seconds: float) -> int:
        calls = []
        if model is not None:
            call = {"run_id": run, "purpose": "propose", "model": model, "attempt": 1, "status": "ok"}
            calls.append(db.record_llm_call(call | {"cost_usd": usd, "latency_s": seconds}))
        row = {"task": "digits", "name": "n", "proposer": "llm" if model else "seed", "code": f"# {val}"}
        row |= {"status": "trained" if val is not None else "invalid", "parents": parents, "model": model}
        return db.record(row | {"run_id": run}, None if val is None else evaluation(val), llm_calls=calls)

    seed = add(None, 0.80, [], 0.0, 0.0)
    db.add_evaluation(seed, "digits", evaluation(0.95, epochs=15) | {"stage": "verify"})
    first = add("a/x", 0.85, [], 0.002, 3.0)  # no parent: measured against the seed at 5 epochs
    add("a/x", 0.90, [first], 0.002, 3.0)
    add("b/y", 0.82, [seed], 0.03, 9.0)  # the seed's 5-epoch score is its reference, not its verified 0.95
    add("b/y", None, [seed], 0.03, 9.0)
    for attempt in (1, 2):
        db.record_llm_call(
            {"run_id": run, "purpose": "propose", "model": "c/z", "attempt": attempt, "status": "timeout"}
            | {"cost_usd": 0.0, "latency_s": 60.0}
        )
    return run


def test_history_from_a_real_archive(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        run = fill(db)
        history = history_from_archive(db, run, "digits")
        assert history_from_archive(db, None, "digits") == history
        assert history_from_archive(db, "llm-other-run", "digits") == []
    assert history == [
        Outcome("a/x", "trained", 0.85, 0.80, 0.002, 3.0, "max"),
        Outcome("a/x", "trained", 0.90, 0.85, 0.002, 3.0, "max"),
        Outcome("b/y", "trained", 0.82, 0.80, 0.03, 9.0, "max"),
        Outcome("b/y", "invalid", None, 0.95, 0.03, 9.0, "max"),  # untrained: reference by the scoring evaluation
        Outcome("c/z", "failed", None, None, 0.0, 120.0, "max"),
    ]
    rows = {row["model"]: row for row in summary(parse_arms(["a/x", "b/y", "c/z"]), history)}
    assert rows["a/x"]["improvements"] == 2 and rows["b/y"]["improvements"] == 1
    assert rows["c/z"]["proposals"] == 1 and rows["c/z"]["trained"] == 0


def test_a_reopened_archive_gives_the_same_state_and_the_same_choice(tmp_path):
    arms = parse_arms(["a/x", "b/y", "c/z", "d/new"])
    with Archive(tmp_path / "a.db") as db:
        run = fill(db)
        before = history_from_archive(db, run, "digits")
        chosen = [choose(arms, before, random.Random(7)) for _ in range(3)]
    with Archive(tmp_path / "a.db") as db:  # a resumed run: nothing but the file
        after = history_from_archive(db, run, "digits")
    assert after == before and [choose(arms, after, random.Random(7)) for _ in range(3)] == chosen
    assert chosen[0].name == "d/new"  # a model added on resume is tried first
    assert choose(arms[:3], after, random.Random(7)).name == "a/x"
