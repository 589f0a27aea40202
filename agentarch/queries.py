"""Read-only views over an archive for browsing and reporting: leaderboard, search, lineage, runs' progress.

The web UI, the static report and few-shot selection ask these functions and write no SQL of their own.
Three rules they all build on live elsewhere: which score is better for a task (`agentarch.ranking`: every
ORDER BY and MAX over scores here goes through its `sql_key`, so a lower-is-better metric ranks lowest first),
which evaluation a candidate's scores come from (`archive.SCORING_EVALUATION`) and what a listing row holds
(`Archive.listing`, with the task's `metric` and `direction`). The indexes these queries need
are created by the archive's schema migrations (schema 6).

Each function is a fixed handful of queries whatever the archive's size, and every list pages with
LIMIT/OFFSET (`limit=None` means all), so pages stay fast on archives of tens of thousands of candidates.
Lists of ids travel as one JSON parameter (`json_each`), so their length never meets SQLite's cap on
placeholders.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agentarch.archive import DEFAULT_METRIC, SCORING_EVALUATION, TASK_JOIN, Archive, ArchiveError
from agentarch.proposers.baselines import ALGOS
from agentarch.ranking import Direction, sql_key, sql_sign

_BEST_VAL = SCORING_EVALUATION.format(column="val_accuracy")
_IDS = "SELECT value FROM json_each(?)"  # `IN (_IDS)` with json.dumps(ids) as its one argument


def _all(limit: int | None) -> int:
    """SQLite's LIMIT for `limit` (-1: no limit)."""
    return -1 if limit is None else limit


def _count(archive: Archive, sql: str, args: Sequence[Any] = ()) -> int:
    return int(archive.db.execute(sql, args).fetchone()[0])


# -- candidates -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """What narrows a list of candidates (None: no restriction); `proposer` matches the proposer or the LLM model."""

    task: str | None = None
    proposer: str | None = None
    status: str | None = None
    run: str | None = None

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
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args


def leaderboard(archive: Archive, filters: Filters, limit: int | None, offset: int = 0) -> list[dict[str, Any]]:
    """Listing rows ranked by validation score in each task's direction, best first; untrained candidates last;
    ties newest first. (Unfiltered by task, the tasks interleave by their signed scores: compare within a task.)

    The page is chosen first on (id, accuracy) alone, out of the covering index, and only its rows are
    then read in full: sorting whole candidate rows to skip thousands of them would read every candidate.
    """
    where, args = filters.where()
    page = (
        f"(SELECT c.id, {sql_key(_BEST_VAL, 'task_row.direction')} AS best FROM candidates c {TASK_JOIN} {where} "
        "ORDER BY best IS NULL, best DESC, c.id DESC LIMIT ? OFFSET ?) AS page JOIN candidates c ON c.id = page.id"
    )
    tail = "ORDER BY page.best IS NULL, page.best DESC, c.id DESC"
    return list(archive.listing(tail, [*args, _all(limit), offset], source=page))


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


def search(archive: Archive, query: str, limit: int | None, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """Full-text search over names, code and analyses (SQLite FTS5 syntax): how many candidates match, and
    one page of their listing rows, best match first."""
    try:
        total = _count(archive, "SELECT COUNT(*) FROM candidates_fts WHERE candidates_fts MATCH ?", [query])
        ids = [
            row[0]
            for row in archive.db.execute(
                "SELECT rowid FROM candidates_fts WHERE candidates_fts MATCH ? ORDER BY rank LIMIT ? OFFSET ?",
                [query, _all(limit), offset],
            )
        ]
    except sqlite3.OperationalError as err:
        raise ArchiveError(f'cannot search for {query!r} ({err}); quote phrases, e.g. "depthwise conv"') from None
    found = {row["id"]: row for row in archive.listing(f"WHERE c.id IN ({_IDS})", [json.dumps(ids)])}
    return total, [found[i] for i in ids if i in found]


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


@dataclass(frozen=True)
class RunHistory:
    """Validation score at each evaluation of a run, in the order they were recorded, and the same for each
    other baseline run on its task, by proposer. An evaluation that did not train is None: it spent budget too,
    and a multi-seed baseline run counts its seeds one after another. `metric` names the score and `direction`
    says which way a best-so-far line moves."""

    proposer: str
    values: list[float | None]
    baselines: dict[str, list[list[float | None]]]
    metric: str = DEFAULT_METRIC
    direction: Direction = "max"


def run_history(archive: Archive, run: dict[str, Any]) -> RunHistory:
    """What a run's best-so-far plot is drawn from (`run` needs its id, task and proposer)."""
    scored = "CASE WHEN e.status = 'trained' THEN e.val_accuracy END"
    values = [
        row[0]
        for row in archive.db.execute(
            f"SELECT {scored} FROM evaluations e JOIN candidates c ON c.id = e.candidate_id "
            "WHERE c.run_id = ? ORDER BY e.id",
            [run["id"]],
        )
    ]
    per_run: dict[str, dict[str, list[float | None]]] = defaultdict(lambda: defaultdict(list))
    for proposer, other_run, value in archive.db.execute(
        f"SELECT c.proposer, c.run_id, {scored} FROM candidates c JOIN evaluations e ON e.candidate_id = c.id "
        f"WHERE c.task = ? AND c.proposer IN ({_IDS}) AND c.run_id IS NOT NULL AND c.run_id != ? ORDER BY e.id",
        [run["task"], json.dumps(ALGOS), run["id"]],
    ):
        per_run[proposer][other_run].append(value)
    baselines = {p: list(per_run[p].values()) for p in ALGOS if p in per_run}
    task = archive.task_info(run["task"])
    return RunHistory(run["proposer"], values, baselines, metric=task["metric"], direction=task["direction"])


def pareto_points(archive: Archive, run_id: str) -> list[tuple[float, float]]:
    """(params, validation score) of each trained candidate of a run, scored like every listing row."""
    rows = archive.listing("WHERE c.run_id = ? AND e.val_accuracy IS NOT NULL", [run_id])
    return [(float(row["params"]), float(row["val_accuracy"])) for row in rows if row["params"] is not None]


def loss_curves(archive: Archive, candidate_id: int) -> list[tuple[str, list[dict[str, float]]]]:
    """(label, curve) of each evaluation of a candidate: one per fidelity and seed."""
    return [
        (f"evaluation {e['id']} ({e['fidelity']} epochs, seed {e['seed']})", e["curve"] or [])
        for e in archive.evaluations(candidate_id)
    ]
