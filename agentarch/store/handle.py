"""What every part of the store works through: the open file and its write transaction, the archive's error, and
the few SQL helpers they all share.

`Archive` (agentarch.store.archive) is composed of parts, one per job (schema, records, reads, ledger, decisions,
outcomes), and the read queries of the web, the report and the CLI sit beside them. Each part needs the same
handful of things: the connection (`db`) and the file's `path`, one write transaction at a time (`_writing`), the
error to raise, a timestamp, and how rows are filtered and decoded. They live here, apart from the class that
composes the parts, so that a part can import them without importing `Archive`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentarch.errors import AgentarchError

if TYPE_CHECKING:  # the Archive that opens the file imports sqlite_utils; the parts' shared base stays light
    import sqlite_utils


class ArchiveError(AgentarchError, RuntimeError):
    """The archive cannot be used as asked; the message says what to do."""


TEXT_CAPS: dict[str, int] = {
    "name": 200,
    "intent": 4_000,
    "reason": 4_000,
    "error": 4_000,
    "analysis": 16_000,
    "text": 8_000,
    "code": 256_000,
    "response": 256_000,
}
"""The most characters the archive keeps of each text column that a model, a candidate or a task file wrote, by
column name across tables. The static check already refuses code over 64 KiB and the LLM client answers over its
byte cap, so these are the last line: whatever reaches a write is bounded, and one hostile string cannot grow the
archive (and every page that shows it) without limit. A prompt (JSON: a list of messages) has each message's
content cut to `PROMPT_MESSAGE_CAP`."""

PROMPT_MESSAGE_CAP = 128_000


def capped(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with each capped text column cut to its `TEXT_CAPS` limit, ending in a note that says how much was cut
    (so a reader knows the stored text is not whole)."""
    out = dict(row)
    for column, limit in TEXT_CAPS.items():
        out[column] = _cut(out.get(column), limit)
    if isinstance(out.get("prompt"), list):
        out["prompt"] = [
            {**m, "content": _cut(m.get("content"), PROMPT_MESSAGE_CAP)} if isinstance(m, dict) else m
            for m in out["prompt"]
        ]
    return {k: v for k, v in out.items() if k in row}


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"\n[cut: {len(value) - limit:,} more characters; the archive keeps {limit:,}]"
    return value


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Handle:
    """The handle on one archive file that each part of `Archive` extends: `Archive` opens the file and sets
    `path` and `db`; a part reads through `db` and writes in `_writing`."""

    path: Path
    db: sqlite_utils.Database

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction that takes SQLite's write lock at its start (BEGIN IMMEDIATE).

        A deferred transaction that reads first and writes later cannot wait for a concurrent
        writer in WAL mode (SQLite answers "database is locked" at once); taking the lock up front
        lets the busy timeout queue writers from several threads and processes instead.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.conn.rollback()
            raise
        self.db.conn.commit()


_JSON_FIELDS = (
    "parents",
    "hparams",
    "recipe",
    "curve",
    "timings",
    "config",
    "summary",
    "examples",
    "prompt",
    "structure",
    "proxies",
    "prompt_left_out",
    "knowledge",
)


def _where(conditions: dict[str, Any]) -> tuple[str | None, list[Any]]:
    """`column = ?` for each condition that is not None, joined with AND (None when there is none)."""
    given = {column: value for column, value in conditions.items() if value is not None}
    return " AND ".join(f"{column} = ?" for column in given) or None, list(given.values())


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {k: json.loads(v) if k in _JSON_FIELDS and isinstance(v, str) else v for k, v in row.items()}


_IDS = "SELECT value FROM json_each(?)"  # `IN (_IDS)` with json.dumps(ids) as its one argument


def _all(limit: int | None) -> int:
    """SQLite's LIMIT for `limit` (-1: no limit)."""
    return -1 if limit is None else limit


def _count(archive: Handle, sql: str, args: Sequence[Any] = ()) -> int:
    return int(archive.db.execute(sql, args).fetchone()[0])
