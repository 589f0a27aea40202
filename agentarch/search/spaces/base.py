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
import random
import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from agentarch.errors import AgentarchError
from agentarch.evaluation.checks import parse

if TYPE_CHECKING:
    import optuna

    from agentarch.tasks.task import Task

TEMPLATES = Path(__file__).parent / "templates"


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

    def identity(self, arch: str) -> str:
        """A key shared by exactly the architectures that build the same network.

        A search that must not train the same thing twice compares these keys; spaces in which some
        choices can be inert (nb201) override it.
        """
        return self.validate(arch)

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
        return template(f"{self.name}.py.j2").render(arch=canonical, **self._context(canonical, task))


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

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Change one uniformly chosen setting to a different allowed value."""
        settings = self.parse(arch)
        field = rng.choice(list(self.fields))
        settings[field] = rng.choice([c for c in self.fields[field][1] if c != settings[field]])
        return self.format(settings)
