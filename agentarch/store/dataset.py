"""The archive as supervised fine-tuning data (issue 28, `agentarch dataset`): the prompt each LLM proposal saw and the
answer it gave, one chat per line, for the candidates that trained and improved on their parent.

NNGPT/LEMUR close the loop the other way round from prompting: the validated networks of the archive become training
data for the generator. The format is the chat JSONL the major trainers read (TRL's SFTTrainer, Axolotl, OpenAI's
fine-tuning, LLaMA-Factory's sharegpt-openai style): one `{"messages": [{"role": "system", ...}, {"role": "user", ...},
{"role": "assistant", ...}]}` per line and nothing else on it, the assistant turn being the answer the archive kept.

A dataset leaves the machine, so what it holds is scrubbed first: anything that looks like a credential (provider key
prefixes, bearer tokens, `api_key = ...` assignments, JWTs, and the values of this process's own secret-named
environment variables) becomes `[REDACTED]`, and local paths (the archive's folder, the cache folder, the user's home,
any /home/NAME, /Users/NAME or C:\\Users\\NAME, /tmp and macOS's /var/folders) become `<archive>`, `<cache>`, `~` and
`<tmp>`. Every pattern is linear in the text: a hostile answer of repeated near-matches cannot stall an export. Its
own module because it is one read of the archive with its own rule of what is worth learning from; the CLI
(agentarch/cli/dataset.py) only parses flags and prints.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from agentarch.errors import UsageError
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
        r"\b(?:gsk|r8|glpat|xai|pplx|fw|npm|pypi|sk_live|sk_test|rk_live|rk_test)[_-][A-Za-z0-9_-]{16,}",  # more providers
        r"\bAGE-SECRET-KEY-1[0-9A-Z]{50,}",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",  # PEM, to its end
        r"(?<=://)[^\s/:@\"'`]{1,256}:[^\s/@\"'`]{1,256}(?=@)",  # https://user:password@host
    )
]
_ASSIGNED = re.compile(
    r"(?i)((?:api[_-]?key|secret|token|passw(?:or)?d|credential)[\w-]{0,64}[\"']?\s{0,16}[:=]\s{0,16}[\"']?)"
    r"([^\s\"',;]{8,})"
)
"""`API_KEY = "..."`, `"token": "..."`, `password: ...`: the value goes, the name stays (it says what was there). From the
secret's word on (the name's start stays outside the match, unchanged) and with bounded runs, so a hostile answer
("a-a-a-...", "token-token-...") costs linear time, not quadratic."""
_AUTHORIZATION = re.compile(
    r"(?i)(\b(?:proxy-)?authorization[\"']?\s{0,16}[:=]\s{0,16}[\"']?(?:(?:basic|bearer|token|digest|apikey|key)\s{1,4})?)"
    r"([A-Za-z0-9._~+/=:-]{8,})"
)
"""An HTTP `Authorization:` header (Basic, Token, Digest, ...), as a header or a dict's key: the scheme stays."""
_SECRET_NAME = re.compile(r"(?i)(key|token|secret|passw|_pwd$|credential|auth|cookie|session|private|dsn|_url$)")
"""An environment variable whose value is a secret by its name (DATABASE_URL and SENTRY_DSN carry passwords too; PWD,
the working folder, is not one)."""
_HOMES = re.compile(r"(?<![\w.-])(?:/home|/Users)/[^/\s\"'`]+")
"""Anybody's home folder by its usual place (Linux, macOS); the user running the export's own is `Path.home()`."""
_WINDOWS_HOMES = re.compile(r"(?i)\b[A-Z]:[\\/]+(?:Users|Documents and Settings)[\\/]+[^\\/\s\"'`]+")
"""A Windows home folder, C:\\Users\\NAME, written with either slash."""
_TEMPORARY = re.compile(r"(?<![\w.-])(?:/private)?/var/folders/[^/\s]+/[^/\s]+/[A-Z]\b|(?<![\w.-])/tmp/[^\s\"'`:)]+")
"""A temporary folder's paths (macOS's per-user /var/folders, /tmp): they name the machine's users and runs."""
_SQLITE_MAGIC = b"SQLite format 3\x00"


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
        folders: list[tuple[str, str]] = []
        if archive_path is not None:
            given = Path(archive_path).absolute().parent
            folders += [(str(given), "<archive>"), (str(given.resolve()), "<archive>")]
        for variable in ("AGENTARCH_CACHE_DIR", "XDG_CACHE_HOME"):  # prepared data's folder, when not under home
            if os.environ.get(variable):
                folders.append((str(Path(os.environ[variable]).expanduser().absolute()), "<cache>"))
        folders.append((str(Path.home()), "~"))
        # a folder is replaced only as a whole path component: /data must not turn /database into <archive>base, and
        # the root folder (an archive at /a.db, a home of /) is no folder to hide
        self.folders = sorted(
            {(f.rstrip("/\\"), p) for f, p in folders if len(f.rstrip("/\\")) > 1}, key=lambda pair: -len(pair[0])
        )
        self._folder = (
            re.compile(
                "|".join(f"(?<![\\w.-]){re.escape(f)}(?![\\w.-])" for f, _ in self.folders)  # the longest first
            )
            if self.folders
            else None
        )
        self._placeholder = dict(self.folders)
        self.literals.sort(key=lambda pair: -len(pair[0]))  # the longest first

    def __call__(self, text: str) -> str:
        for literal, placeholder in self.literals:
            text = text.replace(literal, placeholder)
        for pattern in _SECRETS:
            text = pattern.sub(REDACTED, text)
        text = _ASSIGNED.sub(lambda m: m.group(1) + REDACTED, text)
        text = _AUTHORIZATION.sub(lambda m: m.group(1) + REDACTED, text)
        if self._folder is not None:
            text = self._folder.sub(lambda m: self._placeholder[m.group(0)], text)
        text = _TEMPORARY.sub("<tmp>", text)
        text = _WINDOWS_HOMES.sub("~", text)
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
    """Write `examples` that the filters keep to `out` as JSONL (whole or not at all: a temporary file of a fresh name,
    made beside it and renamed). UsageError, before anything is written, for an `out` that is a folder, the archive
    (or its journal), or any SQLite database: a dataset never replaces what a run recorded."""
    out = Path(out)
    _check_destination(out, getattr(archive, "path", None))
    out.parent.mkdir(parents=True, exist_ok=True)
    written = left_out = 0
    # a fresh name opened with O_EXCL: a link planted where the file is being written is never followed
    fd, partial = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            for chat, kept in examples(archive, task, min_score, since, improved):
                if kept:
                    stream.write(json.dumps(chat, ensure_ascii=False) + "\n")
                    written += 1
                else:
                    left_out += 1
        os.chmod(partial, 0o644)
        os.replace(partial, out)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return Written(out, written, left_out)


def _check_destination(out: Path, archive_path: Path | str | None) -> None:
    """Refuse an `out` the dataset must not replace, with what to give instead."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give the JSONL file to write, e.g. {out / 'dataset.jsonl'}")
    if archive_path is not None:
        archive = Path(archive_path).absolute()
        own = [archive, *(archive.with_name(archive.name + s) for s in ("-wal", "-shm", "-journal"))]
        target = out.absolute()
        if any(target == p or target.resolve() == p.resolve() or _same_file(target, p) for p in own):
            raise UsageError(f"--out {out} is the archive the dataset is read from; give a new .jsonl file")
    try:
        with out.open("rb") as existing:
            head = existing.read(len(_SQLITE_MAGIC))
    except OSError:  # not there (or unreadable: the write says so)
        return
    if head == _SQLITE_MAGIC:
        raise UsageError(f"--out {out} is an SQLite database (an archive?), which a dataset never replaces; give a new "
                         ".jsonl file")  # fmt: skip


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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
