"""The persistent archive: every candidate, every evaluation, every run, in one SQLite file.

sqlite-utils does the schema work; every write is one transaction (`Database.atomic`), the file is
in WAL mode so readers (the CLI, Datasette, the web UI) never block the writer, and a schema
version in `meta` stops an older agentarch from misreading a newer file.

`Archive` is one class, composed of parts by job: the schema and its migrations (`agentarch.store.schema`), the
writes of runs and results (`records`), the pipeline's reads (`reads`, on the listing row of `scoring`), a run's
ledgers (`ledger`), reviews and screening decisions (`decisions`), what a run reads back on resume (`outcomes`),
the trained candidates' graphs kept beside the file (`graphs`) and the latest training checkpoint of each candidate
in flight (`resumes`). This module opens and closes the file; `handle`
holds what the parts share.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from agentarch.store.decisions import Decisions
from agentarch.store.graphs import Graphs
from agentarch.store.handle import ArchiveError
from agentarch.store.ledger import Ledger
from agentarch.store.outcomes import Outcomes
from agentarch.store.reads import Reads
from agentarch.store.records import Records
from agentarch.store.resumes import Resumes
from agentarch.store.schema import Schema


class Archive(Schema, Records, Reads, Ledger, Decisions, Outcomes, Graphs, Resumes):
    """A handle on one archive file. Cheap to open; one per process or thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        try:
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.enable_wal()
        except sqlite3.DatabaseError as err:
            raise ArchiveError(
                f"{self.path} is not an agentarch archive (SQLite says: {err}); pass another --archive path"
            ) from err
        self._migrate()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
