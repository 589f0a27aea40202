"""The pipeline's reads of the archive: the duplicate checks before training, one candidate and its evaluations,
the best of a task, what a task's scores are, and the runs.

What the loop, the evaluator, the baselines and the CLI ask while they work, each a method of `Archive`; the
web's and the report's browsing views are module functions beside it (`agentarch.store.browse` and its
neighbours). Every ranked read goes through the listing row (`agentarch.store.scoring`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import sqlite_utils

from agentarch import formats
from agentarch.store.handle import ArchiveError, _decode, _where
from agentarch.store.ranking import Direction, sql_key
from agentarch.store.scoring import DEFAULT_METRIC, Listing

# A candidate whose code or function matches one of these was already evaluated (or already failed
# deterministically), so running it again would only spend compute.
_DEDUP_POOL = ("trained", "failed", "timeout")
STRUCTURE_MEMBERS = 500
"""How many trained candidates' structure signatures a new candidate is compared with (`Archive.structures`)."""
DedupLevel = Literal["whitespace", "ast", "functional", "structural"]
"""The levels at which a candidate can duplicate a recorded one (`candidates.dedup_level`)."""

_HASH_COLUMN: dict[DedupLevel, str] = {"whitespace": "text_hash", "ast": "ast_hash", "functional": "functional_hash"}

_FROM_GRAPH = "(SELECT graph_sha256 IS NOT NULL FROM evaluations WHERE candidate_id = c.id ORDER BY id LIMIT 1)"
"""Whether candidate `c`'s measures came from its graph: its first evaluation, the one recorded with the row, kept a
graph (graph scoring: the host measured the row's parameters, FLOPs, structure and functional hash from it)."""


def _measured_by(scoring: str | None) -> tuple[str, list[Any]]:
    """The WHERE term (and its argument) that keeps candidates `c` measured by `scoring`: "graph" (from the graph, on
    the host) or "trusted" (the candidate's own report); None keeps all. Graph scoring compares a new candidate's
    graph only with graphs: a trusted row's hash and signature are the candidate's word, and not the same measure."""
    if scoring is None:
        return "", []
    return f" AND COALESCE({_FROM_GRAPH}, 0) = ?", [int(scoring == "graph")]


ANY_RECIPE = "any"
"""The `recipe` argument of the dedup reads that keeps candidates whatever their training recipe."""


def _trained_as(recipe: dict[str, Any] | None | str) -> tuple[str, list[Any]]:
    """The WHERE term (and its argument) that keeps candidates `c` declaring `recipe` (None: none, the task's default;
    ANY_RECIPE keeps all): the same network trained another way is not a duplicate (schema 17)."""
    if recipe == ANY_RECIPE:
        return "", []
    return " AND c.recipe IS ?", [formats.cell(recipe) if recipe else None]


class Reads(Listing):
    """The part of `Archive` that answers the pipeline's reads."""

    def find_duplicate(self, task: str, level: DedupLevel, value: str) -> int | None:
        """The earliest candidate for `task` already holding this hash, or None."""
        column = _HASH_COLUMN[level]
        marks = ", ".join("?" for _ in _DEDUP_POOL)
        row = self.db.execute(
            f"SELECT id FROM candidates WHERE task = ? AND {column} = ? AND status IN ({marks}) ORDER BY id LIMIT 1",
            [task, value, *_DEDUP_POOL],
        ).fetchone()
        return int(row[0]) if row else None

    def functional_hashes(
        self, task: str, scoring: str | None = None, recipe: dict[str, Any] | None | str = ANY_RECIPE
    ) -> dict[str, int]:
        """Every functional hash already evaluated for `task`, with its earliest candidate (sent to workers); with
        `scoring`, only those measured that way (`_measured_by`): a graph's hash and a candidate's own are never
        compared; with `recipe`, only candidates trained with it (`_trained_as`)."""
        marks = ", ".join("?" for _ in _DEDUP_POOL)
        kept, args = _measured_by(scoring)
        same, recipe_args = _trained_as(recipe)
        kept, args = kept + same, args + recipe_args
        rows = self.db.execute(
            f"SELECT functional_hash, MIN(id) FROM candidates c WHERE task = ? AND functional_hash IS NOT NULL "
            f"AND status IN ({marks}){kept} GROUP BY functional_hash",
            [task, *_DEDUP_POOL, *args],
        ).fetchall()
        return {h: int(i) for h, i in rows}

    def structures(
        self,
        task: str,
        limit: int = STRUCTURE_MEMBERS,
        scoring: str | None = None,
        recipe: dict[str, Any] | None | str = ANY_RECIPE,
    ) -> list[tuple[int, dict[str, int]]]:
        """The structure signatures a new candidate for `task` is compared with (sent to workers): of the task's
        trained candidates, the best `limit // 2` by validation in the task's direction, then the most recent, at
        most `limit` in all, so a worker's request stays small: a ResNet's signature is about 1.5 KB (at most 256
        tokens of 120 characters). With `scoring`, only candidates measured that way (`_measured_by`); with `recipe`, only
        those trained with it (`_trained_as`)."""
        kept, args = _measured_by(scoring)
        same, recipe_args = _trained_as(recipe)
        kept, args = kept + same, args + recipe_args
        best = f"WHERE c.task = ? AND c.status = 'trained' AND c.structure IS NOT NULL{kept}"
        ranked = [
            row["id"]
            for row in self.listing(
                f"{best} ORDER BY {sql_key('e.val_accuracy', 'task_row.direction')} DESC, c.id LIMIT ?",
                [task, *args, limit // 2],
            )
        ]
        recent = self.db.execute(
            f"SELECT id FROM candidates c WHERE task = ? AND status = 'trained' AND structure IS NOT NULL{kept} "
            "ORDER BY id DESC LIMIT ?",
            [task, *args, limit],
        ).fetchall()
        members = list(dict.fromkeys([*ranked, *(i for (i,) in recent)]))[:limit]
        if not members:
            return []
        marks = ", ".join("?" for _ in members)
        found = dict(self.db.execute(f"SELECT id, structure FROM candidates WHERE id IN ({marks})", members).fetchall())
        return [(member, json.loads(found[member])) for member in members]

    def candidate(self, candidate_id: int) -> dict[str, Any]:
        try:
            row = self.db["candidates"].get(candidate_id)
        except sqlite_utils.db.NotFoundError:
            raise ArchiveError(
                f"no candidate with id {candidate_id} in {self.path}; `agentarch archive ls` lists them"
            ) from None
        return _decode(row)

    def scored(self, candidate_id: int) -> dict[str, Any]:
        """One candidate's listing row: its fields with its best evaluation's scores (None where untrained)."""
        rows = list(self.listing("WHERE c.id = ?", [candidate_id]))
        if not rows:
            raise ArchiveError(f"no candidate with id {candidate_id} in {self.path}; `agentarch archive ls` lists them")
        return rows[0]

    def evaluations(self, candidate_id: int) -> list[dict[str, Any]]:
        return [
            _decode(r) for r in self.db["evaluations"].rows_where("candidate_id = ?", [candidate_id], order_by="id")
        ]

    def candidates(
        self, task: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Newest first, each with the scores of its highest-fidelity evaluation (None where not trained)."""
        where, args = _where({"c.task": task, "c.status": status})
        clause = f"WHERE {where}" if where else ""
        return list(self.listing(f"{clause} ORDER BY c.id DESC LIMIT ? OFFSET ?", [*args, limit, offset]))

    def top(
        self, task: str, limit: int | None = 10, by: str = "val_accuracy", proposers: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Best trained candidates for a task, ranked by the search signal (validation) unless told otherwise, in
        the task's direction (lowest first for an MSE); equal scores rank the earlier candidate first. `limit`
        None ranks them all.

        `proposers` narrows the ranking, e.g. to the baselines' finds when they seed a prompt.
        """
        if by not in ("val_accuracy", "test_accuracy"):
            raise ArchiveError(f"cannot rank by {by!r}; use val_accuracy or test_accuracy")
        only = f"AND c.proposer IN ({', '.join('?' for _ in proposers)})" if proposers else ""
        return list(
            self.listing(
                f"WHERE c.task = ? AND c.status = 'trained' {only} ORDER BY {sql_key('e.' + by, 'task_row.direction')} DESC, c.id LIMIT ?",
                [task, *proposers, -1 if limit is None else limit],
            )
        )

    def _task_row(self, name: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM tasks WHERE name = ?", [name]))
        return rows[0] if rows else None

    def task_info(self, name: str) -> dict[str, Any]:
        """What the archive keeps of a task: name, metric, direction, kind, description. A task it has no row for
        (nothing of it recorded through an evaluator) is what every task was before schema 7: accuracy, max."""
        return self._task_row(name) or {
            "name": name,
            "metric": DEFAULT_METRIC,
            "direction": "max",
            "kind": None,
            "description": None,
        }

    def direction(self, task: str) -> Direction:
        """Which way `task`'s scores are better, as every ranking in the archive applies it."""
        return self.task_info(task)["direction"]  # type: ignore[no-any-return]

    def find_arch(self, task: str, space: str, arch: str) -> dict[str, Any] | None:
        """The earliest evaluated candidate of this search-space architecture for `task`, with its scores."""
        marks = ", ".join("?" for _ in _DEDUP_POOL)
        rows = list(
            self.listing(
                f"WHERE c.task = ? AND c.space = ? AND c.arch = ? AND c.status IN ({marks}) ORDER BY c.id LIMIT 1",
                [task, space, arch, *_DEDUP_POOL],
            )
        )
        return rows[0] if rows else None

    def space_rows(self, task: str, space: str) -> list[dict[str, Any]]:
        """Every candidate for `task` with an architecture of search space `space` (of any run or proposer), oldest
        first, as listing rows with their scores: what an in-space search is rebuilt from (`arch`, `status`,
        `val_accuracy` and the measures)."""
        return list(
            self.listing("WHERE c.task = ? AND c.space = ? AND c.arch IS NOT NULL ORDER BY c.id", [task, space])
        )

    def runs(self, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Runs, newest first (all of them unless `limit`)."""
        return [_decode(r) for r in self.db["runs"].rows_where(order_by="started_at DESC", limit=limit, offset=offset)]

    def find_run(self, run_id: str) -> dict[str, Any] | None:
        """One run's row (config and summary decoded), or None when the archive has no such run."""
        try:
            return _decode(self.db["runs"].get(run_id))
        except sqlite_utils.db.NotFoundError:
            return None

    def export_rows(self) -> Iterator[dict[str, Any]]:
        yield from self.listing("ORDER BY c.id")
