"""Several models in one run: which one writes the next proposal, chosen by a cost-aware UCB bandit.

Each model is an arm (`ModelArm`, parsed from a `--model` spec). A proposal's reward is what it gained over
the score it set out to beat, per dollar it cost:

- **Gain**: its validation score minus its reference score, in the task's direction, clipped at 0; 0 for
  anything not trained (invalid, duplicate, failed, rejected, a model that never answered). The reference is
  its parent's score at the same training fidelity (few-shot proposals have a parent); a proposal without a
  parent is measured against the best score the task had, at that fidelity, when it was recorded, and one
  with nothing before it gains 0 (there is nothing to improve on, so it says nothing about the model).
- **Cost**: its LLM calls' USD (every attempt, repair and analysis of that candidate). A proposal whose calls
  cost nothing (a local model, or one litellm has no price for) is priced by its LLM seconds at
  `local_usd_per_hour` (default $1 an hour, roughly a rented GPU's share). One currency is the only way to
  compare a paid arm with a local one: normalising each arm by itself makes every arm look equally good, and
  ranking paid and local rewards together orders by unit, not by merit. The price is a guess and says so:
  raise it where local compute is dear, lower it where it is idle anyway. LLM seconds are wall time, so a
  local server shared with other work looks slower than it is.

An arm's value is its total gain over its total cost (improvement per dollar; a ratio of sums, i.e. the
cost-weighted mean of its proposals' rewards, so one cheap lucky proposal counts for what it cost). UCB1 wants
rewards in [0, 1], so values are divided by the largest single proposal's reward seen among the arms (which
bounds every value), whatever the metric's units and prices; the index is
`value / largest + exploration * sqrt(2 ln N / n)` over N proposals in all and n of the arm. Dividing by the
best arm's value instead would lock in on whichever model improved first, improvements being rare events
(an arm unlucky in its first tries would face a gap of 1 and hardly be tried again). An outlier (a lucky
proposal that cost almost nothing) makes every value small and the choice closer to round robin: the safe
side. Arms never tried go first, in the order given; proposals still in flight (`pending`) count as visits
without a reward yet, so a batch started at once spreads over the arms. Ties go to `rng`.

The state is the archive itself (`history_from_archive`: `Archive.model_outcomes`), never held in memory
across proposals, so a resumed run (ShinkaEvolve #129 lost it) or one given another list of models
recomputes exactly what it had: a new model is untried, a dropped one no longer chosen. A propose call the
LLM never answered leaves no candidate, but its ledger rows count as a failed proposal of that model (else a
dead server would stay "untried" and be chosen forever); an orphaned call left by a crash counts the same way.
Only the validation score is rewarded, also when the run has several objectives.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentarch.config import SPEC_HELP, ModelArm
from agentarch.errors import UsageError
from agentarch.store.archive import Archive
from agentarch.store.ranking import Direction, sign

EXPLORATION = 0.5
"""UCB1's constant on rewards scaled to [0, 1]. In 60 simulated runs of 200 proposals, 0.5 gave a model that
improves 30% of the time at $0.001 over 80% of the proposals against one that improves 5% of the time at $0.02,
and a model improving 15% of the time 59% on average (40% in the unluckiest run) against one improving 10%;
dividing by the best arm's value instead left the better model 4% in a tenth of the runs. Higher explores
more, lower commits sooner."""

LOCAL_USD_PER_HOUR = 1.0
"""The price of an hour of LLM time for a proposal whose calls cost no USD (a local model)."""

MIN_COST_USD = 1e-9
"""The least a proposal (or an arm's proposals together) is taken to cost, so a gain at no recorded cost is
large, not infinite."""


@dataclass(frozen=True)
class Outcome:
    """One finished proposal as the bandit sees it (built by `history_from_archive`, or by a caller's replay).

    `reference` is the score it set out to beat (None: nothing to beat); `cost_usd` and `llm_seconds` are its
    LLM calls' totals."""

    model: str
    status: str
    val_accuracy: float | None
    reference: float | None
    cost_usd: float
    llm_seconds: float
    direction: Direction

    @property
    def gain(self) -> float:
        """The improvement over the reference in the task's direction, clipped at 0 (0 unless trained)."""
        if self.status != "trained" or self.val_accuracy is None or self.reference is None:
            return 0.0
        return max(0.0, sign(self.direction) * (self.val_accuracy - self.reference))

    def cost(self, local_usd_per_hour: float = LOCAL_USD_PER_HOUR) -> float:
        """Its USD, or (when its calls cost none) its LLM seconds priced at `local_usd_per_hour`."""
        return self.cost_usd if self.cost_usd > 0 else self.llm_seconds * local_usd_per_hour / 3600.0


def value(outcomes: Sequence[Outcome], local_usd_per_hour: float = LOCAL_USD_PER_HOUR) -> float:
    """Improvement per dollar over `outcomes`: total gain over total cost (0 for none)."""
    gain = sum(o.gain for o in outcomes)
    return gain / max(sum(o.cost(local_usd_per_hour) for o in outcomes), MIN_COST_USD) if gain else 0.0


def _reward(outcome: Outcome, local_usd_per_hour: float) -> float:
    """One proposal's improvement per dollar."""
    return outcome.gain / max(outcome.cost(local_usd_per_hour), MIN_COST_USD) if outcome.gain else 0.0


def choose(
    arms: Sequence[ModelArm],
    history: Sequence[Outcome],
    rng: random.Random,
    *,
    exploration: float = EXPLORATION,
    local_usd_per_hour: float = LOCAL_USD_PER_HOUR,
    pending: Mapping[str, int] | None = None,
) -> ModelArm:
    """The arm for the next proposal: the first untried one, else the highest UCB1 index (see the module doc).

    `history` may hold models that are no longer arms (ignored); `pending` counts each model's proposals in
    flight."""
    if not arms:
        raise UsageError(f"no model to choose from; {SPEC_HELP}")
    if exploration < 0 or local_usd_per_hour < 0:
        raise UsageError("the exploration constant and the price of local LLM time cannot be negative")
    pending = pending or {}
    by_arm = _by_model(arms, history)
    visits = {arm.name: len(by_arm[arm.name]) + pending.get(arm.name, 0) for arm in arms}
    for arm in arms:
        if visits[arm.name] == 0:
            return arm
    largest = max((_reward(o, local_usd_per_hour) for arm in arms for o in by_arm[arm.name]), default=0.0)
    total = sum(visits.values())
    index = {
        arm.name: (value(by_arm[arm.name], local_usd_per_hour) / largest if largest > 0 else 0.0)
        + exploration * math.sqrt(2 * math.log(total) / visits[arm.name])
        for arm in arms
    }
    top = max(index.values())
    return rng.choice([arm for arm in arms if index[arm.name] == top])


def summary(
    arms: Sequence[ModelArm], history: Sequence[Outcome], *, local_usd_per_hour: float = LOCAL_USD_PER_HOUR
) -> list[dict[str, Any]]:
    """Per model, for the run summary, `--json` and the run page: the arms in order, then models of the history
    that are no longer arms (`active` False). `reward` is the value the bandit ranks by (improvement per USD)."""
    names = [arm.name for arm in arms]
    names += [name for name in dict.fromkeys(o.model for o in history) if name not in names]
    by_model = {name: [o for o in history if o.model == name] for name in names}
    rows = []
    for name, outcomes in by_model.items():
        trained = sum(o.status == "trained" for o in outcomes)
        rows.append(
            {
                "model": name,
                "active": name in {arm.name for arm in arms},
                "proposals": len(outcomes),
                "trained": trained,
                "valid_rate": round(trained / len(outcomes), 4) if outcomes else None,
                "improvements": sum(o.gain > 0 for o in outcomes),
                "spend_usd": round(sum(o.cost_usd for o in outcomes), 6),
                "llm_seconds": round(sum(o.llm_seconds for o in outcomes), 3),
                "reward": float(f"{value(outcomes, local_usd_per_hour):.6g}"),
            }
        )
    return rows


def history_from_archive(archive: Archive, run_id: str | None, task: str) -> list[Outcome]:
    """The bandit's history for a run (all runs of the task when `run_id` is None), from the archive alone.

    A propose call the LLM never answered is one failed proposal of its model from its first attempt on, its
    later attempts' cost and seconds added to the latest such proposal of that model (an archive from before such
    proposals were recorded as `failed` candidates); an attempt cancelled by a stopping run is not counted."""
    direction = archive.direction(task)
    history: list[Outcome] = []
    unanswered: dict[str, int] = {}  # model -> index in history of its latest unanswered proposal
    for row in archive.model_outcomes(task, run_id):
        if row["candidate_id"] is None and row["status"] == "cancelled":
            continue  # cut because the run stopped, not the model's failure: its proposal is asked again on resume
        cost, seconds = float(row["cost_usd"] or 0.0), float(row["llm_seconds"] or 0.0)
        if row["candidate_id"] is None and row["attempt"] != 1 and row["model"] in unanswered:
            i = unanswered[row["model"]]
            before = history[i]
            history[i] = Outcome(
                before.model, "failed", None, None, before.cost_usd + cost, before.llm_seconds + seconds, direction
            )
            continue
        if row["candidate_id"] is None:
            unanswered[row["model"]] = len(history)
            history.append(Outcome(row["model"], "failed", None, None, cost, seconds, direction))
            continue
        history.append(
            Outcome(row["model"], row["status"], row["val_accuracy"], row["reference"], cost, seconds, direction)
        )
    return history


def _by_model(arms: Sequence[ModelArm], history: Sequence[Outcome]) -> dict[str, list[Outcome]]:
    grouped: dict[str, list[Outcome]] = {arm.name: [] for arm in arms}
    for outcome in history:
        if outcome.model in grouped:
            grouped[outcome.model].append(outcome)
    return grouped
