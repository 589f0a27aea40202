"""The run's summary: the object `agentarch run --json` prints last, from the outcomes of its proposals.

Its own module because it reads only finished outcomes (and the verify results), never the graph or the archive:
the run builds it once the scheduler stops, whatever stopped it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from agentarch.search.objectives import Goals
from agentarch.store import ranking
from agentarch.store.ranking import Direction
from agentarch.store.scoring import TRUSTED
from agentarch.store.summaries import best_by_validation, status_counts

IN_SPACE_COUNTS = ("asks", "valid", "invalid", "no_answer", "repeats", "fallbacks", "schema_sent")
"""What each --propose-in proposal's outcome counts of its query (`in_space`), summed by `in_space_stats`."""


def summarize(
    run_id: str,
    status: str,
    outcomes: list[dict[str, Any]],
    stopped_by: str | None,
    direction: Direction = "max",
    metric: str = "accuracy",
    goals: Goals | None = None,
    verified: dict[int, dict[str, Any]] | None = None,
    llm_seconds: float | None = None,
) -> dict[str, Any]:
    """The object `agentarch run --json` prints last; `best` is the best by validation in the task's `direction`
    (`agentarch.loop.run` passes it and the task's `metric`, which the scores in `best` are).

    With several objectives it adds the run's Pareto front (trained candidates that meet the constraints and
    that no other dominates) and its hypervolume against a reference point it states; with --verify-top the
    verify-stage results, best first, apart from the explore results; with --propose-in, `in_space`: what its
    queries came to (`in_space_stats`). `repaired` counts the candidates trained after a repair, `repair_attempts`
    every repair the LLM was asked for; `llm_seconds` (when given) is the time the run's LLM calls took, what a local
    model costs where its dollars are zero.
    """
    found = status_counts(o["status"] for o in outcomes)
    counts = {k: found.get(k, 0) for k in ("trained", "invalid", "duplicate", "failed", "rejected", "screened")}
    counts["failed"] += found.get("timeout", 0)
    best = best_by_validation(
        outcomes, lambda o: o.get("val_accuracy") if o["status"] == "trained" else None, direction
    )
    summary: dict[str, Any] = {
        "run_id": run_id,
        "status": status,
        "proposed": len(outcomes),
        **counts,
        "repaired": sum(1 for o in outcomes if o.get("repaired")),  # repairs that worked: trained after a repair
        "repair_attempts": sum(int(o.get("repairs") or 0) for o in outcomes),  # repair calls asked, worked or not
        "best": {"id": best["id"], "test_accuracy": best["test_accuracy"]} if best else None,
        "metric": metric,
        "cost_usd": round(sum(o.get("cost_usd") or 0.0 for o in outcomes), 6),
        "stopped_by": stopped_by,
    }
    if llm_seconds is not None:  # every LLM call's time: a local model's cost, beside the dollars
        summary["llm_seconds"] = round(llm_seconds, 1)
    if goals is not None and goals.multi:
        trained = [o for o in outcomes if o["status"] == "trained" and o.get("id")]
        reference = goals.reference(trained)
        summary["objectives"] = goals.describe()
        summary["front"] = [
            {"id": o["id"], **{obj.column: o.get(obj.column) for obj in goals.objectives}} for o in goals.front(trained)
        ]
        summary["hypervolume"] = goals.hypervolume(trained, reference)
        summary["reference"] = (
            None if reference is None else [obj.key(r) for obj, r in zip(goals.objectives, reference)]
        )
    edited = Counter(o["edit"] for o in outcomes if o.get("edit"))
    if set(edited) - {"full"}:
        summary["edits"] = dict(edited)
    in_space = in_space_stats(outcomes)
    if in_space is not None:
        summary["in_space"] = in_space
    if verified:
        summary["verified"] = ranking.ranked(
            [v for v in verified.values() if v["status"] == "trained"], lambda v: v["val_accuracy"], direction
        )
    return summary


def mark_scoring(
    summary: dict[str, Any],
    outcomes: list[dict[str, Any]],
    kinds: dict[int, str | None],
    direction: Direction = "max",
) -> dict[str, Any]:
    """Say in the summary how its picks were scored, from `kinds` (candidate id -> `scoring_kind`, as
    `Archive.scoring_kinds` reads them): `best` and each `verified` entry get their `scoring`, `unverified` counts
    the run's trained candidates scored in their own process, and when the best is one of those while others are
    not, `best_verified` names the best of the others, so a best-of-run never passes an unverified score for a
    verified one. Returns `summary`, changed."""
    trained = [o for o in outcomes if o["status"] == "trained" and o.get("id") is not None]
    checked = [o for o in trained if kinds.get(o["id"]) != TRUSTED]
    if len(checked) < len(trained):
        summary["unverified"] = len(trained) - len(checked)
    for pick in [summary.get("best"), *(summary.get("verified") or [])]:
        if pick:
            pick["scoring"] = kinds.get(pick["id"])
    if summary.get("best") and summary["best"]["scoring"] == TRUSTED and checked:
        found = best_by_validation(checked, lambda o: o.get("val_accuracy"), direction)
        if found is not None:
            summary["best_verified"] = {"id": found["id"], "test_accuracy": found["test_accuracy"]}
    return summary


def in_space_stats(outcomes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the in-space queries of a run (--propose-in) came to, over the proposals that kept one: `queries`,
    the model's `asks` (calls) and their `valid`, `invalid` and `no_answer` ends, `repeats` (valid but already
    proposed), `fallbacks` (queries that took a uniform sample instead), `schema_sent` (calls that carried the JSON
    schema), `valid_rate` (valid answers per call) and `fallback_reasons` by kind. None when no proposal asked."""
    asked = [o["in_space"] for o in outcomes if o.get("in_space")]
    if not asked:
        return None
    totals = {key: sum(int(q.get(key) or 0) for q in asked) for key in IN_SPACE_COUNTS}
    reasons = Counter(q["outcome"] for q in asked if q.get("fallbacks"))
    return {
        "queries": len(asked),
        **totals,
        "valid_rate": totals["valid"] / totals["asks"] if totals["asks"] else None,
        "fallback_reasons": dict(reasons),
    }
