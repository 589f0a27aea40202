"""The shipped NAS-Bench-201 parameter and FLOP counts: complete, equal to counting the rendered network, and
equal to the benchmark's published figures where those are known."""

import importlib.util
import random

import pytest

from agentarch.tasks.tabular import DATASETS, nb201_table
from tests.conftest import REPO


def counts_script():
    spec = importlib.util.spec_from_file_location("nb201_counts", REPO / "scripts" / "nb201_counts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_cell_has_counts_on_every_dataset():
    table = nb201_table()
    for dataset in DATASETS:
        assert len(table.params[dataset]) == len(table.flops[dataset]) == 15_625
        assert table.params[dataset].min() > 0 and table.flops[dataset].min() > 0
    score = table.query("cifar10", table.archs[1])
    assert score.measures() == {"params": score.params, "flops": score.flops}


@pytest.mark.parametrize("dataset", DATASETS)
def test_the_shipped_counts_are_those_of_the_fully_rendered_network(dataset):
    script, table = counts_script(), nb201_table()
    for arch in random.Random(dataset).sample(table.archs, 3):
        score = table.query(dataset, arch)
        assert script.measure(arch, dataset) == (score.params, score.flops)


@pytest.mark.parametrize("dataset", DATASETS)
def test_the_extremes_match_the_published_nas_bench_201_figures(dataset):
    script, table = counts_script(), nb201_table()
    classes = {"cifar10": 10, "cifar100": 100, "imagenet16": 120}[dataset]
    for op, (params, mflops) in script.PUBLISHED[dataset].items():
        score = table.query(dataset, script.from_edges([op] * 6))
        assert score.params / 1e6 == pytest.approx(params, abs=1e-6)
        assert script.published_mflops(score.flops, classes) == pytest.approx(mflops, abs=1e-5)
    assert table.params[dataset].max() / 1e6 == pytest.approx(script.PUBLISHED[dataset]["nor_conv_3x3"][0], abs=1e-6)
