"""Few-shot selection from a real archive, the prompt templates, and reading code out of LLM answers."""

from __future__ import annotations

import itertools
import random
import shutil
from collections import Counter

import jinja2
import pytest

from agentarch.evaluation.checks import ALLOWED_IMPORT_ROOTS, HPARAM_BOUNDS, check
from agentarch.llm import fewshot
from agentarch.llm.fewshot import FewShot, select
from agentarch.llm.prompts import (
    PROMPTS_DIR,
    ExtractError,
    PromptError,
    analyze_messages,
    extract_code,
    propose_messages,
    render,
    repair_messages,
)
from agentarch.store.archive import Archive
from agentarch.tasks.builtin import TASKS
from agentarch.tasks.registry import get_task
from tests.conftest import REPO

TRAINABLE = [name for name, task in TASKS.items() if task.kind in ("image", "token")]
SEEDS = {
    "image": (REPO / "archive/seeds/image/cnn.py").read_text(),
    "token": (REPO / "archive/seeds/token/transformer.py").read_text(),
}
_hashes = itertools.count()


def add(
    archive: Archive,
    val: float | None,
    *,
    task: str = "digits",
    proposer: str = "llm",
    params: int = 10_000,
    parents: tuple[int, ...] = (),
    status: str = "trained",
    analysis: str | None = None,
) -> int:
    """Record one candidate; a trained one (val given) gets an evaluation with test = val - 0.01."""
    n = next(_hashes)
    code = f"{SEEDS[get_task(task).kind]}\n# variant {n}\n"
    row = {
        "task": task,
        "name": f"c{n}.py",
        "proposer": proposer,
        "code": code,
        "status": status,
        "text_hash": f"t{n}",
        "parents": list(parents),
        "params": params,
        "analysis": analysis,
    }
    evaluation = (
        None
        if val is None
        else {"status": "trained", "val_accuracy": val, "test_accuracy": val - 0.01, "fidelity": 5, "seed": 0}
    )
    return archive.record(row, evaluation)


@pytest.fixture
def archive(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        yield db


def parents(archive: Archive, strategy: str, draws: int, seed: int = 0) -> Counter[int]:
    rng = random.Random(seed)
    return Counter(select(archive, "digits", 3, strategy, rng).parent_id for _ in range(draws))


def with_parent(archive: Archive, parent: int, n: int, strategy: str = "topk") -> FewShot:
    """The first seeded draw whose parent is `parent`, so that the examples after it can be checked."""
    for seed in range(200):
        shot = select(archive, "digits", n, strategy, random.Random(seed))
        if shot.parent_id == parent:
            return shot
    raise AssertionError(f"candidate {parent} was never drawn as the parent")


# -- parent selection -------------------------------------------------------------------------------


def test_topk_draws_uniformly_among_the_five_best(archive):
    ids = [add(archive, val) for val in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
    drawn = parents(archive, "topk", 1000)
    assert set(drawn) == set(ids[3:])
    assert min(drawn.values()) > 140  # 200 expected each


def test_weighted_prefers_high_validation_and_penalises_many_children(archive):
    fresh = add(archive, 0.9)
    tried = add(archive, 0.9)
    weak = add(archive, 0.5)
    for _ in range(4):  # children count whatever became of them, and are not eligible themselves
        add(archive, None, parents=(tried,), status="failed")
    drawn = parents(archive, "weighted", 3000)
    # Weights 0.5, 0.5 / 5 and sigmoid(2 * -0.4 / 0.19): about 81%, 16% and 2%.
    assert set(drawn) == {fresh, tried, weak}
    assert drawn[fresh] > 3 * drawn[tried] > 3 * drawn[weak] > 0


def test_niches_draws_the_elite_of_each_size_class_uniformly(archive):
    small = [add(archive, 0.5, params=1_000), add(archive, 0.6, params=1_200)]
    mid = [add(archive, 0.7, params=20_000), add(archive, 0.4, params=25_000)]
    large = add(archive, 0.3, params=2_000_000)
    drawn = parents(archive, "niches", 900)
    assert set(drawn) == {small[1], mid[0], large}
    assert min(drawn.values()) > 220  # 300 expected each


def test_the_same_seed_gives_the_same_choice(archive):
    for i in range(12):
        add(archive, 0.5 + i / 30, params=10 ** (2 + i % 5), proposer=("llm", "rea")[i % 2])
    for strategy in fewshot.STRATEGIES:
        runs = [
            [select(archive, "digits", 4, strategy, random.Random(7)).example_ids for _ in range(3)] for _ in range(2)
        ]
        assert runs[0] == runs[1], strategy
        assert (
            len({tuple(select(archive, "digits", 4, strategy, random.Random(s)).example_ids) for s in range(20)}) > 1
        ), strategy


# -- examples ---------------------------------------------------------------------------------------


@pytest.fixture
def mixed(archive):
    """Ids by role: three size classes (1e3, 1e5, 1e7 parameters), two baselines, LLM candidates."""
    return {
        "best": add(archive, 0.95, params=100_000),
        "runner_up": add(archive, 0.90, params=100_000),
        "rea": add(archive, 0.85, params=100_000, proposer="rea"),
        "random": add(archive, 0.80, params=100_000, proposer="random"),
        "small": add(archive, 0.60, params=1_000),
        "large": add(archive, 0.50, params=10_000_000),
    }


def test_examples_are_parent_best_baseline_best_then_other_size_classes(archive, mixed):
    m = mixed
    expected = [m["runner_up"], m["best"], m["rea"], m["small"], m["large"], m["random"]]
    for n in range(1, 7):
        shot = with_parent(archive, m["runner_up"], n)
        assert shot.example_ids == expected[:n]
        assert shot.parent is shot.examples[0] and shot.parent_id == m["runner_up"]
    assert with_parent(archive, m["best"], 3).example_ids == [m["best"], m["rea"], m["small"]]
    assert with_parent(archive, m["rea"], 3).example_ids == [m["rea"], m["best"], m["small"]]


def test_example_rows_carry_code_scores_and_analysis(archive):
    cid = add(archive, 0.9, analysis="Wider stem helped.", proposer="tpe")
    [row] = select(archive, "digits", 3, rng=random.Random(0)).examples
    assert row["id"] == cid and row["proposer"] == "tpe" and row["params"] == 10_000
    assert row["val_accuracy"] == 0.9 and row["test_accuracy"] == pytest.approx(0.89)
    assert row["analysis"] == "Wider stem helped." and "class Net" in row["code"]


def test_only_trained_candidates_of_the_task_are_eligible(archive):
    trained = {add(archive, 0.7), add(archive, 0.6)}
    add(archive, None, status="failed")
    add(archive, None, status="trained")  # no evaluation: nothing to rank it by
    add(archive, 0.99, status="duplicate")
    add(archive, 0.99, task="mqar")
    for strategy in fewshot.STRATEGIES:
        shot = select(archive, "digits", 6, strategy, random.Random(1))
        assert set(shot.example_ids) == trained and len(shot.examples) == 2


def test_zero_examples_or_an_empty_archive_give_no_parent(archive):
    assert select(archive, "digits", 3) == FewShot(parent=None, examples=[], strategy="topk")
    add(archive, 0.9)
    shot = select(archive, "digits", 0, "niches")
    assert shot.parent is None and shot.examples == [] and shot.example_ids == [] and shot.parent_id is None


@pytest.mark.parametrize("n", [-1, 7, 2.5, True, "3"])
def test_bad_example_counts_are_refused(archive, n):
    with pytest.raises(ValueError, match="from 0 to 6"):
        select(archive, "digits", n)


def test_unknown_strategy_is_refused_with_the_allowed_ones(archive):
    with pytest.raises(ValueError, match="topk, weighted, niches"):
        select(archive, "digits", 3, "best")


# -- prompts ----------------------------------------------------------------------------------------


def test_every_trainable_task_has_a_card():
    for name in TRAINABLE:
        assert (PROMPTS_DIR / "tasks" / f"{name}.j2").is_file(), name


@pytest.mark.parametrize("name", TRAINABLE)
@pytest.mark.parametrize("n", [0, 3])
def test_every_template_renders_for_every_trainable_task(tmp_path, name, n):
    task = get_task(name)
    with Archive(tmp_path / "a.db") as db:
        ids = [add(db, val, task=name, analysis=f"analysis {i}") for i, val in enumerate((0.5, 0.7, 0.6))]
        shot = select(db, name, n, "topk", random.Random(0))
        system, user = propose_messages(task, shot, batch_note="Proposal 2 of 4: try something different.")
        failed = {**db.scored(ids[1]), "code": "class Net: pass\n", "status": "failed", "reason": "boom"}
        analyses = [
            analyze_messages(task, {**db.scored(ids[0]), "code": "x = 1\n"}, None),
            analyze_messages(task, failed, {**db.scored(ids[0]), "code": "parent code\n"}),
        ]
    assert system["role"] == "system" and user["role"] == "user"
    assert task.description in user["content"] and f"{task.max_params:,}" in system["content"]
    assert f"`in_shape = {task.in_shape}`" in system["content"] and "Intent:" in system["content"]
    assert "Proposal 2 of 4" in user["content"]
    if n == 0:
        assert "strong first design" in user["content"] and "Candidate" not in user["content"]
    else:
        for example in shot.examples:
            assert f"### Candidate {example['id']}" in user["content"] and example["code"].strip() in user["content"]
            assert example["analysis"] in user["content"]
        assert user["content"].count("the parent, improve on this one") == 1
        assert f"### Candidate {shot.parent_id} -- the parent" in user["content"]
    repair = repair_messages(task, "class Net: pass\n", "Traceback: boom", attempt=2)
    assert [m["role"] for m in repair] == ["system", "user"] and "Traceback: boom" in repair[1]["content"]
    assert "repair attempt 2" in repair[1]["content"] and "whole fixed module" in repair[1]["content"]
    alone, versus = (messages[1]["content"] for messages in analyses)
    assert "120 words" in alone and "parent" not in alone
    assert "failed (boom)" in versus and "parent code" in versus and "what changed versus the parent" in versus


def test_system_prompt_states_the_real_limits():
    task = get_task("cifar10")
    system = propose_messages(task, FewShot(None, [], "topk"))[0]["content"]
    for key, (low, high) in HPARAM_BOUNDS.items():
        assert f"`{key}`: {low} to {high}" in system
    for module in ALLOWED_IMPORT_ROOTS - {"__future__"}:
        assert module in system
    assert "at most 5,000,000 trainable parameters" in system
    assert "class Net(nn.Module)" in system and "(B, seq_len, num_classes)" in system
    assert "without files or network" in system and "ONE\n```python" in system


def test_a_missing_variable_raises():
    with pytest.raises(jinja2.UndefinedError):
        render("propose.j2", task=get_task("digits"))


def test_a_users_prompts_folder_is_used_and_a_missing_template_is_named(tmp_path):
    mine = tmp_path / "my-prompts"
    shutil.copytree(PROMPTS_DIR, mine)
    (mine / "system.j2").write_text("Be brief about {{ task.name }}.\n")
    task = get_task("digits")
    system, _ = propose_messages(task, FewShot(None, [], "topk"), prompts_dir=mine)
    assert system["content"] == "Be brief about digits.\n"
    (mine / "tasks" / "digits.j2").unlink()  # a task without its own card (a task file's) gets the generic one
    _, user = propose_messages(task, FewShot(None, [], "topk"), prompts_dir=mine)
    assert "## Task: digits" in user["content"] and "Notes:" not in user["content"]
    (mine / "propose.j2").unlink()
    with pytest.raises(PromptError, match=str(mine / "propose.j2")):
        propose_messages(task, FewShot(None, [], "topk"), prompts_dir=mine)


def test_a_table_task_has_no_prompts():
    with pytest.raises(ValueError, match="no code to propose"):
        propose_messages(get_task("nb201-cifar10"), FewShot(None, [], "topk"))


def test_repair_shows_the_tail_of_a_long_error():
    error = "HEAD " + "x" * 10_000 + " TAIL: RuntimeError"
    user = repair_messages(get_task("mqar"), "code\n", error, attempt=1)[1]["content"]
    assert "TAIL: RuntimeError" in user and "HEAD" not in user and "characters cut" in user
    assert "again" not in user
    assert len(user) < 4_500


# -- reading answers --------------------------------------------------------------------------------

CODE = SEEDS["image"]


def fenced(code: str, label: str = "python") -> str:
    return f"```{label}\n{code.rstrip()}\n```"


def test_a_good_answer():
    got = extract_code(f"Intent: widen the stem to keep more detail.\n\n{fenced(CODE)}\n")
    assert got.code == CODE and got.intent == "widen the stem to keep more detail."
    assert check(got.code).ok


def test_code_wrapped_in_prose():
    answer = (
        f"Sure! Here is my proposal.\n\n**Intent:** replace the max-pool with a strided conv,\nwhich keeps "
        f"more information.\n{fenced(CODE)}\n\nThis should train quickly because it is small."
    )
    got = extract_code(answer)
    assert got.code == CODE
    assert got.intent == "replace the max-pool with a strided conv, which keeps more information."


def test_two_blocks_pick_the_one_defining_net():
    helper = "def act(x):\n    return x.relu()\n"
    got = extract_code(
        f"First a helper:\n{fenced(helper)}\nThen the module:\n{fenced(CODE)}\nUsage:\n"
        f"{fenced('net = Net((1, 8, 8), 10)', 'python')}"
    )
    assert got.code == CODE and got.intent is None
    revised = CODE.replace("width: int = 32", "width: int = 48")
    assert extract_code(f"{fenced(CODE)}\nOn reflection, wider:\n{fenced(revised)}").code == revised


def test_unlabelled_fence_and_bare_code():
    assert extract_code(fenced(CODE, label="")).code == CODE
    assert extract_code(CODE).code == CODE
    got = extract_code(f"Intent: a plain CNN.\n\n{CODE}")
    assert got.code == CODE and got.intent == "a plain CNN."


def test_a_truncated_answer_says_it_was_cut_off():
    answer = f"Intent: deeper.\n\n```python\n{CODE[: len(CODE) // 2]}"
    with pytest.raises(ExtractError, match="the answer was cut off"):
        extract_code(answer)


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ("", "the answer was empty"),
        ("   \n\n", "the answer was empty"),
        ("I think a ResNet would work well here, with more channels.", "holds no code"),
        ("Intent: a ResNet.\n\nI would use residual blocks.", "holds no code"),
        ("import torch\nx = torch.zeros(3)\n", "holds no code"),
        (fenced("def helper():\n    pass\n"), "defines `class Net`"),
    ],
)
def test_answers_without_usable_code_are_refused(answer, says):
    with pytest.raises(ExtractError, match=says):
        extract_code(answer)


def test_the_prompt_command_prints_what_the_llm_would_see(tmp_path):
    from typer.testing import CliRunner

    from agentarch.cli import app

    result = CliRunner().invoke(app, ["prompt", "--task", "digits", "--archive", str(tmp_path / "a.db")])
    assert result.exit_code == 0, result.output
    assert "system" in result.output and "class Net" in result.output and "(1, 8, 8)" in result.output
    bad = CliRunner().invoke(
        app, ["prompt", "--task", "digits", "--examples", "9", "--archive", str(tmp_path / "a.db")]
    )
    assert bad.exit_code == 2 and "examples" in bad.output


def test_the_contract_states_every_kind_and_this_tasks_shapes():
    from agentarch.llm.prompts import _system
    from agentarch.tasks.task import Task

    lm = _system(get_task("stdlib-bytes"), "propose", None)["content"]
    for kind in ("Image tasks", "Token tasks", "Sequence tasks", "Table tasks", "Language-modelling (lm) tasks"):
        assert kind in lm
    assert "must be\n  causal" in lm and "stdlib-bytes, is a language-modelling (lm) task" in lm
    assert "bits per byte (lower is better)" in lm
    ids = Task("ids", "sequence", (20,), 2, "macro_f1", 1, 16, 1e-3, 0.0, 10**6, False, "Example.", vocab_size=9)
    assert "`vocab_size = 9`" in _system(ids, "propose", None)["content"]
    table = Task("tab", "table", (7,), 2, "mse", 1, 16, 1e-3, 0.0, 10**6, False, "Example table.")
    content = _system(table, "propose", None)["content"]
    assert "tab, is a table task scored by mse (a regression)" in content and "(lower is better)" in content
    card = render("propose.j2", task=table, examples=[], parent=None, batch_note="", goals=None, notebook=None)
    assert "2 regression target(s)" in card and "lower is better" in card
