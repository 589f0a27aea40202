"""Every command-line option that sets a Settings field is generated from the field, so help cannot drift.

An option is a setting's when its parameter is named like the field (`--timeout` is `timeout_s`).
For each one, in every command: `--help` shows the field's description and default (and bounds),
the flag defaults to None so agentarch.toml and AGENTARCH_* still apply, and a value given on the
command line reaches `load_settings` as that field's override, converted to the field's type.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import typer.main
from typer.testing import CliRunner

from agentarch import cli
from agentarch.cli.fielddocs import field_doc
from agentarch.config import Settings

FIELDS = Settings.model_fields


def commands(group: Any = None, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf command of the app, with the words that invoke it."""
    group = typer.main.get_command(cli.app) if group is None else group
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found.extend(commands(command, (*path, name)))
        else:
            found.append(((*path, name), command))
    return found


SETTING_OPTIONS = [
    pytest.param(path, command, param, id=f"{' '.join(path)} {param.opts[0]}")
    for path, command in commands()
    for param in command.params
    if param.param_type_name == "option" and param.name in FIELDS
]


def flat(text: str) -> str:
    """Rendered help with the table's borders and line breaks gone, so wrapped text reads as one line."""
    return " ".join(text.replace("│", " ").split())


def test_the_commands_that_take_settings_are_all_found():
    named = {(" ".join(p.values[0]), p.values[2].name) for p in SETTING_OPTIONS}
    assert {("eval", "timeout_s"), ("run", "batch"), ("baseline", "population"), ("archive ls", "archive")} <= named
    assert ("baseline", "budget") not in named  # --budget there is evaluations per seed, not the run budget


@pytest.mark.parametrize("path, command, param", SETTING_OPTIONS)
def test_help_shows_the_fields_description_and_default(path, command, param):
    doc = field_doc(param.name)
    result = CliRunner().invoke(cli.app, [*path, "--help"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    shown = flat(result.output)
    extras = "; ".join(part for part in (f"default: {doc.default}", doc.bounds) if part)
    assert flat(doc.description) in shown and f"[{extras}]" in shown, f"{param.opts[0]} should say: {doc}"
    if doc.choices:
        assert f"[{'|'.join(doc.choices)}]" in shown
    assert param.default is None, "a flag not given must fall through to agentarch.toml and AGENTARCH_*"


class Reached(Exception):
    """Raised by the stand-in for load_settings: the command got as far as building its Settings."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        super().__init__("load_settings reached")
        self.overrides = overrides


def value_for(name: str) -> tuple[list[str], Any]:
    """Command-line words for the field `name` and the value they must arrive as, from the field's type."""
    annotation = FIELDS[name].annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if annotation is bool:
        return [], True
    if get_origin(annotation) is Literal:
        choice = get_args(annotation)[-1]
        return [choice], choice
    if get_origin(annotation) is list:  # a flag given once per item
        return ["probe"], ["probe"]
    return {
        int: (["7"], 7),
        float: (["0.5"], 0.5),
        Path: (["elsewhere.db"], Path("elsewhere.db")),
        str: (["probe"], "probe"),
    }[annotation]


@pytest.mark.parametrize("path, command, param", SETTING_OPTIONS)
def test_every_settings_flag_reaches_the_settings(monkeypatch, path, command, param):
    def reached(**overrides: Any) -> None:
        raise Reached(overrides)

    monkeypatch.setattr("agentarch.cli.common.load_settings", reached)
    required = []
    for other in command.params:
        if other.required and other is not param:
            required += ["1"] if other.param_type_name == "argument" else [other.opts[0], "1"]
    words, expected = value_for(param.name)
    result = CliRunner().invoke(cli.app, [*path, *required, param.opts[0], *words])
    assert isinstance(result.exception, Reached), result.output
    assert result.exception.overrides.get(param.name) == expected, result.exception.overrides


def test_field_doc_reads_the_field():
    batch = field_doc("batch")
    assert (batch.default, batch.bounds, batch.choices) == ("4", "1<=x<=256", ())
    assert field_doc("epochs").default == "the task's"  # None, said as what it means
    assert (field_doc("download").default, field_doc("timeout_s").default) == ("off", "900")
    assert field_doc("timeout_s").bounds == "x>0" and field_doc("examples").bounds == "0<=x<=6"
    assert field_doc("isolation").choices == ("auto", "bubblewrap", "process")
    assert field_doc("archive").default == "archive/archive.db"


def test_every_field_has_a_description_and_says_what_none_means():
    for name, field in FIELDS.items():
        assert field.description, f"Settings.{name} has no description for --help and agentarch.toml"
        if field.default is None:
            assert "unset" in (field.json_schema_extra or {}), f"Settings.{name}: say what None means with unset()"
