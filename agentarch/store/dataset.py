"""The archive as supervised fine-tuning data (issue 28, `agentarch dataset`): the prompt each LLM proposal saw and the
answer it gave, one chat per line, for the candidates that trained and improved on their parent.

NNGPT/LEMUR close the loop the other way round from prompting: the validated networks of the archive become training
data for the generator. The format is the chat JSONL the major trainers read (TRL's SFTTrainer, Axolotl, OpenAI's
fine-tuning, LLaMA-Factory's sharegpt-openai style): one `{"messages": [{"role": "system", ...}, {"role": "user", ...},
{"role": "assistant", ...}]}` per line and nothing else on it, the assistant turn being the answer the archive kept.

A dataset leaves the machine, so what it holds is scrubbed first: anything that looks like a credential (provider key
prefixes, bearer tokens, `api_key = ...` assignments, JWTs, and the values of this process's own secret-named
environment variables) becomes `[REDACTED]`, and local paths (the archive's folder, the user's home, any
/home/NAME or /Users/NAME) become `<archive>`, `~` and `~`. Its own module because it is one read of the archive with
its own rule of what is worth learning from; the CLI (agentarch/cli/dataset.py) only parses flags and prints.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from agentarch.store.handle import Handle
from agentarch.store.ranking import Direction
from agentarch.store.ranking import key as score_key
from agentarch.store.scoring import SCORING_EVALUATION

REDACTED = "[REDACTED]"
ROLES = ("system", "user", "assistant")

_SECRETS = [
    re.compile(p)
    for p in (
        r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}",  # OpenAI, Anthropic
        r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}",  # GitHub
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
        r"\bhf_[A-Za-z0-9]{30,}",  # Hugging Face
        r"\bAIza[0-9A-Za-z_-]{35}",  # Google
        r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",  # JWTs
        r"(?i)\bBearer\s+[A-Za-z0-9._~+/=-]{12,}",
    )
]
_ASSIGNED = re.compile(
    r"(?i)(\b[\w-]*(?:api[_-]?key|secret|token|passw(?:or)?d)[\w-]*[\"']?\s*[:=]\s*[\"']?)([^\s\"',;]{8,})"
)
"""`API_KEY = "..."`, `"token": "..."`, `password: ...`: the value goes, the name stays (it says what was there)."""
_SECRET_NAME = re.compile(r"(?i)(key|token|secret|passw)")
_HOMES = re.compile(r"(?<![\w.-])(?:/home|/Users)/[^/\s\"'`]+")
"""Anybody's home folder by its usual place (Linux, macOS); the user running the export's own is `Path.home()`."""


@dataclass
class Written:
    """What `write` did: the examples written and how many trained LLM proposals the filters left out."""

    path: Path
    examples: int
    left_out: int


class Scrubber:
    """Takes credentials and local paths out of text bound for a dataset (see the module's docstring)."""

    def __init__(self, archive_path: Path | None = None) -> None:
        self.literals: list[tuple[str, str]] = []
        for name, value in os.environ.items():  # this machine's own secrets, whatever they look like
            if _SECRET_NAME.search(name) and len(value) >= 8:
                self.literals.append((value, REDACTED))
        if archive_path is not None:
            self.literals.append((str(Path(archive_path).resolve().parent), "<archive>"))
        home = str(Path.home())
        if home not in ("/", ""):
            self.literals.append((home, "~"))
        self.literals.sort(key=lambda pair: -len(pair[0]))  # the longest first: a folder inside home before home

    def __call__(self, text: str) -> str:
        for literal, placeholder in self.literals:
            text = text.replace(literal, placeholder)
        for pattern in _SECRETS:
            text = pattern.sub(REDACTED, text)
        text = _ASSIGNED.sub(lambda m: m.group(1) + REDACTED, text)
        return _HOMES.sub("~", text)


def examples(
    archive: Handle,
    task: str | None = None,
    min_score: float | None = None,
    since: date | datetime | None = None,
    improved: bool = True,
) -> Iterator[tuple[dict[str, Any], bool]]:
    """Each trained LLM proposal with its prompt and answer, oldest first, as (chat, kept): `chat` the scrubbed
    `{"messages": [...]}` line, `kept` whether the filters take it: its task (`task`), a validation score at least as
    good as `min_score` in the task's direction, created on or after `since`, and (`improved`) a score better than its
    first parent's (a candidate without a scored parent improved on nothing, and is kept only without `improved`)."""
    parent = "json_extract(o.parents, '$[0]')"
    scored = SCORING_EVALUATION.format(column="val_accuracy")
    where, args = ["o.status = 'trained'", "o.prompt IS NOT NULL", "o.response IS NOT NULL"], []
    if task is not None:
        where.append("o.task = ?")
        args.append(task)
    if since is not None:
        where.append("o.created_at >= ?")
        args.append(since.isoformat())
    rows = archive.db.execute(
        f"""SELECT o.prompt, o.response, COALESCE(t.direction, 'max'),
            (SELECT {scored} FROM candidates c WHERE c.id = o.id),
            (SELECT {scored} FROM candidates c WHERE c.id = {parent})
        FROM candidates o LEFT JOIN tasks t ON t.name = o.task
        WHERE {" AND ".join(where)} ORDER BY o.id""",
        args,
    )
    scrub = Scrubber(getattr(archive, "path", None))
    for prompt, response, direction, val, parent_val in rows:
        chat = _chat(prompt, response, scrub)
        if chat is None or val is None:
            continue
        kept = _better_or_equal(val, min_score, direction) if min_score is not None else True
        if improved:
            kept = kept and parent_val is not None and score_key(val, direction) > score_key(parent_val, direction)
        yield chat, kept


def write(
    archive: Handle,
    out: Path,
    task: str | None = None,
    min_score: float | None = None,
    since: date | datetime | None = None,
    improved: bool = True,
) -> Written:
    """Write `examples` that the filters keep to `out` as JSONL (whole or not at all: a temporary file renamed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    written = left_out = 0
    with partial.open("w", encoding="utf-8") as stream:
        for chat, kept in examples(archive, task, min_score, since, improved):
            if kept:
                stream.write(json.dumps(chat, ensure_ascii=False) + "\n")
                written += 1
            else:
                left_out += 1
    partial.replace(out)
    return Written(out, written, left_out)


def _chat(prompt: str, response: str, scrub: Scrubber) -> dict[str, Any] | None:
    """The chat of one proposal: the messages it was sent (role and content only) and its answer as the assistant's
    turn, scrubbed; None for a prompt that is not a list of chat messages ending with the user's turn."""
    try:
        messages = json.loads(prompt)
    except ValueError:
        return None
    if not isinstance(messages, list) or not messages:
        return None
    turns = []
    for message in messages:
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            return None
        turns.append({"role": message["role"], "content": scrub(message["content"])})
    if turns[-1]["role"] != "user" or not response.strip():
        return None
    return {"messages": [*turns, {"role": "assistant", "content": scrub(response)}]}


def _better_or_equal(value: float, bound: float, direction: Direction) -> bool:
    return score_key(value, direction) >= score_key(bound, direction)
