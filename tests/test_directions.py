"""Lower-is-better metrics: every ranking (listings, few-shot, summaries, halving, REA, TPE, plots, the report and the
web pages) picks the lowest MSE for a regression task and still the highest accuracy for a classification task.

Everything reads a real SQLite archive; the regression task is registered in it as an evaluator registers a task
file's task, so nothing here needs the task to be resolvable by name.
"""

import random
import time
from dataclasses import dataclass, replace

import optuna
import pytest
import sqlite_utils

from agentarch.evaluation.evaluator import EvalResult
from agentarch.evaluation.fidelity import survivors
from agentarch.llm import fewshot
from agentarch.loop.baseline import SeedResult, Trial, summarize
from agentarch.loop.summary import summarize as run_summary
from agentarch.search.proposers.base import Observation, Proposal
from agentarch.search.proposers.baselines import ALGOS, TPE, RegularizedEvolution, make_proposer
from agentarch.search.spaces import get_space
from agentarch.store import browse, measurements, run_progress
from agentarch.store.archive import Archive
from agentarch.store.handle import ArchiveError
from agentarch.store.schema import SCHEMA_VERSION
from agentarch.tasks.registry import get_task
from agentarch.tasks.tabular import nb201_table
from agentarch.web import create_app
from agentarch.web.plots import best_so_far_lines, pareto_front
from agentarch.web.report import write_report
from tests.web_client import Browser

HOUSES = replace(
    get_task("digits"),
    name="houses",
    kind="table",
    in_shape=(8,),
    num_classes=1,
    metric="mse",
    description="House prices from eight features (a CSV regression task file).",
)
DIGITS = get_task("digits")
# name, validation score, test score, parameters; the same scores for both tasks
SCORES = (("a", 0.5, 0.55, 1_000), ("b", 0.2, 0.25, 1_200), ("c", 0.9, 0.95, 50_000), ("d", 0.2, 0.3, 60_000))


def row(task: str, name: str, run_id: str, **extra: object) -> dict[str, object]:
    return {
        "task": task,
        "name": name,
        "run_id": run_id,
        "proposer": "user",
        "code": f"# {name}",
        "status": "trained",
        "text_hash": f"{task}-{name}",
        "parents": [],
        **extra,
    }


def trained(val: float, test: float, params: int, fidelity: int = 5) -> dict[str, object]:
    return {"status": "trained", "fidelity": fidelity, "seed": 0, "val_accuracy": val, "test_accuracy": test,
            "params": params, "curve": [{"step": 1, "loss": val}]}  # fmt: skip


@dataclass
class Sample:
    db: Archive
    ids: dict[str, dict[str, int]]  # task -> name -> candidate id
    runs: dict[str, str]  # task -> run id


@pytest.fixture
def sample(tmp_path):
    with Archive(tmp_path / "archive.db") as db:
        ids: dict[str, dict[str, int]] = {}
        runs = {}
        for task in (HOUSES, DIGITS):
            db.register_task(task)
            time.sleep(0.002)  # runs are listed by start time, kept to the millisecond
            runs[task.name] = db.start_run("run", task.name, "user", {})
            ids[task.name] = {
                name: db.record(row(task.name, name, runs[task.name]), trained(val, test, params))
                for name, val, test, params in SCORES
            }
            ids[task.name]["failed"] = db.record(
                row(task.name, "failed", runs[task.name], status="failed"), {"status": "failed", "error": "boom"}
            )
        yield Sample(db, ids, runs)


def names(sample: Sample, task: str, rows: list[dict[str, object]]) -> list[str]:
    by_id = {i: name for name, i in sample.ids[task].items()}
    return [by_id[r["id"]] for r in rows]  # type: ignore[index]


# -- the archive: tasks table, listings -------------------------------------------------------------


def test_the_archive_keeps_each_tasks_metric_and_direction(sample):
    db = sample.db
    assert db.task_info("houses") == {
        "name": "houses",
        "metric": "mse",
        "direction": "min",
        "kind": "table",
        "description": HOUSES.description,
        "created_at": db.task_info("houses")["created_at"],
    }
    assert (db.direction("houses"), db.direction("digits")) == ("min", "max")
    db.register_task(HOUSES)  # again: nothing changes
    assert db.db["tasks"].count == 2
    with pytest.raises(ArchiveError, match="scored by mse, not r2; give a task with another metric another name"):
        db.register_task(replace(HOUSES, metric="r2"))
    # a task it holds nothing of ranks as every task did before schema 7
    assert (db.task_info("nowhere")["metric"], db.direction("nowhere")) == ("accuracy", "max")
    row = db.scored(sample.ids["houses"]["a"])
    assert (row["metric"], row["direction"], row["val_accuracy"]) == ("mse", "min", 0.5)


def test_the_leaderboard_and_top_put_the_lowest_mse_first_and_the_highest_accuracy_first(sample):
    db = sample.db
    board = {t: names(sample, t, browse.leaderboard(db, browse.Filters(task=t), limit=None)) for t in sample.ids}
    assert board == {"houses": ["d", "b", "a", "c", "failed"], "digits": ["c", "a", "d", "b", "failed"]}  # ties newest
    assert names(sample, "houses", db.top("houses", limit=None)) == ["b", "d", "a", "c"]  # ties earliest
    assert names(sample, "houses", db.top("houses", limit=None, by="test_accuracy")) == ["b", "d", "a", "c"]
    assert names(sample, "digits", db.top("digits", limit=2)) == ["c", "a"]
    assert names(sample, "houses", browse.ranked_with_code(db, "houses"))[0] == "b"


def test_a_candidates_scoring_evaluation_is_its_best_by_the_tasks_direction(sample):
    db = sample.db
    for task, better in (("houses", 0.3), ("digits", 0.7)):
        candidate = sample.ids[task]["a"]  # scored 0.5 at fidelity 5
        db.add_evaluation(candidate, task, trained(0.3, 0.1, 1_000, fidelity=7))
        db.add_evaluation(candidate, task, trained(0.7, 0.1, 1_000, fidelity=7))
        assert db.scored(candidate)["val_accuracy"] == better


def test_runs_progress_history_and_pareto_points_follow_the_direction(sample):
    db = sample.db
    progress = {r["task"]: r for r in run_progress.runs_with_progress(db, limit=None)}
    assert (progress["houses"]["best_val_accuracy"], progress["houses"]["metric"]) == (0.2, "mse")
    assert (progress["digits"]["best_val_accuracy"], progress["digits"]["metric"]) == (0.9, "accuracy")
    overview = run_progress.run_overview(db, sample.runs["houses"])
    assert (overview["best_val_accuracy"], overview["direction"]) == (0.2, "min")
    history = run_progress.run_history(db, db.find_run(sample.runs["houses"]), ALGOS)
    assert (history.metric, history.direction, history.values) == ("mse", "min", [0.5, 0.2, 0.9, 0.2, None])
    assert best_so_far_lines(history) == [("this run (user)", [0.5, 0.2, 0.2, 0.2, 0.2])]  # it goes down
    points = measurements.pareto_points(db, sample.runs["houses"])
    assert pareto_front(points, "min") == [(1000.0, 0.5), (1200.0, 0.2)]


# -- what the search chooses --------------------------------------------------------------------------


def test_few_shot_parents_and_examples_prefer_the_lowest_mse(sample):
    db = sample.db
    for strategy in fewshot.STRATEGIES:  # after the parent comes the best overall: the lowest MSE
        for seed in range(5):
            shot = fewshot.select(db, "houses", 2, strategy, random.Random(seed))
            assert sample.ids["houses"]["b"] in shot.example_ids
            shot = fewshot.select(db, "digits", 2, strategy, random.Random(seed))
            assert sample.ids["digits"]["c"] in shot.example_ids
    weighted = [fewshot.select(db, "houses", 1, "weighted", random.Random(s)).parent_id for s in range(300)]
    lowest, highest = weighted.count(sample.ids["houses"]["b"]), weighted.count(sample.ids["houses"]["c"])
    assert lowest > 3 * highest  # a score below the median weighs more when lower is better
    weighted = [fewshot.select(db, "digits", 1, "weighted", random.Random(s)).parent_id for s in range(300)]
    assert weighted.count(sample.ids["digits"]["c"]) > 3 * weighted.count(sample.ids["digits"]["b"])
    # niches: 1k-3k parameters and 31k-100k; each size class's elite is its lowest MSE (b and d)
    elites = {fewshot.select(db, "houses", 1, "niches", random.Random(s)).parent_id for s in range(40)}
    assert elites == {sample.ids["houses"]["b"], sample.ids["houses"]["d"]}
    elites = {fewshot.select(db, "digits", 1, "niches", random.Random(s)).parent_id for s in range(40)}
    assert elites == {sample.ids["digits"]["a"], sample.ids["digits"]["c"]}


def test_run_summaries_seed_bests_and_halving_keep_the_lowest():
    outcomes = [
        {"id": 1, "status": "trained", "val_accuracy": 0.5, "test_accuracy": 0.6},
        {"id": 2, "status": "trained", "val_accuracy": 0.1, "test_accuracy": 0.2},
        {"id": 3, "status": "failed", "val_accuracy": None, "test_accuracy": None},
    ]
    assert run_summary("r", "finished", outcomes, None, direction="min")["best"] == {"id": 2, "test_accuracy": 0.2}
    assert run_summary("r", "finished", outcomes, None, direction="max")["best"] == {"id": 1, "test_accuracy": 0.6}
    seed = SeedResult(0, [Trial("x", 0.5, 0.4), Trial("y", 0.2, 0.9), Trial("z", None, None)], direction="min")
    assert seed.best() == Trial("y", 0.2, 0.9)
    assert summarize("rea", "houses", 3, [seed])["mean_test"] == 0.9  # the test score of the best by validation
    rung = [EvalResult(i, f"c{i}", "trained", metrics={"val_accuracy": v}) for i, v in enumerate((0.4, 0.1, 0.9, 0.3))]
    assert [r.id for r in survivors(rung, 3, "min")] == [1, 3]
    assert [r.id for r in survivors(rung, 3, "max")] == [2, 0]


def test_reas_tournament_and_tpes_study_follow_the_direction():
    space = get_space("nb201")
    low, high = nb201_table().archs[:2]
    for direction, winner in (("min", low), ("max", high)):
        rea = RegularizedEvolution(space, seed=0, population=2, sample_size=2, direction=direction)
        rea.replay(
            [
                Observation(Proposal("rea", arch=low), "trained", 0.1),
                Observation(Proposal("rea", arch=high), "trained", 0.9),
            ]
        )
        parents = [rea.propose(1)[0].parent_archs[0] for _ in range(200)]
        assert parents.count(winner) > 130  # it wins every tournament it is drawn into: p = 3/4
    tpe = make_proposer("tpe", space, 0, direction="min")
    assert isinstance(tpe, TPE) and tpe.study.direction == optuna.study.StudyDirection.MINIMIZE
    proposals = tpe.propose(3)
    tpe.observe([Observation(p, "trained", v) for p, v in zip(proposals, (0.9, 0.1, 0.5))])
    assert tpe.study.best_value == 0.1
    assert TPE(space, 0).study.direction == optuna.study.StudyDirection.MAXIMIZE


# -- what a person sees --------------------------------------------------------------------------------


def test_the_report_and_the_web_pages_name_the_metric_and_rank_the_lowest_first(sample, tmp_path):
    run_id = sample.runs["houses"]
    html = write_report(sample.db.path, run_id, tmp_path / "report").read_text()
    assert "best validation mse" in html and "lower is better" in html and '<th class="num">val mse</th>' in html
    first = html.index(f"#{sample.ids['houses']['d']}</td>")
    assert first < html.index(f"#{sample.ids['houses']['a']}</td>") < html.index(f"#{sample.ids['houses']['c']}</td>")
    with Browser(create_app(sample.db.path)) as client:
        board = client.get("/?task=houses").text
        assert "val mse" in board and "Ranked by validation mse" in board and "lower is better" in board
        assert board.index(f'/candidate/{sample.ids["houses"]["d"]}"') < board.index(
            f'/candidate/{sample.ids["houses"]["c"]}"'
        )
        assert "val accuracy" in client.get("/?task=digits").text
        assert "best validation mse" in client.get(f"/run/{run_id}").text
        assert "validation mse" in client.get(f"/candidate/{sample.ids['houses']['a']}").text
        assert "mse" in client.get("/runs").text
        for kind in ("best", "pareto"):
            assert client.get(f"/run/{run_id}/{kind}.png").status_code == 200
        exported = client.get("/?task=houses&format=json").json()
        assert [r["metric"] for r in exported] == ["mse"] * 5


# -- migration ----------------------------------------------------------------------------------------


def test_a_schema_6_archive_migrates_keeping_its_data_and_its_builtin_tasks_rank_as_before(tmp_path):
    path = tmp_path / "a.db"
    old = Archive.__new__(Archive)  # write exactly what agentarch with schema 6 wrote
    old.db = sqlite_utils.Database(path)
    for step in (
        old._create_v1,
        old._upgrade_to_v2,
        old._upgrade_to_v3,
        old._upgrade_to_v4,
        old._upgrade_to_v5,
        old._upgrade_to_v6,
    ):
        step()
    old.db["meta"].insert({"key": "schema_version", "value": "6"})
    old.db["runs"].insert({"id": "r1", "kind": "run", "task": "digits", "proposer": "user", "status": "finished"})
    for task, name, val in (("digits", "low", 0.2), ("digits", "high", 0.9), ("mystery", "m", 0.1)):
        cid = (
            old.db["candidates"].insert({**row(task, name, "r1"), "parents": "[]", "created_at": "2026-01-01"}).last_pk
        )
        old.db["evaluations"].insert(
            {"candidate_id": cid, "task": task, "status": "trained", "val_accuracy": val, "created_at": "2026-01-01"}
        )
    old.db.close()
    with Archive(path) as db:
        assert db.schema_version() == SCHEMA_VERSION == 17
        assert [(r["name"], r["metric"], r["direction"]) for r in db.db["tasks"].rows] == [
            ("digits", "accuracy", "max")
        ]  # a task it cannot name keeps no row, and ranks as it did
        assert db.db["candidates"].count == 3 and db.db["evaluations"].count == 3
        assert [r["name"] for r in db.top("digits")] == ["high", "low"]
        assert [(r["name"], r["metric"]) for r in db.top("mystery")] == [("m", "accuracy")]
        assert run_progress.runs_with_progress(db, None)[0]["best_val_accuracy"] == 0.9
