"""A token-mixer space for sequence-shaped tasks: which mixer each layer of a pre-norm residual stack uses.

The string is the model width followed by each layer's mixer, bottom to top, separated by '|':
`d64|attention|short_conv|gated_mlp`. The mixers span the families the Zoology study (Arora et
al., 2023) compares on associative recall: softmax attention, linear attention, a short causal
convolution, and a channel-only GLU that mixes no tokens at all (a control). Every layer also has
an MLP, so the stacks differ only in how tokens exchange information.

One space serves three kinds: token tasks (logits at every position), language modelling (the
same, and every mixer is causal, as an lm must be) and sequence classification or regression
(ids or float features in, the mean over positions to one output per sequence).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from agentarch.search.spaces.base import SearchSpace, SpaceError, module_literals, require_str

if TYPE_CHECKING:
    import optuna

    from agentarch.tasks.task import Task

MIXERS = ("attention", "linear_attention", "short_conv", "gated_mlp")
D_MODELS = (64, 128)
MIN_LAYERS, MAX_LAYERS = 2, 4
EXAMPLE = "d64|attention|short_conv|gated_mlp"
NO_LAYER = "none"
"""A JSON answer's value for a layer the stack does not have (the fields past the smallest depth)."""


def parse(arch: str) -> tuple[int, list[str]]:
    """(d_model, mixer per layer) of `arch`, or SpaceError naming the first bad part."""
    text = require_str("mixer", arch)
    head, *layers = text.split("|")
    widths = ", ".join(f"d{d}" for d in D_MODELS)
    if not (head.startswith("d") and head[1:].isdecimal() and int(head[1:]) in D_MODELS):
        raise SpaceError(
            f"mixer architecture {text!r} must start with the model width, one of {widths}, "
            f"then '|' and a mixer per layer, as in {EXAMPLE}"
        )
    if not MIN_LAYERS <= len(layers) <= MAX_LAYERS:
        raise SpaceError(
            f"mixer architecture {text!r} has {len(layers)} layer(s); it needs {MIN_LAYERS} to "
            f"{MAX_LAYERS}, as in {EXAMPLE}"
        )
    for i, mixer in enumerate(layers):
        if mixer not in MIXERS:
            raise SpaceError(f"mixer layer {i} is {mixer!r}; choose one of {', '.join(MIXERS)}")
    return int(head[1:]), layers


def format_arch(d_model: int, layers: list[str]) -> str:
    """The canonical string of a width and a mixer per layer."""
    return "|".join([f"d{d_model}", *layers])


class MixerSpace(SearchSpace):
    """Pre-norm residual stacks of 2 to 4 layers, each with its own token mixer (token, lm and sequence tasks)."""

    name = "mixer"
    kinds = ("token", "lm", "sequence")
    grammar = (
        f"a pre-norm residual stack of {MIN_LAYERS} to {MAX_LAYERS} layers written as the model width "
        f"({', '.join(f'd{d}' for d in D_MODELS)}) and then each layer's token mixer, bottom to top, separated by "
        f"'|', e.g. {EXAMPLE}; the mixers are {', '.join(MIXERS)} (gated_mlp mixes no tokens)"
    )

    def fields(self) -> dict[str, tuple[Any, ...]]:
        layers = {f"layer_{i}": MIXERS if i <= MIN_LAYERS else (*MIXERS, NO_LAYER) for i in range(1, MAX_LAYERS + 1)}
        return {"d_model": D_MODELS, **layers}

    def field_notes(self) -> dict[str, str]:
        notes = {f"layer_{i}": f"layer {i}'s token mixer" for i in range(1, MAX_LAYERS + 1)}
        for i in range(MIN_LAYERS + 1, MAX_LAYERS + 1):
            notes[f"layer_{i}"] += f" ({NO_LAYER}: no such layer)"
        return {"d_model": "model width", **notes}

    def to_fields(self, arch: str) -> dict[str, Any]:
        d_model, layers = parse(arch)
        padded = layers + [NO_LAYER] * (MAX_LAYERS - len(layers))
        return {"d_model": d_model, **{f"layer_{i}": mixer for i, mixer in enumerate(padded, start=1)}}

    def _from_fields(self, values: dict[str, Any]) -> str:
        layers = [values[f"layer_{i}"] for i in range(1, MAX_LAYERS + 1)]
        return format_arch(values["d_model"], [mixer for mixer in layers if mixer != NO_LAYER])

    def sample(self, rng: random.Random) -> str:
        """Uniform over all architectures, so a depth is drawn in proportion to how many stacks it has."""
        counts = {n: len(MIXERS) ** n for n in range(MIN_LAYERS, MAX_LAYERS + 1)}
        n_layers = rng.choices(list(counts), weights=list(counts.values()))[0]
        return format_arch(rng.choice(D_MODELS), [rng.choice(MIXERS) for _ in range(n_layers)])

    def mutate(self, arch: str, rng: random.Random) -> str:
        """One move, chosen uniformly among those allowed: change a layer's mixer, change the width,
        or (within the depth bounds) insert or remove a layer."""
        d_model, layers = parse(arch)
        moves = ["mixer", "width"]
        if len(layers) < MAX_LAYERS:
            moves.append("insert")
        if len(layers) > MIN_LAYERS:
            moves.append("remove")
        move = rng.choice(moves)
        if move == "mixer":
            i = rng.randrange(len(layers))
            layers[i] = rng.choice([m for m in MIXERS if m != layers[i]])
        elif move == "width":
            d_model = rng.choice([d for d in D_MODELS if d != d_model])
        elif move == "insert":
            layers.insert(rng.randrange(len(layers) + 1), rng.choice(MIXERS))
        else:
            del layers[rng.randrange(len(layers))]
        return format_arch(d_model, layers)

    def suggest(self, trial: optuna.trial.BaseTrial) -> str:
        d_model = int(trial.suggest_categorical("d_model", list(D_MODELS)))
        n_layers = trial.suggest_int("layers", MIN_LAYERS, MAX_LAYERS)
        return format_arch(
            d_model, [str(trial.suggest_categorical(f"mixer_{i}", list(MIXERS))) for i in range(n_layers)]
        )

    def validate(self, arch: str) -> str:
        return format_arch(*parse(arch))

    def parse_code(self, code: str) -> str:
        values = module_literals(code, ["D_MODEL", "MIXERS"])
        if not isinstance(values["MIXERS"], list) or not all(isinstance(m, str) for m in values["MIXERS"]):
            raise SpaceError(f"MIXERS must be a list of mixer names; got {values['MIXERS']!r}")
        return self.validate(format_arch(values["D_MODEL"], values["MIXERS"]))

    def describe(self, arch: str) -> str:
        d_model, layers = parse(arch)
        return f"A {len(layers)}-layer pre-norm residual stack of width {d_model} with mixers {', '.join(layers)}."

    def _context(self, arch: str, task: Task) -> dict[str, Any]:
        d_model, layers = parse(arch)
        used = [m for m in MIXERS if m in layers]
        heads = {
            "token": "logits over the vocabulary at every position",
            "lm": "next-byte (next-token) logits at every position",
            "sequence": "one output per sequence from the mean over positions",
        }
        return {
            "d_model": d_model,
            "layers": layers,
            "used": used,
            "description": self.describe(arch),
            "kind": task.kind,
            "ids": task.vocab_size is not None,
            "head": heads[task.kind],
        }
