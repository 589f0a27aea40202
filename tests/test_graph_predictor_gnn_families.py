"""The second graph sample's LLM-style GNN families (benchmarks/graph_predictor.py `gnn_family`, issue 25): every
family's code, as drawn for node and for graph classification, builds, takes a training step, exports with the
sandbox's recipe and gives graph features whose message passing matches the family; so does a network of each
readout. The
networks here are the benchmark's own generated code on a task's real inputs, a few seconds in all."""

from __future__ import annotations

import math
import random
import types
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from agentarch.runner import runner, trainer

from agentarch.evaluation.graphs.features import graph_features
from agentarch.tasks.preparation import prepare
from agentarch.tasks.registry import get_task
from benchmarks.graph_predictor import (
    BROAD_SECTION,
    FAMILIES,
    GNN_SECTION,
    READOUT,
    broad_gnn,
    gnn_family,
    with_section,
)

NAMED = [family for family in FAMILIES if family != "variant"]
DRAWS = 2
"""Networks drawn per family and task."""


@pytest.fixture(scope="module")
def inputs(cache_dir) -> dict[bool, trainer.Inputs]:
    """The inputs of node classification (False) and of graph classification (True, a readout)."""
    return {
        readout: trainer.load_inputs(prepare(get_task(task), cache_dir).train_dir, torch.device("cpu"))
        for readout, task in ((False, "sbm-nodes"), (True, "sbm-graphs"))
    }


def build(code: str, readout: bool) -> torch.nn.Module:
    module = types.ModuleType("candidate")
    exec(compile(code, "candidate", "exec"), module.__dict__)
    return module.Net((8,) if readout else (16,), 3 if readout else 4)


def trained_step(net: torch.nn.Module, inputs: trainer.Inputs, readout: bool) -> None:
    """One optimiser step on the task's training inputs: the loss is finite and every parameter that the output
    reads gets a finite gradient."""
    torch.manual_seed(0)
    if readout:
        args, labels = inputs.train_x[torch.arange(16)].args(), inputs.train_y[:16]
    else:
        args, labels = inputs.args(inputs.train_x), inputs.train_y
    loss = F.cross_entropy(net.train()(*args), labels, ignore_index=trainer.IGNORE_INDEX)
    loss.backward()
    assert math.isfinite(loss.item())
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    last = len(getattr(net, "layers", [])) - 1  # GatedGCN's last edge update is never read, as in the paper's code
    assert not [name for name in missing if not name.startswith(f"layers.{last}.norm_e.")], missing
    torch.optim.Adam(net.parameters(), 1e-2).step()


def exported(net: torch.nn.Module, inputs: trainer.Inputs, tmp_path: Path) -> dict[str, float]:
    path = tmp_path / "graph.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner.export_graph(net.eval(), inputs, path)
    return graph_features(path.read_bytes())


@pytest.mark.parametrize("family", NAMED)
def test_each_family_builds_trains_exports_and_gives_message_passing_features(family, inputs, tmp_path):
    rng = random.Random(0)
    for draw in range(DRAWS):
        for readout in (False, True):
            code = gnn_family(rng, readout, family)
            net = build(code, readout)
            trained_step(net, inputs[readout], readout)
            found = exported(net, inputs[readout], tmp_path)
            assert all(math.isfinite(found[k]) for k in ("graph.log_flops", "graph.mp.log_flops_per_edge")), code
            assert found["graph.mp.layers"] >= 1, code
            assert (found["graph.mp.attention"] > 0) == (family == "gat"), code
            assert (found["graph.mp.readouts"] >= 1) == readout, code


@pytest.mark.parametrize("readout", list(READOUT))
def test_every_readout_is_drawn_and_exports(readout, inputs, tmp_path):
    rng = random.Random(0)
    code = next(
        code
        for code in (gnn_family(rng, True, NAMED[i % len(NAMED)]) for i in range(200))
        if code.splitlines()[0].endswith(f', {readout} readout)."""')
    )
    net = build(code, True)
    trained_step(net, inputs[True], True)
    found = exported(net, inputs[True], tmp_path)
    assert found["graph.mp.readouts"] >= 1 and found["graph.mp.layers"] >= 1, code


def test_the_broad_sample_draws_every_family():
    rng = random.Random(27)
    assert {broad_gnn(rng, True)[0] for _ in range(40)} == set(FAMILIES)


def test_a_samples_section_replaces_its_own_and_keeps_the_others_in_order():
    """The page keeps every section it has: writing one graph sample's section again leaves the image tasks' and the
    other sample's as they stand (their figures take minutes to compute), the first sample before the second."""
    image = "# page\n\n## digits\n\n| a |\n"
    first, second = f"{GNN_SECTION}\n\n### sbm-nodes\n\none\n", f"{BROAD_SECTION}\n\n### sbm-nodes\n\ntwo\n"
    page = with_section(with_section(image, first), second)
    assert page == f"{image}\n{first}\n{second}"
    again = with_section(page, first.replace("one", "ONE"))
    assert again == f"{image}\n{first.replace('one', 'ONE')}\n{second}"
    assert with_section(with_section(image, second), first) == page  # the first sample's section goes first
