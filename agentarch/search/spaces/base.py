"""What every declared search space provides, and the helpers they share.

An architecture is a canonical string in every space, because it has to live in a database
column, on a command line and in a search algorithm's history alike. A space turns that string
into candidate code through a Jinja2 template, so that a space's networks are written once, in
plain Python a person (or an LLM reading few-shot examples) can follow, and reads the string back
from the code through module-level literals that the network is actually built from.

This module never imports torch or optuna: the orchestrator and the search algorithms use spaces
without building any network.
"""

from __future__ import annotations

import abc
import ast
import functools
import itertools
import json
import random
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from agentarch.errors import AgentarchError
from agentarch.evaluation.checks import parse

if TYPE_CHECKING:
    import optuna

    from agentarch.tasks.task import Task

TEMPLATES = Path(__file__).parent / "templates"
MAX_ANSWER_CHARS = 20_000
"""How much of a model's answer `SearchSpace.read_answer` looks at: an architecture is a few hundred characters."""
MAX_PIECES = 500
"""How many parts of an answer (lines, quoted parts, words) `SearchSpace.read_answer` tries as an architecture."""


def reflow(text: str, width: int = 99) -> str:
    """Rewrap each blank-line-separated paragraph to `width` columns.

    Templates wrap their docstring prose in `{% filter reflow %}`, so that sentences whose length
    depends on the architecture still come out as a tidy docstring.
    """
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    wrapped = (textwrap.fill(p, width, break_long_words=False, break_on_hyphens=False) for p in paragraphs)
    return "\n\n".join(wrapped) + "\n"


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,  # a missing template variable is a bug, never an empty string
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,  # the output is Python, not HTML
)
_ENV.filters["reflow"] = reflow


class SpaceError(AgentarchError, ValueError):
    """A bad architecture string or code for a space; the message says what to fix."""


@dataclass(frozen=True)
class Size:
    """What a space's network for one task costs, as the sandbox's smoke stage would count it: `params` every
    element of `model.parameters()`, `flops` the forward FLOPs of one example by torch's per-operator formulas
    (convolutions and matrix products, a multiply-add is 2; norms, pooling, additions and activations are free),
    None where the space cannot say."""

    params: int
    flops: int | None = None


@functools.cache
def template(name: str) -> jinja2.Template:
    """The compiled template `name`, compiled once: renders are called thousands of times in a search."""
    return _ENV.get_template(name)


def module_literals(code: str, names: list[str]) -> dict[str, Any]:
    """The values of module-level `NAME = <literal>` assignments in `code`, for each of `names`.

    The fast path finds each assignment with a regular expression (the value's first line plus
    any indented or closing-bracket lines after it) and evaluates just that value, which is what
    lets a search parse thousands of rendered files in seconds. Code laid out otherwise falls back
    to parsing the whole module. A name that is missing or not a literal raises SpaceError.
    """
    values: dict[str, Any] = {}
    for name in names:
        match = re.search(rf"^{name} = (.*(?:\n[ \t)\]}}].*)*)", code, flags=re.MULTILINE)
        if match is None:
            break
        try:
            values[name] = ast.literal_eval(parse(match.group(1), mode="eval"))
        except (SyntaxError, ValueError):
            break
    else:
        return values
    return _module_literals_slow(code, names)


def _module_literals_slow(code: str, names: list[str]) -> dict[str, Any]:
    try:
        tree = parse(code)
    except SyntaxError as err:
        raise SpaceError(f"the code does not parse (line {err.lineno}: {err.msg})") from err
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in names:
                try:
                    values[target.id] = ast.literal_eval(value)
                except ValueError:
                    raise SpaceError(f"{target.id} (line {node.lineno}) must be a literal value") from None
    missing = [name for name in names if name not in values]
    if missing:
        raise SpaceError(
            f"the code has no module-level {', '.join(missing)} assignment; it was not rendered from this search space"
        )
    return values


SPACES: dict[str, SearchSpace] = {}
"""The registered spaces by name. `agentarch.search.spaces` fills it with every space it ships; it lives here, beside
the interface, so that a space's own fit check can name the others without importing the package that imports it."""


class SearchSpace(abc.ABC):
    """A declared family of architectures: sampling, mutation and TPE suggestion on canonical
    strings, and rendering a string to candidate code for a task."""

    name: str
    """"nb201", "macro" or "mixer": the key in SPACES and the template's stem."""
    kinds: tuple[str, ...]
    """The task kinds (see agentarch.tasks.task.Kind) whose networks this space builds."""
    template_stem: str | None = None
    """The stem of the template the space renders: its name, unless it shares a sibling's (gnnpool renders gnn's)."""

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> str:
        """A uniformly random architecture."""

    @abc.abstractmethod
    def mutate(self, arch: str, rng: random.Random) -> str:
        """One random local change to `arch`; the result always differs from it."""

    @abc.abstractmethod
    def suggest(self, trial: optuna.trial.BaseTrial) -> str:
        """An architecture chosen through the trial's suggest_* calls (so TPE can model the choices)."""

    @abc.abstractmethod
    def validate(self, arch: str) -> str:
        """The canonical form of `arch`, or SpaceError saying what is wrong with it."""

    @abc.abstractmethod
    def parse_code(self, code: str) -> str:
        """The architecture string back from code rendered by this space."""

    def size(self, arch: str, task: Task) -> Size:
        """The parameters (and FLOPs) of the network `render(arch, task)` builds, computed on the host without
        running any code: what a search checks against the task's limits (agentarch.search.limits) before it
        proposes. A space that cannot say raises SpaceError (its proposals are then checked by the sandbox alone)."""
        raise SpaceError(f"the {self.name} space does not compute the size of its networks on the host")

    def archs(self) -> Iterator[str] | None:
        """Every architecture of the space, when it is small enough to list (the shipped spaces hold 120 to 15,625);
        None for a space that cannot (a search then keeps to the limits by rejection alone)."""
        return None

    def trial_params(self, arch: str) -> dict[str, Any]:
        """The values of `suggest`'s trial parameters that make it return `arch` (what TPE is given when it is told
        to take an architecture: `optuna.Study.enqueue_trial`). By default the space's fields, which the shipped
        spaces' `suggest` names alike."""
        return self.to_fields(arch)

    def identity(self, arch: str) -> str:
        """A key shared by exactly the architectures that build the same network.

        A search that must not train the same thing twice compares these keys; spaces in which some
        choices can be inert (nb201) override it.
        """
        return self.validate(arch)

    # -- the space's choices as named fields: how a model is asked for an architecture ---------------------------

    grammar: str = ""
    """How an architecture string is written, for a person or a model: its parts, what each means, an example."""

    def fields(self) -> dict[str, tuple[Any, ...]]:
        """The space's choices as named fields, in a fixed order, each with its allowed values (JSON strings,
        numbers): what `schema` declares and `from_fields` reads back. A space that cannot say raises SpaceError."""
        raise SpaceError(f"the {self.name} space does not declare its choices as fields")

    def field_notes(self) -> dict[str, str]:
        """A few words on what each field chooses (none by default)."""
        return {}

    def to_fields(self, arch: str) -> dict[str, Any]:
        """The field values of `arch` (every field, in `fields` order)."""
        raise SpaceError(f"the {self.name} space does not declare its choices as fields")

    def _from_fields(self, values: dict[str, Any]) -> str:
        """The architecture string of a complete, checked set of field values."""
        raise SpaceError(f"the {self.name} space does not declare its choices as fields")

    def from_fields(self, values: Any) -> str:
        """The canonical architecture of `values` (a JSON object's fields), or SpaceError naming the first field
        that is missing, unknown or not allowed."""
        fields = self.fields()
        if not isinstance(values, dict):
            raise SpaceError(f"a {self.name} answer is an object with the fields {', '.join(fields)}")
        unknown = [str(k) for k in values if k not in fields]
        missing = [k for k in fields if k not in values]
        if unknown or missing:
            said = "; ".join(
                part
                for part in (
                    f"unknown field(s) {', '.join(unknown[:5])}" if unknown else "",
                    f"missing field(s) {', '.join(missing)}" if missing else "",
                )
                if part
            )
            raise SpaceError(f"a {self.name} answer needs exactly the fields {', '.join(fields)}: {said}")
        for name, allowed in fields.items():
            value = values[name]
            # JSON's true is Python's 1: a boolean answers no numeric field
            if isinstance(value, bool) or not any(type(value) is type(a) and value == a for a in allowed):
                shown = ", ".join(json.dumps(a) for a in allowed)
                raise SpaceError(f"{self.name} field {name} is {json.dumps(value)[:40]}; choose one of {shown}")
        return self.validate(self._from_fields({name: values[name] for name in fields}))

    def schema(self) -> dict[str, Any]:
        """A JSON schema of an architecture as an object of the space's fields, each an enum of its values: what an
        LLM request carries (OpenAI `response_format`, vLLM guided decoding, llama.cpp grammars)."""
        notes = self.field_notes()
        properties = {
            name: {"enum": list(values), **({"description": notes[name]} if name in notes else {})}
            for name, values in self.fields().items()
        }
        return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}

    def read_answer(self, text: str) -> str:
        """The canonical architecture in a model's answer: a JSON object of the fields (the first one in the text
        that parses), else an architecture string in the space's grammar (the whole answer, one of its lines, a
        `quoted` part or a word, quotes and punctuation around it stripped). SpaceError says what was wrong with the first candidate found."""
        text = text[:MAX_ANSWER_CHARS]
        decoder = json.JSONDecoder()
        first_error: SpaceError | None = None
        for start in [m.start() for m in re.finditer(r"[{\"]", text)][:50]:
            try:
                value, _ = decoder.raw_decode(text, start)
            except ValueError:
                continue
            try:
                if isinstance(value, dict):
                    inner = value.get("arch", value.get("architecture")) if len(value) == 1 else None
                    return self.validate(inner) if isinstance(inner, str) else self.from_fields(value)
                if isinstance(value, str) and value.strip():
                    return self.validate(value)
            except SpaceError as err:
                first_error = first_error or err
        pieces = [text, *text.splitlines(), *re.findall(r"`([^`]+)`", text), *text.split()]
        for piece in pieces[:MAX_PIECES]:
            candidate = piece.strip().strip("`'\".,;:").strip()
            if candidate:
                try:
                    return self.validate(candidate)
                except SpaceError as err:
                    first_error = first_error or err
        if first_error is not None:
            raise first_error
        raise SpaceError(
            f"the answer holds no {self.name} architecture: no JSON object of its fields, no string in its grammar"
        )

    @abc.abstractmethod
    def describe(self, arch: str) -> str:
        """One short human sentence about the architecture."""

    @abc.abstractmethod
    def _context(self, arch: str, task: Task) -> dict[str, Any]:
        """The template variables for the canonical `arch` sized for `task`."""

    def check_fit(self, task: Task) -> None:
        """Refuse a task this space cannot express candidates for, naming the spaces that can.

        The one fit rule: a space serves the task kinds it declares (nb201 also answers the
        NAS-Bench-201 tables), so a search is refused before it starts and a render never guesses.
        """
        if task.kind in self.kinds:
            return
        fitting = [space.name for space in SPACES.values() if task.kind in space.kinds]
        raise SpaceError(
            f"space {self.name!r} builds {'/'.join(self.kinds)} networks but task {task.name!r} is a "
            f"{task.kind} task; spaces for {task.kind} tasks: {', '.join(fitting) or 'none'}"
        )

    def render(self, arch: str, task: Task) -> str:
        """Candidate Python source for `arch` on `task`, from the space's template."""
        self.check_fit(task)
        canonical = self.validate(arch)
        return template(f"{self.template_stem or self.name}.py.j2").render(
            arch=canonical, **self._context(canonical, task)
        )


def require_str(space: str, arch: object) -> str:
    """`arch` stripped of surrounding whitespace, or SpaceError if it is not a string at all."""
    if not isinstance(arch, str):
        raise SpaceError(f"a {space} architecture is a string, got {type(arch).__name__} {arch!r}")
    return arch.strip()


class SettingsString:
    """An architecture written as whole-network settings in a fixed order: `<prefix><value>` parts joined by '-'.

    The macro and MLP spaces are both such strings (`d4-w16-k3-skip1-max`, `d2-w128-relu-p0.1-batch`);
    this is their one parser, printer, sampler and one-setting mutation.
    """

    def __init__(self, space: str, fields: dict[str, tuple[str, tuple[Any, ...]]], example: str) -> None:
        self.space = space
        self.fields = fields  # setting -> (its prefix in the string, its allowed values), in string order
        self.example = example  # the format, said for a person, with an example

    def parse(self, arch: str) -> dict[str, Any]:
        """The settings of `arch` by field name, or SpaceError naming the first bad one."""
        text = require_str(self.space, arch)
        parts = text.split("-")
        if len(parts) != len(self.fields):
            raise SpaceError(
                f"{self.space} architecture {text!r} has {len(parts)} part(s); "
                f"it needs {len(self.fields)}: {self.example}"
            )
        settings = {}
        for part, (field, (prefix, choices)) in zip(parts, self.fields.items()):
            value: Any = part[len(prefix) :] if part.startswith(prefix) else None
            if value is not None and isinstance(choices[0], int):
                value = int(value) if value.isdecimal() else None
            if value not in choices:
                allowed = ", ".join(f"{prefix}{c}" for c in choices)
                raise SpaceError(
                    f"{self.space} {field} {part!r} is not allowed; choose one of {allowed} (format {self.example})"
                )
            settings[field] = value
        return settings

    def format(self, settings: dict[str, Any]) -> str:
        """The canonical string of a full set of settings."""
        return "-".join(f"{prefix}{settings[field]}" for field, (prefix, _) in self.fields.items())

    def sample(self, rng: random.Random) -> str:
        """Every setting drawn uniformly from its allowed values."""
        return self.format({field: rng.choice(choices) for field, (_, choices) in self.fields.items()})

    def all(self) -> Iterator[str]:
        """Every architecture: the product of the settings' allowed values, in string order."""
        names = list(self.fields)
        for values in itertools.product(*(choices for _, choices in self.fields.values())):
            yield self.format(dict(zip(names, values)))

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Change one uniformly chosen setting to a different allowed value."""
        settings = self.parse(arch)
        field = rng.choice(list(self.fields))
        settings[field] = rng.choice([c for c in self.fields[field][1] if c != settings[field]])
        return self.format(settings)


def pooled(side: int) -> int:
    """A side after a 2x2 pooling with stride 2 and ceil_mode, or a 3x3 convolution with stride 2 and padding 1:
    both give ceil(side / 2) (an odd side keeps its last row and column)."""
    return (side + 1) // 2


class SettingsSpace(SearchSpace):
    """A space whose architectures are one `SettingsString` (macro, mlp, restore): its fields, sampling, mutation,
    listing, canonical form and TPE suggestion all come from the string's declared settings, so a new such space
    declares its settings, notes, template and size and nothing else."""

    settings: SettingsString
    notes: dict[str, str]
    """A few words on what each setting chooses, for the model that is asked to choose."""

    def fields(self) -> dict[str, tuple[Any, ...]]:
        return {field: choices for field, (_, choices) in self.settings.fields.items()}

    def field_notes(self) -> dict[str, str]:
        return dict(self.notes)

    def to_fields(self, arch: str) -> dict[str, Any]:
        return self.settings.parse(arch)

    def _from_fields(self, values: dict[str, Any]) -> str:
        return self.settings.format(values)

    def sample(self, rng: random.Random) -> str:
        return self.settings.sample(rng)

    def mutate(self, arch: str, rng: random.Random) -> str:
        return self.settings.mutate(arch, rng)

    def archs(self) -> Iterator[str]:
        return self.settings.all()

    def validate(self, arch: str) -> str:
        return self.settings.format(self.settings.parse(arch))

    def suggest(self, trial: optuna.trial.BaseTrial) -> str:
        return self.settings.format(
            {field: trial.suggest_categorical(field, list(choices)) for field, choices in self.fields().items()}
        )
