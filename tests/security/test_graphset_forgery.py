"""Graph scoring of graph classification against a network that cheats (issue 25): one that mixes the graphs of a batch
only in eval mode, and only into the middle rows of a batch, out of sight of the smoke stage's check of the first and
the last graph (`graphs-mixed`). Trusted scoring predicts held-out graphs in batches, so the mixing reaches its
predictions; graph scoring runs every held-out graph alone in the clean evaluator, so it scores exactly what the same
network without the mixing scores. Each runs end to end through an Evaluator on sbm-graphs."""

from __future__ import annotations

import pytest

from agentarch.evaluation.evaluator import Evaluator
from agentarch.store.archive import Archive
from tests.conftest import REPO
from tests.security.harness import attack_settings
from tests.security.test_graph_forgery import MODES

GIN = (REPO / "archive" / "seeds" / "graphs" / "gin.py").read_text()
MIXER = GIN.replace(
    "        return self.head(torch.cat(readouts, dim=1))",
    """        out = self.head(torch.cat(readouts, dim=1))
        if self.training:
            return out
        rows = torch.arange(graphs)
        middle = ((rows > 0) & (rows < graphs - 1)).float().unsqueeze(1)  # not the first or the last graph
        first = torch.tensor([1.0, 0.0, 0.0])  # sbm-graphs has 3 classes
        return out + middle * (100.0 + h.mean().tanh()) * first  # read from every node of the batch""",
)
"""The GIN seed that, in eval mode, pushes every middle graph of a batch to class 0 by an amount read from all the
batch's nodes (the other graphs')."""
HONEST = MIXER.replace("if self.training:", "if True:")
"""The same network without the mixing: its training is the mixer's, step for step."""


@pytest.fixture(autouse=True)
def _both_modes_run_untrusted_code(monkeypatch):
    monkeypatch.setenv("AGENTARCH_WEAK_SANDBOX_OK", "1")


def evaluate(code: str, name: str, tmp_path, cache_dir, isolation: str, scoring: str):
    settings = attack_settings(
        tmp_path,
        cache_dir,
        isolation,
        task="sbm-graphs",
        epochs=10,
        archive=tmp_path / f"{name}-{scoring}.db",
        scoring=scoring,
        timeout_s=120,
        smoke_timeout_s=90,
        novelty_threshold=1.0,
    )
    with Archive(settings.archive) as archive:
        result = Evaluator(archive, settings).evaluate(code, name)
    assert result.status == "trained", result.reason
    return result.metrics


@pytest.mark.slow
@pytest.mark.parametrize("isolation", MODES)
def test_a_network_that_mixes_graphs_only_at_evaluation_is_scored_on_each_graph_alone(isolation, tmp_path, cache_dir):
    honest = evaluate(HONEST, "honest", tmp_path, cache_dir, isolation, "graph")
    assert MIXER != GIN and honest["test_accuracy"] > 0.5  # chance is 1/3
    mixer = evaluate(MIXER, "mixer", tmp_path, cache_dir, isolation, "graph")
    for key in ("val_accuracy", "test_accuracy"):
        assert mixer[key] == honest[key], (mixer, honest)  # exactly: the mixing never reached a scored output
    if isolation == "process":  # the control: the mixing is real, and trusted scoring's batches let it through
        trusted = evaluate(MIXER, "mixer", tmp_path, cache_dir, isolation, "trusted")
        assert trusted["test_accuracy"] < honest["test_accuracy"] - 0.1, (trusted, honest)
