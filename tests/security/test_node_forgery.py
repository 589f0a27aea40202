"""Graph scoring of node classification against a GNN that cheats (issue 25): one that looks for the held-out nodes'
labels to bake into its graph is scored on what it learnt (no held-out node index or label reaches its process), and
one that trains far past its budget inside the export's forward pass is stopped by the host's training budget.
Each runs end to end through an Evaluator with graph scoring (the default) on sbm-nodes."""

from __future__ import annotations

import json
import os

import pytest

from agentarch.evaluation.evaluator import Evaluator
from agentarch.store.archive import Archive
from agentarch.tasks.preparation import prepare
from agentarch.tasks.registry import get_task
from tests.security.harness import attack_settings
from tests.security.test_graph_forgery import MODES

PRELUDE = """
import torch
from torch import nn
_B = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
_imp = _B["__import__"]
_json, _np, _os = _imp("json"), _imp("numpy"), _imp("os")
_data = _json.load(_B["open"]("spec.json"))["inputs_dir"]
"""

SMUGGLE = (
    PRELUDE
    + """
def _steal():
    \"\"\"Every held-out node's label it can read, {node: label}: the split's node indices beside its data (trusted
    scoring's inputs) or in the full inputs folder, and the labels wherever the cache keeps them.\"\"\"
    found = {}
    for split in ("val", "test"):
        for nodes in (_data + f"/{split}_x.npy", _data + f"/../inputs/{split}_x.npy"):
            for labels in (_data + f"/../labels/{split}_y.npy", _data + f"/labels/{split}_y.npy"):
                try:
                    found.update(zip(_np.load(nodes).tolist(), _np.load(labels).tolist()))
                    print("STOLEN", split, flush=True)
                except OSError as err:
                    print("DENIED", split, type(err).__name__, flush=True)
    return found

class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.lin = nn.Linear(in_shape[0], num_classes)
        answers = torch.zeros(4096, num_classes)
        for node, label in _steal().items():
            answers[node, label] = 50.0
        self.register_buffer("answers", answers)  # a copy of the answers, baked into the graph
    def forward(self, x, edge_index):
        return self.lin(x) + self.answers[: x.shape[0]]
"""
)
"""Bakes every held-out label it can find into its graph: scored near 1.0 if any reached it."""

OVERTRAIN = (
    PRELUDE
    + """
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(in_shape[0], 128), nn.Linear(128, num_classes)
        self.steps, self.cheated = 0, False
    def body(self, x, edge_index):
        h = torch.relu(self.lin1(x))
        return self.lin2(h.index_add(0, edge_index[1], h[edge_index[0]]))
    def forward(self, x, edge_index):
        if self.training:
            self.steps += 1
        elif self.steps and not self.cheated and torch._C._get_tracing_state() is not None:  # the trained export's
            # trace: 5000 more full-graph epochs
            self.cheated = True
            tracing = torch._C._get_tracing_state()
            torch._C._set_tracing_state(None)
            try:
                meta = _json.load(_B["open"](_data + "/meta.json"))
                xs = (torch.from_numpy(_np.load(_data + "/train_x.npy")) - torch.tensor(meta["mean"])) / torch.tensor(
                    meta["std"]
                )
                edges = torch.from_numpy(_np.load(_data + "/edge_index.npy"))
                ys = torch.from_numpy(_np.load(_data + "/train_y.npy"))
                optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
                with torch.enable_grad():
                    for _ in range(5000):
                        optimizer.zero_grad()
                        nn.functional.cross_entropy(self.body(xs.float(), edges), ys, ignore_index=-100).backward()
                        optimizer.step()
            finally:
                torch._C._set_tracing_state(tracing)
        return self.body(x, edge_index)
"""
)
"""Trains 5000 more full-graph epochs in its first eval-mode forward pass after training (the export's trace, hidden
from the tracer): far past its grant of one epoch."""


@pytest.fixture(autouse=True)
def _both_modes_run_untrusted_code(monkeypatch):
    monkeypatch.setenv("AGENTARCH_WEAK_SANDBOX_OK", "1")


def settings(tmp_path, cache_dir, isolation):
    return attack_settings(
        tmp_path, cache_dir, isolation, task="sbm-nodes", timeout_s=120, smoke_timeout_s=90, novelty_threshold=1.0
    )


def test_the_smuggler_would_find_the_labels_where_they_were_reachable(tmp_path, cache_dir, monkeypatch):
    """The control: given the host's own inputs folder, the attack finds every held-out label (so a clean score in
    the sandbox is the sandbox's doing, not a broken attack)."""
    prepared = prepare(get_task("sbm-nodes"), cache_dir)
    (tmp_path / "spec.json").write_text(json.dumps({"inputs_dir": os.fspath(prepared.inputs_dir)}))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(SMUGGLE, namespace)  # noqa: S102 - the test's own attack, on the host's copy of the data
    net = namespace["Net"]((16,), 4)
    assert int((net.answers > 0).sum()) == len(prepared.labels("val")) + len(prepared.labels("test"))


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_a_gnn_that_bakes_in_the_held_out_labels_it_finds_is_scored_on_what_it_learnt(isolation, tmp_path, cache_dir):
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, settings(tmp_path, cache_dir, isolation)).evaluate(SMUGGLE, "smuggler")
    assert result.status == "trained", result.reason
    assert result.metrics["test_accuracy"] < 0.8 and result.metrics["val_accuracy"] < 0.8, result.metrics


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_a_gnn_that_trains_inside_its_export_is_stopped_by_the_budget(isolation, tmp_path, cache_dir):
    with Archive(tmp_path / "a.db") as archive:
        result = Evaluator(archive, settings(tmp_path, cache_dir, isolation)).evaluate(OVERTRAIN, "overtrain")
        assert result.status == "failed", (result.status, result.reason, result.metrics)
        assert result.reason.startswith("[train:budget] the job used "), result.reason
        assert "the 1 training steps asked for (1 epoch x 1 batches)" in result.reason, result.reason
        assert all(e["test_accuracy"] is None for e in archive.evaluations(result.id))
