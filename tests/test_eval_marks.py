"""`agentarch eval` marks a result scored in the candidate's own process (`--scoring trusted`) as unverified, with
why, and a graph-scored one not (issue 25): one tiny network through the real sandbox under each scoring mode."""

import json

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.store.scoring import GRAPH, TRUSTED, UNVERIFIED_WHY

pytestmark = pytest.mark.slow

TINY = """
import math
import torch
from torch import nn

HPARAMS = {{"epochs": 1}}


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.hidden = nn.Linear(math.prod(in_shape), {width})
        self.out = nn.Linear({width}, num_classes)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x.flatten(1))))
"""
"""A tiny digits MLP; the width makes each file a different function, so none is a duplicate of another."""


def evaluate(tmp_path, cache_dir, scoring: str, width: int, *flags: str) -> str:
    path = tmp_path / f"tiny{width}.py"
    path.write_text(TINY.format(width=width))
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--task",
            "digits",
            "--archive",
            str(tmp_path / f"{scoring}.db"),
            "--scoring",
            scoring,
            *flags,
            str(path),
        ],
        env={"AGENTARCH_CACHE_DIR": str(cache_dir), "AGENTARCH_THREADS": "1", "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(("scoring", "kind"), [("trusted", TRUSTED), ("graph", GRAPH)])
def test_eval_marks_a_trusted_result_unverified_and_a_graph_scored_one_not(tmp_path, cache_dir, scoring, kind):
    shown = evaluate(tmp_path, cache_dir, scoring, 8)
    assert ": trained" in shown, shown
    if scoring == "trusted":
        assert f"⚠ unverified: {UNVERIFIED_WHY}" in shown, shown
    else:
        assert "unverified" not in shown, shown

    (line,) = [json.loads(text) for text in evaluate(tmp_path, cache_dir, scoring, 12, "--json").splitlines()]
    assert line["status"] == "trained", line
    assert line["scoring"] == kind and line["unverified"] == (scoring == "trusted"), line


def test_a_result_without_scores_carries_no_mark(tmp_path, cache_dir):
    """An invalid file (no sandbox job) has no scores to believe or doubt: no mark, `scoring` null."""
    path = tmp_path / "broken.py"
    path.write_text("import os\n" + TINY.format(width=8))
    result = CliRunner().invoke(
        app,
        ["eval", "--task", "digits", "--archive", str(tmp_path / "a.db"), "--scoring", "trusted", "--json", str(path)],
        env={"AGENTARCH_CACHE_DIR": str(cache_dir)},
    )
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["status"] == "invalid" and line["scoring"] is None and line["unverified"] is False, line
