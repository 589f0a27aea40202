"""Every offline proposer keeps to the task's limits before anything runs (issue 27).

A space computes the parameters and FLOPs of its own template's network on the host (`SearchSpace.size`, plain
arithmetic): here they are checked against the rendered module built in this process and the sandbox's own FLOP
counter. Then every proposer of every space (random search, REA, TPE, the in-space LLM's answers and fallback
samples) makes hundreds of proposals on a task with a tight `max_params`, or a `--constraint` on params or FLOPs,
and every one lands inside; a space that cannot reach a limit is refused at start, naming it and its smallest
network. The prompts state the limits with the parent's own figures. The slow test runs `agentarch run` on task
files with a tight limit, in the real sandbox.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.llm.fewshot import FewShot
from agentarch.llm.prompts import edit_messages, propose_messages
from agentarch.search.limits import SAMPLE_TRIES, LimitError, Limits
from agentarch.search.objectives import Goals
from agentarch.search.proposers import baselines
from agentarch.search.proposers.base import Observation
from agentarch.search.proposers.baselines import make_proposer
from agentarch.search.proposers.llm_space import InSpaceModel
from agentarch.search.spaces import SPACES, SearchSpace, get_space
from agentarch.tasks.registry import get_task
from agentarch.tasks.tabular import nb201_table
from agentarch.tasks.task import Task
from tests.conftest import requires_bubblewrap
from tests.test_spaces import EXAMPLE_TASKS, build, fixed_input, n_params, tasks_of

DIGITS = get_task("digits")
RGB = dataclasses.replace(DIGITS, name="rgb", in_shape=(3, 13, 11), num_classes=4)  # an odd-sized colour folder
TABLE = Task("table", "table", (9,), 3, "macro_f1", 1, 16, 1e-3, 0.0, 1_000_000, False, "example")
OFFLINE = ("random", "rea", "tpe", "llm-space")
PROPOSALS = 200


def shapes(space: SearchSpace) -> list[Task]:
    """A task of each shape the space builds for: each input form of each of its kinds (for images: 8x8 digits,
    28x28 grey, 32x32 colour, and an odd-sized colour folder)."""
    wanted = {"digits", "mnist", "cifar10", "mqar", "stdlib-bytes", "digits-sr2", "digits-denoise", "sbm-nodes"}
    wanted |= {t.name for t in EXAMPLE_TASKS}
    if space.name == "nb201":  # its 32x32 skeleton is the table tasks' (every cell checked by the next test), and
        wanted -= {"cifar10", "mnist"}  # the odd RGB folder has mnist's skeleton (2 cells of 16), at odd sides
    return [t for t in tasks_of(space) if t.name in wanted] + ([RGB] if "image" in space.kinds else [])


def small_task(space: SearchSpace) -> Task:
    if "dense" in space.kinds:
        return get_task("digits-sr2")
    if "graph" in space.kinds:
        return get_task("sbm-nodes")
    if "graphs" in space.kinds:
        return get_task("sbm-graphs")
    return DIGITS if "image" in space.kinds else TABLE if "table" in space.kinds else get_task("mqar")


def quantile(space: SearchSpace, task: Task, share: float, measure: str = "params") -> int:
    """The `measure` below which about `share` of the space's architectures lie on `task`."""
    values = sorted(getattr(space.size(arch, task), measure) for arch in space.archs())
    return values[int(share * (len(values) - 1))]


def tight(space: SearchSpace, share: float) -> Task:
    """The space's small task with a max_params that about `share` of the space keeps to."""
    task = small_task(space)
    return dataclasses.replace(task, name=f"{task.name}-tight", max_params=quantile(space, task, share))


class ScriptedModel:
    """A model that answers a random architecture of the space (about as often over the limits as the space is)."""

    model = "scripted"

    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space, self.rng, self.prompts = space, random.Random(seed), []

    def complete(self, messages, purpose, tag=None, response_format=None):
        self.prompts.append(messages[-1]["content"])
        text = json.dumps(self.space.to_fields(self.space.sample(self.rng)))
        return SimpleNamespace(text=text, call_ids=[], cost_usd=0.0, prompt_tokens=0, completion_tokens=0)


def proposer(algo: str, space: SearchSpace, task: Task, seed: int, goals: Goals | None = None, distinct=False):
    model = InSpaceModel(ScriptedModel(space, seed), task) if algo == "llm-space" else None
    options = {"model": model} if model is not None else {}
    return make_proposer(algo, space, seed, distinct=distinct, goals=goals, task=task, **options)


def run_search(search, task: Task, n: int, seed: int = 0) -> list[str]:
    """`n` proposals one at a time, each observed with a random score and its size (as the smoke stage measures
    it): the architectures proposed."""
    rng, archs = random.Random(seed), []
    for _ in range(n):
        (proposal,) = search.propose(1)
        archs.append(proposal.arch)
        size = search.pool.space.size(proposal.arch, task)
        measures = {"params": size.params, "flops": size.flops}
        search.observe([Observation(proposal, "trained", rng.random(), measures=measures)])
    return archs


# -- sizes on the host --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPACES))
def test_the_host_size_is_the_rendered_modules_and_the_sandboxs_flop_count(name):
    from sandbox.runner import count_flops

    space = get_space(name)
    for task in shapes(space):
        every = sorted(space.archs(), key=lambda a: space.size(a, task).params)
        archs = [every[0], every[-1], *random.Random(f"{name}/{task.name}").sample(every, 2)]
        for arch in archs:
            model = build(space.render(arch, task), task).eval()
            size = space.size(arch, task)
            assert size.params == n_params(model), (task.name, arch)
            if task.kind == "graph":  # counted on the whole training graph, whose node count the task does not state
                assert size.flops is None
                continue
            assert size.flops == count_flops(model, fixed_input(task, 2)), (task.name, arch)


def test_nb201_host_sizes_are_the_shipped_table_counts():
    table, space = nb201_table(), get_space("nb201")
    for dataset in ("cifar10", "cifar100", "imagenet16"):
        task = get_task(f"nb201-{dataset}")
        for arch in random.Random(dataset).sample(table.archs, 200):
            score, size = table.query(dataset, arch), space.size(arch, task)
            assert (size.params, size.flops) == (score.params, score.flops), (dataset, arch)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_space_lists_its_architectures_and_sizes_them(name):
    space = get_space(name)
    every = list(space.archs())
    assert len(every) == len(set(every)) and all(space.validate(a) == a for a in every)
    rng = random.Random(0)
    assert {space.sample(rng) for _ in range(300)} <= set(every)
    assert Limits.of(space, small_task(space)).measured
    for task in [*EXAMPLE_TASKS, DIGITS]:
        if task.kind in space.kinds:
            assert all(space.size(a, task).params > 0 for a in every[:50])


# -- proposers inside the limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", OFFLINE)
@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_proposer_keeps_inside_a_tight_max_params(name, algo):
    space = get_space(name)
    task = tight(space, 0.2)
    limits = Limits.of(space, task)
    search = proposer(algo, space, task, seed=1)
    n = PROPOSALS if algo != "llm-space" else min(PROPOSALS, len(limits.inside()))  # it never repeats itself
    archs = run_search(search, task, n)
    over = [a for a in archs if space.size(a, task).params > task.max_params]
    assert not over, f"{len(over)} of {n} over {task.max_params}: {over[:3]}"
    assert len(set(archs)) > 5  # it still searches: not one architecture over and over
    assert limits.allows(archs[0])
    if algo == "llm-space":  # the model's answers over the limit were refused and replaced by samples inside
        stats = search.stats
        assert stats.over_limits > 0 and stats.fallbacks >= stats.over_limits
        assert f"at most {task.max_params:,} parameters" in search.model.client.prompts[-1]
        assert " parameters)" in search.model.client.prompts[-1]  # each shown architecture with its size


@pytest.mark.parametrize("algo", OFFLINE)
@pytest.mark.parametrize("name", sorted(SPACES))
def test_a_distinct_search_under_a_very_tight_limit_proposes_the_architectures_inside(name, algo):
    space = get_space(name)
    task = tight(space, 0.05)
    inside = Limits.of(space, task).inside()
    n = min(len(inside), 30)
    search = proposer(algo, space, task, seed=2, distinct=True)
    archs = run_search(search, task, n)
    assert set(archs) <= set(inside) and len({space.identity(a) for a in archs}) == n


@pytest.mark.parametrize("algo", OFFLINE)
@pytest.mark.parametrize("name", sorted(SPACES))
def test_constraints_on_params_and_flops_are_kept_too(name, algo):
    space = get_space(name)
    task = small_task(space)  # its own max_params (1M or more): the constraints bind
    counted = space.size(next(space.archs()), task).flops is not None  # the gnn space counts no FLOPs
    params, flops = quantile(space, task, 0.3), quantile(space, task, 0.5, "flops") if counted else None
    bounds = [f"params<={params}"] + ([f"flops<{flops}"] if counted else [])
    goals = Goals.parse([], bounds)  # one objective, as `--constraint` alone gives
    if algo == "llm-space":  # --propose-in takes no --constraint (the model is shown the metric alone)
        goals, task = None, dataclasses.replace(task, max_params=params)
    search = proposer(algo, space, task, seed=3, goals=goals)
    n = PROPOSALS // 2 if algo != "llm-space" else min(PROPOSALS // 2, len(search.pool.limits.inside()))
    for arch in run_search(search, task, n):
        size = space.size(arch, task)
        assert size.params <= params and (algo == "llm-space" or not counted or size.flops < flops), arch


def test_a_limit_that_does_not_bind_changes_no_draw():
    for space in SPACES.values():
        task = small_task(space)
        plain = [p.arch for p in make_proposer("rea", space, 5).propose(40)]
        limited = make_proposer("rea", space, 5, task=task)
        assert [p.arch for p in limited.propose(40)] == plain
        assert limited.pool.limits.stats.rejected == 0


def test_rejection_is_bounded_then_draws_among_the_architectures_inside():
    space = get_space("nb201")
    task = tight(space, 0.001)  # about 16 cells of 15,625: rejection alone would wait ~1,000 draws
    limits = Limits.of(space, task)
    rng = random.Random(0)
    archs = [limits.sample(rng) for _ in range(50)]
    assert all(limits.allows(a) for a in archs)
    assert limits.stats.listed > 0 and limits.stats.rejected <= SAMPLE_TRIES * limits.stats.samples
    assert len(set(archs)) > 5


@pytest.mark.parametrize("name", sorted(SPACES))
def test_tpe_learns_the_limits_and_is_handed_a_sample_inside_when_it_keeps_breaking_them(name, monkeypatch):
    space = get_space(name)
    task = tight(space, 0.05)
    search = proposer("tpe", space, task, seed=4)
    archs = run_search(search, task, 60)
    assert all(space.size(a, task).params <= task.max_params for a in archs)
    refused = search.pool.limits.stats.refused
    assert 0 < refused < 5 * 60  # told how far over a refused suggestion was, TPE soon suggests inside
    monkeypatch.setattr(baselines, "SUGGEST_TRIES", 1)  # hand it a sample at its first suggestion over the limits
    search = proposer("tpe", space, task, seed=5)
    archs = run_search(search, task, 40)
    handed = [t for t in search.study.trials if t.state.name == "COMPLETE" and t.system_attrs.get("fixed_params")]
    assert handed and all(space.size(a, task).params <= task.max_params for a in archs)
    assert len([t for t in search.study.trials if t.state.name == "COMPLETE"]) == 40  # each proposal one trial


def test_rea_mutations_over_the_limit_are_refused_and_a_boxed_in_parent_gives_a_sample():
    space = get_space("macro")
    task = tight(space, 0.1)
    search = proposer("rea", space, task, seed=6, distinct=True)
    archs = run_search(search, task, len(Limits.of(space, task).inside()))
    assert all(space.size(a, task).params <= task.max_params for a in archs)
    assert search.pool.limits.stats.refused > 0  # mutations over the limit were drawn again


@pytest.mark.parametrize("name", sorted(SPACES))
def test_the_offline_loops_evolution_plans_inside_the_limits(name):
    """`Scheduler._evolve`, as the offline loop (islands and screening included) plans each proposal: rebuilt from
    the outcomes so far, with a `--constraint` beside a tight max_params."""
    from agentarch.loop.scheduler import Scheduler

    space = get_space(name)
    task = tight(space, 0.3)
    bound = quantile(space, task, 0.2)
    goals = Goals.parse([], [f"params<={bound}"])
    settings = SimpleNamespace(seed=0, population=10, sample_size=3)
    ctx = SimpleNamespace(offline_space=lambda: name, offline_search=lambda: get_space(name), task=task, goals=goals)
    planner, rng, outcomes = SimpleNamespace(settings=settings, ctx=ctx), random.Random(0), []
    n = min(60, len(Limits.of(space, task, goals).inside()))  # each proposal a new network
    for seq in range(n):
        proposal = Scheduler._evolve(planner, outcomes, seq, [])
        size = space.size(proposal.arch, task)
        assert size.params <= bound, (seq, proposal.arch, size)
        outcomes.append(
            {"arch": proposal.arch, "status": "trained", "val_accuracy": rng.random(), "params": size.params}
        )
    with pytest.raises(LimitError, match="smallest network"):
        ctx.goals = Goals.parse([], [f"params<={min(space.size(a, task).params for a in space.archs()) - 1}"])
        Scheduler._evolve(planner, outcomes, n, [])


# -- a space that cannot keep to the limit ------------------------------------------------------------------------


@pytest.mark.parametrize("algo", OFFLINE)
@pytest.mark.parametrize("name", sorted(SPACES))
def test_a_limit_no_architecture_reaches_is_refused_at_start_naming_it_and_the_smallest(name, algo):
    space = get_space(name)
    task = small_task(space)
    smallest = min(space.archs(), key=lambda a: space.size(a, task).params)
    size = space.size(smallest, task).params
    impossible = dataclasses.replace(task, max_params=size - 1)
    with pytest.raises(LimitError) as err:
        proposer(algo, space, impossible, seed=0)
    message = str(err.value)
    assert f"at most {size - 1:,} parameters" in message and f"{smallest}, has {size:,} parameters" in message
    with pytest.raises(LimitError, match=f"params <= {size - 1:,}"):
        constraint = Goals.parse(["val", "params"], [f"params<={size - 1}"])
        make_proposer("rea", space, 0, goals=constraint, task=task)
    proposer("random", space, dataclasses.replace(task, max_params=size), seed=0).propose(3)  # the smallest fits


# -- the LLM's prompt ---------------------------------------------------------------------------------------------


def test_the_prompts_state_the_limits_with_the_parents_own_figures():
    task = dataclasses.replace(DIGITS, max_params=20_000)
    parent = {"id": 7, "code": "x = 1\n", "val_accuracy": 0.9, "params": 13_508, "flops": 400_000, "proposer": "rea"}
    parent["analysis"] = None
    other = {**parent, "id": 8, "params": 19_000, "flops": 900_000}
    shot = FewShot(parent, [parent, other], "topk")
    text = propose_messages(task, shot, goals=Goals.parse([], ["params<=15000", "flops<1e6"]))[1]["content"]
    assert "at most 20,000 parameters (the task's max_params); params <= 15,000" in text
    assert "flops < 1,000,000 (a constraint of this run)" in text
    assert "The parent, candidate 7, has 13,508 parameters (90% of the 15,000 allowed)" in text
    assert "400,000 FLOPs (40% of the 1,000,000 allowed)" in text
    assert "- flops: 900,000" in text  # each example's FLOPs, which a constraint names
    text = edit_messages(task, shot)[1]["content"]
    assert "at most 20,000 parameters (the task's max_params)." in text
    assert "The parent has 13,508 parameters (68% of the 20,000 allowed)." in text
    several = Goals.parse(["val", "params"], ["params<=15000"])
    text = propose_messages(task, shot, goals=several)[1]["content"]
    assert text.count("params <= 15,000") == 1 and "Hard limits" not in text


# -- end to end ---------------------------------------------------------------------------------------------------


def _run(args: list[str]) -> dict:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.slow
@requires_bubblewrap
@pytest.mark.parametrize("case", ["mlp-max-params", "macro-constraint", "nb201-max-params"])
def test_an_offline_run_on_a_task_file_with_a_tight_limit_trains_what_it_proposes(case, tmp_path, monkeypatch):
    """The issue's runs: without the limits about half of each space is over them (mlp 42% of its networks on 12
    features, macro 57% and nb201 34% on 8x8 colour images), and those were `invalid` before anything trained."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    rng = np.random.default_rng(0)
    space, how = case.split("-", 1)
    if space == "mlp":  # an npz table with max_params = 20_000, as a user wrote it in the issue
        x = rng.normal(size=(300, 12)).astype("float32")
        np.savez(tmp_path / "t.npz", x=x, y=(x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1))
        kind, limit = "table", 20_000
    else:  # an RGB image npz
        x = rng.integers(0, 256, size=(240, 3, 8, 8), dtype=np.uint8)
        np.savez(tmp_path / "t.npz", x=x, y=(x[:, 0].mean(axis=(1, 2)) > 127.5).astype("int64"))
        kind, limit = "image", 20_000 if space == "macro" else 40_000
        monkeypatch.setenv("AGENTARCH_OFFLINE_SPACE", space)
    budget = 1_000_000 if how == "constraint" else limit
    extra = ["--constraint", f"params<={limit}"] if how == "constraint" else []
    (tmp_path / "task.toml").write_text(
        f'name = "tight"\ndescription = "a task with a tight limit"\nkind = "{kind}"\nmax_params = {budget}\n'
        '[data]\nsource = "npz"\npath = "t.npz"\n[train]\nepochs = 2\n[splits]\nval = 0.2\ntest = 0.2\n'
    )
    summary = _run(["run", "--task", "task.toml", "--budget", "10", "--archive", "a.db", "--json", *extra])
    rows = sqlite3.connect(tmp_path / "a.db").execute("SELECT status, params, space, reason FROM candidates").fetchall()
    assert len(rows) == 10 and summary["trained"] >= 9, rows
    assert all(params is not None and params <= limit and used == space for _, params, used, _ in rows), rows


def test_a_run_whose_limit_no_network_reaches_is_refused_before_it_opens(tmp_path, monkeypatch):
    """The offline run (and --propose-in) checks its space against the limits before the run's row exists: nothing
    is recorded, and the message names the limit and the smallest network."""
    monkeypatch.chdir(tmp_path)
    args = ["run", "--task", "digits", "--budget", "2", "--constraint", "params<=10", "--archive", "a.db"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "smallest network" in result.output, result.output
    assert "params <= 10" in result.output or "params<=10" in result.output.replace(" ", "")
    runs = (
        sqlite3.connect(tmp_path / "a.db").execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        if (tmp_path / "a.db").exists()
        else 0
    )
    assert runs == 0
