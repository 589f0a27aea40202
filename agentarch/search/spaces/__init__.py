"""Declared NAS search spaces: architectures as canonical strings, rendered to candidate code.

- nb201: the NAS-Bench-201 cell space (image tasks), in the benchmark's string format;
- macro: plain CNNs chosen by depth, width, kernel, skips and pooling (image tasks);
- mixer: pre-norm residual stacks choosing a token mixer per layer (token, lm and sequence tasks);
- mlp: MLPs by depth, width, activation, dropout and normalization (table tasks);
- restore: residual CNN restorers over a fixed upsampling of the input (dense tasks: super-resolution, denoising);
- gnn: message-passing GNNs by aggregator, layers, width, heads, activation, skips and dropout (graph tasks);
- gnnpool: gnn's networks with a readout (mean, sum or max pooling of each graph's nodes) for graphs tasks.

The search algorithms work on strings through the SearchSpace interface (sample, mutate, suggest)
and only render code when a candidate is evaluated.
"""

from agentarch.search.spaces.base import SPACES, SearchSpace, SpaceError
from agentarch.search.spaces.gnn import GNNPoolSpace, GNNSpace
from agentarch.search.spaces.macro import MacroSpace
from agentarch.search.spaces.mixer import MixerSpace
from agentarch.search.spaces.mlp import MLPSpace
from agentarch.search.spaces.nb201 import NB201Space
from agentarch.search.spaces.restore import RestoreSpace

SPACES.update(
    {
        space.name: space
        for space in (NB201Space(), MacroSpace(), MixerSpace(), MLPSpace(), RestoreSpace(), GNNSpace(), GNNPoolSpace())
    }
)


def get_space(name: str) -> SearchSpace:
    """The registered space called `name`; the error lists the known ones."""
    try:
        return SPACES[name]
    except KeyError:
        raise SpaceError(f"unknown search space {name!r}; known spaces: {', '.join(SPACES)}") from None


def space_for(kind: str, preferred: str | None = None) -> str:
    """The space an offline run uses for a task of `kind`: `preferred` when it builds that kind, else
    the first registered space that does (so every trainable kind has one, and a new space joins by
    declaring its kinds)."""
    if preferred is not None and kind in get_space(preferred).kinds:
        return preferred
    for space in SPACES.values():
        if kind in space.kinds:
            return space.name
    raise SpaceError(f"no search space builds networks for {kind} tasks; known spaces: {', '.join(SPACES)}")


__all__ = ["SPACES", "SearchSpace", "SpaceError", "get_space", "space_for"]
