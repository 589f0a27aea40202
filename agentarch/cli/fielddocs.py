"""Each setting as a person reads it in `--help` and in agentarch.toml: its description, default, bounds and choices,
all read off the Settings field (agentarch/config.py), so the help never says something the validation does not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt

from agentarch.config import Settings


@dataclass(frozen=True)
class FieldDoc:
    """One setting as a person reads it: in `--help` of every command that takes it, and as a TOML key."""

    name: str
    description: str
    default: str
    bounds: str | None  # "1<=x<=256", "x>0": the constraints the value is validated against
    choices: tuple[str, ...]  # the allowed values of a field that is a fixed choice, else empty


def field_doc(name: str) -> FieldDoc:
    """The description, shown default, bounds and choices of the Settings field `name`, all read off the field."""
    field = Settings.model_fields[name]
    assert field.description is not None, f"Settings.{name} needs a description: --help shows it"
    default = field.get_default(call_default_factory=True)
    return FieldDoc(
        name,
        field.description,
        _shown(default, field.json_schema_extra),
        _bounds(field.metadata),
        _choices(field.annotation),
    )


def _shown(default: Any, extra: Any) -> str:
    """The default as a person reads it: None as what it means, a flag as off or on, 900.0 as 900."""
    if default is None or default == []:
        return extra["unset"] if isinstance(extra, dict) and "unset" in extra else "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def _bounds(metadata: list[Any]) -> str | None:
    """The field's constraints in click's notation for a range: x>=1, x>0, 1<=x<=256."""
    low = next(((m.ge, "<=") for m in metadata if isinstance(m, Ge)), None) or next(
        ((m.gt, "<") for m in metadata if isinstance(m, Gt)), None
    )
    high = next(((m.le, "<=") for m in metadata if isinstance(m, Le)), None) or next(
        ((m.lt, "<") for m in metadata if isinstance(m, Lt)), None
    )
    if high is None:
        return None if low is None else f"x{low[1].replace('<', '>')}{low[0]}"
    return f"{'' if low is None else f'{low[0]}{low[1]}'}x{high[1]}{high[0]}"


def _choices(annotation: Any) -> tuple[str, ...]:
    """The values of a Literal field, so the help lists what the validation accepts."""
    return tuple(str(a) for a in get_args(annotation)) if get_origin(annotation) is Literal else ()
