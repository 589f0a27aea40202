"""Graph classification (`kind = "graphs"`, agentarch/tasks/graphsets.py) and graphs from a CSV pair
(agentarch/tasks/graphcsv.py): the built-in sbm-graphs is deterministic and keeps its held-out labels on the host, npz
and CSV task files check and prepare (a bad one names the file, the line and the fix), mini-batches of graphs keep
their graphs apart (and a network that mixes them is refused), the seeds (GCN, GIN) learn, and (slow) both task-file
sources and the built-in train end to end in the real sandbox through `agentarch run`, `baseline` and `eval`, and the
candidate's page renders."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.evaluation.budget import reference_code, split_sizes
from agentarch.evaluation.checks import check as static_check
from agentarch.tasks import graphsets, taskcheck, taskfiles
from agentarch.tasks.preparation import prepare
from agentarch.tasks.registry import get_task
from agentarch.tasks.task import TaskError
from agentarch.web.app import create_app
from sandbox import graphbatch, runner, trainer
from tests.conftest import REPO, requires_bubblewrap
from tests.llm_server import ScriptedLLMServer
from tests.scripted import MODEL, fenced, kind
from tests.web_client import Browser

SEEDS = sorted((REPO / "archive" / "seeds" / "graphs").glob("*.py"))
SPEC = {"kind": "graphs", "in_shape": [6], "num_classes": 2, "train": {"seed": 0}}


def easy_set(graphs: int = 120, seed: int = 5) -> graphsets.GraphSet:
    """Two classes a few steps tell apart: nodes that join their own colour, or never do."""
    return graphsets.colour_graphs(graphs, 3, (6, 12), 3.0, (0.9, 0.0), seed)


def save_npz(path: Path, graphs: graphsets.GraphSet, masks: bool = True, **change: np.ndarray | None) -> Path:
    arrays = {"x": graphs.x[:, :6], "edge_index": graphs.edge_index, "graph_ptr": graphs.ptr, "y": graphs.y}
    if masks:
        part = np.arange(len(graphs.y)) % 4
        arrays.update(train_mask=part < 2, val_mask=part == 2, test_mask=part == 3)
    arrays.update(change)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def save_csv(folder: Path, graphs: graphsets.GraphSet, grouped: bool = True) -> None:
    """The set as nodes.csv (id, f0..f5, label, split, graph_id) and edges.csv (src, dst), graphs interleaved."""
    owner = graphsets.graph_of_nodes(graphs.ptr)
    names = ("gathers", "avoids")
    with open(folder / "nodes.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", *(f"f{i}" for i in range(6)), "label", "split"] + (["graph_id"] if grouped else []))
        for node in np.argsort(owner % 7, kind="stable"):  # rows need not be grouped by graph
            g = owner[node]
            label = names[graphs.y[g]] if grouped else names[node % 2]
            split = ("train", "train", "val", "test")[g % 4 if grouped else node % 4]
            out.writerow([f"n{node}", *graphs.x[node, :6].round(4), label, split] + ([f"g{g}"] if grouped else []))
    with open(folder / "edges.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["src", "dst"])
        out.writerows([f"n{a}", f"n{b}"] for a, b in graphs.edge_index.T)


def write_task(folder: Path, data: str, kind_: str = "graphs", extra: str = "", name: str = "my-graphs") -> Path:
    path = folder / "task.toml"
    path.write_text(f'name = "{name}"\ndescription = "Small graphs."\nkind = "{kind_}"\n{extra}\n[data]\n{data}\n')
    return path


CSV_PAIR = 'source = "csv"\nnodes = "nodes.csv"\nedges = "edges.csv"\ntarget = "label"'


def test_sbm_graphs_is_deterministic_and_keeps_held_out_labels_on_the_host(tmp_path):
    task = get_task("sbm-graphs")
    first, second = prepare(task, tmp_path / "a"), prepare(task, tmp_path / "b")
    names = sorted(p.name for p in first.inputs_dir.iterdir())
    assert names == sorted(
        ["meta.json", "train_y.npy"] + [f"{s}_{k}.npy" for s in ("train", "val", "test") for k in ("x", "edges", "ptr")]
    )
    for name in names[1:]:
        assert np.array_equal(np.load(first.inputs_dir / name), np.load(second.inputs_dir / name)), name
    assert split_sizes(first.inputs_dir) == {"train": 720, "val": 240, "test": 240}
    assert np.bincount(np.load(first.inputs_dir / "train_y.npy")).tolist() == [240, 240, 240]
    assert len(first.labels("val")) == 240 and set(first.labels("test").tolist()) == {0, 1, 2}
    meta = json.loads((first.inputs_dir / "meta.json").read_text())
    assert meta["kind"] == "graphs" and len(meta["mean"]) == task.in_shape[0]
    ptr = np.load(first.inputs_dir / "val_ptr.npy")
    edges = np.load(first.inputs_dir / "val_edges.npy")
    owner = graphsets.graph_of_nodes(ptr)
    assert ptr[-1] == len(np.load(first.inputs_dir / "val_x.npy")) and (owner[edges[0]] == owner[edges[1]]).all()


def test_a_graph_set_npz_checks_and_prepares_with_or_without_masks(tmp_path):
    save_npz(tmp_path / "g.npz", easy_set())
    report = dict(taskcheck.check(write_task(tmp_path, 'source = "npz"\npath = "g.npz"'), tmp_path))
    assert report["input"].startswith("batches of graphs: x float32 (N, 6)")
    assert report["output"].startswith("logits (G, 2)") and report["splits"].startswith(
        "train 60, val 30, test 30 graphs"
    )
    save_npz(tmp_path / "g.npz", easy_set(), masks=False)
    path = write_task(tmp_path, 'source = "npz"\npath = "g.npz"\n[splits]\nval = 0.25\ntest = 0.25')
    assert dict(taskcheck.check(path, tmp_path))["splits"].startswith("train 60, val 30, test 30 graphs")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"graph_ptr": None}, "missing graph_ptr"),
        ({"graph_ptr": np.array([0, 5, 3])}, "rise strictly from 0"),
        ({"edge_index": np.array([[0], [500]])}, "must stay inside its graph"),
        ({"y": np.zeros(3, dtype=np.int64)}, r"one per graph \(120,\)"),
        ({"val_mask": None}, "together"),
        ({"x": np.full((2, 6), np.inf)}, "NaN or Inf"),
    ],
)
def test_a_bad_graph_set_npz_says_what_to_fix(tmp_path, change, message):
    save_npz(tmp_path / "bad.npz", easy_set(), **change)
    with pytest.raises(TaskError, match=message):
        taskfiles.load(write_task(tmp_path, 'source = "npz"\npath = "bad.npz"'))


def test_a_one_graph_npz_and_a_graph_set_npz_name_the_other_kind(tmp_path):
    save_npz(tmp_path / "g.npz", easy_set())
    with pytest.raises(TaskError, match="set kind = 'graphs'"):
        taskfiles.load(write_task(tmp_path, 'source = "npz"\npath = "g.npz"', kind_="graph"))


def test_a_csv_pair_is_one_graph_or_many_as_its_graph_id_column_says(tmp_path):
    save_csv(tmp_path, easy_set())
    report = dict(taskcheck.check(write_task(tmp_path, CSV_PAIR), tmp_path / "cache"))
    assert report["splits"].startswith("train 60, val 30, test 30 graphs") and "gathers, avoids" not in report["output"]
    assert taskfiles.classes(taskfiles.load(tmp_path / "task.toml")) == ("avoids", "gathers")
    save_csv(tmp_path, easy_set(), grouped=False)
    report = dict(taskcheck.check(write_task(tmp_path, CSV_PAIR, kind_="graph", name="nodes"), tmp_path / "cache"))
    assert report["input"].startswith("the whole graph") and " nodes (split seed" in report["splits"]
    with pytest.raises(TaskError, match="holds one graph.*graph_id"):
        taskfiles.load(write_task(tmp_path, CSV_PAIR))


@pytest.mark.parametrize(
    "nodes_edit, edges_edit, message",
    [
        (None, lambda rows: rows + [["n0", "ghost"]], r"edges.csv: line \d+ names node 'ghost'.*add the node"),
        (lambda rows: [r[1:] for r in rows], None, "nodes.csv: no node id column 'id'"),
        (None, lambda rows: [["from", "to"]] + rows[1:], "edges.csv: no edge source column 'src'"),
        (lambda rows: rows[:5] + [rows[5][:1] + ["tall"] + rows[5][2:]] + rows[6:], None, r"'f0' line 6 holds 'tall'"),
        (lambda rows: rows + [rows[1][:-1] + ["g999"]], None, "repeats node id"),
        (lambda rows: rows[:3] + [rows[3][:-3] + ["other"] + rows[3][-2:]] + rows[4:], None, "another label"),
        (None, lambda rows: rows + [["n0", "n300"]], "must stay inside its graph"),
        (lambda rows: [[c.replace("label", "class") for c in rows[0]]] + rows[1:], None, "no label.*column 'label'"),
    ],
)
def test_a_bad_csv_pair_names_the_file_the_line_and_the_fix(tmp_path, nodes_edit, edges_edit, message):
    save_csv(tmp_path, easy_set(40))
    for name, edit in (("nodes.csv", nodes_edit), ("edges.csv", edges_edit)):
        if edit is not None:
            rows = list(csv.reader((tmp_path / name).read_text().splitlines()))
            with open(tmp_path / name, "w", newline="") as f:
                csv.writer(f).writerows(edit(rows))
    with pytest.raises(TaskError, match=message):
        taskfiles.load(write_task(tmp_path, CSV_PAIR))


def test_a_batch_of_graphs_keeps_each_graph_whole_and_in_the_order_asked():
    graphs = easy_set(10)
    split = graphbatch.GraphSplit(
        torch.from_numpy(graphs.x), torch.from_numpy(graphs.edge_index), torch.from_numpy(graphs.ptr)
    )
    batch = split[torch.tensor([7, 2])]
    sizes = np.diff(graphs.ptr)
    assert len(batch) == 2 and batch.batch.tolist() == [0] * sizes[7] + [1] * sizes[2]
    assert torch.equal(batch.x[: sizes[7]], torch.from_numpy(graphs.x[graphs.ptr[7] : graphs.ptr[8]]))
    owner = batch.batch[batch.edge_index]
    assert (owner[0] == owner[1]).all() and batch.edge_index.shape[1] == sum(
        ((graphsets.graph_of_nodes(graphs.ptr)[graphs.edge_index[0]] == g).sum() for g in (7, 2))
    )
    assert len(split[0:3]) == 3 and split[0:3].batch.max() == 2


MIXER = """import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.out = nn.Linear(in_shape[0], num_classes)

    def forward(self, x, edge_index, batch):
        pooled = torch.zeros(int(batch.max()) + 1, x.shape[1]).index_add_(0, batch, x)
        return self.out(pooled - x.mean(0))  # the mean over the whole batch: other graphs leak in
"""


def test_a_network_that_mixes_the_graphs_of_a_batch_is_refused_at_smoke(tmp_path, one_thread):
    (tmp_path / "mixer.py").write_text(MIXER)
    graphs = easy_set(20)
    split = graphbatch.GraphSplit(
        torch.from_numpy(graphs.x[:, :6]), torch.from_numpy(graphs.edge_index), torch.from_numpy(graphs.ptr)
    )
    inputs = trainer.Inputs("graphs", split, torch.from_numpy(graphs.y), None, None)
    with pytest.raises(runner.CandidateError, match="other outputs alone than inside the batch") as err:
        runner.smoke(runner.load_candidate(tmp_path / "mixer.py"), SPEC, inputs, torch.device("cpu"), 1e12)
    assert err.value.kind == "graphs-mixed"
    for seed in SEEDS:
        report = runner.smoke(runner.load_candidate(seed), SPEC, inputs, torch.device("cpu"), 1e12)
        assert report["output_shape"] == [runner.SMOKE_BATCH, 2] and report["flops"] > 0


@pytest.fixture
def one_thread():
    """Small batches on one thread: more only wait for each other (and for the machine's other work)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda p: p.stem)
def test_each_seed_passes_the_static_check_and_learns_a_graph_set(seed, tmp_path, one_thread):
    assert static_check(seed.read_text(), "graphs").ok and not static_check(seed.read_text(), "graph").ok
    net = runner.load_candidate(seed)
    assert runner.functional_hash(net, SPEC) == runner.functional_hash(net, SPEC)
    save_npz(tmp_path / "g.npz", easy_set(200))
    task = taskfiles.load(write_task(tmp_path, 'source = "npz"\npath = "g.npz"'))
    prepared = prepare(task, tmp_path / "cache")
    inputs = trainer.load_inputs(prepared.inputs_dir, torch.device("cpu"))
    model = runner.build(net, task.in_shape, task.num_classes, 0)
    trainer.train(
        model, inputs, trainer.TrainConfig(epochs=15, batch_size=16, lr=1e-2, weight_decay=0.0), torch.device("cpu")
    )
    logits = trainer.predict(model, inputs.val_x, 16, torch.device("cpu"), inputs)
    assert logits.shape == (50, 2) and (logits.argmax(1) == prepared.labels("val")).mean() > 0.65  # chance is 0.5


def test_the_seeds_hash_apart_and_the_reference_network_pools_per_graph():
    assert len({runner.functional_hash(runner.load_candidate(s), SPEC) for s in SEEDS}) == len(SEEDS)
    namespace: dict = {}
    exec(reference_code("graphs", None), namespace)  # noqa: S102 - the host's own code
    batch = runner.probe_graphs(SPEC)
    assert namespace["Net"]((6,), 2)(*batch.args()).shape == (2, 2)


# -- in the real sandbox --------------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path, cache_dir, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    return tmp_path


def cli(*args: str) -> list[dict]:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def seed_variant(request: dict, widths: list[int]) -> str:
    """The scripted LLM's answer: a seed with its next hidden width (each a different network)."""
    if kind(request) == "analyze":
        return "Fine."
    seed = SEEDS[len(widths) % len(SEEDS)].read_text()
    widths.append(32 + 8 * len(widths))
    return fenced(
        seed.replace("hidden: int = 64", f"hidden: int = {widths[-1]}").replace(
            "hidden: int = 48", f"hidden: int = {widths[-1]}"
        )
    )


@pytest.mark.slow
@requires_bubblewrap
def test_the_csv_graph_set_example_trains_through_run_and_its_candidate_page_renders(env):
    task = REPO / "examples" / "tiny-graphs" / "task.toml"  # the README's graph-set example
    widths: list[int] = []
    with ScriptedLLMServer(default=lambda request: seed_variant(request, widths)) as server:
        args = (
            "run",
            "--task",
            str(task),
            "--budget",
            "2",
            "--scoring",
            "trusted",
            "--archive",
            "a.db",
        )
        summary = cli(*args, "--model", MODEL, "--api-base", server.url, "--json")[-1]
    assert summary["trained"] == 2, summary
    db = sqlite3.connect(env / "a.db")
    rows = db.execute(
        "SELECT c.id, e.status, e.val_accuracy FROM candidates c JOIN evaluations e ON e.candidate_id = c.id ORDER BY c.id"
    ).fetchall()
    assert [r[1] for r in rows] == ["trained", "trained"] and all(r[2] > 0.5 for r in rows), rows
    with Browser(create_app(env / "a.db")) as client:
        page = client.get(f"/candidate/{rows[0][0]}")
        assert page.status_code == 200 and "tiny-graphs" in page.text and "batch" in page.text
        assert client.get("/").status_code == 200


@pytest.mark.slow
@requires_bubblewrap
def test_an_npz_graph_set_sbm_graphs_and_a_csv_graph_train_through_baseline_and_eval(env):
    save_npz(env / "g.npz", easy_set())
    npz_task = write_task(env, 'source = "npz"\npath = "g.npz"', extra="[train]\nepochs = 20\nbatch_size = 8")
    widths: list[int] = []
    with ScriptedLLMServer(default=lambda request: seed_variant(request, widths)) as server:
        common = ("--algo", "best-of-n", "--budget", "1", "--scoring", "trusted", "--archive", "a.db", "--json")
        llm = ("--model", MODEL, "--api-base", server.url)
        on_file = cli("baseline", *common, *llm, "--task", str(npz_task))[-1]
        built_in = cli("baseline", *common, *llm, "--task", "sbm-graphs", "--epochs", "3")[-1]
    assert on_file["mean_test"] > 0.5, on_file  # chance is 0.5; three epochs of sbm-graphs only need to be scored
    assert built_in["task"] == "sbm-graphs" and 0 <= built_in["mean_test"] <= 1, built_in
    (env / "nodes").mkdir()
    save_csv(env / "nodes", easy_set(), grouped=False)
    node_task = write_task(env / "nodes", CSV_PAIR, kind_="graph", name="csv-nodes", extra="[train]\nepochs = 3")
    seed = REPO / "archive" / "seeds" / "graph" / "gcn.py"
    rows = cli("eval", "--json", "--archive", "a.db", "--task", str(node_task), "--scoring", "trusted", str(seed))
    assert rows[0]["status"] == "trained" and rows[0]["unverified"] is True, rows


@pytest.mark.parametrize(
    "kind_, data, message",
    [
        ("graphs", 'source = "csv"\nnodes = "nodes.csv"\ntarget = "label"', "gives nodes and edges files"),
        ("graphs", 'source = "csv"\nnodes = "n.csv"\nedges = "e.csv"\npath = "t.csv"\ntarget = "y"', "no path"),
        ("graphs", 'source = "csv"\npath = "nodes.csv"\ntarget = "label"', "names its nodes and edges files"),
        ("table", CSV_PAIR, "names its nodes and edges files"),
        ("graphs", 'source = "images"\npath = "x"', "cannot feed a 'graphs' task"),
    ],
)
def test_a_graph_task_file_that_does_not_fit_together_says_what_to_change(tmp_path, kind_, data, message):
    with pytest.raises(TaskError, match=message):
        taskfiles.load(write_task(tmp_path, data, kind_=kind_))
