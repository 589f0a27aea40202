"""The NAS-Bench-201 cell space (Dong & Yang, 2020), in the benchmark's own string format.

A cell is a 4-node DAG: node 0 is the cell's input, and each later node j is the sum of one
operation applied to every earlier node i, so there are 6 edges and 5**6 = 15,625 cells. The
string lists, node by node, the operation on each incoming edge with its source:

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

Keeping the benchmark's format means results can be looked up in, and compared with, NAS-Bench-201
directly. Note that, as in the benchmark, some distinct strings compute the same function (an
edge out of a node that only ever receives `none` adds nothing); the space does not merge them.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from agentarch.search.spaces.base import SearchSpace, Size, SpaceError, module_literals, pooled, require_str

if TYPE_CHECKING:
    import optuna

    from agentarch.tasks.task import Task

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4
EDGES = tuple((i, j) for j in range(1, NODES) for i in range(j))
"""(source, target) of each edge, in string order: 0->1, 0->2, 1->2, 0->3, 1->3, 2->3."""

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"

# Cells per stage (N) and first-stage channels (C) for each task. The paper's N=5, C=16 is meant
# for 32x32 images on a GPU; the smaller tasks get a skeleton that trains in seconds on a CPU.
SKELETONS: dict[str, tuple[int, int]] = {
    "digits": (1, 8),
    "mnist": (2, 16),
    "fashion-mnist": (2, 16),
    "cifar10": (5, 16),
    "cifar100": (5, 16),
    "svhn": (5, 16),
    # The table tasks hold the paper's own network, so a recorded best cell is the code that was benchmarked.
    "nb201-cifar10": (5, 16),
    "nb201-cifar100": (5, 16),
    "nb201-imagenet16": (5, 16),
}

_SHORT = {"skip_connect": "skip", "nor_conv_1x1": "conv1x1", "nor_conv_3x3": "conv3x3", "avg_pool_3x3": "avgpool"}


def skeleton(task: Task) -> tuple[int, int]:
    """(cells per stage, first-stage width) for `task`; unlisted tasks are sized by their resolution."""
    if task.name in SKELETONS:
        return SKELETONS[task.name]
    side = max(task.in_shape[1:])
    return (1, 8) if side <= 8 else (2, 16) if side <= 28 else (5, 16)


def edges(arch: str) -> list[str]:
    """The 6 operations of `arch` in string order, or SpaceError naming the first thing wrong."""
    text = require_str("nb201", arch)
    nodes = text.split("+")
    if len(nodes) != NODES - 1:
        raise SpaceError(
            f"nb201 architecture {text!r} has {len(nodes)} node(s) separated by '+'; it needs "
            f"{NODES - 1}, as in {EXAMPLE}"
        )
    ops = []
    for j, node in enumerate(nodes, start=1):
        entries = node[1:-1].split("|")
        if len(node) < 2 or node[0] != "|" or node[-1] != "|" or len(entries) != j:
            wanted = "|".join(f"op~{i}" for i in range(j))
            raise SpaceError(
                f"nb201 node {j} is {node!r}; it must be |{wanted}| (one operation for each "
                f"earlier node), as in {EXAMPLE}"
            )
        for i, entry in enumerate(entries):
            op, _, source = entry.partition("~")
            if source != str(i):
                raise SpaceError(
                    f"nb201 node {j}, entry {i} is {entry!r}; it must end in ~{i} "
                    f"(node {j}'s inputs come from nodes 0..{j - 1} in order)"
                )
            if op not in OPS:
                raise SpaceError(
                    f"nb201 edge {i}->{j} has unknown operation {op!r}; the operations are {', '.join(OPS)}"
                )
            ops.append(op)
    return ops


def from_edges(ops: list[str] | tuple[str, ...]) -> str:
    """The architecture string of 6 operations given in string order (edges 0->1, 0->2, 1->2, 0->3, ...)."""
    if len(ops) != len(EDGES) or any(op not in OPS for op in ops):
        raise SpaceError(f"nb201 needs {len(EDGES)} operations from {', '.join(OPS)}; got {list(ops)!r}")
    nodes = [[f"{op}~{i}" for op, (i, k) in zip(ops, EDGES) if k == j] for j in range(1, NODES)]
    return "+".join("|" + "|".join(node) + "|" for node in nodes)


def all_archs() -> list[str]:
    """All 15,625 cells, in the order of itertools.product over OPS (edge 0->1 varies slowest)."""
    return [from_edges(ops) for ops in itertools.product(OPS, repeat=len(EDGES))]


def genotype(arch: str) -> list[list[str]]:
    """The operations grouped by target node: genotype[j - 1][i] is the edge i->j."""
    ops = edges(arch)
    return [[op for op, (_, k) in zip(ops, EDGES) if k == j] for j in range(1, NODES)]


def _field(edge: tuple[int, int]) -> str:
    """The field of an edge in a JSON answer (`edge_0_1`), named as TPE's trials name it."""
    return f"edge_{edge[0]}_{edge[1]}"


class NB201Space(SearchSpace):
    """NAS-Bench-201 cells in the benchmark's macro skeleton (image tasks and the benchmark's own tables)."""

    name = "nb201"
    kinds = ("image", "tabular")
    grammar = (
        "a NAS-Bench-201 cell: a 4-node DAG where node 0 is the cell's input and each later node j is the sum of "
        "one operation applied to every earlier node i, so there are 6 edges (0->1, 0->2, 1->2, 0->3, 1->3, 2->3), "
        f"each one of {', '.join(OPS)} (none cuts the edge). The string lists, node by node, the operation on each "
        f"incoming edge with its source after '~', nodes separated by '+', e.g. {EXAMPLE}"
    )

    def fields(self) -> dict[str, tuple[Any, ...]]:
        return {_field(edge): OPS for edge in EDGES}

    def field_notes(self) -> dict[str, str]:
        return {_field((i, j)): f"the operation on the edge from node {i} to node {j}" for i, j in EDGES}

    def to_fields(self, arch: str) -> dict[str, Any]:
        return dict(zip(map(_field, EDGES), edges(arch)))

    def _from_fields(self, values: dict[str, Any]) -> str:
        return from_edges([values[_field(edge)] for edge in EDGES])

    def sample(self, rng: random.Random) -> str:
        return from_edges([rng.choice(OPS) for _ in EDGES])

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Replace the operation on one uniformly chosen edge with a different one (the REA mutation)."""
        ops = edges(arch)
        edge = rng.randrange(len(ops))
        ops[edge] = rng.choice([op for op in OPS if op != ops[edge]])
        return from_edges(ops)

    def suggest(self, trial: optuna.trial.BaseTrial) -> str:
        return from_edges([str(trial.suggest_categorical(f"edge_{i}_{j}", list(OPS))) for i, j in EDGES])

    def validate(self, arch: str) -> str:
        return from_edges(edges(arch))

    def parse_code(self, code: str) -> str:
        nodes = module_literals(code, ["GENOTYPE"])["GENOTYPE"]
        if not (
            isinstance(nodes, list)
            and len(nodes) == NODES - 1
            and all(isinstance(n, list) for n in nodes)
            and [len(n) for n in nodes] == list(range(1, NODES))
        ):
            raise SpaceError(f"GENOTYPE must be 3 lists of 1, 2 and 3 operation names; got {nodes!r}")
        return from_edges([op for node in nodes for op in node])

    def archs(self) -> Iterator[str]:
        return iter(all_archs())

    def size(self, arch: str, task: Task) -> Size:
        """Counted by arithmetic on the cell and the task's skeleton, term by term as nb201.py.j2 builds the network
        (exact, no code run): every edge's operation is built and runs, inert or not, as in the benchmark.
        Per cell edge at c channels: conv 1x1 c*c + 2c (batch norm), conv 3x3 9c*c + 2c; the rest none."""
        cells, width = skeleton(task)
        c_in, h, w = task.in_shape[0], task.in_shape[-2], task.in_shape[-1]
        ops = edges(arch)
        params, flops = 9 * c_in * width + 2 * width, 2 * 9 * c_in * width * h * w  # the stem: conv 3x3, batch norm
        c = width
        for stage in range(3):
            if stage > 0:  # the reduction block: conv 3x3 stride 2, conv 3x3, and the pool + conv 1x1 shortcut
                h, w = pooled(h), pooled(w)
                params += 9 * c * 2 * c + 2 * 2 * c + 9 * 2 * c * 2 * c + 2 * 2 * c + c * 2 * c
                flops += 2 * h * w * (9 * c * 2 * c + 9 * 2 * c * 2 * c + c * 2 * c)
                c *= 2
            kernels = {"nor_conv_1x1": 1, "nor_conv_3x3": 9}
            convs = [kernels[op] for op in ops if op in kernels]
            params += cells * sum(k * c * c + 2 * c for k in convs)
            flops += cells * sum(2 * k * c * c * h * w for k in convs)
        params += 2 * c + c * task.num_classes + task.num_classes  # final batch norm, classifier
        return Size(params, flops + 2 * c * task.num_classes)

    def identity(self, arch: str) -> str:
        """The cell with its inert edges set to none: two cells with the same identity build the same network.

        An edge is inert when it leaves a node that never reaches the output (every path from it
        ends in `none`), or when it is parameter-free (skip, pool) and leaves a node that is always
        zero (all its inputs are `none` or zero). The sandbox's functional hash would flag such
        pairs as duplicates anyway; knowing it here lets a search spend its budget on new networks.
        """
        ops = dict(zip(EDGES, edges(arch)))
        changed = True
        while changed:
            changed = False
            for node in range(1, NODES - 1):
                dead_end = all(ops[(node, k)] == "none" for k in range(node + 1, NODES))
                zero = all(ops[(i, node)] == "none" for i in range(node))
                inert = [
                    e
                    for e in EDGES
                    if (dead_end and e[1] == node)
                    or (zero and e[0] == node and ops[e] in ("skip_connect", "avg_pool_3x3"))
                ]
                for edge in inert:
                    if ops[edge] != "none":
                        ops[edge], changed = "none", True
        return from_edges([ops[e] for e in EDGES])

    def describe(self, arch: str) -> str:
        parts = []
        for j, node in enumerate(genotype(arch), start=1):
            terms = [f"{_SHORT[op]}(n{i})" for i, op in enumerate(node) if op != "none"]
            parts.append(f"n{j} = {' + '.join(terms) or 'zero'}")
        return "NAS-Bench-201 cell: " + "; ".join(parts) + "."

    def _context(self, arch: str, task: Task) -> dict[str, Any]:
        cells, width = skeleton(task)
        return {
            "genotype": genotype(arch),
            "cells": cells,
            "width": width,
            "task": task.name,
            "description": self.describe(arch),
        }
