"""The LLM's side of the loop in text: chat messages rendered from prompts/*.j2, fitted to the model's window.

The wording lives in Jinja2 templates (prompts/system.j2, propose.j2, repair.j2, analyze.j2 and
one card per task in prompts/tasks/) so that a user can tune it without touching code: pass
another `prompts_dir` holding a copy of the folder. The contract's limits (allowed imports,
HPARAMS bounds) are handed to the templates from agentarch.evaluation.checks rather than written into them,
so the prompt never promises something the static check refuses.

Code is read back out of an answer by agentarch.llm.extraction (`extract_code`, `intent_of`, `ExtractError`, named
here too, where callers have always found them).

What the run gathered from models (candidates' code, analyses, notebook notes, failure reasons) comes back
in later prompts, so a jailbroken or injected answer could steer every call after it. The templates put all
of it between `<quoted-data from="...">` and `</quoted-data>`, through the `quoted` filter (size-capped, with
delimiter look-alikes defused), and the system prompt says that text there is data, never instructions; the
task and the answer format stand outside, the same whatever the data says.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

import agentarch.prompt_templates
from agentarch import formats
from agentarch.errors import AgentarchError, UsageError
from agentarch.evaluation.checks import (
    ALLOWED_IMPORT_ROOTS,
    FORBIDDEN_CALLS,
    HPARAM_BOUNDS,
    INTEGER_HPARAMS,
    declared_recipe,
)
from agentarch.llm import window as windows
from agentarch.llm.extraction import ExtractError as ExtractError
from agentarch.llm.extraction import extract_code as extract_code
from agentarch.llm.extraction import intent_of as intent_of
from agentarch.llm.faults import ContextOverflow
from agentarch.llm.fewshot import FewShot, limits_shown
from agentarch.llm.quoting import quoted
from agentarch.search.objectives import Goals
from agentarch.tasks import recipes
from agentarch.tasks.task import METRICS, Task

PROMPTS_DIR = Path(agentarch.prompt_templates.__file__).resolve().parent
"""The shipped templates: prompts/ in a checkout, agentarch/prompt_templates/ in a wheel."""
MAX_ERROR_CHARS = 3000
"""How much of an error the repair prompt shows: the tail, where a traceback names the failing line."""
Messages = list[dict[str, str]]


class PromptError(AgentarchError, FileNotFoundError):
    """A prompt template is missing; the message names the file."""


# -- rendering --------------------------------------------------------------------------------------


def render(name: str, prompts_dir: Path | str | None = None, **context: Any) -> str:
    """Render the template `name` from `prompts_dir` (default: the project's prompts/ folder)."""
    folder = Path(prompts_dir) if prompts_dir is not None else PROMPTS_DIR
    try:
        return _environment(folder.resolve()).get_template(name).render(**context)
    except jinja2.TemplateNotFound as err:
        raise PromptError(
            f"prompt template {folder / (err.name or name)} is missing; copy it from {PROMPTS_DIR} "
            "or pass the folder that holds it"
        ) from None


@functools.cache
def _environment(folder: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug in the caller, never an empty string
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # the output is Markdown and Python for a model, not HTML
    )
    env.filters.update(
        quoted=quoted,
        count=functools.partial(formats.count, missing="unknown"),
        pct=functools.partial(formats.percent, missing="n/a"),
        seconds=functools.partial(formats.seconds, missing="n/a"),
    )
    env.globals["METRICS"] = METRICS  # what a task's metric means (direction, regression) in every template
    return env


def _system(task: Task, purpose: str, prompts_dir: Path | str | None, compact: bool = False) -> dict[str, str]:
    allowed = ["torch (and its submodules)", *sorted(ALLOWED_IMPORT_ROOTS - {"torch", "__future__"})]
    content = render(
        "system.j2",
        prompts_dir,
        task=task,
        purpose=purpose,
        allowed_imports=allowed,
        forbidden_calls=sorted(FORBIDDEN_CALLS),
        hparam_bounds=HPARAM_BOUNDS,
        integer_hparams=INTEGER_HPARAMS,
        recipe=task.recipe_bounds(),
        default_recipe=recipes.describe(task.default_recipe()),
        compact=compact,
    )
    return {"role": "system", "content": content}


def _require_trainable(task: Task) -> None:
    if task.kind == "tabular":
        raise UsageError(
            f"task {task.name} is {task.kind}: it is answered from a table, so there is no code to "
            "propose for it; use a task that trains candidates (image, token, sequence, table or lm)"
        )


def propose_messages(
    task: Task,
    fewshot: FewShot,
    batch_note: str = "",
    prompts_dir: Path | str | None = None,
    goals: Goals | None = None,
    notebook: dict[str, Any] | None = None,
    knowledge: list[dict[str, Any]] | None = None,
) -> Messages:
    """System and user messages asking for a new candidate, built on the few-shot examples (and the run's
    notebook entry, `notebook`, when it has one, and the knowledge base's entries, `knowledge`: source, title, text).

    `batch_note` is appended to the user prompt, e.g. to steer proposals drawn from the same
    examples in one batch apart from each other. With several objectives (`goals.multi`) the prompt names
    them and the constraints, shows each example's measures and Pareto standing, and asks for a better
    trade-off than the parent's instead of a higher score.
    """
    return _asking("propose", task, fewshot, batch_note, goals, notebook, prompts_dir, knowledge=knowledge)


def edit_messages(
    task: Task,
    fewshot: FewShot,
    batch_note: str = "",
    goals: Goals | None = None,
    notebook: dict[str, Any] | None = None,
    prompts_dir: Path | str | None = None,
    knowledge: list[dict[str, Any]] | None = None,
) -> Messages:
    """System and user messages asking for SEARCH/REPLACE edits of the parent (agentarch.llm.edits applies them), with
    the other examples in brief; `fewshot` must have a parent (without one the loop asks for a full module)."""
    return _asking("edit", task, fewshot, batch_note, goals, notebook, prompts_dir, knowledge=knowledge)


def _asking(
    purpose: str,
    task: Task,
    fewshot: FewShot,
    batch_note: str,
    goals: Goals | None,
    notebook: dict[str, Any] | None,
    prompts_dir: Path | str | None,
    compact: bool = False,
    knowledge: list[dict[str, Any]] | None = None,
) -> Messages:
    """The system prompt for `purpose` and the user prompt of its template (`propose.j2`, `edit.j2`), which take the
    same context: the examples (parent first), the note, the goals beyond one metric, the notebook entry and the
    knowledge base's entries."""
    _require_trainable(task)
    user = render(
        f"{purpose}.j2",
        prompts_dir,
        task=task,
        examples=fewshot.examples,
        parent=fewshot.parent,
        batch_note=batch_note,
        goals=goals if goals is not None and goals.multi else None,
        limits=limits_shown(task, goals, fewshot.parent),
        notebook=notebook,
        knowledge=knowledge or [],
        recipe_of=functools.partial(recipe_of, task),
    )
    return [_system(task, purpose, prompts_dir, compact), {"role": "user", "content": user}]


def recipe_of(task: Task, code: str | None) -> str:
    """How an example's code is trained, in one line: its RECIPE over the task's defaults (what the prompt shows beside
    each example, so a model sees which recipes went with which scores); empty for the task's default recipe, which
    the system prompt states once (a small model's window has no room to repeat it per example)."""
    try:
        declared = declared_recipe(code or "", task.recipe_bounds(), task.kind)
    except SyntaxError:
        declared = {}
    return recipes.describe({**task.default_recipe(), **declared}) if declared else ""


@dataclass
class LeftOut:
    """What a prompt did not show to fit the model's context window: the other task kinds' contract and the HPARAMS
    and RECIPE bounds (`compact`),
    the knowledge entries dropped ("source: title", the least relevant first), the notebook entry (its `after`), the
    examples dropped (ids, the last first), the lines of code cut from the examples still shown (by id), and the
    answer budget when it had to be lowered below the window's share."""

    compact: bool = False
    knowledge: list[str] = field(default_factory=list)
    notebook: int | None = None
    examples: list[int] = field(default_factory=list)
    lines_cut: dict[int, int] = field(default_factory=dict)
    answer_tokens: int | None = None

    def __bool__(self) -> bool:
        return bool(
            self.compact
            or self.knowledge
            or self.notebook is not None
            or self.examples
            or self.lines_cut
            or self.answer_tokens
        )

    def as_record(self, window: Any = None, prompt_tokens: int | None = None) -> dict[str, Any] | None:
        """The JSON a candidate records (None when nothing was left out), with the window it was fitted to."""
        if not self:
            return None
        record: dict[str, Any] = {
            "compact_contract": self.compact,
            "notebook_after": self.notebook,
            "examples": self.examples,
            "lines_cut": {str(k): v for k, v in self.lines_cut.items()},
        }
        if self.knowledge:
            record["knowledge"] = self.knowledge
        if window is not None:
            record.update(window.describe(), prompt_tokens=prompt_tokens)
        if self.answer_tokens is not None:
            record["answer_tokens"] = self.answer_tokens
            if window is not None and window.context_tokens is not None:
                record["prompt_limit"] = window.context_tokens - self.answer_tokens - windows.SAFETY_TOKENS
        return record


def describe_left_out(record: dict[str, Any] | None) -> str | None:
    """A recorded LeftOut (`as_record`'s JSON) in words, for a person reading a candidate; None if nothing was."""
    if not record:
        return None
    parts = []
    if record.get("compact_contract"):
        parts.append("the other task kinds' contract and the HPARAMS and RECIPE bounds")
    if record.get("knowledge"):
        parts.append(f"knowledge entries {'; '.join(record['knowledge'])}")
    if record.get("notebook_after") is not None:
        parts.append("the notebook entry")
    if record.get("examples"):
        parts.append(f"examples {', '.join(str(i) for i in record['examples'])}")
    cut = record.get("lines_cut") or {}
    if cut:
        parts.append("; ".join(f"{n} lines of example {i}" for i, n in cut.items()))
    if record.get("answer_tokens") is not None:
        parts.append(f"answer budget lowered to {record['answer_tokens']:,} tokens")
    window = record.get("context_tokens")
    fitted = f" to fit {window:,} tokens ({record.get('source')})" if window else ""
    return f"left out{fitted}: " + "; ".join(parts or ["nothing"])


@dataclass
class Fitted:
    """A prompt fitted to a window: the messages, what they leave out, their tokens as the window counts them
    (None when the window is unknown and nothing was fitted), and the knowledge entries they show."""

    messages: Messages
    left_out: LeftOut
    prompt_tokens: int | None
    knowledge: list[dict[str, Any]] = field(default_factory=list)

    def record(self, window: Any) -> dict[str, Any] | None:
        return self.left_out.as_record(window, self.prompt_tokens)


MIN_CODE_LINES = 16
"""An example's code is never shown shorter than this: its class line, its constructor's start, its forward."""


def fit_prompt(
    purpose: str,
    task: Task,
    fewshot: FewShot,
    window: Any,
    batch_note: str = "",
    goals: Goals | None = None,
    notebook: dict[str, Any] | None = None,
    prompts_dir: Path | str | None = None,
    knowledge: list[dict[str, Any]] | None = None,
) -> Fitted:
    """The `purpose` prompt ("propose" or "edit") fitted to `window` (an agentarch.llm.window.Window; None or an
    unknown window: the whole prompt). What is left out, in this order, until prompt and answer fit:

    1. the contract of the other task kinds (the system prompt keeps this task's kind) and the HPARAMS and RECIPE
       bounds (both stay optional, checked against them all the same);
    2. the knowledge entries (`knowledge`, the most relevant first), from the last: general notes before the run's own;
    3. the notebook entry;
    4. examples, from the last (the least telling: diverse elites, then the baseline's best, then the best), never
       the parent, and never the last example left;
    5. lines of code from the middle of the examples still shown, down to MIN_CODE_LINES each (the parent's last,
       and never in an edit prompt, whose SEARCH blocks must match the parent exactly);
    6. answer tokens: the answer's budget is lowered from the window's share towards MIN_ANSWER_TOKENS.

    Raises ContextOverflow when even that does not fit: the sizes say what to change."""
    left = LeftOut()
    parent = fewshot.parent
    examples = [dict(example) for example in fewshot.examples]
    compact = False
    entries = list(knowledge or [])

    def build() -> Messages:
        shot = FewShot(parent=parent, examples=examples, strategy=fewshot.strategy)
        return _asking(purpose, task, shot, batch_note, goals, notebook, prompts_dir, compact, entries)

    messages = build()
    if window is None or window.prompt_limit is None:
        return Fitted(messages, left, None, entries)
    if window.fits(messages):
        return Fitted(messages, left, window.count(messages), entries)
    left.compact = compact = True
    messages = build()
    while not window.fits(messages) and entries:
        dropped = entries.pop()
        left.knowledge.append(f"{dropped['source']}: {dropped['title']}")
        messages = build()
    if not window.fits(messages) and notebook is not None:
        left.notebook, notebook = notebook.get("after", 0), None
        messages = build()
    is_parent = lambda example: parent is not None and example["id"] == parent["id"]  # noqa: E731
    while not window.fits(messages) and len(examples) > 1:
        last = max(i for i, example in enumerate(examples) if not is_parent(example))
        left.examples.append(examples.pop(last)["id"])
        messages = build()
    shortenable = [e for e in examples if not is_parent(e)] + [
        e for e in examples if is_parent(e) and purpose != "edit"
    ]
    for example in shortenable:
        if window.fits(messages):
            break
        lines = (example.get("code") or "").splitlines()
        keep = _most(MIN_CODE_LINES, len(lines) - 1, lambda n: window.fits(_with_code(example, lines, n, build)))
        example["code"] = _code_cut(lines, keep if keep is not None else MIN_CODE_LINES)
        messages = build()
        if len(example["code"].splitlines()) < len(lines):
            left.lines_cut[example["id"]] = len(lines) - (keep if keep is not None else MIN_CODE_LINES)
    if not window.fits(messages):
        floor = min(windows.MIN_ANSWER_TOKENS, window.answer_tokens)
        answer = _most(floor, window.answer_tokens - 1, lambda n: window.fits(messages, n))
        if answer is None:
            raise ContextOverflow(
                f"the {purpose} prompt is about {window.count(messages):,} tokens with every example but one left "
                f"out and its code cut to {MIN_CODE_LINES} lines, too many for {window.context_tokens:,} tokens of "
                f"context ({window.source}) beside an answer of {floor:,}: start the server with a larger context"
            )
        left.answer_tokens = answer
    return Fitted(messages, left, window.count(messages), entries)


def _most(low: int, high: int, fits: Any) -> int | None:
    """The largest n in [low, high] for which fits(n) holds (fits grows false as n grows), by halving; None if none."""
    best = None
    while low <= high:
        middle = (low + high) // 2
        if fits(middle):
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best


def _with_code(example: dict[str, Any], lines: list[str], keep: int, build: Any) -> Messages:
    example["code"] = _code_cut(lines, keep)
    return build()


def _code_cut(lines: list[str], keep: int) -> str:
    """The code's first and last lines, `keep` in all, with a comment where the middle was."""
    if keep >= len(lines):
        return "\n".join(lines)
    head = (keep * 2) // 3
    tail = keep - head
    gone = len(lines) - keep
    indent = lines[head][: len(lines[head]) - len(lines[head].lstrip())] if head < len(lines) else ""
    marker = f"{indent}# [... {gone} lines not shown, to fit the model's context window ...]"
    return "\n".join([*lines[:head], marker, *lines[len(lines) - tail :]])


def edit_retry_message(
    task: Task, parent: dict[str, Any], reason: str, prompts_dir: Path | str | None = None
) -> dict[str, str]:
    """The next user turn after edits that did not apply: the reason and the parent again, asking once more."""
    return {"role": "user", "content": render("edit_retry.j2", prompts_dir, task=task, parent=parent, reason=reason)}


def repair_messages(task: Task, code: str, error: str, attempt: int, prompts_dir: Path | str | None = None) -> Messages:
    """System and user messages asking to fix `code`, which failed with `error` (trimmed to its tail). The system
    prompt is the compact one (this task's kind alone, the knobs' names without their bounds): a repair concerns this
    task and its error says which rule broke, and the client can shorten only the code to fit a small window."""
    _require_trainable(task)
    user = render("repair.j2", prompts_dir, task=task, code=code, error=_tail(error), attempt=attempt)
    return [_system(task, "repair", prompts_dir, compact=True), {"role": "user", "content": user}]


_ANALYSIS_FIELDS = (
    "id",
    "code",
    "status",
    "reason",
    "val_accuracy",
    "test_accuracy",
    "params",
    "flops",
    "train_seconds",
)


def analyze_messages(
    task: Task, candidate: dict[str, Any], parent: dict[str, Any] | None, prompts_dir: Path | str | None = None
) -> Messages:
    """System and user messages asking for a short analysis of an evaluated candidate against its parent.

    `candidate` and `parent` are archive rows with their code; fields a row lacks (an untrained
    candidate has no scores) are shown as unknown.
    """
    _require_trainable(task)

    def view(row: dict[str, Any]) -> dict[str, Any]:
        shown = {field: row.get(field) for field in _ANALYSIS_FIELDS}
        shown["reason"] = _tail(shown["reason"] or row.get("error") or "") or None
        return shown

    user = render(
        "analyze.j2", prompts_dir, task=task, candidate=view(candidate), parent=None if parent is None else view(parent)
    )
    return [_system(task, "analyze", prompts_dir), {"role": "user", "content": user}]


def notebook_messages(
    task: Task,
    candidates: list[dict[str, Any]],
    previous: dict[str, Any] | None,
    prompts_dir: Path | str | None = None,
) -> Messages:
    """System and user messages asking to condense the latest candidates' results and analyses (with the notebook's
    last entry, `previous`) into a new short entry that cites candidate ids."""
    _require_trainable(task)
    rows = [{field: row.get(field) for field in (*_ANALYSIS_FIELDS, "analysis")} for row in candidates]
    for row in rows:
        row["reason"] = _tail(row["reason"] or "") or None
    user = render("notebook.j2", prompts_dir, task=task, candidates=rows, previous=previous)
    return [_system(task, "notebook", prompts_dir), {"role": "user", "content": user}]


def cited(note: str, known: set[int]) -> list[int]:
    """The candidate ids a notebook entry cites as #ID, in order, only those it was shown (`known`)."""
    found: list[int] = []
    for match in re.finditer(r"#(\d+)", note):
        number = int(match.group(1))
        if number in known and number not in found:
            found.append(number)
    return found


def _tail(text: str) -> str:
    text = text.strip()
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return f"[... {len(text) - MAX_ERROR_CHARS} characters cut ...]\n{text[-MAX_ERROR_CHARS:]}"
