"""Read-only views over an archive for browsing and reporting: leaderboard, search, lineage, runs' progress.

The web UI, the static report and few-shot selection ask these functions and write no SQL of their own.
Three rules they all build on live elsewhere: which score is better for a task (`agentarch.store.ranking`: every
ORDER BY and MAX over scores here goes through its `sql_key`, so a lower-is-better metric ranks lowest first),
which evaluation a candidate's scores come from (`archive.SCORING_EVALUATION`) and what a listing row holds
(`Archive.listing`, with the task's `metric` and `direction`). The indexes these queries need
are created by the archive's schema migrations (schema 6).

Each function is a fixed handful of queries whatever the archive's size, and every list pages with
LIMIT/OFFSET (`limit=None` means all), so pages stay fast on archives of tens of thousands of candidates.
Lists of ids travel as one JSON parameter (`json_each`), so their length never meets SQLite's cap on
placeholders. Whatever a person types (a search, a filter) reaches SQLite as a parameter, never as SQL: search
text becomes quoted FTS5 phrases (`fts_query`) and sorts and ranges name a `MEASURES` key, not a column.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentarch.store.archive import DEFAULT_METRIC, SCORING_EVALUATION, TASK_JOIN, Archive, ArchiveError
from agentarch.store.names import LEGACY_NAME, describe, run_tag
from agentarch.store.ranking import Direction, sql_key, sql_sign

_BEST_VAL = SCORING_EVALUATION.format(column="val_accuracy")
_IDS = "SELECT value FROM json_each(?)"  # `IN (_IDS)` with json.dumps(ids) as its one argument


def _all(limit: int | None) -> int:
    """SQLite's LIMIT for `limit` (-1: no limit)."""
    return -1 if limit is None else limit


def _count(archive: Archive, sql: str, args: Sequence[Any] = ()) -> int:
    return int(archive.db.execute(sql, args).fetchone()[0])


# -- candidates -------------------------------------------------------------------------------------


def _scored(column: str) -> str:
    """SQL for one column of candidate `c`'s scoring evaluation (NULL when it has none)."""
    return SCORING_EVALUATION.format(column=column)


@dataclass(frozen=True)
class Measure:
    """A column a person can sort or filter a leaderboard by, and plot: its label and its SQL over candidate `c`.

    `log`: spans decades (sizes, FLOPs, time), so a chart draws it on a log axis. `direction`: which way is
    better when nothing else says (None: the task's metric decides, or no way is better).
    """

    key: str
    label: str
    sql: str
    log: bool = False
    direction: Direction | None = "min"


MEASURES: dict[str, Measure] = {
    m.key: m
    for m in (
        Measure("val", "validation score", _BEST_VAL, direction=None),
        Measure("test", "test score", _scored("test_accuracy"), direction=None),
        Measure("params", "parameters", f"COALESCE(c.params, {_scored('params')})", log=True),
        Measure("flops", "FLOPs", f"COALESCE(c.flops, {_scored('flops')})", log=True),
        Measure("latency_ms", "latency (ms per batch)", _scored("latency_ms"), log=True),
        Measure("peak_memory_mb", "peak memory (MB)", _scored("peak_memory_mb"), log=True),
        Measure("train_seconds", "training seconds", _scored("train_seconds"), log=True),
        Measure("fidelity", "fidelity (epochs)", _scored("fidelity")),
    )
}
"""What the leaderboard sorts and filters by and the charts plot, by the key a URL names (`sort=params`)."""

PLOT_MEASURES = ("val", "params", "flops", "latency_ms", "peak_memory_mb")
"""The measures a Pareto view offers as axes: the ones a run's objectives may name (`agentarch.search.objectives`)."""

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
    (`verify` for a verify retraining, `explore` for any other training).
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
    if number.isdigit():
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


# -- lineage ----------------------------------------------------------------------------------------


def children(archive: Archive, candidate_id: int) -> list[dict[str, Any]]:
    """The candidates that name this one among their parents (id, name, status), oldest first.

    `instr` skips most rows cheaply before `json_each` checks the parents list exactly (12 is not 112).
    """
    sql = (
        "SELECT id, name, status FROM candidates WHERE id > ? AND instr(parents, ?) > 0 "
        "AND EXISTS (SELECT 1 FROM json_each(parents) WHERE value = ?) ORDER BY id"
    )
    return list(archive.db.query(sql, [candidate_id, str(candidate_id), candidate_id]))


def child_counts(archive: Archive, task: str) -> Counter[int]:
    """How many candidates of the task (whatever became of them) name each candidate as a parent."""
    rows = archive.db.execute(
        "SELECT p.value, COUNT(*) FROM candidates c, json_each(c.parents) p WHERE c.task = ? GROUP BY p.value",
        [task],
    )
    return Counter({int(parent): int(n) for parent, n in rows})


LINEAGE_NODES = 300
"""The most candidates a lineage tree shows on each side (ancestors, descendants): a prolific parent of a long
run can have thousands of descendants, and a page of them is as far as a person reads."""


@dataclass
class Node:
    """One candidate in a lineage tree: its listing row and the nodes below it (its parents in an ancestry, its
    children in a descent). `repeat` marks a candidate already shown elsewhere in the same tree (lineage is a graph:
    two parents can share an ancestor), whose own branches are not repeated."""

    row: dict[str, Any]
    below: list[Node] = field(default_factory=list)
    repeat: bool = False


@dataclass
class Lineage:
    """A candidate's ancestry (it at the root, its parents below, theirs below them) and descent, and how many
    candidates did not fit (`LINEAGE_NODES` per side)."""

    ancestry: Node
    descent: Node
    ancestors: int
    descendants: int
    cut: int


def lineage(archive: Archive, candidate_id: int, limit: int = LINEAGE_NODES) -> Lineage:
    """The ancestry and descent of a candidate, breadth first (nearest relatives first), each node with its
    listing row (name, status, score).

    The parent links of every candidate that has any are read in one query and walked in Python: following
    children one query per node would cost a scan of the candidates each.
    """
    archive.candidate(candidate_id)
    parents_of: dict[int, list[int]] = {}
    children_of: dict[int, list[int]] = defaultdict(list)
    for cid, parents in archive.db.execute("SELECT id, parents FROM candidates WHERE length(parents) > 2 ORDER BY id"):
        linked = [p for p in json.loads(parents) if isinstance(p, int)]
        parents_of[cid] = linked
        for parent in linked:
            children_of[parent].append(cid)
    up, up_cut = _walk(candidate_id, lambda i: parents_of.get(i, []), limit)
    down, down_cut = _walk(candidate_id, lambda i: children_of.get(i, []), limit)
    rows = {row["id"]: row for row in archive.listing(f"WHERE c.id IN ({_IDS})", [json.dumps([*up, *down])])}
    names = readable_names(archive, rows.values())
    for row in rows.values():
        row["label"] = names[row["id"]]
    return Lineage(
        _tree(candidate_id, up, rows), _tree(candidate_id, down, rows), len(up) - 1, len(down) - 1, up_cut + down_cut
    )


def _walk(start: int, links: Any, limit: int) -> tuple[dict[int, list[int]], int]:
    """Breadth first from `start`: each reached id with the ids it links to among those reached (each id is
    reached once), stopping after `limit` more ids; returns them and how many linked ids were left out."""
    reached: dict[int, list[int]] = {start: []}
    frontier, cut = [start], 0
    while frontier:
        following = []
        for node in frontier:
            for other in links(node):
                if other in reached:
                    reached[node].append(other)
                elif len(reached) <= limit:
                    reached[other] = []
                    reached[node].append(other)
                    following.append(other)
                else:
                    cut += 1
        frontier = following
    return reached, cut


def _tree(root: int, links: dict[int, list[int]], rows: dict[int, dict[str, Any]]) -> Node:
    """The walk as nested nodes; a candidate reached twice is shown again as a leaf marked `repeat`."""
    shown: set[int] = set()

    def node(cid: int) -> Node:
        row = rows.get(cid, {"id": cid, "label": f"#{cid}", "status": "unknown"})
        if cid in shown:
            return Node(row, repeat=True)
        shown.add(cid)
        return Node(row, [node(other) for other in links.get(cid, [])])

    return node(root)


# -- reviews ----------------------------------------------------------------------------------------


def candidate_reviews(archive: Archive, candidate_id: int, proposal_key: str | None) -> list[dict[str, Any]]:
    """Every review of a candidate, oldest first: the gate's pauses of its proposal, and flags raised on it."""
    sql = "SELECT * FROM reviews WHERE candidate_id = ? OR (proposal_key IS NOT NULL AND proposal_key = ?) ORDER BY id"
    return list(archive.db.query(sql, [candidate_id, proposal_key]))


def decided_reviews(archive: Archive, limit: int | None, offset: int = 0) -> list[dict[str, Any]]:
    """Reviews that are not pending any more (decisions and flags), newest first."""
    sql = "SELECT * FROM reviews WHERE status != 'pending' ORDER BY id DESC LIMIT ? OFFSET ?"
    return list(archive.db.query(sql, [_all(limit), offset]))


def count_decided_reviews(archive: Archive) -> int:
    return _count(archive, "SELECT COUNT(*) FROM reviews WHERE status != 'pending'")


def count_pending_reviews(archive: Archive, run_id: str) -> int:
    return _count(archive, "SELECT COUNT(*) FROM reviews WHERE run_id = ? AND status = 'pending'", [run_id])


# -- runs -------------------------------------------------------------------------------------------


def count_runs(archive: Archive) -> int:
    return _count(archive, "SELECT COUNT(*) FROM runs")


def run_ids(archive: Archive, task: str | None) -> list[str]:
    """The ids of a task's runs, newest first."""
    return [row[0] for row in archive.db.execute("SELECT id FROM runs WHERE task = ? ORDER BY started_at DESC", [task])]


def runs_with_progress(archive: Archive, limit: int | None, offset: int = 0) -> list[dict[str, Any]]:
    """Runs, newest first, each with its progress: proposed and trained counts, best validation score (by its
    task's direction; `metric` names it), and LLM spend (None when it made no paid call)."""
    runs = archive.runs(limit, offset)
    progress = _progress(archive, [run["id"] for run in runs])
    for run in runs:
        found = progress[run["id"]]
        run.update(
            proposed=sum(found["statuses"].values()),
            trained=found["statuses"].get("trained", 0),
            best_val_accuracy=found["best_val_accuracy"],
            metric=found["metric"],
            direction=found["direction"],
            cost_usd=found["cost_usd"],
        )
    return runs


def run_overview(archive: Archive, run_id: str) -> dict[str, Any]:
    """A run's row with its progress: candidates by status, LLM calls, tokens and spend, best validation score, and
    its task's `metric` and `direction`."""
    run = archive.find_run(run_id)
    if run is None:
        raise ArchiveError(f"no run {run_id!r}; `agentarch archive runs` lists them")
    found = _progress(archive, [run_id])[run_id]
    return {
        **run,
        "config": run["config"] or {},
        "summary": run["summary"] or {},
        **found,
        "proposed": sum(found["statuses"].values()),
        "trained": found["statuses"].get("trained", 0),
        "cost_usd": found["cost_usd"] or 0.0,
    }


def _progress(archive: Archive, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per run: candidates by status, best validation score, its task's metric and direction, and LLM calls, tokens
    and spend; four queries."""
    ids = [json.dumps(run_ids)]
    progress: dict[str, dict[str, Any]] = {
        run_id: {
            "statuses": {},
            "best_val_accuracy": None,
            "metric": DEFAULT_METRIC,
            "direction": "max",
            "llm_calls": 0,
            "cost_usd": None,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
        for run_id in run_ids
    }
    for run_id, status, n in archive.db.execute(
        f"SELECT run_id, status, COUNT(*) FROM candidates WHERE run_id IN ({_IDS}) GROUP BY run_id, status", ids
    ):
        progress[run_id]["statuses"][status] = n
    for run_id, metric, direction in archive.db.execute(
        f"SELECT r.id, t.metric, t.direction FROM runs r JOIN tasks t ON t.name = r.task WHERE r.id IN ({_IDS})", ids
    ):
        progress[run_id].update(metric=metric, direction=direction)
    # SQLite's bare column with MAX(): `best` comes from the row whose signed key is largest, the run's best
    for run_id, best, _ in archive.db.execute(
        f"SELECT run_id, best, MAX(best * sign) FROM (SELECT c.run_id, ({_BEST_VAL}) AS best, "
        f"{sql_sign('task_row.direction')} AS sign FROM candidates c {TASK_JOIN} WHERE c.run_id IN ({_IDS})) "
        "WHERE best IS NOT NULL GROUP BY run_id",
        ids,
    ):
        progress[run_id]["best_val_accuracy"] = best
    for run_id, calls, cost, prompt_tokens, completion_tokens in archive.db.execute(
        "SELECT run_id, COUNT(*), SUM(cost_usd), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) "
        f"FROM llm_calls WHERE run_id IN ({_IDS}) GROUP BY run_id",
        ids,
    ):
        progress[run_id].update(
            llm_calls=calls, cost_usd=cost, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    return progress


def run_statuses(archive: Archive, run_ids: Iterable[str | None]) -> dict[str, str]:
    """run id -> its status (running, finished, interrupted, failed) for the runs that exist among `run_ids`."""
    wanted = json.dumps([r for r in dict.fromkeys(run_ids) if r])
    return dict(archive.db.execute(f"SELECT id, status FROM runs WHERE id IN ({_IDS})", [wanted]).fetchall())


@dataclass(frozen=True)
class RunHistory:
    """Validation score at each evaluation of a run, in the order they were recorded, with the fidelity (epochs) and
    candidate of each, and the same for each other baseline run on its task, by proposer and fidelity. An evaluation
    that did not train is None: it spent budget too, and a multi-seed baseline run counts its seeds one after
    another. `metric` names the score and `direction` says which way a best-so-far line moves. Scores at different
    fidelities are not comparable (a 2-epoch score is not a 30-epoch one), so the plots draw a line per fidelity."""

    proposer: str
    values: list[float | None]
    baselines: dict[tuple[str, int | None], list[list[float | None]]]
    metric: str = DEFAULT_METRIC
    direction: Direction = "max"
    fidelities: list[int | None] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)


def run_history(archive: Archive, run: dict[str, Any], baselines: Sequence[str]) -> RunHistory:
    """What a run's best-so-far plot is drawn from (`run` needs its id, task and proposer): its own evaluations,
    and the other runs on its task whose proposer is one of `baselines` (the conventional algorithms' names, in
    the order the plot lists them)."""
    scored = "CASE WHEN e.status = 'trained' THEN e.val_accuracy END"
    own = archive.db.execute(
        f"SELECT {scored}, e.fidelity, e.candidate_id FROM evaluations e JOIN candidates c ON c.id = e.candidate_id "
        "WHERE c.run_id = ? ORDER BY e.id",
        [run["id"]],
    ).fetchall()
    per_run: dict[tuple[str, str], list[tuple[int | None, float | None]]] = defaultdict(list)
    for proposer, fidelity, other_run, value in archive.db.execute(
        f"SELECT c.proposer, e.fidelity, c.run_id, {scored} FROM candidates c JOIN evaluations e "
        f"ON e.candidate_id = c.id WHERE c.task = ? AND c.proposer IN ({_IDS}) AND c.run_id IS NOT NULL "
        "AND c.run_id != ? ORDER BY e.id",
        [run["task"], json.dumps(list(baselines)), run["id"]],
    ):
        per_run[(proposer, other_run)].append((fidelity, value))
    # a baseline run trains at one fidelity (its epochs); its failed evaluations, which may not say, count with it
    curves: dict[tuple[str, int | None], list[list[float | None]]] = defaultdict(list)
    for (proposer, _), evaluations in per_run.items():
        fidelity = max((f for f, v in evaluations if v is not None and f is not None), default=None)
        curves[(proposer, fidelity)].append([v for _, v in evaluations])
    ordered = sorted(curves, key=lambda k: (list(baselines).index(k[0]), k[1] or 0))
    task = archive.task_info(run["task"])
    return RunHistory(
        run["proposer"],
        [row[0] for row in own],
        {key: curves[key] for key in ordered},
        metric=task["metric"],
        direction=task["direction"],
        fidelities=[row[1] for row in own],
        candidates=[row[2] for row in own],
    )


def measure_points(
    archive: Archive, task: str, measures: Sequence[str], run: str | None = None
) -> list[dict[str, Any]]:
    """Each trained candidate of a task (or of one run of it) with the `MEASURES` named (keyed as the measures'
    archive columns, `agentarch.search.objectives.MEASURES`: val_accuracy, params, ...), its id, name and run: what the
    Pareto views plot. One query, reading only the measures asked for."""
    only_run = "AND c.run_id = ?" if run else ""
    sql = (
        f"SELECT c.id, c.name, c.run_id, {_picked(measures)} FROM candidates c "
        f"WHERE c.task = ? {only_run} AND c.status = 'trained' ORDER BY c.id"
    )
    return list(archive.db.query(sql, [task, run] if run else [task]))


def measure_rows(archive: Archive, filters: Filters, measures: Sequence[str]) -> list[dict[str, Any]]:
    """Each candidate the filters let through, whatever its status, with its id and the `MEASURES` named (keyed as in
    `measure_points`): what the leaderboard's front sort ranks. One query, reading only those measures."""
    where, args = filters.where()
    return list(archive.db.query(f"SELECT c.id, {_picked(measures)} FROM candidates c {where}", args))


def _picked(measures: Sequence[str]) -> str:
    """The SELECT list of these `MEASURES`, each named as its archive column (`agentarch.search.objectives.MEASURES`)."""
    columns = {"val": "val_accuracy", "test": "test_accuracy"}
    return ", ".join(f"{MEASURES[m].sql} AS {columns.get(m, m)}" for m in dict.fromkeys(measures))


def pareto_points(archive: Archive, run_id: str) -> list[tuple[float, float]]:
    """(params, validation score) of each trained candidate of a run, scored like every listing row."""
    rows = archive.listing("WHERE c.run_id = ? AND e.val_accuracy IS NOT NULL", [run_id])
    return [(float(row["params"]), float(row["val_accuracy"])) for row in rows if row["params"] is not None]


def loss_curves(archive: Archive, candidate_id: int) -> list[tuple[str, list[dict[str, float]]]]:
    """(label, curve) of each evaluation of a candidate: one per fidelity and seed."""
    return [
        (f"evaluation {e['id']} ({e['fidelity']} epochs, seed {e['seed']}{_stage(e)})", e["curve"] or [])
        for e in archive.evaluations(candidate_id)
    ]


def _stage(evaluation: dict[str, Any]) -> str:
    return ", verify" if evaluation.get("stage") == "verify" else ""


def trained_measurements(archive: Archive, task: str) -> list[dict[str, Any]]:
    """Each trained candidate of a task, oldest first, with its scoring evaluation's validation score, what that
    evaluation's smoke run measured (params, FLOPs, latency_ms, proxies as JSON text) and its search-space
    architecture: what agentarch.search.predictor learns from. One query."""
    sql = (
        "SELECT c.id, c.space, c.arch, COALESCE(c.params, e.params) AS params, COALESCE(c.flops, e.flops) AS flops, "
        "e.latency_ms, e.proxies, e.val_accuracy FROM candidates c "
        f"JOIN evaluations e ON e.id = ({SCORING_EVALUATION.format(column='id')}) "
        "WHERE c.task = ? AND c.status = 'trained' AND e.val_accuracy IS NOT NULL ORDER BY c.id"
    )
    return list(archive.db.query(sql, [task]))
