"""Browsing candidates: which ones a listing page shows, in what order and with what marks, and what a search finds.

The leaderboard's sorts and filters (`Sort`, `Filters`), one page of listing rows (`leaderboard`) and their count,
what a page adds to its rows (`annotate`: review marks and readable names), the pickers it offers (tasks,
proposers), rows and long fields fetched by id, the ranked list few-shot examples are chosen from, and full-text
search over names, code and analyses. Whatever a person types (a search, a filter) reaches SQLite as a parameter,
never as SQL: search text becomes quoted FTS5 phrases (`fts_query`) and sorts and ranges name a `MEASURES` key
(`agentarch.store.measurements`), not a column.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agentarch.store.archive import Archive
from agentarch.store.handle import _IDS, ArchiveError, _all, _count
from agentarch.store.measurements import MEASURES, _picked
from agentarch.store.names import LEGACY_NAME, describe, run_tag
from agentarch.store.ranking import sql_key
from agentarch.store.scoring import _BEST_VAL, SCORED_KIND, TASK_JOIN, TRUSTED, ScoringMix, _scored

SORTS: dict[str, str] = {
    "best": sql_key(_BEST_VAL, "task_row.direction"),
    **{key: m.sql for key, m in MEASURES.items()},
    "id": "c.id",
    "name": "c.name",
    "status": "c.status",
}
"""Sort keys: `best` is the validation score as a key where bigger is better (each task's direction), the
default; every other key sorts its raw value."""

FRONT = "front"
"""The sort by Pareto standing (front, then crowding) over a task's or run's objectives. It is ranked in Python
(`agentarch.web.standing`, from `measure_rows`), not in SQL, so `leaderboard` does not take it."""

REVIEW_MARKS = ("flagged", "edited", "reviewed")
_REVIEW_SQL = {
    "flagged": "EXISTS (SELECT 1 FROM reviews r WHERE r.candidate_id = c.id AND r.kind = 'flag')",
    "edited": "EXISTS (SELECT 1 FROM reviews r WHERE r.proposal_key = c.proposal_key AND r.status = 'edited')",
    "reviewed": "EXISTS (SELECT 1 FROM reviews r WHERE r.proposal_key = c.proposal_key AND r.kind = 'gate' "
    "AND r.status != 'pending')",
}
STAGES = ("explore", "verify")


@dataclass(frozen=True)
class Sort:
    """A leaderboard's order: a `SORTS` key, descending or not; rows without the value come last either way."""

    key: str = "best"
    descending: bool = True

    def __post_init__(self) -> None:
        if self.key not in SORTS and self.key != FRONT:
            raise ArchiveError(f"cannot sort by {self.key!r}; use one of {', '.join([*SORTS, FRONT])}")


@dataclass(frozen=True)
class Filters:
    """What narrows a list of candidates (None: no restriction); `proposer` matches the proposer or the LLM model.

    `ranges` holds (measure, low, high) with either bound None; `since` and `until` are dates (YYYY-MM-DD, both
    days included); `marks` are `REVIEW_MARKS` a candidate must all carry; `stage` is where its scores come from
    (`verify` for a verify retraining, `explore` for any other training); `verified` leaves out the candidates whose
    scores are unverified (`agentarch.store.scoring`: trusted scoring), keeping graph-scored ones, table answers and
    those without scores (nothing of theirs is unverified).
    """

    task: str | None = None
    proposer: str | None = None
    status: str | None = None
    run: str | None = None
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()
    since: str | None = None
    until: str | None = None
    marks: tuple[str, ...] = ()
    stage: str | None = None
    verified: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m, *_ in self.ranges if m not in MEASURES] + [m for m in self.marks if m not in REVIEW_MARKS]
        if unknown:
            raise ArchiveError(f"cannot filter by {', '.join(map(repr, unknown))}")
        if self.stage not in (None, *STAGES):
            raise ArchiveError(f"a stage is {' or '.join(STAGES)}, not {self.stage!r}")

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause over candidates aliased `c` ("" when nothing is filtered) and its arguments."""
        clauses, args = [], []
        if self.task:
            clauses.append("c.task = ?")
            args.append(self.task)
        if self.proposer:
            clauses.append("(c.proposer = ? OR c.model = ?)")
            args += [self.proposer, self.proposer]
        if self.status:
            clauses.append("c.status = ?")
            args.append(self.status)
        if self.run:
            clauses.append("c.run_id = ?")
            args.append(self.run)
        for measure, low, high in self.ranges:
            for bound, op in ((low, ">="), (high, "<=")):
                if bound is not None:
                    clauses.append(f"{MEASURES[measure].sql} {op} ?")
                    args.append(bound)
        if self.since:
            clauses.append("c.created_at >= ?")
            args.append(self.since)
        if self.until:
            clauses.append("c.created_at < date(?, '+1 day')")
            args.append(self.until)
        clauses += [_REVIEW_SQL[mark] for mark in self.marks]
        if self.stage:
            clauses.append(f"COALESCE({_scored('stage')}, 'explore') = ? AND {_BEST_VAL} IS NOT NULL")
            args.append(self.stage)
        if self.verified:
            clauses.append(f"COALESCE({SCORED_KIND}, '') != '{TRUSTED}'")
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args


def leaderboard(
    archive: Archive, filters: Filters, limit: int | None, offset: int = 0, sort: Sort = Sort()
) -> list[dict[str, Any]]:
    """Listing rows in `sort`'s order, by default ranked by validation score in each task's direction, best first;
    rows without the sorted value last; ties newest first. (Unfiltered by task, the tasks interleave by their
    signed scores: compare within a task.)

    The page is chosen first on (id, sort key) alone, out of the covering index where the key is the score, and
    only its rows are then read in full: sorting whole candidate rows to skip thousands of them would read every
    candidate.
    """
    if sort.key == FRONT:
        raise ArchiveError("the front sort is ranked outside SQL: order `measure_rows` with agentarch.web.standing")
    where, args = filters.where()
    order = "DESC" if sort.descending else "ASC"
    page = (
        f"(SELECT c.id, {SORTS[sort.key]} AS k FROM candidates c {TASK_JOIN} {where} "
        f"ORDER BY k IS NULL, k {order}, c.id DESC LIMIT ? OFFSET ?) AS page JOIN candidates c ON c.id = page.id"
    )
    tail = f"ORDER BY page.k IS NULL, page.k {order}, c.id DESC"
    return list(archive.listing(tail, [*args, _all(limit), offset], source=page))


def annotate(archive: Archive, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add to listing rows what a page shows beyond the listing: the review marks (flagged, edited), the stage of a
    scored row spelled out (`explore` where the evaluation names none), and `label`, the name a person reads
    (`readable_names`). Two queries for the page, whatever its length."""
    ids = json.dumps([row["id"] for row in rows])
    marks = {
        row["id"]: row
        for row in archive.db.query(
            f"SELECT c.id, {_REVIEW_SQL['flagged']} AS flagged, {_REVIEW_SQL['edited']} AS edited "
            f"FROM candidates c WHERE c.id IN ({_IDS})",
            [ids],
        )
    }
    labels = readable_names(archive, rows)
    for row in rows:
        found = marks.get(row["id"], {})
        scored = row.get("val_accuracy") is not None
        row.update(
            stage=row.get("stage") or ("explore" if scored else None),
            flagged=bool(found.get("flagged")),
            edited=bool(found.get("edited")),
            label=labels[row["id"]],
        )
    return rows


_INTENT = re.compile(r"Intent:\s*(.+)", re.IGNORECASE)
_ARCH_DOC = re.compile(r"architecture\s+([^\s\"']+)")


def readable_names(archive: Archive, rows: Iterable[dict[str, Any]]) -> dict[int, str]:
    """id -> the name a page shows. A candidate named before names said what a candidate is ("round 1 slot 0", the
    same in every run) gets one the way `names.candidate_name` makes them: its architecture (the search-space
    string, else the one its rendered code's docstring names) or its intent's first words (from the LLM's answer,
    else its analysis), with the run's tag and the old round and slot. Others keep their names."""
    rows = list(rows)
    legacy = [row for row in rows if LEGACY_NAME.match(row.get("name") or "")]
    texts = {}
    if legacy:
        sql = (
            "SELECT id, substr(response, 1, 4000) AS response, substr(analysis, 1, 400) AS analysis, "
            f"substr(code, 1, 400) AS head FROM candidates WHERE id IN ({_IDS})"
        )
        texts = {row["id"]: row for row in archive.db.query(sql, [json.dumps([r["id"] for r in legacy])])}
    names = {row["id"]: row.get("name") or f"#{row['id']}" for row in rows}
    for row in legacy:
        text = texts.get(row["id"], {})
        intent = _INTENT.search(text.get("response") or "")
        arch_doc = _ARCH_DOC.search(text.get("head") or "")
        arch = f"{row['space']}:{row['arch']}" if row.get("space") and row.get("arch") else row.get("arch")
        what = describe(
            intent.group(1) if intent else text.get("analysis"), arch or (arch_doc.group(1) if arch_doc else None)
        )
        if what:
            round_no, slot = LEGACY_NAME.match(row["name"]).groups()  # type: ignore[union-attr]
            names[row["id"]] = f"{what} ({run_tag(row.get('run_id'))}/r{round_no}.{slot})"
    return names


def count_candidates(archive: Archive, filters: Filters) -> int:
    where, args = filters.where()
    return _count(archive, f"SELECT COUNT(*) FROM candidates c {where}", args)


def scoring_mix(archive: Archive, filters: Filters) -> ScoringMix:
    """`ScoringMix` of every candidate the filters let through (not only one page of them), in one query."""
    where, args = filters.where()
    unverified, scored = archive.db.execute(
        f"SELECT COALESCE(SUM(kind = '{TRUSTED}'), 0), COUNT(kind) FROM "
        f"(SELECT {SCORED_KIND} AS kind FROM candidates c {where})",
        args,
    ).fetchone()
    return ScoringMix(int(unverified), int(scored))


def rows_mix(rows: Iterable[dict[str, Any]]) -> ScoringMix:
    """`ScoringMix` of listing rows already read (a search's page, a report's top rows)."""
    kinds = [row.get("scoring") for row in rows if row.get("scoring")]
    return ScoringMix(sum(kind == TRUSTED for kind in kinds), len(kinds))


def tasks(archive: Archive) -> list[str]:
    """Every task the archive holds candidates of, by name."""
    return [row[0] for row in archive.db.execute("SELECT DISTINCT task FROM candidates ORDER BY task")]


def newest_task(archive: Archive) -> str | None:
    """The task of the most recent candidate (what a person most likely wants to see first), None when empty."""
    row = archive.db.execute("SELECT task FROM candidates ORDER BY id DESC LIMIT 1").fetchone()
    return row[0] if row else None


def proposers(archive: Archive, task: str | None) -> list[str]:
    """The proposers and LLM models that have candidates for `task`, by name: what `Filters.proposer` accepts."""
    rows = archive.db.execute(
        "SELECT proposer FROM candidates WHERE task = ? UNION "
        "SELECT model FROM candidates WHERE task = ? AND model IS NOT NULL ORDER BY 1",
        [task, task],
    )
    return [row[0] for row in rows]


_QUOTED_OR_WORD = re.compile(r'"([^"]*)"?|(\S+)')
_TOKENS = re.compile(r"[^\W_]+")


def fts_query(text: str) -> str | None:
    """What a person typed as a safe FTS5 query, None when it holds nothing searchable.

    Names, code and identifiers are pasted from the pages (`macro:d4-w16-k5-skip0-avg`, `nn.Conv2d`, `SKIP = True`),
    and FTS5's own syntax reads their punctuation as columns and operators. So each whitespace-separated piece (or
    "quoted phrase") becomes a quoted phrase of its words, which matches those words in that order as the index
    tokenized them; pieces must all match. Two operators survive: `OR` between pieces, and a trailing `*` for a
    prefix.
    """
    terms: list[str] = []
    pending_or = False
    for quoted, bare in _QUOTED_OR_WORD.findall(text):
        piece = quoted if quoted else bare
        if not quoted and piece == "OR":
            pending_or = bool(terms)
            continue
        words = _TOKENS.findall(piece)
        if not words:
            continue
        term = '"' + " ".join(words) + '"' + ("*" if piece.endswith("*") and not quoted else "")
        if pending_or:
            terms[-1] = f"{terms[-1]} OR {term}"
        else:
            terms.append(term)
        pending_or = False
    return " AND ".join(f"({t})" if " OR " in t else t for t in terms) or None


def search(archive: Archive, query: str, limit: int | None, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """Full-text search over names, code and analyses for what a person typed (`fts_query`): how many candidates
    match, and one page of their listing rows, best match first."""
    match = fts_query(query)
    if match is None:
        return 0, []
    try:
        total = _count(archive, "SELECT COUNT(*) FROM candidates_fts WHERE candidates_fts MATCH ?", [match])
        ids = [
            row[0]
            for row in archive.db.execute(
                "SELECT rowid FROM candidates_fts WHERE candidates_fts MATCH ? ORDER BY rank LIMIT ? OFFSET ?",
                [match, _all(limit), offset],
            )
        ]
    except sqlite3.OperationalError as err:  # a bug in fts_query, not the person's typing: say both
        raise ArchiveError(f"cannot search for {query!r} (as {match!r}: {err})") from None
    found = {row["id"]: row for row in archive.listing(f"WHERE c.id IN ({_IDS})", [json.dumps(ids)])}
    return total, [found[i] for i in ids if i in found]


def exact_target(archive: Archive, query: str) -> tuple[str, Any] | None:
    """("candidate", id) or ("run", id) when the search text is exactly a candidate id as pages show it (`#12`,
    `12`) or a run id: a person who pastes one wants that page, not the candidates whose code mentions it."""
    text = query.strip()
    number = text.removeprefix("#")
    if number.isascii() and number.isdigit() and len(number) <= 18:  # "²" is a digit to isdigit, not to int
        found = archive.db.execute("SELECT id FROM candidates WHERE id = ?", [int(number)]).fetchone()
        if found:
            return "candidate", int(found[0])
    found = archive.db.execute("SELECT id FROM runs WHERE id = ?", [text]).fetchone()
    return ("run", found[0]) if found else None


def rows_by_id(archive: Archive, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The listing rows of these candidates, annotated (`annotate`), in the order asked; ids not in the archive are
    left out."""
    found = {row["id"]: row for row in archive.listing(f"WHERE c.id IN ({_IDS})", [json.dumps(list(ids))])}
    return annotate(archive, [found[i] for i in ids if i in found])


def candidate_fields(archive: Archive, ids: Iterable[Any], columns: Sequence[str]) -> dict[int, dict[str, Any]]:
    """id → {id, *columns} for the candidates that exist among `ids` (anything not an id is skipped), in one query.

    The listing rows leave the long texts out (code, analysis); this fetches them, or a few names, for given ids.
    """
    unknown = set(columns) - set(archive.db["candidates"].columns_dict)
    if unknown:
        raise ValueError(f"candidates have no column {sorted(unknown)}")
    wanted = [i for i in dict.fromkeys(ids) if isinstance(i, int)]
    if not wanted:
        return {}
    sql = f"SELECT id, {', '.join(columns)} FROM candidates WHERE id IN ({_IDS})"
    return {row["id"]: row for row in archive.db.query(sql, [json.dumps(wanted)])}


def ranked_with_code(archive: Archive, task: str) -> list[dict[str, Any]]:
    """The task's trained candidates with a validation score, ranked as `Archive.top` ranks them (best first in the
    task's direction), each with its code and analysis: what few-shot examples are chosen from."""
    rows = [row for row in archive.top(task, limit=None) if row["val_accuracy"] is not None]
    texts = candidate_fields(archive, [row["id"] for row in rows], ("code", "analysis"))
    return [{**row, **texts[row["id"]]} for row in rows]


def measure_rows(archive: Archive, filters: Filters, measures: Sequence[str]) -> list[dict[str, Any]]:
    """Each candidate the filters let through, whatever its status, with its id and the `MEASURES` named (keyed as in
    `measure_points`): what the leaderboard's front sort ranks. One query, reading only those measures."""
    where, args = filters.where()
    return list(archive.db.query(f"SELECT c.id, {_picked(measures)} FROM candidates c {where}", args))
