"""The gnn and gnnpool search spaces (issue 27): canonical strings, the host's parameter count against torch's, every
proposer inside a tight max_params, message passing that is local and blind to node order, a readout that keeps each
graph of a batch to itself, and searches that train on the built-in graph tasks through `agentarch baseline` in the
real sandbox.

The generic checks every space passes (rendered code passes the static check and reads back to its string, TPE,
limits under every proposer, the in-space model's schema) run over gnn and gnnpool too, in test_spaces, test_limits
and test_in_space; these are the ones particular to graphs.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3

import pytest
import torch
from agentarch.runner.graphbatch import GraphBatch, mixed_row
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.search.limits import Limits
from agentarch.search.objectives import Goals
from agentarch.search.proposers.base import Observation
from agentarch.search.proposers.baselines import make_proposer
from agentarch.search.spaces import SearchSpace, SpaceError, get_space, gnn
from agentarch.tasks.registry import get_task
from agentarch.tasks.task import Task
from tests.conftest import requires_bubblewrap

SPACE, POOL = get_space("gnn"), get_space("gnnpool")
SBM, GRAPHS = get_task("sbm-nodes"), get_task("sbm-graphs")
WIDE = Task("wide-graph", "graph", (300,), 7, "accuracy", 1, 100, 1e-2, 0.0, 10**7, False, "a graph task file's")
"""A graph of another shape (a task file's: 300 features, 7 classes), so the count is no coincidence of one shape."""
WIDE_GRAPHS = dataclasses.replace(WIDE, name="wide-graphs", kind="graphs")


def net(arch: str, task: Task = SBM) -> torch.nn.Module:
    """The rendered Net, built in this process (the test trusts code its own template rendered)."""
    space = POOL if task.kind == "graphs" else SPACE
    namespace: dict = {"__name__": "candidate"}
    exec(compile(space.render(arch, task), f"<{space.name}>", "exec"), namespace)
    torch.manual_seed(0)
    return namespace["Net"](task.in_shape, task.num_classes).eval()


def random_graph(
    nodes: int, edges: int, seed: int, features: int = SBM.in_shape[0]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and edges (both directions, no self-loops) of a random graph whose degrees differ; node 0 has none."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(1, nodes, (edges,), generator=gen)
    dst = (src + torch.randint(1, nodes - 1, (edges,), generator=gen)) % (nodes - 1) + 1
    keep = src != dst
    src, dst = src[keep], dst[keep]
    return torch.randn(nodes, features, generator=gen), torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])


def one_of_each(space: SearchSpace = SPACE) -> list[str]:
    """Per aggregator its smallest and largest network and two drawn at random, plus 20 more drawn: 40 in all."""
    every, rng = list(space.archs()), random.Random(27)
    picked = []
    for aggregator in gnn.AGGREGATORS:
        mine = sorted((a for a in every if a.startswith(f"{aggregator}-")), key=lambda a: space.size(a, SBM).params)
        picked += [mine[0], mine[-1], *rng.sample(mine, 2)]
    return picked + rng.sample(every, 20)


def graph_batch(sizes: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of random graphs of `sizes` nodes (each at least 3), as the runner hands one: nodes graph after graph,
    edges over the batch's node ids, `batch` the graph of each node."""
    xs, edges, offset = [], [], 0
    for i, size in enumerate(sizes):
        x, edge_index = random_graph(size, 2 * size, seed + i, GRAPHS.in_shape[0])
        xs.append(x)
        edges.append(edge_index + offset)
        offset += size
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.cat(xs), torch.cat(edges, dim=1), batch


def test_one_spelling_per_network_and_mutations_that_change_it():
    every = list(SPACE.archs())
    assert len(every) == len(set(every)) == 1920  # (4 aggregators + 4 gat heads) x (1 + 2 + 2 depths/skips) x 48
    assert SPACE.validate("gcn-d2-w64-h8-relu-skip1-p0.5") == "gcn-d2-w64-h1-relu-skip1-p0.5"  # heads: gat only
    assert SPACE.validate("gat-d1-w64-h8-elu-skip1-p0.5") == "gat-d1-w64-h8-elu-skip0-p0.5"  # one layer: no skip
    rng = random.Random(0)
    drawn = [SPACE.sample(rng) for _ in range(3000)]
    assert set(drawn) <= set(every)
    share = sum(a.startswith("gat-") for a in drawn) / len(drawn)
    assert abs(share - 0.5) < 0.04  # uniform over networks: half of them are gat's (4 heads each)
    for arch in drawn[:300]:
        mutated = SPACE.mutate(arch, rng)
        before, after = gnn.parse(arch), gnn.parse(mutated)
        changed = [f for f in gnn.FIELDS if before[f] != after[f]]
        assert mutated == SPACE.validate(mutated) and changed, arch
        assert changed[0] not in gnn.inert(before)  # what changed is a setting that mattered
    with pytest.raises(SpaceError, match="choose one of mean, sum, max, gcn, gat"):
        SPACE.validate("gin-d2-w64-h1-relu-skip0-p0.5")
    with pytest.raises(SpaceError, match="choose one of h1, h2, h4, h8"):
        SPACE.validate("gat-d2-w64-h3-relu-skip0-p0.5")
    with pytest.raises(SpaceError, match="it needs 7"):
        SPACE.validate("gat-d2-w64")


def test_the_host_parameter_count_is_torchs():
    for task in (SBM, WIDE):
        for arch in one_of_each():
            model = net(arch, task)
            assert SPACE.size(arch, task).params == sum(p.numel() for p in model.parameters()), (task.name, arch)
            assert SPACE.size(arch, task).flops is None  # counted on the whole graph: the task does not say its nodes
    assert max(SPACE.size(a, SBM).params for a in SPACE.archs()) <= SBM.max_params  # the largest fits the budget


def test_message_passing_is_blind_to_node_order_and_reaches_depth_hops():
    """Relabelling the nodes relabels the outputs (nothing depends on node ids), and a node's output changes with the
    features of a node `depth` hops away on a path but not with one further away."""
    x, edge_index = random_graph(40, 120, seed=1)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    inverse = torch.argsort(perm)
    path = torch.arange(5)
    line = torch.stack([torch.cat([path[:-1], path[1:]]), torch.cat([path[1:], path[:-1]])])
    for arch in one_of_each()[::2]:
        model = net(arch)
        with torch.no_grad():
            out = model(x, edge_index)
            torch.testing.assert_close(model(x[perm], inverse[edge_index]), out[perm], msg=arch)
            assert out.shape == (40, SBM.num_classes) and torch.isfinite(out).all(), arch
            depth, near, far = gnn.parse(arch)["depth"], x[:5].clone(), x[:5].clone()
            near[depth] += 1.0  # `depth` hops from node 0
            far[depth + 1] += 1.0  # one hop further (depth is 3 at most)
            base = model(x[:5], line)[0]
            assert not torch.allclose(model(near, line)[0], base), arch
            torch.testing.assert_close(model(far, line)[0], base, msg=arch)


def test_gnnpool_is_gnn_with_a_readout_and_one_spelling_per_network():
    every = list(POOL.archs())
    assert len(every) == len(set(every)) == 3 * 1920  # gnn's networks, each with a mean, sum or max readout
    assert POOL.validate("gcn-d2-w64-h8-relu-skip1-p0.5-poolmax") == "gcn-d2-w64-h1-relu-skip1-p0.5-poolmax"
    code = POOL.render("sum-d3-w64-h1-relu-skip0-p0.0-poolsum", GRAPHS)
    assert "def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor)" in code
    rng = random.Random(1)
    drawn = [POOL.sample(rng) for _ in range(600)]
    assert {gnn.POOL_ARCH.parse(a)["readout"] for a in drawn} == set(gnn.READOUTS)
    changed = set()
    for arch in drawn[:300]:
        before, after = gnn.POOL_ARCH.parse(arch), gnn.POOL_ARCH.parse(POOL.mutate(arch, rng))
        fields = [f for f in gnn.POOL_FIELDS if before[f] != after[f]]
        assert fields and fields[0] not in gnn.inert(before), arch  # (leaving gat resets the heads too)
        changed.add(fields[0])
    assert "readout" in changed
    for arch in drawn[:20]:
        assert POOL.parse_code(POOL.render(arch, GRAPHS)) == arch
    with pytest.raises(SpaceError, match="choose one of poolmean, poolsum, poolmax"):
        POOL.validate("gat-d2-w64-h8-relu-skip0-p0.5-poolmin")
    with pytest.raises(SpaceError, match="it needs 8"):
        POOL.validate("gat-d2-w64-h8-relu-skip0-p0.5")  # a gnn string: no readout
    with pytest.raises(SpaceError, match="graphs task; spaces for graphs tasks: gnnpool"):
        SPACE.render("gat-d2-w64-h8-relu-skip0-p0.5", GRAPHS)


def test_the_host_parameter_count_is_torchs_for_graph_classification():
    for task in (GRAPHS, WIDE_GRAPHS):
        for arch in one_of_each(POOL):
            model = net(arch, task)
            assert POOL.size(arch, task).params == sum(p.numel() for p in model.parameters()), (task.name, arch)
            assert POOL.size(arch, task).params == SPACE.size(arch.rsplit("-", 1)[0], task).params  # pooling is free
    assert max(POOL.size(a, GRAPHS).params for a in POOL.archs()) <= GRAPHS.max_params  # the largest fits the budget


def test_gnn_networks_pass_graph_scoring_s_export_and_measures(cache_dir, tmp_path):
    """Node classification is graph-scored by default: every aggregator exports (max's scatter in a form ONNX has),
    the host counts torch's parameters, and onnxruntime on the file gives the eager outputs on the whole graph."""
    import onnxruntime as ort
    from agentarch.runner import runner, trainer

    from agentarch.evaluation.graphs import interface, scoring
    from agentarch.isolation.policy import Limits as SandboxLimits
    from agentarch.tasks.preparation import prepare

    prepared = prepare(SBM, cache_dir)
    inputs = trainer.load_inputs(prepared.train_dir, torch.device("cpu"))
    bound = interface.sizes(SBM, prepared.inputs_dir)
    for aggregator in gnn.AGGREGATORS:
        arch = next(a for a in SPACE.archs() if a.startswith(f"{aggregator}-d2-"))
        model = net(arch, SBM)
        runner.export_graph(model, inputs, tmp_path / "graph.onnx")
        graph = (tmp_path / "graph.onnx").read_bytes()
        assert scoring.measure_graph(graph, SBM, SandboxLimits(), bound).params == sum(
            p.numel() for p in model.parameters()
        ), arch
        with torch.no_grad():
            eager = model(inputs.train_x, inputs.edge_index)
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        feed = {"x": inputs.train_x.numpy(), "edge_index": inputs.edge_index.numpy()}
        torch.testing.assert_close(torch.from_numpy(session.run(None, feed)[0]), eager, msg=arch)


@pytest.mark.parametrize("readout", ["mean", "sum", "max"])
def test_gnnpool_networks_pass_graph_scoring_s_export_and_measures(readout, cache_dir, tmp_path):
    """Graph scoring is the default for graphs tasks: each readout, and each aggregator family, exports with the graph
    count computed from `batch` (not frozen by int()), the host's measures count torch's parameters, and onnxruntime
    on the exported file gives the eager outputs."""
    import onnxruntime as ort
    from agentarch.runner import runner, trainer

    from agentarch.evaluation.graphs import interface, scoring
    from agentarch.isolation.policy import Limits as SandboxLimits
    from agentarch.tasks.preparation import prepare

    prepared = prepare(GRAPHS, cache_dir)
    inputs = trainer.load_inputs(prepared.train_dir, torch.device("cpu"))
    bound = interface.sizes(GRAPHS, prepared.inputs_dir)
    for aggregator in gnn.AGGREGATORS:
        arch = next(a for a in POOL.archs() if a.startswith(f"{aggregator}-d2-") and a.endswith(f"-pool{readout}"))
        model = net(arch, GRAPHS)
        runner.export_graph(model, inputs, tmp_path / "graph.onnx")
        graph = (tmp_path / "graph.onnx").read_bytes()
        measured = scoring.measure_graph(graph, GRAPHS, SandboxLimits(), bound)
        assert measured.params == sum(p.numel() for p in model.parameters()), arch
        batch = inputs.train_x[0:12]
        with torch.no_grad():
            eager = model(*batch.args()).numpy()
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        feed = {"x": batch.x.numpy(), "edge_index": batch.edge_index.numpy(), "batch": batch.batch.numpy()}
        feed = {i.name: feed[i.name] for i in session.get_inputs()}
        torch.testing.assert_close(torch.from_numpy(session.run(None, feed)[0]), torch.from_numpy(eager), msg=arch)


def test_each_graphs_output_depends_on_its_own_nodes_alone():
    """A graph's row is the same alone as inside any batch, wherever it stands; a batch's rows follow its graphs'
    order; every node of a graph reaches its row (the readout pools them all); and the runner's own `graphs-mixed`
    check finds nothing to refuse."""
    sizes = [5, 12, 3, 9]
    x, edge_index, batch = graph_batch(sizes, seed=5)
    starts = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    others = graph_batch([7, 4], seed=50)
    for arch in one_of_each(POOL)[::2]:
        model = net(arch, GRAPHS)
        with torch.no_grad():
            together = model(x, edge_index, batch)
            assert together.shape == (len(sizes), GRAPHS.num_classes) and torch.isfinite(together).all(), arch
            for g, (start, end) in enumerate(zip(starts, starts[1:])):
                inside = (edge_index >= start).all(0) & (edge_index < end).all(0)
                alone = model(x[start:end], edge_index[:, inside] - start, torch.zeros(end - start, dtype=torch.long))
                torch.testing.assert_close(alone[0], together[g], msg=f"{arch}: graph {g}")
            # the last graph beside other batch-mates, first in its batch this time
            end = starts[-1]
            mixed = (
                torch.cat([x[starts[-2] :], others[0]]),
                torch.cat([edge_index[:, (edge_index >= starts[-2]).all(0)] - starts[-2], others[1] + sizes[-1]], 1),
                torch.cat([torch.zeros(sizes[-1], dtype=torch.long), others[2] + 1]),
            )
            torch.testing.assert_close(model(*mixed)[0], together[-1], msg=arch)
            touched = x.clone()
            touched[starts[1]] += 1.0  # the first node of graph 1, one with neighbours or without
            moved = model(touched, edge_index, batch)
            assert not torch.allclose(moved[1], together[1]), arch
            torch.testing.assert_close(moved[[0, 2, 3]], together[[0, 2, 3]], msg=arch)
            assert end == len(x)
        assert mixed_row(model, GraphBatch(x, edge_index, batch, len(sizes))) is None, arch


@pytest.mark.parametrize("name", ["gnn", "gnnpool"])
@pytest.mark.parametrize("algo", ["random", "rea", "tpe"])
def test_every_proposal_keeps_inside_a_tight_max_params_and_a_params_constraint(algo, name):
    space, base = (SPACE, SBM) if name == "gnn" else (POOL, GRAPHS)
    sizes = sorted(space.size(a, base).params for a in space.archs())
    task = dataclasses.replace(base, name=f"{base.name}-tight", max_params=sizes[len(sizes) // 10])  # a tenth
    bound = sizes[len(sizes) // 20]
    for goals in (None, Goals.parse([], [f"params<={bound}"])):
        limit = task.max_params if goals is None else bound
        search = make_proposer(algo, space, 3, distinct=True, goals=goals, task=task)
        rng, archs = random.Random(3), []
        for _ in range(40):
            (proposal,) = search.propose(1)
            archs.append(proposal.arch)
            params = space.size(proposal.arch, task).params
            search.observe([Observation(proposal, "trained", rng.random(), measures={"params": params})])
        assert all(space.size(a, task).params <= limit for a in archs), algo
        assert len(set(archs)) == 40 and set(archs) <= set(Limits.of(space, task, goals).inside())


@pytest.mark.slow
@requires_bubblewrap
def test_a_search_picks_the_gnn_space_by_kind_and_trains_on_sbm_nodes(tmp_path, cache_dir, monkeypatch):
    """`agentarch baseline --task sbm-nodes` with no --space searches gnn: REA's random initial population and a
    mutant of it train in the real sandbox and land in the archive with their lineage."""
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    db = tmp_path / "a.db"
    args = ["--algo", "rea", "--task", "sbm-nodes", "--budget", "3", "--population", "2", "--sample-size", "2"]
    args += ["--epochs", "20", "--json", "--archive", str(db)]  # graph scoring; 20 of the task's 100 epochs
    result = CliRunner().invoke(app, ["baseline", *args])
    assert result.exit_code == 0, result.output
    *candidates, summary = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [c["status"] for c in candidates] == ["trained"] * 3, candidates
    assert summary["mean_test"] > 0.5  # four communities: chance is 0.25
    query = "SELECT id, space, arch, parents, params FROM candidates ORDER BY id"
    rows = sqlite3.connect(db).execute(query).fetchall()
    assert {row[1] for row in rows} == {"gnn"}
    assert [row[4] for row in rows] == [SPACE.size(row[2], SBM).params for row in rows]  # host count = sandbox's
    assert json.loads(rows[2][3]) in ([rows[0][0]], [rows[1][0]])  # the mutant's parent: one of the initial two


@pytest.mark.slow
@requires_bubblewrap
def test_a_search_picks_the_gnnpool_space_by_kind_and_trains_on_sbm_graphs(tmp_path, cache_dir, monkeypatch):
    """`agentarch baseline --task sbm-graphs` with no --space searches gnnpool: REA's three networks train in the real
    sandbox (its smoke stage's `graphs-mixed` check included) and the sandbox counts the host's parameters."""
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    db = tmp_path / "a.db"
    args = ["--algo", "rea", "--task", "sbm-graphs", "--budget", "3", "--population", "2", "--sample-size", "2"]
    args += ["--epochs", "3", "--json", "--archive", str(db)]  # graph scoring; 3 of the task's 30 epochs
    result = CliRunner().invoke(app, ["baseline", *args])
    assert result.exit_code == 0, result.output
    *candidates, summary = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [c["status"] for c in candidates] == ["trained"] * 3, candidates
    assert summary["mean_test"] > 1 / 3 - 0.1  # three classes; a few epochs of a random network need not beat chance
    rows = sqlite3.connect(db).execute("SELECT space, arch, params FROM candidates ORDER BY id").fetchall()
    assert {row[0] for row in rows} == {"gnnpool"} and len(rows) == 3
    assert [row[2] for row in rows] == [POOL.size(row[1], GRAPHS).params for row in rows]  # host count = sandbox's
