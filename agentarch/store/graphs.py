"""Each trained candidate's graph, kept beside the archive: content-addressed ONNX files, a retention policy with a
size cap, and the one way to read a kept graph back.

With graph scoring (docs/sandbox.md) a trained candidate comes back as its exported ONNX file. The evaluator keeps it
here (`Graphs.keep_graph`) and its evaluation row records the file's sha256 (`evaluations.graph_sha256`, schema 14).
The files lie in `<archive>.graphs/<sha256>.onnx`, beside the archive file as its checkpoints do: each written to a
temporary name in that folder, flushed to disk and renamed into place, so a reader never sees half a file, and a
graph two evaluations share is stored once. A reader (`Graphs.graph_bytes`) reads at most `MAX_GRAPH_BYTES` and
checks the content against its name: a file someone changed is refused, never handed on as the candidate's.

**Retention** (`GraphPolicy`). Graphs are the archive's largest part (4 bytes a parameter: the seed MLP on digits
is 0.34 MB, the seed ResNet 2.8 MB, a network near a task's parameter budget tens of MB), so the folder has a size
cap (`max_mb`, default `GRAPH_STORE_MB`). Kept always, whatever the cap:

- the top `keep_top` candidates of each task (default `GRAPH_KEEP_TOP`) among those whose scoring evaluation has a
  graph, ranked by validation score in the task's direction (`agentarch.store.ranking`, the same rule as every
  leaderboard), each with its scoring evaluation's graph (`agentarch.store.scoring`);
- every graph a person exported (`agentarch export` pins it: `graph_pins`);
- every graph of a candidate a person flagged (the web page's flag, `reviews.kind = 'flag'`).

What is dropped, and when: each time a graph is kept, if the folder then holds more than the cap, every other graph
is deleted at once (a graph no evaluation names yet is spared for `ORPHAN_GRACE_S`: it is one being recorded right
now). The graphs kept always may hold more than the cap by themselves; the cap never drops them. A dropped graph's
`graph_sha256` stays in its evaluation row, and every reader says "graph not kept (retention policy)" (`NOT_KEPT`).

The settings may carry `graph_keep_top` and `graph_store_mb` (`GraphPolicy.from_settings` reads them when they
are there); without them the defaults here hold.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentarch.store.handle import ArchiveError, Handle, now
from agentarch.store.ranking import sql_key
from agentarch.store.scoring import SCORING_EVALUATION, TASK_JOIN

GRAPH_KEEP_TOP = 10
"""How many of each task's best candidates keep their graph whatever the cap."""
GRAPH_STORE_MB = 2048
"""The size the graphs folder may reach before the graphs outside the policy's keep set are dropped."""
ORPHAN_GRACE_S = 3600.0
"""How long a graph no evaluation names yet is spared: one kept just now whose evaluation is being recorded."""
MAX_GRAPH_BYTES = 512 * 2**20
"""The largest graph read back (the host reads none larger from a sandbox: agentarch/evaluation/graphs/scoring.py)."""
NOT_KEPT = "graph not kept (retention policy)"
"""What every reader says of a graph whose file the retention policy dropped."""
SUFFIX = ".onnx"

_SHA256 = re.compile(r"[0-9a-f]{64}")


class GraphNotKept(ArchiveError):
    """The evaluation had a graph, but its file was dropped by the retention policy (or removed by hand)."""


@dataclass(frozen=True)
class GraphPolicy:
    """Which graphs the folder keeps: the best `keep_top` per task, pinned and flagged ones, and the rest only
    while the folder is under `max_mb` megabytes."""

    keep_top: int = GRAPH_KEEP_TOP
    max_mb: float = GRAPH_STORE_MB

    @classmethod
    def from_settings(cls, settings: Any) -> GraphPolicy:
        """The policy the settings give (`graph_keep_top`, `graph_store_mb` where they have them), else the defaults."""
        top = getattr(settings, "graph_keep_top", None)
        cap = getattr(settings, "graph_store_mb", None)
        return cls(GRAPH_KEEP_TOP if top is None else int(top), GRAPH_STORE_MB if cap is None else float(cap))

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 2**20)


def graph_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Graphs(Handle):
    """The part of `Archive` that keeps graphs beside the archive file and reads them back."""

    graph_policy: GraphPolicy = GraphPolicy()

    @property
    def graphs_dir(self) -> Path:
        """`<archive>.graphs/`, beside the archive file."""
        return self.path.with_name(self.path.name + ".graphs")

    def graph_path(self, digest: str) -> Path:
        if not _SHA256.fullmatch(digest or ""):
            raise ArchiveError(f"{digest!r} is not a graph's sha256 (64 lowercase hex digits)")
        return self.graphs_dir / f"{digest}{SUFFIX}"

    def keep_graph(self, data: bytes, policy: GraphPolicy | None = None) -> str:
        """Write `data` as its content-addressed file (atomically: a temporary name, fsync, rename) and return its
        sha256, what the evaluation records; then apply the retention policy if the folder passed its cap."""
        digest = graph_sha256(data)
        path = self.graph_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)  # the same bytes under the same name: rewriting a kept graph is harmless
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.retain_graphs(policy)
        return digest

    def graph_bytes(self, digest: str, limit: int = MAX_GRAPH_BYTES) -> bytes:
        """A kept graph's bytes, at most `limit`, checked against its sha256. GraphNotKept when the retention policy
        dropped it; ArchiveError when the file is too large or not what its name says."""
        path = self.graph_path(digest)
        try:
            with path.open("rb") as stream:
                data = stream.read(limit + 1)
        except FileNotFoundError:
            raise GraphNotKept(f"{NOT_KEPT}: {digest[:12]} is no longer in {self.graphs_dir}") from None
        if len(data) > limit:
            raise ArchiveError(f"the graph file {path} is larger than {limit:,} bytes; it is not read")
        if graph_sha256(data) != digest:
            raise ArchiveError(
                f"the graph file {path} does not hold what its name says (sha256 differs); it is refused"
            )
        return data

    def graph_kept(self, digest: str | None) -> bool:
        """Whether the file of this graph is still there (False for no graph)."""
        return digest is not None and self.graph_path(digest).is_file()

    def pin_graph(self, digest: str, candidate_id: int, reason: str = "exported") -> None:
        """Keep this graph whatever the policy says (a person exported it); the first pin of a graph stands."""
        self.graph_path(digest)
        with self._writing():
            self.db["graph_pins"].insert(
                {"sha256": digest, "candidate_id": candidate_id, "reason": reason, "created_at": now()}, ignore=True
            )

    def graphs_to_keep(self, policy: GraphPolicy | None = None) -> set[str]:
        """The graphs the policy keeps whatever the cap: each task's top `keep_top`, the pinned, the flagged."""
        keep_top = (policy or self.graph_policy).keep_top
        ranked = f"""
            SELECT graph_sha256 FROM (
                SELECT e.graph_sha256, ROW_NUMBER() OVER (
                    PARTITION BY c.task ORDER BY {sql_key("e.val_accuracy", "task_row.direction")} DESC, c.id
                ) AS place
                FROM candidates c
                JOIN evaluations e ON e.id = ({SCORING_EVALUATION.format(column="id")})
                {TASK_JOIN}
                WHERE c.status = 'trained' AND e.graph_sha256 IS NOT NULL
            ) WHERE place <= ?"""
        flagged = (
            "SELECT e.graph_sha256 FROM reviews r JOIN evaluations e ON e.candidate_id = r.candidate_id "
            "WHERE r.kind = 'flag' AND e.graph_sha256 IS NOT NULL"
        )
        rows = self.db.execute(f"{ranked} UNION SELECT sha256 FROM graph_pins UNION {flagged}", [keep_top])
        return {digest for (digest,) in rows.fetchall()}

    def graphs_size(self) -> int:
        """The bytes the graphs folder holds now."""
        return sum(size for _, size, _ in self._graph_files())

    def retain_graphs(self, policy: GraphPolicy | None = None) -> list[str]:
        """Apply the retention policy: when the folder holds more than the cap, drop every graph outside the keep set
        (one no evaluation names yet only after `ORPHAN_GRACE_S`). Returns the sha256 of each graph dropped."""
        policy = policy or self.graph_policy
        files = self._graph_files()
        if sum(size for _, size, _ in files) <= policy.max_bytes:
            return []
        keep = self.graphs_to_keep(policy)
        named = {
            d
            for (d,) in self.db.execute("SELECT DISTINCT graph_sha256 FROM evaluations WHERE graph_sha256 IS NOT NULL")
        }
        old = time.time() - ORPHAN_GRACE_S
        dropped = []
        for path, _, modified in files:
            digest = path.name.removesuffix(SUFFIX)
            if digest in keep or (digest not in named and modified > old):
                continue
            path.unlink(missing_ok=True)
            dropped.append(digest)
        for part in self.graphs_dir.glob(".*.part"):  # a write a crash cut short
            try:
                if part.stat().st_mtime < old:
                    part.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
        return dropped

    def _graph_files(self) -> list[tuple[Path, int, float]]:
        """(path, size, modified) of each kept graph file; another process may drop one while this looks."""
        if not self.graphs_dir.is_dir():
            return []
        found = []
        for path in self.graphs_dir.iterdir():
            if path.suffix != SUFFIX or not _SHA256.fullmatch(path.stem):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.append((path, stat.st_size, stat.st_mtime))
        return found
