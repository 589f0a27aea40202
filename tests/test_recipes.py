"""Training recipes (issue 27): a candidate's RECIPE read statically and checked against the task's bounds, trained by
the sandbox's trainer, recorded with its evaluation, and searched with the architecture by `--search-recipe`."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import optuna
import pytest
import sqlite_utils
import torch
from agentarch.runner import trainer
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.config import load_settings
from agentarch.evaluation.checks import check
from agentarch.evaluation.evaluator import Evaluator
from agentarch.llm import prompts
from agentarch.llm.fewshot import FewShot
from agentarch.search.proposers.base import Observation
from agentarch.search.proposers.baselines import RegularizedEvolution
from agentarch.search.recipes import RecipeSpace, archived, join, split
from agentarch.search.spaces import get_space
from agentarch.store.archive import Archive
from agentarch.tasks import taskfiles
from agentarch.tasks.recipes import RecipeBounds, sensible, with_recipe
from agentarch.tasks.registry import get_task
from agentarch.web import create_app
from tests.conftest import NET, requires_bubblewrap
from tests.web_client import Browser

DIGITS = get_task("digits")
SGD = {"optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0005, "schedule": "step", "augment": ["shift"]}


def checked(recipe_source: str, task=DIGITS, hparams: str = ""):
    return check(f"{NET}\n{hparams}\nRECIPE = {recipe_source}\n", task.kind, task.recipe_bounds())


def test_a_declared_recipe_is_read_without_running_it_in_canonical_form():
    result = checked(repr(SGD))
    assert result.ok, result.reason
    assert result.recipe == {**SGD, "lr": 0.05, "weight_decay": 0.0005}
    assert list(result.recipe) == ["optimizer", "lr", "weight_decay", "schedule", "augment"]
    assert check(NET, "image", DIGITS.recipe_bounds()).recipe == {}  # none declared: the task's default


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ('{"optimizer": "lion"}', "RECIPE['optimizer'] is 'lion'; this task allows adamw, adam, sgd, nesterov"),
        ('{"lr": 5.0}', "RECIPE['lr']=5 is outside this task's [0.0001, 0.3]"),
        ('{"augment": ["flip"]}', "augmentation 'flip' is not allowed on this image task (allowed: shift, noise)"),
        ('{"epochs": 500}', "unknown RECIPE key 'epochs'"),
        ('{"batch_size": 8}', "unknown RECIPE key 'batch_size'"),
        ('{"label_smoothing": 0.9}', "outside this task's [0, 0.2]"),
        ('{"lr": "fast"}', "RECIPE['lr'] must be a number"),
        ('["sgd"]', "RECIPE must be a dict"),
    ],
)
def test_a_recipe_out_of_the_tasks_bounds_is_invalid_and_says_what_to_change(source, says):
    result = checked(source)
    assert not result.ok
    assert says in (result.reason or "")
    assert result.recipe == {}


def test_label_smoothing_is_refused_where_there_are_no_class_labels():
    result = checked('{"label_smoothing": 0.1}', get_task("digits-sr2"))
    assert "outside this task's [0, 0]" in (result.reason or "")
    assert "class labels only" in (result.reason or "")


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{'lr': " + "1" * 3000 + "}", "RECIPE is 3008 characters"),
        ("{'x': [" + "0," * 5000 + "]}", "characters; a recipe is a few keys"),
        ("dict(lr=0.1)", "RECIPE must be a literal dict"),
        ("{'lr': 0.1 if True else 0.2}", "RECIPE must be a literal dict"),
        ("__import__('pathlib').Path('PWNED').write_text('x')", "RECIPE must be a literal dict"),
    ],
)
def test_a_hostile_recipe_is_refused_without_running_anything(source, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = checked(source)
    assert not result.ok and says in (result.reason or "")
    assert not (tmp_path / "PWNED").exists()


def test_a_knob_set_in_both_hparams_and_recipe_is_refused():
    result = checked('{"lr": 0.01}', hparams='HPARAMS = {"lr": 0.02}')
    assert "lr set in both HPARAMS and RECIPE; keep them in RECIPE only" in (result.reason or "")


def test_a_task_file_sets_the_bounds(tmp_path):
    path = tmp_path / "task.toml"
    path.write_text(
        'name = "t"\ndescription = "d"\nkind = "image"\n[data]\nsource = "npz"\npath = "d.npz"\n'
        '[recipe]\noptimizers = ["sgd"]\nlr = [0.01, 0.1]\naugmentations = ["flip"]\n'
    )
    bounds = taskfiles.parse(path).recipe
    assert bounds == RecipeBounds(optimizers=("sgd",), lr=(0.01, 0.1), augmentations=("flip",))
    path.write_text(path.read_text().replace('["sgd"]', '["lion"]'))
    with pytest.raises(Exception, match="recipe optimizers: unknown lion"):
        taskfiles.parse(path)


def test_a_recipe_cannot_buy_epochs_and_fills_the_tasks_defaults(tmp_path):
    settings = load_settings(task="digits", epochs=3, archive=tmp_path / "a.db")
    with Archive(settings.archive) as db:
        evaluator = Evaluator(db, settings)
        cfg = evaluator.train_config({}, None, {"optimizer": "sgd", "lr": 0.05})
        default = evaluator.train_config({})
    assert cfg["epochs"] == default["epochs"] == 3 and cfg["max_seconds"] == default["max_seconds"]
    assert cfg["batch_size"] == default["batch_size"]
    assert (cfg["optimizer"], cfg["lr"], cfg["schedule"], cfg["weight_decay"]) == ("sgd", 0.05, "cosine", 0.01)
    assert (default["optimizer"], default["lr"], default["warmup_frac"], default["augment"]) == (
        "adamw",
        3e-3,
        0.05,
        [],
    )


def _curve(**recipe) -> list[float]:
    torch.manual_seed(0)
    x, y = torch.randn(96, 1, 8, 8), torch.randint(0, 10, (96,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    cfg = trainer.TrainConfig(epochs=2, batch_size=16, lr=0.05, weight_decay=0.01, **recipe)
    result = trainer.train(model, trainer.Inputs("image", x, y, None, None), cfg, torch.device("cpu"))
    return [point["loss"] for point in result.curve]


def test_the_optimizer_schedule_and_augmentations_change_training_and_each_run_repeats():
    default = _curve()
    assert _curve() == default
    for recipe in ({"optimizer": "sgd"}, {"optimizer": "nesterov"}, {"optimizer": "adam"}, {"schedule": "constant"}):
        assert _curve(**recipe) != default, recipe
    assert _curve(optimizer="sgd") != _curve(optimizer="nesterov")
    assert _curve(augment=["shift", "noise"]) == _curve(augment=["shift", "noise"]) != default


def test_the_schedules():
    at = [trainer.lr_at(step, 100, 1.0, 0.0, "step") for step in (0, 49, 50, 74, 75, 99)]
    assert at == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    assert trainer.lr_at(50, 100, 1.0, 0.0, "linear") == 0.5
    assert trainer.lr_at(90, 100, 1.0, 0.1, "constant") == 1.0
    assert trainer.lr_at(50, 100, 1.0, 0.0) == pytest.approx(0.5)  # cosine, the default


def test_a_dense_tasks_flip_mirrors_the_target_with_its_input():
    x, y = torch.rand(64, 1, 4, 4), torch.rand(64, 1, 8, 8)
    generator = torch.Generator().manual_seed(0)
    fx, fy = trainer.augment("dense", x.clone(), y.clone(), ["flip"], generator)
    flipped = [i for i in range(64) if not torch.equal(fx[i], x[i])]
    assert 10 < len(flipped) < 54
    assert all(torch.equal(fx[i], x[i].flip(-1)) and torch.equal(fy[i], y[i].flip(-1)) for i in flipped)
    ids = torch.randint(0, 5, (4, 6))
    assert trainer.augment("token", ids, ids, ["noise"], generator)[0] is ids  # ids are never touched


def test_the_recipe_space_samples_mutates_and_renders_inside_the_bounds():
    space, rng = RecipeSpace(get_space("macro"), DIGITS), random.Random(0)
    points = [space.sample(rng) for _ in range(20)]
    for point in points:
        assert space.validate(point) == point
        code = space.render(point, DIGITS)
        result = check(code, "image", DIGITS.recipe_bounds())
        assert result.ok and result.recipe == split(point)[1]
        assert space.parse_code(code) == point
        assert archived(space, point) == ("macro", split(point)[0])
    assert len({split(p)[1]["optimizer"] for p in points}) > 1
    mutants = [space.mutate(points[0], rng) for _ in range(40)]
    assert all(m != points[0] for m in mutants)
    assert any(split(m)[0] == split(points[0])[0] for m in mutants)  # the recipe alone moved
    assert any(split(m)[1] == split(points[0])[1] for m in mutants)  # the architecture alone moved
    assert 3e-3 in space.menus["lr"]  # the task's own default stays reachable
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.enqueue_trial(space.trial_params(points[0]))
    assert space.suggest(study.ask()) == points[0]


def differing(a: dict, b: dict) -> set[str]:
    return {key for key in a if a[key] != b[key]}


def test_a_sample_starts_near_the_tasks_default_with_a_learning_rate_that_suits_its_optimizer():
    space = RecipeSpace(get_space("macro"), DIGITS)
    assert space.sensible["adamw"] == (3e-3, 0.01) and space.sensible["sgd"] == (0.048, 5e-4)
    samples = [split(space.sample(random.Random(seed)))[1] for seed in range(200)]
    assert samples[:20] == [split(space.sample(random.Random(seed)))[1] for seed in range(20)]  # seeded
    for recipe in samples:
        sensible_lr, _ = space.sensible[recipe["optimizer"]]
        assert 1 / 3 <= recipe["lr"] / sensible_lr <= 3  # within x/÷ 2.8 of what its optimizer suits
        assert recipe["lr"] in space.menus["lr"]
        assert len(differing(recipe, DIGITS.default_recipe()) - {"lr", "optimizer", "weight_decay"}) <= 4
    optimizers = Counter(recipe["optimizer"] for recipe in samples)
    assert optimizers["adamw"] > 100 and set(optimizers) == {"adamw", "adam", "sgd", "nesterov"}
    assert min(r["lr"] for r in samples if r["optimizer"] == "sgd") >= 0.017  # never SGD at 1e-4
    assert max(r["lr"] for r in samples if r["optimizer"] == "adamw") <= 0.0085  # never AdamW at 0.3
    assert all(r["weight_decay"] <= 1e-3 for r in samples if r["optimizer"] in ("sgd", "nesterov"))
    assert DIGITS.default_recipe() in samples  # the default itself is among the draws
    assert sum(r["schedule"] == "cosine" and not r["augment"] for r in samples) > 60


def test_a_mutation_moves_one_recipe_choice_one_sensible_step():
    space, rng = RecipeSpace(get_space("macro"), DIGITS), random.Random(1)
    start = space.sample(random.Random(3))
    arch, recipe = split(start)
    moved: Counter[str] = Counter()
    for _ in range(300):
        mutant_arch, mutant = split(space.mutate(start, rng))
        changed = differing(mutant, recipe)
        if mutant_arch != arch:
            assert not changed  # the architecture or the recipe, never both
            continue
        moved[frozenset(changed)] += 1
        if changed == {"lr"}:
            assert round(max(mutant["lr"] / recipe["lr"], recipe["lr"] / mutant["lr"]), 1) in (2.0, 2.8)
        elif "optimizer" in changed:
            old, new = space.sensible[recipe["optimizer"]][0], space.sensible[mutant["optimizer"]][0]
            assert mutant["lr"] / recipe["lr"] == pytest.approx(new / old, rel=0.1)  # rescaled to suit
        elif changed == {"label_smoothing"}:
            assert {mutant["label_smoothing"], recipe["label_smoothing"]} == {0.0, 0.1}
        elif changed == {"augment"}:
            assert len(set(mutant["augment"]) ^ set(recipe["augment"])) == 1
        else:
            assert len(changed) == 1
    assert moved[frozenset({"lr"})] and moved[frozenset({"augment"})] and moved[frozenset({"label_smoothing"})]
    assert any("optimizer" in keys for keys in moved)


def test_an_optimizer_switch_rescales_the_learning_rate_and_weight_decay():
    space = RecipeSpace(get_space("macro"), DIGITS)
    recipe = {**DIGITS.default_recipe(), "lr": 6e-3}
    point = join(split(space.sample(random.Random(0)))[0], recipe)
    switched = {}
    rng = random.Random(0)
    while len(switched) < 3:
        mutant = split(space.mutate(point, rng))[1]
        if mutant["optimizer"] != "adamw":
            switched[mutant["optimizer"]] = mutant
    assert switched["sgd"]["lr"] == switched["nesterov"]["lr"] == 0.096  # 16x AdamW's, as 0.048 is to 3e-3
    assert switched["sgd"]["weight_decay"] == 5e-4  # an L2 decay, not AdamW's decoupled 0.01
    assert switched["adam"]["lr"] == 6e-3 and switched["adam"]["weight_decay"] == 5e-4


def test_the_recipe_search_keeps_inside_a_task_files_bounds():
    bounds = RecipeBounds(optimizers=("sgd", "adam"), lr=(0.01, 0.05), weight_decay=(1e-3, 0.01), schedules=("step",))
    task = dataclasses.replace(DIGITS, recipe=bounds)  # its default (AdamW, 3e-3, wd 0.01) lies outside them
    assert sensible("sgd", task.default_recipe(), bounds) == (0.048, 1e-3)
    space, rng = RecipeSpace(get_space("macro"), task), random.Random(0)
    points = [space.sample(rng) for _ in range(30)]
    points += [space.mutate(point, rng) for point in points for _ in range(3)]
    for point in points:
        recipe = split(point)[1]
        assert recipe["optimizer"] in ("sgd", "adam") and recipe["schedule"] == "step"
        assert 0.01 <= recipe["lr"] <= 0.05 and 1e-3 <= recipe["weight_decay"] <= 0.01
        assert check(space.render(point, task), "image", bounds).ok
    assert {split(point)[1]["lr"] for point in points[:30]} >= {0.0283, 0.04}  # near SGD's 0.048, clipped


def test_rea_with_the_recipe_space_evolves_recipes():
    space = RecipeSpace(get_space("macro"), DIGITS)
    rea = RegularizedEvolution(space, seed=0, population=3, sample_size=2, distinct=True)
    for _ in range(12):
        (proposal,) = rea.propose(1)
        rea.observe([Observation(proposal, "trained", random.Random(proposal.arch).random())])
    archs = [m.arch for m in rea.population]
    assert all(split(a)[1] is not None for a in archs)
    assert len({split(a)[1]["optimizer"] + str(split(a)[1]["lr"]) for a in archs}) >= 1


def test_search_recipe_is_refused_on_a_table_task(tmp_path):
    result = CliRunner().invoke(
        app, ["baseline", "--task", "nb201-cifar10", "--search-recipe", "--archive", str(tmp_path / "a.db")]
    )
    assert result.exit_code == 2
    assert "--search-recipe searches how candidates are trained" in result.output


@pytest.mark.slow
@requires_bubblewrap
def test_a_declared_recipe_trains_and_is_recorded_and_another_recipe_is_no_duplicate(tmp_path, cache_dir, digits):
    settings = load_settings(task="digits", epochs=2, threads=1, cache_dir=cache_dir, archive=tmp_path / "a.db")
    with Archive(settings.archive) as db:
        evaluator = Evaluator(db, settings)
        plain = evaluator.evaluate(NET, "plain")
        sgd = evaluator.evaluate(with_recipe(NET, SGD), "sgd")
        assert (plain.status, sgd.status) == ("trained", "trained"), (plain.reason, sgd.reason)
        assert db.candidate(plain.id)["recipe"] is None
        assert db.candidate(sgd.id)["recipe"] == SGD
        (plain_eval,), (sgd_eval,) = db.evaluations(plain.id), db.evaluations(sgd.id)
        assert plain_eval["recipe"] == DIGITS.default_recipe()
        assert sgd_eval["recipe"] == {**DIGITS.default_recipe(), **SGD}
        assert plain_eval["curve"] != sgd_eval["curve"]
        assert plain_eval["fidelity"] == sgd_eval["fidelity"] == 2
        again = evaluator.evaluate(with_recipe(NET, SGD) + "\n", "sgd again")
        assert again.status == "duplicate" and again.duplicate_of == sgd.id


EVIL = "<script>alert(1)</script>\x1b[31m"


def test_the_recipe_is_shown_escaped_on_the_candidate_page_and_by_archive_show(tmp_path):
    """A tampered archive's recipe is text: escaped in HTML, control characters shown as codes on a terminal."""
    path = tmp_path / "a.db"
    declared = {**SGD, "optimizer": EVIL}
    with Archive(path) as db:
        db.register_task(DIGITS)
        candidate = {"task": "digits", "name": "n", "proposer": "user", "code": NET, "status": "trained"}
        evaluation = {"status": "trained", "fidelity": 2, "seed": 0, "val_accuracy": 0.5, "test_accuracy": 0.5}
        plain = db.record(candidate, {**evaluation, "recipe": DIGITS.default_recipe()})
        evil = db.record({**candidate, "recipe": declared}, {**evaluation, "recipe": declared})
    with Browser(create_app(path)) as client:
        page = client.get(f"/candidate/{evil}").text
        assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "lr 0.05 wd 0.0005 step +shift" in page
        page = client.get(f"/candidate/{plain}").text
        assert "the task's default (the code declares no RECIPE)" in page
        assert "trained with adamw lr 0.003 wd 0.01 cosine warmup 0.05" in page
    shown = CliRunner().invoke(app, ["archive", "show", str(evil), "--archive", str(path)]).output
    assert "recipe (its RECIPE): <script>alert(1)</script>\\x1b[31m lr 0.05" in shown
    assert "\x1b[31m" not in shown


def test_the_prompt_states_the_tasks_bounds_and_each_examples_recipe():
    dense = get_task("digits-sr2")
    parent = {"id": 3, "proposer": "rea", "val_accuracy": 25.0, "params": 100, "analysis": None}
    shot = FewShot(parent={**parent, "code": with_recipe(NET, SGD)}, examples=[], strategy="topk")
    shot.examples = [shot.parent, {**parent, "id": 4, "code": NET}]
    system, user = (m["content"] for m in prompts.propose_messages(DIGITS, shot))
    assert "`optimizer`: adamw, adam, sgd, nesterov" in system and "`label_smoothing`: 0 to 0.2" in system
    assert "`augment`: a list among shift, noise" in system
    assert "- Training recipe: sgd lr 0.05 wd 0.0005 step warmup 0.05 +shift\n" in user
    assert user.count("- Training recipe:") == 1  # the default recipe is stated once, in the system prompt
    system = prompts.propose_messages(dense, FewShot(parent=None, examples=[], strategy="topk"))[0]["content"]
    assert "`label_smoothing`: 0 to" not in system and "`augment`: a list among noise, flip" in system


def test_a_schema_16_archive_gains_the_recipe_columns_and_its_rows_read_as_the_default(tmp_path):
    path = tmp_path / "a.db"
    old = Archive.__new__(Archive)  # write exactly what agentarch with schema 16 wrote
    old.db = sqlite_utils.Database(path)
    old._create_v1()
    for version in range(2, 17):
        getattr(old, f"_upgrade_to_v{version}")()
    old.db["meta"].insert({"key": "schema_version", "value": "16"})
    row = {"task": "digits", "proposer": "user", "code": NET, "status": "trained", "created_at": "2026-01-01"}
    cid = old.db["candidates"].insert({**row, "parents": "[]"}).last_pk
    old.db["evaluations"].insert(
        {"candidate_id": cid, "task": "digits", "status": "trained", "created_at": "2026-01-01"}
    )
    old.db.close()
    with Archive(path) as db:
        assert db.schema_version() == 17
        assert db.candidate(cid)["recipe"] is None and db.evaluations(cid)[0]["recipe"] is None
        assert db.functional_hashes("digits", recipe=None) == {} and db.structures("digits", recipe=SGD) == []


def test_search_recipe_is_refused_in_a_run_a_model_writes(tmp_path):
    result = CliRunner().invoke(
        app, ["run", "--model", "openai/x", "--search-recipe", "--budget", "1", "--archive", str(tmp_path / "a.db")]
    )
    assert result.exit_code == 2 and "--search-recipe is the offline evolution's" in result.output


@pytest.mark.slow
@requires_bubblewrap
def test_an_offline_run_with_search_recipe_records_each_proposals_recipe(tmp_path, cache_dir, digits):
    from agentarch.loop import run as run_lib

    settings = load_settings(
        task="digits",
        epochs=1,
        threads=1,
        budget=2,
        population=2,
        sample_size=1,
        offline_space="macro",
        search_recipe=True,
        cache_dir=cache_dir,
        archive=tmp_path / "a.db",
    )
    summary = run_lib.start(settings)
    assert summary["trained"] == 2, summary
    with Archive(settings.archive) as db:
        rows = [db.candidate(i) for i in (1, 2)]
    for row in rows:
        assert row["space"] == "macro" and " RECIPE " not in row["arch"]
        assert set(row["recipe"]) == {
            "optimizer",
            "lr",
            "weight_decay",
            "schedule",
            "warmup_frac",
            "label_smoothing",
            "augment",
        }
        assert f"macro:{row['arch']} ({row['recipe']['optimizer']} lr " in row["name"]
    assert (rows[0]["arch"], rows[0]["recipe"]) != (rows[1]["arch"], rows[1]["recipe"])
