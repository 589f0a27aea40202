"""The judge (issue 28, `--judge MODEL`): a model rates a trained candidate against a rubric, beside its measured scores.

ASI-Arch scores candidates by a composite in which an LLM judge's view of novelty, soundness and complexity stands
beside the numbers. Here the rating is kept apart (agentarch/store/judgments.py) and never replaces a measured score:
a run may rank by it (`--objective judge:max`) and parent selection breaks ties in the score with it.

The judge is shown the candidate's code and scores, its parent and a few of the archive's candidates, every one of them
quoted as data (prompts/judge.j2, agentarch.llm.quoting), and asked for one JSON object. Its answer is hostile text
like any model's: it is read by `read_answer` against a strict schema (exactly the four keys, each rating an integer
1-10, a string justification), size-capped, with anything else refused with the reason. A refused answer, like a
failed call, becomes a `failed` judgment with that reason: the candidate and the run go on as if no judge were asked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from agentarch.llm.prompts import Messages, render
from agentarch.llm.quoting import _INVISIBLE, quoted
from agentarch.tasks.task import Task

RUBRIC = ("novelty", "soundness", "complexity")
"""The ratings asked for, each an integer from LOW to HIGH: novelty against the parent and the archive, soundness of
the design, complexity (how much machinery it adds: higher is more complex, which the judge's score counts against)."""
LOW, HIGH = 1, 10
MAX_JUSTIFICATION_CHARS = 1000
"""The most characters of the justification kept: a longer one is cut, with a note that says so."""
MAX_ANSWER_BYTES = 16_000
"""The judge's answer cap (the client's `max_answer_bytes` for its calls, at most the run's): a rating is a few
hundred bytes, so anything near this is not one."""
MAX_ANSWER_TOKENS = 600
"""The judge's answer budget (its calls' `max_tokens`, at most the run's)."""
NEIGHBOURS = 3
"""How many of the archive's candidates the judge is shown besides the parent, for novelty against the archive."""
MAX_CODE_CHARS = 12_000
"""How much of the candidate's code the judge is shown (the parent's and the neighbours' less: `_view`)."""

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{name: {"type": "integer", "minimum": LOW, "maximum": HIGH} for name in RUBRIC},
        "justification": {"type": "string", "maxLength": MAX_JUSTIFICATION_CHARS},
    },
    "required": [*RUBRIC, "justification"],
    "additionalProperties": False,
}
"""The one answer accepted, as a JSON schema: the prompt shows it, `read_answer` enforces it."""

_FENCED = re.compile(r"\A```(?:json)?\s*\n(.*?)\n?```\Z", re.S)


class JudgeError(ValueError):
    """The judge's answer is not a rating: the message says what was wrong, and is kept as the failed judgment's
    reason."""


def judge_messages(
    task: Task,
    candidate: dict[str, Any],
    parent: dict[str, Any] | None,
    neighbours: list[dict[str, Any]],
    prompts_dir: Path | str | None = None,
) -> Messages:
    """System and user messages asking the judge to rate `candidate` (a row with its code and measures) against its
    `parent` and the archive's `neighbours` (rows with code), all quoted as data."""
    context = {
        "task": task,
        "candidate": _view(candidate, MAX_CODE_CHARS),
        "parent": None if parent is None else _view(parent, MAX_CODE_CHARS // 2),
        "neighbours": [_view(row, MAX_CODE_CHARS // 4) for row in neighbours[:NEIGHBOURS]],
        "rubric": RUBRIC,
        "low": LOW,
        "high": HIGH,
        "schema": json.dumps(ANSWER_SCHEMA, indent=1),
        "most_words": MAX_JUSTIFICATION_CHARS // 8,
    }
    return [
        {"role": "system", "content": render("judge.j2", prompts_dir, part="system", **context)},
        {"role": "user", "content": render("judge.j2", prompts_dir, part="user", **context)},
    ]


def _view(row: dict[str, Any], code_chars: int) -> dict[str, Any]:
    """What the prompt shows of a row: its id, measures and code (quoted, cut to `code_chars`)."""
    shown = {k: row.get(k) for k in ("id", "val_accuracy", "params", "flops", "train_seconds")}
    shown["code"] = quoted(row.get("code") or "", limit=code_chars)
    return shown


def read_answer(text: str) -> dict[str, Any]:
    """The rating in the judge's answer: {novelty, soundness, complexity, justification, score}, or JudgeError.

    Strict: one JSON object (a ```json fence around it is allowed), exactly the schema's keys, each rating an
    integer LOW..HIGH (a float, a bool, a string or anything out of range is refused, not clamped: a judge that answers
    1e9 did not follow the rubric, and its other numbers are no better), the justification a string, kept printable and
    at most MAX_JUSTIFICATION_CHARS."""
    if len(text.encode("utf-8", "replace")) > MAX_ANSWER_BYTES:
        raise JudgeError(f"the answer is over {MAX_ANSWER_BYTES:,} bytes; a rating is one small JSON object")
    body = text.strip()
    fenced = _FENCED.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        answer = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as err:
        raise JudgeError(f"the answer is not one JSON object ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(answer, dict):
        raise JudgeError(f"the answer is JSON but a {type(answer).__name__}, not an object with {', '.join(RUBRIC)}")
    wanted = {*RUBRIC, "justification"}
    missing, extra = wanted - answer.keys(), answer.keys() - wanted
    if missing or extra:
        said = [
            f"missing {', '.join(sorted(missing))}" if missing else "",
            f"{len(extra)} unknown keys" if extra else "",
        ]
        raise JudgeError(f"the answer's keys are not the rubric's: {'; '.join(s for s in said if s)}")
    rating: dict[str, Any] = {}
    for name in RUBRIC:
        value = answer[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise JudgeError(f"{name} is a {type(value).__name__}, not an integer from {LOW} to {HIGH}")
        if not LOW <= value <= HIGH:
            raise JudgeError(f"{name} is {_short(value)}, outside {LOW} to {HIGH}")
        rating[name] = value
    justification = answer["justification"]
    if not isinstance(justification, str) or not justification.strip():
        raise JudgeError("the justification is not a non-empty string")
    rating["justification"] = _printable(justification)
    rating["score"] = score(rating["novelty"], rating["soundness"], rating["complexity"])
    return rating


def score(novelty: int, soundness: int, complexity: int) -> float:
    """The judge's one number, LOW..HIGH with higher better: the mean of novelty, soundness and simplicity (HIGH + LOW
    - complexity), so a design is rated up for being new and sound and down for machinery it adds."""
    return round((novelty + soundness + (HIGH + LOW - complexity)) / 3, 2)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a rating can be")


def _short(value: int) -> str:
    digits = str(value)
    return digits if len(digits) <= 12 else f"a {len(digits)}-digit number"


def _printable(text: str) -> str:
    """The justification kept as plain text: control and invisible characters dropped, at most
    MAX_JUSTIFICATION_CHARS (a longer one is cut with a note). Markup in it stays text: each reader escapes it."""
    text = _INVISIBLE.sub("", text).strip()
    if len(text) > MAX_JUSTIFICATION_CHARS:
        text = f"{text[:MAX_JUSTIFICATION_CHARS]} [cut: {len(text) - MAX_JUSTIFICATION_CHARS:,} more characters]"
    return text
