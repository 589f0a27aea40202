"""Two GNN spaces, in the spirit of Auto-GNN (Zhou et al., 2019) and GraphNAS (Gao et al., 2020): `gnn`, for node
classification (graph tasks), message-passing networks chosen by seven whole-network settings; and `gnnpool`, for
graph classification (graphs tasks), the same networks and an eighth setting, the readout that pools each graph's nodes.

The string names every setting, in a fixed order, as
`<aggregator>-d<layers>-w<width>-h<heads>-<activation>-skip<0|1>-p<dropout>`, for example
`gat-d2-w64-h8-elu-skip0-p0.5`: two attention layers of 64 units (8 heads of 8, concatenated), ELU, no residual
connections, dropout 0.5. The choices are those Auto-GNN searches per layer, taken for the whole network (so the
space is small enough to list and to search in a few dozen trainings): how a node gathers its neighbours' features
(the mean, sum or max of them beside the node's own, as GraphSAGE and GraphConv do; the GCN's degree-normalised sum
over the neighbours and the node itself; or GAT's attention), the hidden units, the number of layers, the
activation and the attention heads; plus two cheap settings of theirs, residual connections and dropout. A linear
head gives each node's class logits.

Heads choose nothing unless the aggregator is attention, and a residual connection skips layers 2 on (the first
changes the width), so the canonical string of every other network says `h1`, and of a one-layer network `skip0`:
one spelling per network, which is what sampling, mutation and deduplication count.

A gnnpool string adds `-pool<mean|sum|max>`, for example `sum-d3-w64-h1-relu-skip0-p0.0-poolsum` (sums throughout,
as GIN does): after the last layer each graph's node states are averaged, summed or maxed into one row by `batch` (the
graph of each node), and the linear head gives that row's class logits. Pooling has no parameters, so a gnnpool
network counts exactly the parameters of its gnn network; it pools by `batch` alone, so no graph's output depends on
the others in its batch. Both spaces render one template (gnn.py.j2, `readout` None for node classification): one
home for the layers and the pooling.

The network is plain PyTorch: messages gathered along the edges and summed (or maxed) into their targets with
index_add_ and scatter_reduce, no compiled extension. The largest network (mean, sum or max, d3-w128, about 71k
parameters on the built-in graph's 16 features, 68k on sbm-graphs' 8) fits the built-in tasks' budget (100k).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from agentarch.search.spaces.base import SettingsSpace, SettingsString, Size, SpaceError, module_literals

if TYPE_CHECKING:
    from agentarch.tasks.task import Task

AGGREGATORS = ("mean", "sum", "max", "gcn", "gat")
DEPTHS = (1, 2, 3)
WIDTHS = (16, 32, 64, 128)
HEADS = (1, 2, 4, 8)
ACTIVATIONS = ("relu", "elu", "tanh", "leaky_relu")
SKIPS = (0, 1)
DROPOUTS = ("0.0", "0.2", "0.5")  # strings, so the canonical form has exactly one spelling of each
ATTENTION = "gat"
"""The one aggregator whose heads choose something."""
NEIGHBOURS = ("mean", "sum", "max")
"""The aggregators that keep a node's own features apart from its neighbours' (two weight matrices a layer)."""

# Each setting in string order: its prefix in the string and its allowed values.
FIELDS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "aggregator": ("", AGGREGATORS),
    "depth": ("d", DEPTHS),
    "width": ("w", WIDTHS),
    "heads": ("h", HEADS),
    "activation": ("", ACTIVATIONS),
    "skip": ("skip", SKIPS),
    "dropout": ("p", DROPOUTS),
}
FORMAT = (
    "<mean|sum|max|gcn|gat>-d<layers>-w<width>-h<heads>-<relu|elu|tanh|leaky_relu>-skip<0|1>-p<dropout>, "
    "e.g. gat-d2-w64-h8-elu-skip0-p0.5"
)
READOUTS = ("mean", "sum", "max")
"""How gnnpool pools each graph's node states into the row its class logits come from."""
POOL_FIELDS: dict[str, tuple[str, tuple[Any, ...]]] = {**FIELDS, "readout": ("pool", READOUTS)}
POOL_FORMAT = (
    "<mean|sum|max|gcn|gat>-d<layers>-w<width>-h<heads>-<relu|elu|tanh|leaky_relu>-skip<0|1>-p<dropout>-"
    "pool<mean|sum|max>, e.g. sum-d3-w64-h1-relu-skip0-p0.0-poolsum"
)
NAMES = {
    "mean": "the neighbours' mean beside the node's own (GraphSAGE)",
    "sum": "the neighbours' sum beside the node's own (GraphConv)",
    "max": "the neighbours' max beside the node's own",
    "gcn": "the GCN's normalised sum",
    "gat": "attention (GAT)",
}


def inert(settings: dict[str, Any]) -> set[str]:
    """The settings that choose nothing in this network: the heads of any aggregator but attention, and the residual
    connections of a one-layer network."""
    found = set()
    if settings["aggregator"] != ATTENTION:
        found.add("heads")
    if settings["depth"] == 1:
        found.add("skip")
    return found


def canonical(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with every inert one at its first value (h1, skip0): the one spelling of the network."""
    return {**settings, **{field: FIELDS[field][1][0] for field in inert(settings)}}


class GNNString(SettingsString):
    """The gnn space's strings: a `SettingsString` whose inert settings have one spelling (`canonical`), so that
    sampling and listing are uniform over networks and a mutation always changes the network."""

    def format(self, settings: dict[str, Any]) -> str:
        return super().format(canonical(settings))

    def sample(self, rng: random.Random) -> str:
        """Uniform over networks: settings drawn uniformly until they are a canonical spelling (a third are)."""
        while True:
            settings = {field: rng.choice(choices) for field, (_, choices) in self.fields.items()}
            if canonical(settings) == settings:
                return self.format(settings)

    def all(self) -> Iterator[str]:
        """Every network once, in string order (a canonical spelling comes before the others of its network)."""
        return iter(dict.fromkeys(super().all()))

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Change one uniformly chosen setting that matters to a different allowed value."""
        settings = self.parse(arch)
        field = rng.choice([f for f in self.fields if f not in inert(settings)])
        settings[field] = rng.choice([c for c in self.fields[field][1] if c != settings[field]])
        return self.format(settings)


ARCH = GNNString("gnn", FIELDS, FORMAT)
parse = ARCH.parse
format_arch = ARCH.format
POOL_ARCH = GNNString("gnnpool", POOL_FIELDS, POOL_FORMAT)


def layer_params(aggregator: str, d_in: int, width: int) -> int:
    """One message-passing layer's parameters, as gnn.py.j2 builds it: two weight matrices and a bias for the
    neighbour aggregators (the node's own and its neighbours'), one and a bias for GCN, one, a bias and an attention
    vector per end of an edge (`width` numbers each, over all heads) for GAT."""
    if aggregator in NEIGHBOURS:
        return 2 * d_in * width + width
    return d_in * width + (3 * width if aggregator == ATTENTION else width)


class GNNSpace(SettingsSpace):
    """Message-passing GNNs for node classification (graph tasks): aggregator, layers, width, heads, activation,
    residual connections and dropout."""

    name = "gnn"
    kinds = ("graph",)
    grammar = (
        f"a message-passing GNN written {FORMAT}: first how a node gathers its neighbours (mean, sum or max of them "
        "beside its own features, the GCN's normalised sum, or gat attention), d the number of layers, w their "
        "hidden units, h the attention heads (gat only, h1 otherwise), the activation, skip1 adds residual "
        "connections from the second layer on (skip0 for one layer), p the dropout rate"
    )
    settings = ARCH
    notes = {
        "aggregator": "how a node gathers its neighbours' features",
        "depth": "message-passing layers",
        "width": "hidden units per layer (all heads together)",
        "heads": "attention heads (gat only; 1 for the others)",
        "activation": "activation function",
        "skip": "1: residual connections from the second layer on (0 with one layer)",
        "dropout": "dropout rate",
    }
    literals = {
        "aggregator": "AGGREGATOR",
        "depth": "DEPTH",
        "width": "WIDTH",
        "heads": "HEADS",
        "activation": "ACTIVATION",
        "skip": "SKIP",
        "dropout": "DROPOUT",
    }
    """The module-level name the template gives each setting, which `parse_code` reads back."""

    def size(self, arch: str, task: Task) -> Size:
        """Parameters counted by arithmetic on the settings and the number of node features, layer by layer as
        gnn.py.j2 builds the network (exact, no code run), then the linear head (a readout has none). FLOPs are None:
        the sandbox counts them on a whole graph (or batch of graphs), whose number of nodes the task does not state."""
        s = self.settings.parse(arch)
        params, d_in = 0, task.in_shape[0]
        for _ in range(s["depth"]):
            params += layer_params(s["aggregator"], d_in, s["width"])
            d_in = s["width"]
        return Size(params + d_in * task.num_classes + task.num_classes)

    def parse_code(self, code: str) -> str:
        values = module_literals(code, list(self.literals.values()))
        if not isinstance(values["SKIP"], bool):
            raise SpaceError(f"SKIP must be True or False; got {values['SKIP']!r}")
        if not isinstance(values["DROPOUT"], float):
            raise SpaceError(f"DROPOUT must be a float; got {values['DROPOUT']!r}")
        settings = {field: values[name] for field, name in self.literals.items()}
        settings.update(skip=int(values["SKIP"]), dropout=str(values["DROPOUT"]))
        return self.validate(self.settings.format(settings))

    def describe(self, arch: str) -> str:
        s = self.settings.parse(arch)
        heads = f" with {s['heads']} head(s)" if s["aggregator"] == ATTENTION else ""
        skip = ", residual connections" if s["skip"] else ""
        return (
            f"A {s['depth']}-layer GNN gathering by {NAMES[s['aggregator']]}{heads}, {s['width']} units, "
            f"{s['activation']}{skip}, dropout {s['dropout']}."
        )

    def _context(self, arch: str, task: Task) -> dict[str, Any]:
        s = self.settings.parse(arch)
        return {
            "readout": None,  # node classification; a gnnpool string's own readout replaces it
            **s,
            "self_loops": s["aggregator"] in ("gcn", ATTENTION),
            "description": self.describe(arch),
        }


class GNNPoolSpace(GNNSpace):
    """The gnn space's networks for graph classification (graphs tasks): its seven settings and a readout, the mean,
    sum or max of each graph's node states after the last layer, which the linear head turns into the graph's logits.
    A sibling of GNNSpace rather than an eighth gnn setting because a readout means nothing for node classification:
    in gnn it would be inert in every network, doubling nothing but spellings."""

    name = "gnnpool"
    kinds = ("graphs",)
    template_stem = "gnn"
    grammar = (
        f"a message-passing GNN for graph classification written {POOL_FORMAT}: the settings of a gnn network (first "
        "how a node gathers its neighbours: mean, sum or max of them beside its own features, the GCN's normalised "
        "sum, or gat attention; d the number of layers, w their hidden units, h the attention heads (gat only, h1 "
        "otherwise), the activation, skip1 adds residual connections from the second layer on (skip0 for one "
        "layer), p the dropout rate), then pool the readout: the mean, sum or max of each graph's node states"
    )
    settings = POOL_ARCH
    notes = {**GNNSpace.notes, "readout": "how each graph's node states are pooled into its one row"}
    literals = {**GNNSpace.literals, "readout": "READOUT"}

    def describe(self, arch: str) -> str:
        readout = self.settings.parse(arch)["readout"]
        return f"{super().describe(arch)[:-1]}, {readout} readout."
