"""Does the predictor rank LLM-written networks outside any search space better with graph features? (issue 25)

A mixed archive per task, every candidate trained for real through the sandbox (`Evaluator`, graph scoring, a few
epochs, one thread per job), so each has a validation score and a kept ONNX graph:

- digits (image): the image seeds (archive/seeds/image), a seeded sample of NAS-Bench-201 cells and of macro
  space settings (rendered for digits by the project's own templates), and "LLM-style" modules outside any space:
  CNNs, ResNets, depthwise-separable nets with and without squeeze-excitation, MLPs, small ViTs and MLP-Mixers, each
  family's code written as an LLM writes it, with widths, depths, kernels, activations, normalisations, pooling and
  heads drawn from a seeded generator (the way tests/scripted.py varies its MLP, with more to vary);
- digits-table (table): the same digits as 64 features (so the MLP space applies), with the table seeds, a sample
  of mlp space settings and LLM-style table networks (MLPs, gated residual MLPs, feature-token transformers,
  wide-and-deep).

Candidate code is never imported here: each network is built, trained and exported inside the sandbox, and the host
reads its graph (agentarch/evaluation/graphs/features.py). The predictor's features come from
`agentarch.search.predictor.examples`, as the loop's screening and `agentarch predict` read them. Then, per task and
for several shuffles of a 5-fold split: each candidate is predicted by a predictor fitted on the other folds, once
without the graph's features (size, latency, a space's settings), once with them, each fitted on the task alone and
with the other task's candidates as a pool (as the loop's predictor pools the archive's other tasks, where its own
inner cross-validation says so); the Spearman rank correlation of the held-out predictions with the true scores
per group and over the task, mean and standard error over the shuffles. Also: the LLM-style group predicted by a
predictor fitted on the task's other groups only (space and seed candidates).

With --graphs, the same for the two built-in graph tasks instead (sbm-nodes: node classification, sbm-graphs: graph
classification): their seeds, samples of the gnn and gnnpool spaces, and LLM-style GNNs (`gnn_variant`), written to
benchmarks/graph_predictor_gnn.json and the page's section GNN_SECTION. With --graphs --broad, a second sample of the
graph tasks whose LLM-style group is drawn from more families (`broad_gnn`: `gnn_variant` and GIN, multi-head GAT,
GraphSAGE, GatedGCN, with attention and mixed readouts), written to benchmarks/graph_predictor_gnn_broad.json and the
section BROAD_SECTION, after the first.

Run: .venv/bin/python benchmarks/graph_predictor.py [--workers 2] [--epochs 2] [--graphs [--broad]] (trains, writes
the JSON and the .md); --report writes the page (with --graphs: that sample's section) again from the JSON alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from sklearn.model_selection import KFold

from agentarch.config import load_settings
from agentarch.evaluation.evaluator import Evaluator
from agentarch.search import predictor
from agentarch.search.spaces import SPACES
from agentarch.store.archive import Archive
from agentarch.tasks.builtin import TASKS

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
OUT_MD, OUT_JSON = HERE / "graph_predictor.md", HERE / "graph_predictor.json"
OUT_GNN_JSON = HERE / "graph_predictor_gnn.json"
"""The graph tasks' run (--graphs): its own candidates and figures, a section of the same page."""
GNN_SECTION = "## Graph tasks (node and graph classification)"
"""Where the graph tasks' section starts on the page: --graphs --report rewrites that section only."""
OUT_BROAD_JSON = HERE / "graph_predictor_gnn_broad.json"
"""The graph tasks' second sample (--graphs --broad: more families of LLM-style GNNs), its own section."""
BROAD_SECTION = "## Graph tasks, a second sample: more families of LLM-style GNNs"
SPLITS, FOLDS = 10, 5
VARIANTS = {"without graph": "none", "with graph": "all"}
GROUP_ORDER = ("seeds", "nb201", "macro", "mlp", "gnn", "gnnpool", "llm", "all")
TASK_NAMES = {"image": "digits", "table": "digits-table"}
GRAPH_TASKS = {"graph": "sbm-nodes", "graphs": "sbm-graphs"}
"""The built-in graph tasks, by kind: node classification (the gnn space) and graph classification (gnnpool)."""
"""The two tasks by kind; digits-table is defined by a task file this benchmark writes (`table_task`)."""

ACTS = {"relu": "nn.ReLU()", "gelu": "nn.GELU()", "silu": "nn.SiLU()", "tanh": "nn.Tanh()",
        "sigmoid": "nn.Sigmoid()", "leaky": "nn.LeakyReLU(0.1)", "elu": "nn.ELU()"}  # fmt: skip


# -- LLM-style networks outside any space ---------------------------------------------------------------------------


def _head(doc: str) -> str:
    return f'"""{doc}"""\n\nimport torch\nfrom torch import nn\n\n\n'


ATTENTION = """class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        weights = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


"""
"""Attention written out (nn.MultiheadAttention's eval-mode fast path does not export: its checks read tensors)."""


def cnn(rng: random.Random) -> str:
    depth, base, k = rng.randint(1, 4), rng.choice([4, 8, 16, 32, 48]), rng.choice([1, 3, 3, 5])
    widths = [min(96, base * rng.choice([1, 2]) ** (i // 2 + (i > 0))) for i in range(depth)]
    act, norm, every = rng.choice(list(ACTS)), rng.choice(["none", "batch", "group"]), rng.choice([0, 1, 2])
    pool, gap = rng.choice(["MaxPool2d", "AvgPool2d"]), rng.random() < 0.6
    norm_line = {"none": "", "batch": "layers.append(nn.BatchNorm2d(width))\n            ",
                 "group": "layers.append(nn.GroupNorm(2 if width % 2 == 0 else 1, width))\n            "}[norm]  # fmt: skip
    pool_line = (
        f"if (i + 1) % {every} == 0 and size > 1:\n                layers.append(nn.{pool}(2, ceil_mode=True))\n"
        "                size = (size + 1) // 2\n            "
        if every
        else ""
    )
    head = (
        "nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))"
        if gap
        else ("nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, num_classes))")
    )
    return (
        _head(f"A {depth}-layer CNN with {k}x{k} kernels, {act}, {norm} norm.")
        + f"""class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        channels, size = in_shape[0], in_shape[1]
        layers = []
        for i, width in enumerate({widths}):
            layers.append(nn.Conv2d(channels, width, {k}, padding={k // 2}))
            {norm_line}layers.append({ACTS[act]})
            {pool_line}channels = width
        self.body = nn.Sequential(*layers)
        self.head = {head}

    def forward(self, x):
        return self.head(self.body(x))
"""
    )


def resnet(rng: random.Random) -> str:
    width, blocks, act = rng.choice([8, 16, 24, 32]), rng.randint(1, 3), rng.choice(["relu", "gelu", "silu", "tanh"])
    norm = rng.choice(["nn.BatchNorm2d(c)", "nn.Identity()"])
    strides = [1] + [rng.choice([1, 2]) for _ in range(blocks - 1)]
    return (
        _head(f"A small ResNet: {blocks} basic blocks of width {width}, {act}.")
        + f"""class Block(nn.Module):
    def __init__(self, c, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, stride=stride, padding=1, bias=False)
        self.bn1 = {norm}
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = {norm}
        self.act = {ACTS[act]}
        self.down = nn.AvgPool2d(stride, ceil_mode=True) if stride > 1 else nn.Identity()

    def forward(self, x):
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(y)) + self.down(x))


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], {width}, 3, padding=1), {ACTS[act]})
        self.blocks = nn.Sequential(*[Block({width}, s) for s in {strides}])
        self.fc = nn.Linear({width}, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))
"""
    )


def separable(rng: random.Random) -> str:
    width, blocks, expand = rng.choice([8, 16, 32]), rng.randint(1, 4), rng.choice([1, 2, 4])
    act, se = rng.choice(["relu", "silu", "gelu"]), rng.random() < 0.5
    se_code = (
        "        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, max(2, c // 4), 1), nn.ReLU(), "
        "nn.Conv2d(max(2, c // 4), c, 1), nn.Sigmoid())\n"
        if se
        else ""
    )
    se_use = "        y = y * self.se(y)\n" if se else ""
    return (
        _head(f"MobileNet-style inverted residuals, expansion {expand}, SE={se}.")
        + f"""class Inverted(nn.Module):
    def __init__(self, c, expand):
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), {ACTS[act]})
        self.depthwise = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), {ACTS[act]})
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))
{se_code}
    def forward(self, x):
        y = self.project(self.depthwise(self.expand(x)))
{se_use}        return x + y


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], {width}, 3, padding=1, bias=False), nn.BatchNorm2d({width}), {ACTS[act]})
        self.blocks = nn.Sequential(*[Inverted({width}, {expand}) for _ in range({blocks})])
        self.classifier = nn.Linear({width}, num_classes)

    def forward(self, x):
        return self.classifier(self.blocks(self.stem(x)).mean(dim=(2, 3)))
"""
    )


def mlp(rng: random.Random) -> str:
    depth, act = rng.randint(1, 4), rng.choice(list(ACTS))
    widths = [rng.choice([16, 32, 64, 128, 256, 512]) for _ in range(depth)]
    norm, residual = rng.choice(["nn.Identity()", "nn.LayerNorm(w)", "nn.BatchNorm1d(w)"]), rng.random() < 0.4
    step = (
        "x = x + layer(x) if residual and x.shape[1] == layer[0].out_features else layer(x)"
        if residual
        else ("x = layer(x)")
    )
    return (
        _head(f"An MLP with hidden widths {widths} and {act}.")
        + f"""class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        features = 1
        for d in in_shape:
            features *= d
        self.layers = nn.ModuleList()
        for w in {widths}:
            self.layers.append(nn.Sequential(nn.Linear(features, w), {norm}, {ACTS[act]}))
            features = w
        self.out = nn.Linear(features, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        residual = {residual}
        for layer in self.layers:
            {step}
        return self.out(x)
"""
    )


def vit(rng: random.Random) -> str:
    patch, dim, depth = rng.choice([2, 4]), rng.choice([16, 32, 48, 64]), rng.randint(1, 3)
    heads, ratio, act = (
        rng.choice([h for h in (1, 2, 4) if dim % h == 0]),
        rng.choice([2, 4]),
        rng.choice(["gelu", "relu"]),
    )
    return (
        _head(f"A tiny ViT: {patch}x{patch} patches, dim {dim}, {depth} blocks, {heads} heads.")
        + ATTENTION
        + f"""class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, {heads})
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, {ratio} * dim), {ACTS[act]}, nn.Linear({ratio} * dim, dim))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y)
        return x + self.mlp(self.norm2(x))


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        tokens = (in_shape[1] // {patch}) * (in_shape[2] // {patch})
        self.embed = nn.Conv2d(in_shape[0], {dim}, {patch}, stride={patch})
        self.pos = nn.Parameter(torch.zeros(1, tokens, {dim}))
        self.blocks = nn.Sequential(*[Block({dim}) for _ in range({depth})])
        self.norm = nn.LayerNorm({dim})
        self.head = nn.Linear({dim}, num_classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(x)).mean(dim=1))
"""
    )


def mixer(rng: random.Random) -> str:
    dim, depth, hidden, act = (
        rng.choice([16, 32, 64]),
        rng.randint(1, 3),
        rng.choice([8, 32, 64]),
        rng.choice(["gelu", "relu", "tanh"]),
    )
    return (
        _head(f"An MLP-Mixer on 2x2 patches: dim {dim}, {depth} layers.")
        + f"""class MixerLayer(nn.Module):
    def __init__(self, tokens, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mix = nn.Sequential(nn.Linear(tokens, {hidden}), {ACTS[act]}, nn.Linear({hidden}, tokens))
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mix = nn.Sequential(nn.Linear(dim, 2 * dim), {ACTS[act]}, nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.token_mix(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mix(self.norm2(x))


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        tokens = (in_shape[1] // 2) * (in_shape[2] // 2)
        self.patches = nn.Conv2d(in_shape[0], {dim}, 2, stride=2)
        self.layers = nn.Sequential(*[MixerLayer(tokens, {dim}) for _ in range({depth})])
        self.head = nn.Linear({dim}, num_classes)

    def forward(self, x):
        x = self.patches(x).flatten(2).transpose(1, 2)
        return self.head(self.layers(x).mean(dim=1))
"""
    )


def gated(rng: random.Random) -> str:
    dim, blocks, hidden = rng.choice([32, 64, 128]), rng.randint(1, 3), rng.choice([32, 64, 128, 256])
    gate = rng.choice(["torch.sigmoid(b)", "torch.nn.functional.gelu(b)", "torch.tanh(b)"])
    return (
        _head(f"A residual MLP of {blocks} gated linear units, width {dim}.")
        + f"""class GLU(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 2 * {hidden})
        self.down = nn.Linear({hidden}, dim)

    def forward(self, x):
        a, b = self.up(self.norm(x)).chunk(2, dim=-1)
        return x + self.down(a * {gate})


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.inp = nn.Linear(in_shape[0], {dim})
        self.blocks = nn.Sequential(*[GLU({dim}) for _ in range({blocks})])
        self.out = nn.Linear({dim}, num_classes)

    def forward(self, x):
        return self.out(self.blocks(self.inp(x)))
"""
    )


def feature_tokens(rng: random.Random) -> str:
    dim, depth, heads = rng.choice([8, 16]), rng.randint(1, 2), rng.choice([1, 2, 4])
    return (
        _head(f"An FT-Transformer: each feature a {dim}-d token, {depth} attention layers.")
        + ATTENTION
        + f"""class Layer(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.attn, self.norm1 = Attention(dim, {heads}), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.ff(x))


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_shape[0], {dim}) * 0.1)
        self.bias = nn.Parameter(torch.zeros(in_shape[0], {dim}))
        self.layers = nn.Sequential(*[Layer({dim}) for _ in range({depth})])
        self.head = nn.Sequential(nn.LayerNorm({dim}), nn.Linear({dim}, num_classes))

    def forward(self, x):
        tokens = x.unsqueeze(-1) * self.weight + self.bias
        return self.head(self.layers(tokens).mean(dim=1))
"""
    )


def wide_deep(rng: random.Random) -> str:
    hidden, depth, act = rng.choice([32, 64, 128, 256]), rng.randint(1, 3), rng.choice(list(ACTS))
    return (
        _head(f"Wide and deep: a linear model plus a {depth}-layer MLP of {hidden} units.")
        + f"""class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.wide = nn.Linear(in_shape[0], num_classes)
        layers, features = [], in_shape[0]
        for _ in range({depth}):
            layers += [nn.Linear(features, {hidden}), {ACTS[act]}]
            features = {hidden}
        self.deep = nn.Sequential(*layers, nn.Linear(features, num_classes))

    def forward(self, x):
        return self.wide(x) + self.deep(x)
"""
    )


GNN_ACTS = {"relu": "nn.ReLU()", "gelu": "nn.GELU()", "tanh": "nn.Tanh()", "elu": "nn.ELU()",
            "leaky": "nn.LeakyReLU(0.2)"}  # fmt: skip
AGGREGATE = {
    "sum": "        agg = torch.zeros_like(z).index_add_(0, dst, z[src])\n",
    "mean": "        agg = torch.zeros_like(z).index_add_(0, dst, z[src])\n"
    "        deg = torch.zeros(n, dtype=z.dtype).index_add_(0, dst, torch.ones_like(dst, dtype=z.dtype))\n"
    "        agg = agg / deg.clamp(min=1).unsqueeze(1)\n",
    "max": "        index = dst.unsqueeze(1).expand(-1, z.shape[1])\n"
    '        agg = torch.full_like(z, float("-inf")).scatter_reduce(0, index, z[src], reduce="amax", include_self=True)\n'
    "        agg = torch.where(torch.isinf(agg), torch.zeros_like(agg), agg)\n",
    "gcn": "        deg = torch.zeros(n, dtype=z.dtype).index_add_(0, dst, torch.ones_like(dst, dtype=z.dtype)) + 1\n"
    "        norm = deg.pow(-0.5)\n"
    "        agg = torch.zeros_like(z).index_add_(0, dst, z[src] * (norm[src] * norm[dst]).unsqueeze(1))\n"
    "        agg = agg + z / deg.unsqueeze(1)\n",
    "attention": "        e = torch.nn.functional.leaky_relu((z * self.att[0]).sum(-1)[src] + (z * self.att[1]).sum(-1)[dst], 0.2)\n"
    '        top = torch.full((n,), float("-inf"), dtype=z.dtype).scatter_reduce(0, dst, e, reduce="amax", '
    "include_self=True).detach()\n"
    "        w = (e - top[dst]).exp()\n"
    "        total = torch.zeros(n, dtype=z.dtype).index_add_(0, dst, w)\n"
    "        agg = torch.zeros_like(z).index_add_(0, dst, z[src] * (w / total[dst]).unsqueeze(1))\n",
}
"""How an LLM-style GNN layer gathers its neighbours (z: the layer's transformed node states, n nodes, src -> dst)."""
POOL = {
    "sum": "    return torch.zeros(graphs, h.shape[1], dtype=h.dtype).index_add_(0, batch, h)\n",
    "mean": "    total = torch.zeros(graphs, h.shape[1], dtype=h.dtype).index_add_(0, batch, h)\n"
    "    count = torch.zeros(graphs, dtype=h.dtype).index_add_(0, batch, torch.ones_like(batch, dtype=h.dtype))\n"
    "    return total / count.clamp(min=1).unsqueeze(1)\n",
    "max": '    rows = torch.zeros(graphs, h.shape[1], dtype=h.dtype) - float("inf")\n'
    '    return rows.scatter_reduce(0, batch.unsqueeze(1).expand_as(h), h, reduce="amax", include_self=True)\n',
}


def gnn_variant(rng: random.Random, readout: bool) -> str:
    """A message-passing network as an LLM writes one: an aggregation (sum, mean, max, the GCN's normalised sum,
    GAT-style attention over the edges, or none: an MLP of node features), depth, width, activation, a norm,
    residual connections, jumping knowledge (every layer's states concatenated into the head); for graph
    classification a readout (sum, mean or max by `batch`)."""
    agg = rng.choice([*AGGREGATE, "none"])
    depth, width, act = rng.randint(1, 4), rng.choice([16, 32, 64]), rng.choice(list(GNN_ACTS))
    norm = rng.choice(["nn.Identity()", "nn.LayerNorm(width)", "nn.BatchNorm1d(width)"])
    residual, jk, pool = rng.random() < 0.5, rng.random() < 0.3, rng.choice(list(POOL))
    step = "z" if agg == "none" else "agg"
    layer = (
        "        z = self.lin(h)\n        n = h.shape[0]\n"
        + ("" if agg == "none" else AGGREGATE[agg])
        + f"        return {step} + self.root(h)\n"
    )
    att = "        self.att = nn.Parameter(torch.randn(2, d_out) * 0.1)\n" if agg == "attention" else ""
    pool_code = f"\n\ndef pool(h, batch, graphs):\n{POOL[pool]}" if readout else ""
    inputs = "x, edge_index, batch" if readout else "x, edge_index"
    pooled = "        h = pool(h, batch, batch.max() + 1)\n" if readout else ""
    return (
        _head(f"A {depth}-layer GNN ({agg} aggregation, width {width}, {act}, residual={residual}, jk={jk}).")
        + f"""class Layer(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.root = nn.Linear(d_in, d_out, bias=False)
{att}
    def forward(self, h, src, dst):
{layer}{pool_code}

class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        width = {width}
        dims = [in_shape[0]] + [width] * {depth}
        self.layers = nn.ModuleList(Layer(a, b) for a, b in zip(dims, dims[1:]))
        self.norms = nn.ModuleList({norm} for _ in range({depth}))
        self.act = {GNN_ACTS[act]}
        self.head = nn.Linear(width * {depth if jk else 1}, num_classes)

    def forward(self, {inputs}):
        src, dst = edge_index[0], edge_index[1]
        h, states = x, []
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms)):
            y = self.act(norm(layer(h, src, dst)))
            h = h + y if {residual} and i > 0 else y
            states.append(h)
        h = {"torch.cat(states, dim=1)" if jk else "h"}
{pooled}        return self.head(h)
"""
    )


def node_gnn(rng: random.Random) -> str:
    return gnn_variant(rng, readout=False)


def graph_gnn(rng: random.Random) -> str:
    return gnn_variant(rng, readout=True)


# -- a broader sample of LLM-style GNNs (the second graph sample) ---------------------------------------------------

READOUT = {
    **{name: f"\n\ndef pool(h, batch, graphs):\n{code}" for name, code in POOL.items()},
    "attention": """

class AttentionPool(nn.Module):
    \"\"\"Global attention pooling: a softmax over each graph's nodes of a learned score.\"\"\"

    def __init__(self, dim):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, h, batch, graphs):
        s = self.score(h).squeeze(-1)
        top = (torch.zeros(graphs, dtype=h.dtype) - float("inf")).scatter_reduce(0, batch, s, reduce="amax", include_self=True)
        w = (s - top[batch].detach()).exp()
        total = torch.zeros(graphs, dtype=h.dtype).index_add_(0, batch, w)
        return torch.zeros(graphs, h.shape[1], dtype=h.dtype).index_add_(0, batch, h * (w / total[batch]).unsqueeze(1))
""",
    "mixed": """

def pool(h, batch, graphs):
    total = torch.zeros(graphs, h.shape[1], dtype=h.dtype).index_add_(0, batch, h)
    count = torch.zeros(graphs, dtype=h.dtype).index_add_(0, batch, torch.ones_like(batch, dtype=h.dtype))
    rows = torch.zeros(graphs, h.shape[1], dtype=h.dtype) - float("inf")
    top = rows.scatter_reduce(0, batch.unsqueeze(1).expand_as(h), h, reduce="amax", include_self=True)
    return torch.cat([total / count.clamp(min=1).unsqueeze(1), top], dim=1)
""",
}
"""Graph classification's readouts by `batch` as an LLM writes them: sum, mean, max, attention pooling (a softmax
over each graph's nodes) or mean and max concatenated ("mixed", twice the width into the head)."""

FAMILY_LAYERS = {
    "gin": """class GINConv(nn.Module):
    \"\"\"GIN: (1 + eps) * h + the sum of the neighbours, through an MLP.\"\"\"

    def __init__(self, d_in, d_out):
        super().__init__()
        self.eps = {eps}
        self.mlp = nn.Sequential(nn.Linear(d_in, {ratio} * d_out), {mlp_norm}{act}, nn.Linear({ratio} * d_out, d_out))

    def forward(self, h, src, dst):
        agg = torch.zeros_like(h).index_add_(0, dst, h[src])
        return self.mlp((1 + self.eps) * h + agg)
""",
    "gat": """class GATConv(nn.Module):
    \"\"\"Multi-head graph attention: each head a softmax over a node's incoming edges.\"\"\"

    def __init__(self, d_in, d_out, heads={heads}, concat={concat}):
        super().__init__()
        self.heads, self.concat = heads, concat
        self.d = d_out // heads if concat else d_out
        self.lin = nn.Linear(d_in, heads * self.d, bias=False)
        self.att_src = nn.Parameter(torch.randn(heads, self.d) * 0.1)
        self.att_dst = nn.Parameter(torch.randn(heads, self.d) * 0.1)
        self.bias = nn.Parameter(torch.zeros(heads * self.d if concat else self.d))
        self.skip = nn.Linear(d_in, heads * self.d if concat else self.d, bias=False)

    def forward(self, h, src, dst):
        n = h.shape[0]
        z = self.lin(h).reshape(-1, self.heads, self.d)
        e = F.leaky_relu((z * self.att_src).sum(-1)[src] + (z * self.att_dst).sum(-1)[dst], 0.2)
        index = dst.unsqueeze(1).expand_as(e)
        top = (torch.zeros(n, self.heads, dtype=h.dtype) - float("inf")).scatter_reduce(0, index, e, reduce="amax", include_self=True)
        w = (e - top[dst].detach()).exp()
        total = torch.zeros(n, self.heads, dtype=h.dtype).index_add_(0, dst, w)
        alpha = F.dropout(w / (total[dst] + 1e-16), p={att_drop}, training=self.training)
        out = torch.zeros_like(z).index_add_(0, dst, z[src] * alpha.unsqueeze(-1))
        out = out.reshape(-1, self.heads * self.d) if self.concat else out.mean(dim=1)
        return out + self.bias + self.skip(h)
""",
    "sage": """class SAGEConv(nn.Module):
    \"\"\"GraphSAGE: the node's own state and its neighbours' {sage_agg} concatenated, one linear map.\"\"\"

    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = nn.Linear(2 * d_in, d_out)

    def forward(self, h, src, dst):
        n = h.shape[0]
{sage_code}        out = self.lin(torch.cat([h, agg], dim=1))
{sage_normalize}        return out
""",
    "gated": """class GatedGCNLayer(nn.Module):
    \"\"\"GatedGCN (Bresson and Laurent): edge gates from both ends and the edge's own state; a node takes the
    gate-weighted mean of its neighbours; node and edge states both updated, with residuals.\"\"\"

    def __init__(self, d_in, d_out):
        super().__init__()
        self.A, self.B = nn.Linear(d_in, d_out), nn.Linear(d_in, d_out)
        self.C = nn.Linear(d_in, d_out)
        self.D, self.E = nn.Linear(d_in, d_out), nn.Linear(d_in, d_out)
        self.norm_h, self.norm_e = {gated_norm_h}, {gated_norm_e}
        self.act = {act}

    def forward(self, h, e, src, dst):
        e_new = self.D(h)[dst] + self.E(h)[src] + self.C(e)
        gate = torch.sigmoid(e_new)
        num = torch.zeros_like(h).index_add_(0, dst, gate * self.B(h)[src])
        den = torch.zeros_like(h).index_add_(0, dst, gate)
        h_new = self.A(h) + num / (den + 1e-6)
        h_new = self.act(self.norm_h(h_new))
        e_new = self.act(self.norm_e(e_new))
        return h + h_new, e + e_new
""",
}
"""Each family's message-passing layer, as an LLM writes it (placeholders in braces: what the generator draws)."""

SAGE_AGG = {
    "mean": "        agg = torch.zeros_like(h).index_add_(0, dst, h[src])\n"
    "        deg = torch.zeros(n, dtype=h.dtype).index_add_(0, dst, torch.ones_like(dst, dtype=h.dtype))\n"
    "        agg = agg / deg.clamp(min=1).unsqueeze(1)\n",
    "max": "        index = dst.unsqueeze(1).expand(-1, h.shape[1])\n"
    '        agg = torch.full_like(h, float("-inf")).scatter_reduce(0, index, h[src], reduce="amax", include_self=True)\n'
    "        agg = torch.where(torch.isinf(agg), torch.zeros_like(agg), agg)\n",
    "sum": "        agg = torch.zeros_like(h).index_add_(0, dst, h[src])\n",
}


def gnn_family(rng: random.Random, readout: bool, family: str) -> str:
    """A GNN of a named family as an LLM writes one, a stack of the family's layers (FAMILY_LAYERS): GIN (sum and an
    MLP, eps learned or 0), GAT (several heads, concatenated or averaged, a skip map), GraphSAGE (self and neighbour
    states concatenated; mean, max or sum; L2-normalised or not), GatedGCN (edge-gated, with edge states). Drawn
    around it: an input embedding or none, depth, width, activation, norm, dropout, residual connections, jumping
    knowledge (none, every layer's states concatenated, or their maximum), a one- or two-layer head; for graph
    classification a readout (READOUT)."""
    depth, width, act = rng.randint(1, 4), rng.choice([16, 32, 64]), rng.choice(list(GNN_ACTS))
    norm = (
        "nn.Identity()"
        if family == "gated"
        else rng.choice(["nn.Identity()", "nn.LayerNorm(width)", "nn.BatchNorm1d(width)"])
    )
    embed = family == "gated" or rng.random() < 0.5
    residual = family != "gated" and rng.random() < 0.5
    jk = rng.choice(["none", "none", "cat", "max"])
    dropout, two_layer_head = rng.choice([0.0, 0.1, 0.5]), rng.random() < 0.5
    pool = rng.choice(list(READOUT)) if readout else ""
    fill = {
        "act": GNN_ACTS[act], "eps": rng.choice(["nn.Parameter(torch.zeros(1))", "0.0"]), "ratio": rng.choice([1, 2]),
        "mlp_norm": rng.choice(["", "nn.BatchNorm1d({ratio} * d_out), "]), "heads": rng.choice([2, 4, 8]),
        "concat": rng.random() < 0.6, "att_drop": rng.choice([0.0, 0.2, 0.6]), "sage_agg": rng.choice(list(SAGE_AGG)),
        "sage_normalize": rng.choice(["", "        out = out / (out * out).sum(-1, keepdim=True).sqrt().clamp(min=1e-6)\n"]),
        "gated_norm_h": rng.choice(["nn.BatchNorm1d(d_out)", "nn.LayerNorm(d_out)", "nn.Identity()"]),
    }  # fmt: skip
    fill["mlp_norm"] = fill["mlp_norm"].replace("{ratio}", str(fill["ratio"]))
    fill["sage_code"] = SAGE_AGG[fill["sage_agg"]]
    fill["gated_norm_e"] = fill["gated_norm_h"]
    layer_code = FAMILY_LAYERS[family].format(**fill)
    layer_class = {"gin": "GINConv", "gat": "GATConv", "sage": "SAGEConv", "gated": "GatedGCNLayer"}[family]
    first = "width" if embed else "in_shape[0]"
    head_in = {"cat": f"width * {depth}", "max": "width", "none": "width"}[jk] + (" * 2" if pool == "mixed" else "")
    head = (
        f"nn.Sequential(nn.Linear({head_in}, width), {GNN_ACTS[act]}, nn.Dropout({dropout}), nn.Linear(width, "
        "num_classes))"
        if two_layer_head
        else f"nn.Linear({head_in}, num_classes)"
    )
    edges = "        e = self.edge_init.expand(src.shape[0], -1)\n" if family == "gated" else ""
    call = "h_new, e = layer(h, e, src, dst)" if family == "gated" else "h_new = layer(h, src, dst)"
    step = (
        "h = h_new"
        if family == "gated"
        else f"h_new = F.dropout(self.act(norm(h_new)), p={dropout}, training=self.training)\n"
        + "            "
        + ("h = h + h_new if i > 0 else h_new" if residual else "h = h_new")
    )
    combine = {"cat": "torch.cat(states, dim=1)", "max": "torch.stack(states, dim=0).amax(dim=0)", "none": "h"}[jk]
    inputs = "x, edge_index, batch" if readout else "x, edge_index"
    pool_init = f"        self.pool = AttentionPool({head_in})\n" if pool == "attention" else ""
    pool_call = "self.pool" if pool == "attention" else "pool"
    pooled = f"        h = {pool_call}(h, batch, batch.max() + 1)\n" if readout else ""
    return (
        f'"""A {depth}-layer {family} GNN (width {width}, {act}, residual={residual}, jk={jk}'
        + (f", {pool} readout" if readout else "")
        + ')."""\n\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\n'
        + layer_code
        + (READOUT[pool] if readout else "")
        + f"""

class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        width = {width}
        self.embed = {"nn.Linear(in_shape[0], width)" if embed else "nn.Identity()"}
        dims = [{first}] + [width] * {depth}
        self.layers = nn.ModuleList({layer_class}(a, b) for a, b in zip(dims, dims[1:]))
        self.norms = nn.ModuleList({norm} for _ in range({depth}))
        self.act = {GNN_ACTS[act]}
{"        self.edge_init = nn.Parameter(torch.zeros(1, width))" + chr(10) if family == "gated" else ""}{pool_init}        self.head = {head}

    def forward(self, {inputs}):
        src, dst = edge_index[0], edge_index[1]
        h = self.embed(x)
{edges}        states = []
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms)):
            {call}
            {step}
            states.append(h)
        h = {combine}
{pooled}        return self.head(h)
"""
    )


FAMILIES = ("variant", "gin", "gat", "sage", "gated")
"""The broader sample's families, drawn with equal odds: `gnn_variant`'s layers (sum, mean, max, GCN, single-head
attention, none) and the four named families of `gnn_family`."""


def broad_gnn(rng: random.Random, readout: bool) -> tuple[str, str]:
    """An LLM-style GNN of the broader sample: its family (FAMILIES, equal odds) and its code."""
    family = rng.choice(FAMILIES)
    return family, gnn_variant(rng, readout) if family == "variant" else gnn_family(rng, readout, family)


IMAGE_LLM = ((cnn, 10), (resnet, 7), (separable, 7), (mlp, 7), (vit, 5), (mixer, 5))
TABLE_LLM = ((mlp, 8), (gated, 7), (feature_tokens, 5), (wide_deep, 5))


def llm_cases(families: tuple[tuple[Any, int], ...], seed: int) -> list[tuple[str, str]]:
    """(name, code) of each LLM-style network: `count` draws of each family, from one seeded generator."""
    rng = random.Random(seed)
    return [(f"{family.__name__}-{i}", family(rng)) for family, count in families for i in range(count)]


# -- the mixed archive ----------------------------------------------------------------------------------------------


def table_task(folder: Path) -> str:
    """digits as a table: its 64 pixels as features, a task file over an npz of them (the task's name: digits-table)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(folder / "digits_table.npz", x=digits.data.astype(np.float32), y=digits.target.astype(np.int64))
    task_file = folder / "digits_table.toml"
    task_file.write_text(
        'name = "digits-table"\ndescription = "the digits, 8x8 pixels as 64 table features"\nkind = "table"\n'
        '[data]\nsource = "npz"\npath = "digits_table.npz"\n'
    )
    return str(task_file)


def cases(args: argparse.Namespace, table: str) -> list[dict[str, Any]]:
    """Every candidate: its task, group, name, code and (for a space's) space and arch."""
    found: list[dict[str, Any]] = []
    for kind, task in (("image", "digits"), ("table", table)):
        for path in sorted((REPO / "archive" / "seeds" / kind).glob("*.py")):
            found.append({"task": task, "group": "seeds", "name": f"seed-{path.stem}", "code": path.read_text()})
    rng = random.Random(args.seed)
    samples = (("nb201", "digits", args.per_space), ("macro", "digits", args.per_space), ("mlp", table, args.per_space))
    for space, task, count in samples:
        target = TASKS["digits"] if task == "digits" else None
        archs = []
        while len(archs) < count:
            arch = SPACES[space].sample(rng)
            if arch not in archs:
                archs.append(arch)
        for arch in archs:
            found.append({"task": task, "group": space, "name": f"{space}-{arch}", "space": space, "arch": arch,
                          "render_for": target is None})  # fmt: skip
            if target is not None:
                found[-1]["code"] = SPACES[space].render(arch, target)
    for task, families in (("digits", IMAGE_LLM), (table, TABLE_LLM)):
        for name, code in llm_cases(families, args.seed):
            found.append({"task": task, "group": "llm", "name": f"llm-{name}", "code": code})
    return found


def graph_cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every candidate of the graph tasks: the seeds, samples of the gnn space (sbm-nodes) and of the gnnpool space
    (sbm-graphs), and LLM-style GNNs (`gnn_variant`; with --broad, `broad_gnn`'s families)."""
    found: list[dict[str, Any]] = []
    for kind, task in GRAPH_TASKS.items():
        for path in sorted((REPO / "archive" / "seeds" / kind).glob("*.py")):
            found.append({"task": task, "group": "seeds", "name": f"seed-{kind}-{path.stem}", "code": path.read_text()})
    rng = random.Random(args.seed)
    for space, task in (("gnn", "sbm-nodes"), ("gnnpool", "sbm-graphs")):
        archs: list[str] = []
        while len(archs) < args.per_space:
            arch = SPACES[space].sample(rng)
            if arch not in archs:
                archs.append(arch)
        for arch in archs:
            found.append({"task": task, "group": space, "name": f"{space}-{arch}", "space": space, "arch": arch,
                          "code": SPACES[space].render(arch, TASKS[task])})  # fmt: skip
    if args.broad:  # one generator for both tasks; each network named by its family
        rng = random.Random(args.seed)
        for task, readout in (("sbm-nodes", False), ("sbm-graphs", True)):
            for i in range(args.llm):
                family, code = broad_gnn(rng, readout)
                found.append({"task": task, "group": "llm", "name": f"llm-{family}-{i}", "code": code})
        return found
    for task, family in (("sbm-nodes", node_gnn), ("sbm-graphs", graph_gnn)):
        for name, code in llm_cases(((family, args.llm),), args.seed):
            found.append({"task": task, "group": "llm", "name": f"llm-{name}", "code": code})
    return found


def train_all(todo: list[dict[str, Any]], args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """Train every candidate through the sandbox into one archive (`--workers` at once, each with its own handle);
    the seconds each took, by task/name (an LLM-style name can recur in both graph tasks)."""
    from agentarch.tasks.registry import get_task

    jobs: queue.Queue[dict[str, Any]] = queue.Queue()
    for case in todo:
        if case.get("render_for"):  # a table space: rendered for the table task, which only a task file defines
            case["code"] = SPACES[case["space"]].render(case["arch"], get_task(case["task"]))
        jobs.put(case)
    seconds: dict[str, float] = {}
    began = time.perf_counter()

    def work() -> None:
        with Archive(folder / "archive.db") as db:
            evaluators: dict[str, Evaluator] = {}
            while True:
                try:
                    case = jobs.get_nowait()
                except queue.Empty:
                    return
                if case["task"] not in evaluators:
                    evaluators[case["task"]] = Evaluator(db, settings(case["task"], args, folder), scoring="graph")
                started = time.perf_counter()
                result = evaluators[case["task"]].evaluate(
                    case["code"], case["name"], proposer=case["group"], space=case.get("space"), arch=case.get("arch")
                )
                seconds[f"{case['task']}/{case['name']}"] = time.perf_counter() - started
                if result.status != "trained":
                    print(f"  {case['name']}: {result.status}: {(result.reason or '')[:160]}", flush=True)
                done = len(seconds)
                if done % 20 == 0:
                    print(f"{done}/{len(todo)} in {time.perf_counter() - began:.0f} s", flush=True)

    threads = [threading.Thread(target=work) for _ in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seconds


def settings(task: str, args: argparse.Namespace, folder: Path) -> Any:
    """A task's settings for this run: node classification trains full-batch, one step an epoch, so it gets
    --node-epochs; every other task --epochs."""
    epochs = args.node_epochs if task == GRAPH_TASKS["graph"] else args.epochs
    return load_settings(
        task=task, epochs=epochs, archive=folder / "archive.db", cache_dir=folder / "cache", scoring="graph",
        threads=1, novelty_threshold=1.0, timeout_s=300, smoke_timeout_s=120,
    )  # fmt: skip


def collect(folder: Path, todo: list[dict[str, Any]], tasks: list[str]) -> list[dict[str, Any]]:
    """Every trained candidate as the predictor sees it (`predictor.examples`), with its group and task."""
    groups = {c["name"]: c["group"] for c in todo}
    rows = []
    with Archive(folder / "archive.db") as db:
        for task in tasks:
            names = {r["id"]: r["name"] for r in db.db.query("SELECT id, name FROM candidates WHERE task = ?", [task])}
            for example in predictor.examples(db, task):
                name = names[example.candidate_id]
                rows.append(
                    {"task": task, "group": groups[name], "name": name, "score": example.score,
                     "features": example.features}
                )  # fmt: skip
    return rows


# -- held-out rank correlations -------------------------------------------------------------------------------------


def kept(features: dict[str, float], variant: str) -> dict[str, float]:
    """The features a variant of the predictor sees: none of the graph's, or all."""
    if variant == "none":
        return {k: v for k, v in features.items() if not k.startswith(predictor.GRAPH_PREFIX)}
    return dict(features)


def spearman(predicted: list[float], truth: list[float]) -> float | None:
    if len(truth) < 5 or np.ptp(predicted) == 0 or np.ptp(truth) == 0:
        return None
    return float(stats.spearmanr(predicted, truth)[0])


def pool_of(others: list[dict[str, Any]], variant: str) -> list[predictor.Example]:
    """The other task's candidates as the loop's predictor pools them (`predictor.pooled_examples`: each scored by
    its rank in its task), with the variant's features; ids after every candidate's of the task predicted."""
    found = [predictor.Example(10_000 + i, kept(r["features"], variant), r["score"]) for i, r in enumerate(others)]
    return predictor.as_ranks(found, "max") if found else []


def cross_validated(
    rows: list[dict[str, Any]], variant: str, split: int, others: list[dict[str, Any]]
) -> dict[str, float | None]:
    """One task's candidates, each predicted by a predictor fitted on the other folds of a shuffled 5-fold split
    (and on `others`, the other task's candidates, where the predictor's own inner cross-validation on those folds
    says pooling helps); Spearman per group and over all, and the share of folds that pooled."""
    found = [predictor.Example(i, kept(r["features"], variant), r["score"]) for i, r in enumerate(rows)]
    pool = pool_of(others, variant)
    predicted, pooled = np.empty(len(found)), 0
    for fit_on, held in KFold(n_splits=FOLDS, shuffle=True, random_state=split).split(found):
        model = predictor.Predictor.on([found[i] for i in fit_on], rows[0]["task"], "max", pool)
        pooled += model.pooled > 0
        predicted[held] = [model.predict(found[i].features) for i in held]
    truth = [r["score"] for r in rows]
    out: dict[str, float | None] = {"all": spearman(list(predicted), truth), "pooled": pooled / FOLDS}
    for group in {r["group"] for r in rows}:
        mine = [i for i, r in enumerate(rows) if r["group"] == group]
        out[group] = spearman([predicted[i] for i in mine], [truth[i] for i in mine])
    return out


def transfer(rows: list[dict[str, Any]], variant: str, others: list[dict[str, Any]]) -> float | None:
    """The LLM-style candidates predicted by a predictor fitted on the task's other groups only (and `others`, where
    its inner cross-validation says so)."""
    fit = [
        predictor.Example(i, kept(r["features"], variant), r["score"])
        for i, r in enumerate(rows)
        if r["group"] != "llm"
    ]
    llm = [r for r in rows if r["group"] == "llm"]
    model = predictor.Predictor.on(fit, rows[0]["task"], "max", pool_of(others, variant))
    return spearman([model.predict(kept(r["features"], variant)) for r in llm], [r["score"] for r in llm])


def mean_se(values: list[float | None]) -> str:
    found = [v for v in values if v is not None]
    if not found:
        return "-"
    se = statistics.stdev(found) / math.sqrt(len(found)) if len(found) > 1 else 0.0
    return f"{statistics.fmean(found):.3f} ± {se:.3f}"


def report(data: dict[str, Any]) -> str:
    columns = data["columns"]
    rows = [{**r, "features": {c: v for c, v in zip(columns, r["values"]) if v is not None}} for r in data["rows"]]
    meta = data["meta"]
    lines = [
        "# The predictor with and without graph features (issue 25)",
        "",
        f"`{meta['command']}` on {meta['machine']}; {meta['trained']} of {meta['candidates']} candidates trained "
        f"in {meta['wall_s'] / 60:.1f} minutes ({meta['epochs']} epochs each, graph scoring, {meta['workers']} "
        f"sandbox jobs at once, one thread each; median {meta['median_s']:.1f} s a candidate). "
        "benchmarks/graph_predictor.json keeps every candidate's score and features; "
        "`.venv/bin/python benchmarks/graph_predictor.py --report` writes this page again from it.",
        "",
        "Held-out Spearman rank correlation of predicted and true validation accuracy: each candidate predicted by the "
        f"task's predictor (agentarch/search/predictor.py) fitted on the other folds of a shuffled {FOLDS}-fold "
        f"split of the task's mixed archive, pooled per group; mean ± standard error over {SPLITS} shuffles (the "
        "error says how much the split moves the figure, not how much another sample of networks would). Without "
        "graph: log parameters, FLOPs and latency from the graph's measures, a space's settings (graph scoring "
        "computes no zero-cost proxy); with graph: plus agentarch/evaluation/graphs/features.py's, from each "
        "candidate's kept ONNX graph. Before: the predictor of commit f42121a (boosted trees on the scores, every "
        "graph column), its figures as that commit recorded them on these candidates; per task: predictor.RankModel "
        "(a ridge size prior on the ranks, shallow trees on what it leaves, the graph as predictor.graph_summary) "
        "fitted on the task's own candidates alone, as commit 2180bb6 fitted it, computed now; pooled: the predictor "
        "as it is, which also learns from the other task's candidates (each scored by its rank in its task, "
        "predictor.pooled_examples) wherever a 5-fold cross-validation on its own training folds alone says that "
        "ranks them better (predictor.chosen; the last row says how often it did), computed now.",
        "",
    ]
    lines += tables(rows, list(TASK_NAMES.values()), meta, "##")
    lines += ["## What it says", "", *meta.get("notes", ["(notes are added by hand after a run)"]), ""]
    if meta["failures"]:
        lines += ["Not trained:", "", *[f"- {name}: {why}" for name, why in meta["failures"].items()], ""]
    return "\n".join(lines)


def tables(rows: list[dict[str, Any]], tasks: list[str], meta: dict[str, Any], heading: str) -> list[str]:
    """Each task's table: held-out Spearman per group, per task and pooled, without and with the graph's features."""
    lines: list[str] = []
    for task in tasks:
        mine = [r for r in rows if r["task"] == task]
        others = [r for r in rows if r["task"] != task]
        groups = [g for g in GROUP_ORDER if g == "all" or any(r["group"] == g for r in mine)]
        before = meta.get("before", {}).get(task, {})
        heads = [f"{when}: {v}" for when in ("before", "per task", "pooled") for v in VARIANTS]
        lines += [f"{heading} {task}", "", "| group | n | val accuracy min / median / max | " + " | ".join(heads) + " |",
                  "| --- | ---: | --- |" + " ---: |" * len(heads)]  # fmt: skip
        results = {
            (pooled, v): [cross_validated(mine, code, split, others if pooled else []) for split in range(SPLITS)]
            for pooled in (False, True)
            for v, code in VARIANTS.items()
        }
        for group in groups:
            scores = sorted(r["score"] for r in mine if group in ("all", r["group"]))
            spread = f"{scores[0]:.3f} / {statistics.median(scores):.3f} / {scores[-1]:.3f}"
            cells = before.get(group, ["-"] * len(VARIANTS))
            cells += [mean_se([split.get(group) for split in found]) for found in results.values()]
            lines.append(f"| {group} | {len(scores)} | {spread} | " + " | ".join(cells) + " |")
        cells = before.get("transfer", ["-"] * len(VARIANTS))
        for pooled in (False, True):
            for code in VARIANTS.values():
                value = transfer(mine, code, others if pooled else [])
                cells.append("-" if value is None else f"{value:.3f}")
        share = [f"{statistics.fmean(split['pooled'] or 0.0 for split in found):.0%}" for found in results.values()]
        lines += [f"| llm, fitted on the other groups only | {sum(r['group'] == 'llm' for r in mine)} | | "
                  + " | ".join(cells) + " |",
                  "| outer folds whose predictor pooled | | | - | - | " + " | ".join(share) + " |", ""]  # fmt: skip
    return lines


def with_section(page: str, section: str) -> str:
    """The page with `section` (a "## " heading and what follows) in place of the section of that heading, or after
    the page's last section where it has none; the graph sections come last, the first sample before the second."""
    heading = section.split("\n", 1)[0]
    before, found, after = page.partition("\n" + heading + "\n")
    if not found:
        if heading == GNN_SECTION and "\n" + BROAD_SECTION + "\n" in page:
            before, _, after = page.partition("\n" + BROAD_SECTION + "\n")
            return before.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n\n" + BROAD_SECTION + "\n" + after
        return page.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    rest = after.partition("\n## ")
    tail = "\n## " + rest[2] if rest[1] else ""
    return before.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n" + tail


def graph_report(data: dict[str, Any], broad: bool = False) -> str:
    """A graph sample's section of the page (GNN_SECTION, or BROAD_SECTION for the --broad sample), from its JSON."""
    meta = data["meta"]
    columns = data["columns"]
    rows = [{**r, "features": {c: v for c, v in zip(columns, r["values"]) if v is not None}} for r in data["rows"]]
    if broad:
        return broad_report(data, rows)
    lines = [
        GNN_SECTION,
        "",
        f"`{meta['command']}` on {meta['machine']}; {meta['trained']} of {meta['candidates']} candidates trained "
        f"in {meta['wall_s'] / 60:.1f} minutes ({meta['node_epochs']} epochs on sbm-nodes, which trains full-batch, "
        f"one step an epoch; {meta['epochs']} on sbm-graphs; graph scoring, {meta['workers']} sandbox jobs at once, "
        f"one thread each; median {meta['median_s']:.1f} s a candidate). benchmarks/graph_predictor_gnn.json keeps "
        "every candidate's score and features; `.venv/bin/python benchmarks/graph_predictor.py --graphs --report` "
        "writes this section again from it.",
        "",
        "The protocol above, on the two built-in graph tasks. Groups: seeds (archive/seeds/graph: GAT, GCN, GraphSAGE; "
        "archive/seeds/graphs: GCN, GIN), a seeded sample of the gnn space (sbm-nodes) or the gnnpool space "
        "(sbm-graphs), and LLM-style GNNs outside the spaces (`gnn_variant`: sum, mean, max, GCN-normalised or "
        "GAT-style attention aggregation, or none (an MLP of node features), 1 to 4 layers, widths, activations, "
        "norms, residuals, jumping knowledge; sum, mean or max readout). Pooled: each graph task pools the other "
        "one's candidates. No before columns: before this change features.py refused every network of graphs (its "
        "scatters are outside the allowlist of a network of examples), so the predictor saw no graph features for "
        "them and with graph was without graph.",
        "",
        *tables(rows, list(GRAPH_TASKS.values()), meta, "###"),
        "### What the graph tasks say",
        "",
        *meta.get("notes", ["(notes are added by hand after a run)"]),
        "",
    ]
    if meta["failures"]:
        lines += ["Not trained:", "", *[f"- {name}: {why}" for name, why in meta["failures"].items()], ""]
    return "\n".join(lines)


def broad_report(data: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The second graph sample's section (BROAD_SECTION): the first's protocol on a sample drawn by `broad_gnn`, and
    its LLM-style networks by family."""
    meta = data["meta"]
    lines = [
        BROAD_SECTION,
        "",
        f"`{meta['command']}` on {meta['machine']}; {meta['trained']} of {meta['candidates']} candidates trained "
        f"in {meta['wall_s'] / 60:.1f} minutes ({meta['node_epochs']} epochs on sbm-nodes, {meta['epochs']} on "
        f"sbm-graphs; graph scoring, {meta['workers']} sandbox jobs at once, one thread each; median "
        f"{meta['median_s']:.1f} s a candidate). benchmarks/graph_predictor_gnn_broad.json keeps every candidate's "
        "score and features; `.venv/bin/python benchmarks/graph_predictor.py --graphs --broad --report` writes this "
        "section again from it.",
        "",
        "The section above's protocol and settings on a second sample: another seed for the spaces' samples, and the "
        "LLM-style group drawn by `broad_gnn` from five families with equal odds: `gnn_variant` (the first sample's "
        "generator) and four that it lacks, each written as an LLM writes it (`gnn_family`): GIN (sum of the "
        "neighbours plus (1 + eps) times the node, eps learned or 0, through a one- or two-width MLP, batch norm in "
        "it or not), GAT (2, 4 or 8 heads, concatenated or averaged, attention dropout, a skip map), GraphSAGE (the "
        "node's state and its neighbours' mean, max or sum concatenated into one linear map, L2-normalised or not) "
        "and GatedGCN (edge gates from both ends and an edge state, a gate-weighted mean, node and edge states "
        "updated with residuals); around each an input embedding or none, 1 to 4 layers, widths, activations, "
        "norms, dropout, residuals, jumping knowledge (none, concatenated or maximum) and a one- or two-layer head; "
        "for sbm-graphs a readout: sum, mean, max, attention pooling or mean and max concatenated. A network's name "
        "says its family.",
        "",
        *tables(rows, list(GRAPH_TASKS.values()), meta, "###"),
        "### The LLM-style networks by family",
        "",
        "| task | family | n | val accuracy min / median / max | message layers min / max |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for task in GRAPH_TASKS.values():
        for family in FAMILIES:
            mine = [r for r in rows if r["task"] == task and r["name"].startswith(f"llm-{family}-")]
            if not mine:
                continue
            scores = sorted(r["score"] for r in mine)
            layers = [r["features"].get("graph.mp.layers", math.nan) for r in mine]
            lines.append(
                f"| {task} | {family} | {len(mine)} | {scores[0]:.3f} / {statistics.median(scores):.3f} / "
                f"{scores[-1]:.3f} | {min(layers):.0f} / {max(layers):.0f} |"
            )
    lines += [
        "",
        "### What the second sample says",
        "",
        *meta.get("notes", ["(notes are added by hand after a run)"]),
        "",
    ]
    if meta["failures"]:
        lines += ["Not trained:", "", *[f"- {name}: {why}" for name, why in meta["failures"].items()], ""]
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()} ({cpu}), {os.cpu_count()} CPU cores shared with other work (load average "
            f"{load:.1f} at the end), Python {platform.python_version()}")  # fmt: skip


def run(args: argparse.Namespace, todo: list[dict[str, Any]], tasks: list[str], folder: Path, out: Path) -> None:
    """Train every candidate of `todo`, and write their scores and features to `out` (kept notes stay)."""
    began = time.perf_counter()
    seconds = train_all(todo, args, folder)
    wall = time.perf_counter() - began
    rows = collect(folder, todo, tasks)
    columns = sorted({k for r in rows for k in r["features"]})
    with Archive(folder / "archive.db") as db:
        failures = {
            r["name"]: f"{r['status']}: {(r['reason'] or '')[:200]}"
            for r in db.db.query("SELECT name, status, reason FROM candidates WHERE status != 'trained'")
        }
    data = {
        "meta": {
            "command": "benchmarks/graph_predictor.py " + " ".join(
                f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                for k, v in vars(args).items() if k != "report" and v is not False),
            "machine": machine(), "wall_s": wall, "epochs": args.epochs, "node_epochs": args.node_epochs,
            "workers": args.workers, "candidates": len(todo), "trained": len(rows),
            "median_s": statistics.median(seconds.values()), "failures": failures, "date": time.strftime("%Y-%m-%d"),
        },
        "columns": columns,
        "rows": [
            {"task": r["task"], "group": r["group"], "name": r["name"], "score": r["score"],
             "values": [None if c not in r["features"] else float(f"{r['features'][c]:.6g}") for c in columns]}
            for r in rows
        ],
    }  # fmt: skip
    if out.exists():  # notes and the earlier predictor's figures, written by hand, stay
        earlier = json.loads(out.read_text())["meta"]
        data["meta"].update({k: earlier[k] for k in ("notes", "before") if k in earlier})
    out.write_text(json.dumps(data, separators=(",", ":")) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--node-epochs", type=int, default=20, help="epochs on sbm-nodes (one full-batch step each)")
    parser.add_argument("--per-space", type=int, default=20)
    parser.add_argument("--llm", type=int, default=8, help="LLM-style GNNs per graph task (--graphs)")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--graphs", action="store_true", help="the graph tasks (sbm-nodes, sbm-graphs) instead")
    parser.add_argument("--broad", action="store_true", help="with --graphs: the second sample, more GNN families")
    parser.add_argument("--report", action="store_true", help="only write the page again from the JSON")
    args = parser.parse_args()
    if args.broad and not args.graphs:
        parser.error("--broad is a sample of the graph tasks: give --graphs with it")
    graph_json = OUT_BROAD_JSON if args.broad else OUT_GNN_JSON
    if not args.report:
        os.environ.setdefault("AGENTARCH_WEAK_SANDBOX_OK", "1")  # where bubblewrap is missing: process isolation
        folder = Path(tempfile.mkdtemp(prefix="graph_predictor."))
        if args.graphs:
            run(args, graph_cases(args), list(GRAPH_TASKS.values()), folder, graph_json)
        else:
            run(args, cases(args, table_task(folder)), list(TASK_NAMES.values()), folder, OUT_JSON)
    if args.graphs:  # the page's other sections as they stand (computing them again takes minutes)
        page = OUT_MD.read_text() if OUT_MD.exists() else ""
        page = with_section(page, graph_report(json.loads(graph_json.read_text()), args.broad))
    else:
        page = report(json.loads(OUT_JSON.read_text()))
        for broad, found in ((False, OUT_GNN_JSON), (True, OUT_BROAD_JSON)):
            if found.exists():
                page = with_section(page, graph_report(json.loads(found.read_text()), broad))
    OUT_MD.write_text(page)
    print(page)


if __name__ == "__main__":
    main()
