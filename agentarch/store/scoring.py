"""Which evaluation a candidate's scores come from, and the listing row built on it: the one scoring rule every
read of the archive and every query shares.

A candidate may have several evaluations (a longer training, a verify retraining, several seeds); every ranked or
listed view scores it by the same one (`SCORING_EVALUATION`), in its task's direction (`TASK_JOIN` and
`agentarch.store.ranking`), and builds its row the same way (`Listing.listing`). Its own module so that the
archive's reads and the browsing queries ask one rule instead of each writing theirs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from agentarch.store.handle import Handle
from agentarch.store.ranking import sql_order, sql_sign

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
           COALESCE(task_row.metric, '{DEFAULT_METRIC}') AS metric, COALESCE(task_row.direction, 'max') AS direction
    FROM {{source}}
    LEFT JOIN evaluations e ON e.id = ({SCORING_EVALUATION.format(column="id")})
    {TASK_JOIN}
    {{tail}}"""


_BEST_VAL = SCORING_EVALUATION.format(column="val_accuracy")


def _scored(column: str) -> str:
    """SQL for one column of candidate `c`'s scoring evaluation (NULL when it has none)."""
    return SCORING_EVALUATION.format(column=column)


class Listing(Handle):
    """The part of `Archive` that builds listing rows (`listing`), for the reads of `agentarch.store.reads` and the
    queries beside them."""

    def listing(
        self, tail: str = "", args: Sequence[Any] = (), source: str = "candidates c"
    ) -> Iterator[dict[str, Any]]:
        """Listing rows: each candidate's fields (not its code) with its scoring evaluation's scores, None where it
        has none. Its size (params, FLOPs) is its own, from the smoke run, else that evaluation's.

        The one place a listing row is built, for the reads of agentarch.store.reads and the browsing queries:
        `source` is the FROM clause (a candidate aliased `c`), `tail` follows the join (WHERE, ORDER BY, LIMIT; the
        evaluation is `e`), and `args` fill their placeholders in that order.
        """
        for row in self.db.query(_LISTING.format(source=source, tail=tail), args):
            row["parents"] = json.loads(row["parents"]) if row["parents"] else []  # its one JSON column
            yield row
