"""What a run's page shows beyond its progress: its notebook, and how each of its models did.

The notebook's entries cite candidates as `#ID`; each cited id becomes a link to its candidate, and every other
character is escaped (the text is the LLM's). The per-model table is `agentarch.loop.bandit`'s own summary of the
run's history as the bandit rebuilds it from the archive, so the page and the bandit never disagree on what a
proposal gained or cost.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from markupsafe import Markup, escape

from agentarch.config import ModelArm
from agentarch.errors import UsageError
from agentarch.loop import bandit
from agentarch.store.archive import Archive
from agentarch.web.rendering import TEXT_SHOWN, clipped_note

_CITATION = re.compile(r"(?<![\w&])#([0-9]{1,19})\b")
"""`#ID`: ASCII digits, at most as many as an id SQLite can hold has. A model wrote the text: `\\d+` once handed int() a
note's `#` and 5,000 digits, which it refuses (past 4,300 digits), and the run's page was a 500."""


def linked(text: str, cites: Iterable[int]) -> Markup:
    """The text as HTML, each `#ID` it cites a link to that candidate (an id it does not cite stays text); past
    `TEXT_SHOWN` characters, cut with a note (a model wrote it, at whatever length)."""
    total = len(text)
    text = text[:TEXT_SHOWN]
    cited = set(cites)
    parts = []
    last = 0
    for found in _CITATION.finditer(text):
        candidate_id = int(found.group(1))
        if candidate_id not in cited:
            continue
        parts += [
            escape(text[last : found.start()]),
            Markup(f'<a href="/candidate/{candidate_id}">#{candidate_id}</a>'),
        ]
        last = found.end()
    parts.append(escape(text[last:]))
    if total > TEXT_SHOWN:
        parts.append(Markup(" ") + clipped_note(TEXT_SHOWN, total))
    return Markup("").join(parts)


def notebook(archive: Archive, run_id: str, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """The run's newest `limit` notebook entries (all for None), newest first, and how many it holds. Each entry has
    `after` (how many candidates the run had recorded when it was written), `written` and `html` (its text with the
    cited candidates linked)."""
    entries = archive.notes(run_id)
    shown = entries[::-1][:limit]
    return [
        {"after": e["after"], "written": e["created_at"], "html": linked(e["text"], e["cites"])} for e in shown
    ], len(entries)


def configured_arms(config: Mapping[str, Any]) -> list[ModelArm]:
    """The models a run was configured with, in order: its `models` list, else its one `model` (none for an offline
    run). A stored spec this version cannot read is kept by its text as the model's name."""
    specs = config.get("models") or ([config["model"]] if config.get("model") else [])
    arms: dict[str, ModelArm] = {}
    for spec in specs:
        try:
            arm = ModelArm.parse(str(spec))
        except UsageError:
            arm = ModelArm(str(spec).strip())
        arms.setdefault(arm.name, arm)
    return list(arms.values())


def models(archive: Archive, run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per model of an LLM run, what `bandit.summary` says of it: proposals, trained and the valid rate,
    improvements, USD spent, LLM seconds, the bandit's reward (improvement per USD) and whether it is still one of
    the run's models; the configured models first. Empty for a run with no model's proposal."""
    history = bandit.history_from_archive(archive, run["id"], run["task"])
    return bandit.summary(configured_arms(run.get("config") or {}), history) if history else []
