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

import itertools
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from agentarch.search.spaces.base import SearchSpace, Size, SpaceError, module_literals, require_str

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


def mixer_size(mixer: str, d: int, length: int, heads: int = 4) -> tuple[int, int]:
    """(parameters, FLOPs over `length` positions) of one token mixer of width `d`, as mixer.py.j2 builds it and as
    the sandbox counts it: the smoke stage traces on the CPU, where torch's fused softmax attention has no FLOP
    formula (its products count 0) and linear attention's outer products phi(k) v^T are elementwise products."""
    if mixer in ("attention", "linear_attention"):  # qkv and out projections with biases
        params, flops = 4 * d * d + 4 * d, 2 * length * 4 * d * d
        if mixer == "attention":
            return params, flops
        # q times the running sums of phi(k) v^T (a head x head matrix per position), and of phi(k)
        return params, flops + 2 * length * d * (d // heads) + 2 * length * d
    if mixer == "short_conv":  # a depthwise convolution over 4 tokens, with bias
        return 5 * d, 2 * 4 * d * length
    return 6 * d * d + 5 * d, 2 * length * 6 * d * d  # gated_mlp: gate and up to 2d, down to d


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

    def archs(self) -> Iterator[str]:
        for d_model in D_MODELS:
            for n_layers in range(MIN_LAYERS, MAX_LAYERS + 1):
                for layers in itertools.product(MIXERS, repeat=n_layers):
                    yield format_arch(d_model, list(layers))

    def trial_params(self, arch: str) -> dict[str, Any]:
        d_model, layers = parse(arch)
        return {"d_model": d_model, "layers": len(layers), **{f"mixer_{i}": m for i, m in enumerate(layers)}}

    def size(self, arch: str, task: Task) -> Size:
        """Counted by arithmetic on the width, the mixers and the task's shape, layer by layer as mixer.py.j2 builds
        the network (exact, no code run): the embedding (ids: a row per id; float features: a linear layer), the
        position embedding, per layer two layer norms, the mixer (`mixer_size`) and the 2x MLP, then the final norm
        and the head (at every position for token and lm tasks, once on the mean for a sequence task)."""
        d, layers = parse(arch)
        length, classes = task.in_shape[0], task.num_classes
        if task.kind == "sequence" and task.vocab_size is None:
            params, flops = task.in_shape[1] * d + d, 2 * length * task.in_shape[1] * d
        else:
            params, flops = (task.vocab_size if task.kind == "sequence" else classes) * d, 0
        params += length * d
        for mixer in layers:
            mixer_params, mixer_flops = mixer_size(mixer, d, length)
            params += 4 * d + mixer_params + 4 * d * d + 3 * d
            flops += mixer_flops + 2 * length * 4 * d * d
        head_positions = 1 if task.kind == "sequence" else length
        return Size(params + 2 * d + d * classes + classes, flops + 2 * head_positions * d * classes)

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
