"""Parameter and FLOP counts of all 15,625 NAS-Bench-201 cells, computed once and shipped as package data.

Run from the repository root:  .venv/bin/python scripts/nb201_counts.py

Each count is of the network `agentarch/search/spaces/templates/nb201.py.j2` renders for the table task (the paper's
skeleton: N=5 cells per stage, C=16), counted as the sandbox counts a candidate (`agentarch.runner.runner`):
parameters are every tensor of `model.parameters()`, FLOPs are torch's per-operator formulas for one input
(convolutions and matmuls, a multiply-add is 2 FLOPs; pooling, batch norm, additions and `none`'s zeroing are
free). So a table row's `flops` means what a trained candidate's `flops` means, and a constraint reads alike.

Rendering and counting 3 x 15,625 networks takes long on a CPU, and it is not needed: the skeleton is fixed and
nothing is pruned (an edge out of a node that only receives `none` is still built and still computes), so each
count is the all-`none` network plus, for each of the 6 edges, what its operation adds there. The script
measures those 1 + 6 x 4 networks per dataset, writes the table from them, and then checks the additive model
exactly against fully rendered and counted networks for a random sample of cells (`--verify`, default 100).

The extremes of the space are checked against NAS-Bench-201's published figures (its v1.1 files: params in
millions, FLOPs in millions of multiply-adds of the convolutions and the classifier, its bias included):
parameters agree exactly, and the published FLOPs are ours / 2 + the classifier's bias (num_classes), to the
published five decimals. So `published_mflops(flops, classes)` converts a shipped count to the paper's unit.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import random
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentarch.runner.runner import count_flops  # noqa: E402

from agentarch.search.spaces import get_space  # noqa: E402
from agentarch.search.spaces.nb201 import EDGES, OPS, edges, from_edges  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402
from agentarch.tasks.tabular import COSTS_FILE, DATASETS, table_bytes  # noqa: E402

Counts = tuple[int, int]
"""(parameters, FLOPs) of one network."""

PUBLISHED = {
    "cifar10": {"none": (0.073306, 7.78305), "nor_conv_3x3": (1.531546, 220.11969)},
    "cifar100": {"none": (0.079156, 7.7889), "nor_conv_3x3": (1.537396, 220.12554)},
    "imagenet16": {"none": (0.080456, 1.9534), "nor_conv_3x3": (1.538696, 55.03756)},
}
"""NAS-Bench-201's (params in millions, FLOPs in millions of multiply-adds) of the all-`none` and all-conv3x3
cells, the extremes of the space, as the benchmark's v1.1 files record them (min and max over all cells)."""


def build(arch: str, dataset: str) -> nn.Module:
    """The network the nb201 space renders for `arch` on the table task of `dataset`, built from its source.

    This executes template code of our own making, not a candidate's, so it runs here rather than in the
    sandbox."""
    task = get_task(f"nb201-{dataset}")
    namespace: dict[str, object] = {}
    exec(compile(get_space("nb201").render(arch, task), f"<nb201 {arch}>", "exec"), namespace)
    return namespace["Net"](task.in_shape, task.num_classes).eval()  # type: ignore[operator]


def measure(arch: str, dataset: str) -> Counts:
    """Parameters and FLOPs of the fully rendered network, exactly as a smoke run counts them."""
    model = build(arch, dataset)
    x = torch.zeros(1, *get_task(f"nb201-{dataset}").in_shape)
    return sum(p.numel() for p in model.parameters()), count_flops(model, x)


def published_mflops(flops: int, num_classes: int) -> float:
    """A shipped FLOP count in NAS-Bench-201's unit: millions of multiply-adds, the classifier's bias counted."""
    return (flops / 2 + num_classes) / 1e6


def additive_model(dataset: str) -> tuple[Counts, dict[tuple[int, str], Counts]]:
    """The all-`none` network's counts, and what each (edge, operation) adds to them."""
    base = measure(from_edges(["none"] * len(EDGES)), dataset)
    adds = {}
    for edge in range(len(EDGES)):
        for op in OPS[1:]:
            ops = ["none"] * len(EDGES)
            ops[edge] = op
            params, flops = measure(from_edges(ops), dataset)
            adds[(edge, op)] = (params - base[0], flops - base[1])
    return base, adds


def predict(ops: tuple[str, ...] | list[str], base: Counts, adds: dict[tuple[int, str], Counts]) -> Counts:
    """A cell's counts by the additive model."""
    params, flops = base
    for edge, op in enumerate(ops):
        if op != "none":
            params, flops = params + adds[(edge, op)][0], flops + adds[(edge, op)][1]
    return params, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", type=int, default=100, help="fully rendered cells to check per dataset")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "agentarch/tasks/data" / COSTS_FILE
    )
    args = parser.parse_args()
    started = time.perf_counter()
    archs = [row["arch_str"] for row in csv.DictReader(table_bytes().decode().splitlines())]  # the table's order
    models = {dataset: additive_model(dataset) for dataset in DATASETS}
    edge_ops = [edges(arch) for arch in archs]
    counts = {d: [predict(ops, *models[d]) for ops in edge_ops] for d in DATASETS}

    rng = random.Random(0)
    sample = rng.sample(range(len(archs)), args.verify)
    for dataset in DATASETS:
        wrong = [archs[i] for i in sample if measure(archs[i], dataset) != counts[dataset][i]]
        if wrong:
            raise SystemExit(f"the additive model disagrees with full rendering on {dataset}: {wrong[:3]}")
        print(f"{dataset}: additive model == full rendering on {len(sample)} random cells")
        classes = get_task(f"nb201-{dataset}").num_classes
        for op, (params, mflops) in PUBLISHED[dataset].items():
            ours = counts[dataset][archs.index(from_edges([op] * len(EDGES)))]
            converted = published_mflops(ours[1], classes)
            print(
                f"  all-{op}: params {ours[0]:,} (published {params} M), FLOPs {ours[1]:,} "
                f"= {converted:.5f} M multiply-adds with the bias (published {mflops} M)"
            )
            if round(ours[0] / 1e6, 6) != params or abs(converted - mflops) > 1e-5:
                raise SystemExit(f"all-{op} on {dataset} disagrees with NAS-Bench-201's published counts")

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["arch_str", *(f"{d}_{m}" for d in DATASETS for m in ("params", "flops"))])
    for i, arch in enumerate(archs):
        writer.writerow([arch, *(v for d in DATASETS for v in counts[d][i])])
    args.out.write_bytes(gzip.compress(text.getvalue().encode(), mtime=0))
    print(f"wrote {len(archs):,} rows to {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
