"""Which evaluation a candidate's scores come from, how they were scored, and the listing row built on both: the one
scoring rule every read of the archive and every query shares.

A candidate may have several evaluations (a longer training, a verify retraining, several seeds); every ranked or
listed view scores it by the same one (`SCORING_EVALUATION`), in its task's direction (`TASK_JOIN` and
`agentarch.store.ranking`), and builds its row the same way (`Listing.listing`). Its own module so that the
archive's reads and the browsing queries ask one rule instead of each writing theirs.

Whether a score can be believed is the other half of that rule, and lives here too (`scoring_kind`, in Python, and
`scoring_sql`, the same rule in SQL, so a listing can filter and count by it): `graph` (verified: the exported ONNX
graph run by the clean evaluator, where no candidate code runs), `table` (a benchmark table's answer: no candidate
ran, so nothing to verify) or `trusted` (unverified: the candidate's own process computed its outputs, the user's
`--scoring trusted`, and every row from before graph scoring). It is read from the evaluation's `timings` JSON and
`isolation`, so no schema change marks old rows: they are unverified, which is what they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agentarch.store.handle import _IDS, Handle
from agentarch.store.ranking import sql_order, sql_sign

GRAPH, TABLE, TRUSTED = "graph", "table", "trusted"
"""The ways an evaluation's scores were computed (`scoring_kind`); only `TRUSTED` is unverified."""
TABLE_ISOLATION = "table"
"""The `isolation` a benchmark table's answer is recorded with (agentarch/loop/baseline.py): no process ran."""
UNVERIFIED_WHY = "scored in the candidate's own process (--scoring trusted)"
"""What every page, listing and report says an unverified score is, beside its mark."""
VERIFIED_HINT = "--verified leaves them out"
"""How a listing that holds unverified rows tells a person to see the others alone (the CLI's flag; the web's
`scoring=verified`)."""


def scoring_kind(evaluation: dict[str, Any] | None) -> str | None:
    """How an evaluation's scores were computed: `GRAPH` (verified), `TABLE` (a table's answer) or `TRUSTED`
    (unverified; an older row without `timings["scoring"]` too); None for no evaluation. `scoring_sql` is the same
    rule for SQL."""
    if not evaluation:
        return None
    timings = evaluation.get("timings")
    if isinstance(timings, dict) and timings.get("scoring") == GRAPH:
        return GRAPH
    return TABLE if evaluation.get("isolation") == TABLE_ISOLATION else TRUSTED


def is_verified(evaluation: dict[str, Any] | None) -> bool:
    """Whether an evaluation's scores came from its graph, run where no candidate code runs (graph scoring)."""
    return scoring_kind(evaluation) == GRAPH


def scoring_sql(prefix: str = "") -> str:
    """`scoring_kind` as SQL over an evaluation row's columns (`prefix` is its alias and a dot, e.g. "e."; "" inside
    a subquery of `evaluations`). Timings that are not JSON read as no key, as `_decode` would fail on them."""
    timings = f"CASE WHEN json_valid({prefix}timings) THEN {prefix}timings END"
    return (
        f"CASE WHEN json_extract({timings}, '$.scoring') = '{GRAPH}' THEN '{GRAPH}' "
        f"WHEN {prefix}isolation = '{TABLE_ISOLATION}' THEN '{TABLE}' ELSE '{TRUSTED}' END"
    )


_SCORING_IN = (
    "(SELECT {{column}} FROM evaluations WHERE candidate_id = c.id AND status = 'trained' "
    "ORDER BY fidelity DESC, {order}, id LIMIT 1)"
)
SCORING_EVALUATION = (
    f"CASE {sql_sign('(SELECT direction FROM tasks WHERE name = c.task)')} "
    f"WHEN 1 THEN {_SCORING_IN.format(order=sql_order('val_accuracy', 'max'))} "
    f"ELSE {_SCORING_IN.format(order=sql_order('val_accuracy', 'min'))} END"
)
"""The evaluation a candidate's scores come from, as SQL over a candidate aliased `c`: among its trained
evaluations the highest fidelity (the longest training), then the best validation score by the task's direction
(`agentarch.store.ranking`), then the earliest. `{column}` is what it returns (`id` to join it, `val_accuracy` to rank
by it). It is a CASE over the two directions, each written with its direction known, because SQLite lets no
ORDER BY term of a subquery read the outer row, and so that schema 6's index idx_evaluations_scored delivers the
order and holds every column read: evaluation rows, which carry whole loss curves, are never read."""

TASK_JOIN = "LEFT JOIN tasks task_row ON task_row.name = c.task"
"""The `tasks` row of candidate `c` as `task_row` (all NULL for a task the archive has no row for): where a
listing's metric and direction come from, and what `sql_key(..., "task_row.direction")` ranks by."""

DEFAULT_METRIC = "accuracy"
"""The metric of a task the archive has no `tasks` row for: every score was an accuracy before schema 7."""

_LISTING = f"""
    SELECT c.id, c.created_at, c.run_id, c.task, c.name, c.proposer, c.model, c.parents, c.space, c.arch, c.status,
           c.reason, c.duplicate_of, c.dedup_level, COALESCE(c.params, e.params) AS params,
           COALESCE(c.flops, e.flops) AS flops, e.fidelity, e.seed, e.val_accuracy, e.test_accuracy, e.train_seconds,
           e.latency_ms, e.peak_memory_mb, e.stage, c.island,
           CASE WHEN e.id IS NOT NULL THEN {scoring_sql("e.")} END AS scoring,
           COALESCE(task_row.metric, '{DEFAULT_METRIC}') AS metric, COALESCE(task_row.direction, 'max') AS direction
    FROM {{source}}
    LEFT JOIN evaluations e ON e.id = ({SCORING_EVALUATION.format(column="id")})
    {TASK_JOIN}
    {{tail}}"""


_BEST_VAL = SCORING_EVALUATION.format(column="val_accuracy")


def _scored(column: str) -> str:
    """SQL for one column of candidate `c`'s scoring evaluation (NULL when it has none)."""
    return SCORING_EVALUATION.format(column=column)


SCORED_KIND = _scored(scoring_sql())
"""Candidate `c`'s scoring evaluation's `scoring_kind` as SQL (NULL when it has none): what filters and counts read."""


@dataclass(frozen=True)
class ScoringMix:
    """How many of a listing's (or a pick's) candidates have scores, and how many of those are unverified: what it
    says beside its rows so that the two kinds are never mixed silently."""

    unverified: int
    scored: int

    @property
    def mixed(self) -> bool:
        """Both kinds together: where a person most needs telling which is which."""
        return 0 < self.unverified < self.scored

    def note(self, where: str = "", hint: str = VERIFIED_HINT) -> str | None:
        """The line to say (None when no row is unverified): "⚠ 3 of 10 scored rows are unverified, ..."."""
        if not self.unverified:
            return None
        which = f"all {self.scored}" if self.unverified == self.scored else f"{self.unverified} of {self.scored}"
        return f"⚠ {which} scored rows{where} are unverified, {UNVERIFIED_WHY}; {hint}"


class Listing(Handle):
    """The part of `Archive` that builds listing rows (`listing`), for the reads of `agentarch.store.reads` and the
    queries beside them."""

    def listing(
        self, tail: str = "", args: Sequence[Any] = (), source: str = "candidates c"
    ) -> Iterator[dict[str, Any]]:
        """Listing rows: each candidate's fields (not its code) with its scoring evaluation's scores, None where it
        has none, and how they were scored (`scoring`: `scoring_kind`, None without scores; `unverified`: trusted).
        Its size (params, FLOPs) is its own, from the smoke run, else that evaluation's.

        The one place a listing row is built, for the reads of agentarch.store.reads and the browsing queries:
        `source` is the FROM clause (a candidate aliased `c`), `tail` follows the join (WHERE, ORDER BY, LIMIT; the
        evaluation is `e`), and `args` fill their placeholders in that order.
        """
        for row in self.db.query(_LISTING.format(source=source, tail=tail), args):
            row["parents"] = json.loads(row["parents"]) if row["parents"] else []  # its one JSON column
            row["unverified"] = row["scoring"] == TRUSTED
            yield row

    def scoring_kinds(self, candidate_ids: Sequence[int]) -> dict[int, str | None]:
        """id -> how each candidate's scores were computed (`scoring_kind` of its scoring evaluation; None without
        one), for the candidates that exist among `candidate_ids`: what a best-of statement marks its pick by."""
        rows = self.db.execute(
            f"SELECT c.id, {SCORED_KIND} FROM candidates c WHERE c.id IN ({_IDS})", [json.dumps(list(candidate_ids))]
        )
        return dict(rows.fetchall())
