"""A predictor of a candidate's validation score from what is known before it trains, learned from the archive.

Per task, a `RankModel` maps what the smoke stage measured (log parameters, log FLOPs, log latency, the zero-cost
proxies of sandbox/proxies.py), for a candidate rendered from a search space its architecture (the operation on
each nb201 edge one-hot; each setting of the macro, MLP and GNN spaces; the mixer space's width, depth and mixer per
layer), and for a candidate with an exported graph (graph scoring) a summary of the graph's features
(agentarch/evaluation/graphs/features.py, read through `graph_summary`: depth, widths, normalizations and
activations per layer, residuals, attention, FLOPs per parameter), to the candidate's rank among the task's
trained ones: a ridge prior on size plus shallow boosted trees on the rest, read back in the task's metric
(`val_accuracy`). The graph is the one encoding every network has, so an LLM's module outside any space is
predicted from what it is, not only from its size; benchmarks/graph_predictor.md measures how much that helps and
why the model is this one. A task's own tens of candidates are too few to learn much from a graph, so the model
may also learn from the archive's other tasks (`pooled_examples`: each task's candidates as their rank within
that task, so no task's scale or direction leaks into another's), where a cross-validation on the task's own
examples alone says that helps (`chosen`). It learns from every trained candidate of the task, whoever proposed
it; a feature a candidate lacks is missing, never zero: a candidate scored in its own process (`--scoring
trusted`), or whose graph the retention policy dropped (agentarch/store/graphs.py), is learned from and predicted
with the other features.

Where the features come from: a trained candidate's from its evaluation row and its kept trained graph (read once
per process and graph, `kept_graph_features`); a candidate being screened from its smoke result, whose
`graph_features` the host computed from the graph the smoke stage exported
(agentarch/evaluation/graphs/scoring.py, `smoke_graph`). Both graphs are one architecture (the host checks their
digests), and the features read only its structure, never a weight's value, so they agree.

The search loop screens smoke-tested candidates with it: build it once per run (`Predictor.fit`), `refit` as
trained candidates arrive (it refits only when any task has new ones), and rank candidates by `key`, which
follows the task's direction (`agentarch.store.ranking`); `features_of` reads a smoke result as it reads an
evaluation row. `held_out` says how far to trust it: the rank correlation of its predictions with the true
scores on candidates it was not fitted on (k-fold cross-validation).
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from agentarch.errors import AgentarchError
from agentarch.isolation.protocol import PROXY_NAMES
from agentarch.search.spaces import gnn, macro, mixer, mlp, nb201
from agentarch.search.spaces.base import SettingsString, SpaceError
from agentarch.store import browse, measurements, ranking
from agentarch.store.archive import Archive
from agentarch.store.handle import ArchiveError
from agentarch.store.ranking import Direction

MIN_TRAINED = 8
"""Trained candidates a task needs before a predictor is fitted: fewer say nothing a tree could generalise."""

MEASURED = ("log_params", "log_flops", "log_latency_ms", "synflow", "log_grad_norm", "naswot")
"""The features every candidate can have, from its smoke run; search-space features follow them."""

GRAPH_PREFIX = "graph."
"""The names of the graph's features (agentarch/evaluation/graphs/features.py FEATURES) all start so."""
POOL_MAX = 2000
"""Other tasks' examples a predictor pools at most (the newest): a refit's cost stays bounded in a large archive."""
INNER_FOLDS = 5
"""The folds of the cross-validation on a task's own examples that decides whether pooling helps (`chosen`)."""
GRAPH_CACHE = 4096
"""Kept graphs whose features a process remembers (by sha256, so a refit reads only new graphs): about 1 kB each."""

_SETTINGS: dict[str, SettingsString] = {"macro": macro.ARCH, "mlp": mlp.ARCH, "gnn": gnn.ARCH, "gnnpool": gnn.POOL_ARCH}


class PredictorError(AgentarchError, ValueError):
    """No predictor can be fitted for a task yet; the message says why."""


# -- features -----------------------------------------------------------------------------------


def features_of(evaluation: Mapping[str, Any], candidate: Mapping[str, Any]) -> dict[str, float]:
    """The features of one candidate: from an evaluation row or a smoke result (params, flops, latency_ms, proxies
    as a dict or its JSON text) and the candidate row (its params and FLOPs where the evaluation lacks them, its
    space and arch). Only features it has are present."""
    features: dict[str, float] = {}
    params = _first(evaluation, candidate, "params")
    flops = _first(evaluation, candidate, "flops")
    latency = evaluation.get("latency_ms")
    if params is not None and params > 0:
        features["log_params"] = math.log10(params)
    if flops is not None and flops >= 0:
        features["log_flops"] = math.log10(flops + 1)
    if latency is not None and latency > 0:
        features["log_latency_ms"] = math.log10(latency)
    scores = _proxies(evaluation.get("proxies"))
    for name in PROXY_NAMES:
        value = scores.get(name)
        if value is None or not math.isfinite(value):
            continue
        if name == "grad_norm":
            if value > 0:
                features["log_grad_norm"] = math.log10(value)
        else:
            features[name] = value
    features.update(space_features(candidate.get("space"), candidate.get("arch")))
    features.update(_graph_part(evaluation.get("graph_features")))
    return features


def _first(evaluation: Mapping[str, Any], candidate: Mapping[str, Any], key: str) -> float | None:
    value = evaluation.get(key)
    return value if value is not None else candidate.get(key)


def _proxies(value: Any) -> dict[str, float]:
    """Proxy scores from a dict or the archive's JSON text; anything else is no proxies."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, dict):
        return {}
    return {k: float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _graph_part(value: Any) -> dict[str, float]:
    """The graph's features from a smoke result or an example (a name -> number mapping); NaN (a feature that does
    not apply to this graph) and anything else that is not a finite number of a graph feature is left out."""
    if not isinstance(value, Mapping):
        return {}
    return {
        name: float(v)
        for name, v in value.items()
        if isinstance(name, str)
        and name.startswith(GRAPH_PREFIX)
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


def space_features(space: str | None, arch: str | None) -> dict[str, float]:
    """The architecture as numbers: nb201's operation per edge one-hot; each macro, MLP and GNN setting (a number as
    itself, a choice one-hot); the mixer space's width, depth and mixer per layer one-hot. Empty for a candidate
    of no space (LLM code) or an architecture its space cannot read."""
    if not space or not arch:
        return {}
    try:
        if space == "nb201":
            ops = nb201.edges(arch)
            return {
                f"nb201.{i}>{j}.{op}": float(chosen == op)
                for (i, j), chosen in zip(nb201.EDGES, ops)
                for op in nb201.OPS
            }
        if space == "mixer":
            width, layers = mixer.parse(arch)
            features = {"mixer.d_model": float(width), "mixer.layers": float(len(layers))}
            for position in range(mixer.MAX_LAYERS):
                chosen = layers[position] if position < len(layers) else None
                features.update({f"mixer.{position}.{m}": float(chosen == m) for m in mixer.MIXERS})
            return features
        if space in _SETTINGS:
            settings_string = _SETTINGS[space]
            settings = settings_string.parse(arch)
            features = {}
            for field, (_, choices) in settings_string.fields.items():
                if isinstance(choices[0], int):
                    features[f"{space}.{field}"] = float(settings[field])
                else:
                    features.update({f"{space}.{field}.{c}": float(settings[field] == c) for c in choices})
            return features
    except SpaceError:
        return {}
    return {}


# -- what the archive knows ---------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One trained candidate as the predictor sees it."""

    candidate_id: int
    features: dict[str, float]
    score: float


def examples(archive: Archive, task: str) -> list[Example]:
    """Every trained candidate of `task` with a finite validation score, oldest first (an archive written before the
    host refused infinite scores may hold one, which no model can be fitted on), with its kept graph's features."""
    return [
        Example(
            int(row["id"]),
            features_of({**row, "graph_features": kept_graph_features(archive, row.get("graph_sha256"))}, row),
            float(row["val_accuracy"]),
        )
        for row in measurements.trained_measurements(archive, task)
        if math.isfinite(float(row["val_accuracy"]))
    ]


_remembered: OrderedDict[str, tuple[float, ...] | None] = OrderedDict()
_remembered_lock = threading.Lock()


def kept_graph_features(archive: Archive, digest: str | None) -> dict[str, float] | None:
    """The features of the graph the archive keeps under this sha256; None where there is none (no graph, or the
    retention policy dropped it) or it cannot be read (its checks refuse it, its file changed): the candidate is
    then learned from without them. Remembered per process by sha256 (the name says the content; GRAPH_CACHE of
    them), so refitting reads only new graphs; a graph dropped since counts as none, remembered or not, so every
    process agrees on what an archive holds."""
    try:
        if not digest or not archive.graph_kept(digest):
            return None
    except ArchiveError:  # not a sha256
        return None
    from agentarch.evaluation.graphs.checks import GraphRejected  # onnx: imported where a graph is read
    from agentarch.evaluation.graphs.features import FEATURES, graph_features

    with _remembered_lock:
        if digest in _remembered:
            _remembered.move_to_end(digest)
            values = _remembered[digest]
            return None if values is None else dict(zip(FEATURES, values))
    try:
        found: dict[str, float] | None = graph_features(archive.graph_bytes(digest))
    except (GraphRejected, ArchiveError):
        found = None
    with _remembered_lock:
        _remembered[digest] = None if found is None else tuple(found[name] for name in FEATURES)
        while len(_remembered) > GRAPH_CACHE:
            _remembered.popitem(last=False)
    return found


def shortfall(found: Sequence[Example], task: str) -> str | None:
    """Why no predictor can be fitted on these examples, or None when one can."""
    if len(found) < MIN_TRAINED:
        return (
            f"{task} has {len(found)} trained candidate(s) in the archive; the predictor needs at least {MIN_TRAINED}"
        )
    if len({e.score for e in found}) < 2:
        return f"every trained candidate of {task} has the same validation score; there is nothing to learn"
    return None


def pooled_examples(archive: Archive, task: str) -> list[Example]:
    """The archive's other tasks' trained candidates, for a predictor of `task` to learn from too: each scored by
    its goodness rank within its own task (0 to 1, best 1; ties share a rank), so a loss and an accuracy, or an
    easy and a hard task, mean the same; a task `shortfall` objects to is left out; the newest POOL_MAX.

    Why: a task's own archive holds tens of trained candidates, too few to learn what a graph says beyond size,
    while what a depth, a width or a residual ratio does to a short training is much the same on another task
    (benchmarks/graph_predictor.md: on digits' LLM-style networks the graph summary helps only pooled)."""
    found: list[Example] = []
    for other in browse.tasks(archive):
        mine = examples(archive, other) if other != task else []
        if mine and not shortfall(mine, other):
            found += as_ranks(mine, archive.direction(other))
    return sorted(found, key=lambda e: e.candidate_id)[-POOL_MAX:]


def as_ranks(found: Sequence[Example], direction: Direction) -> list[Example]:
    """These examples scored by their goodness rank among them (0 to 1, best 1): a task's examples as a pool."""
    ranks = _goodness_ranks(np.array([e.score for e in found]), direction)
    return [Example(e.candidate_id, e.features, float(r)) for e, r in zip(found, ranks)]


def _goodness_ranks(scores: np.ndarray, direction: Direction) -> np.ndarray:
    """Each score's rank among them, better higher, over their count (ties share their mean rank)."""
    return stats.rankdata(ranking.sign(direction) * scores) / len(scores)


# -- the model ----------------------------------------------------------------------------------

SIZE = ("log_params", "log_flops", "log_latency_ms")
"""The size prior's features: after a short training a network's score follows its size first."""
PRIOR_ALPHAS = (0.1, 1.0, 10.0, 100.0)
"""The size prior's ridge penalties, one picked by leave-one-out on the fitted examples (RidgeCV)."""
SUMMARY = tuple(
    f"graph.summary.{name}"
    for name in (
        "log2_depth", "log2_linear_depth", "width_log2_mean", "width_log2_median", "width_log2_std",
        "norms_per_linear", "activations_per_linear", "saturating_per_linear",
        "residuals_per_linear_depth", "attention", "gates", "conv_share", "pools", "log_flops_per_param",
        "log_activations", "message_layers", "aggregation_mean_share", "aggregation_max_share", "edge_attention",
        "degree_norms", "readout_mean_share", "readout_max_share", "log_flops_per_edge",
    )
)  # fmt: skip
"""The graph as the model reads it (`graph_summary`): a few structural numbers, comparable across architectures."""
_SATURATING = ("Sigmoid", "Tanh", "HardSigmoid", "Softsign")


def graph_summary(features: Mapping[str, float]) -> dict[str, float]:
    """The graph's features (features.py's hundred-odd columns) as SUMMARY: depth and linear depth (log2), the
    layers' widths (log2 mean, median, spread), per linear map the normalizations and each kind of activation,
    residual additions per linear step, whether it has attention (a product of two computed tensors) or gates,
    the share of convolutions, pools, FLOPs per parameter and activation volume (log10); for a network of graphs
    its message passing: layers, the shares of mean and max among its aggregations (the rest sum), whether it has
    attention over edges and degree normalisation, its readout's shares of mean and max, FLOPs per edge (log10); 0
    for a network of examples, missing for features read before features.py counted them. Empty without a graph.

    Why not the raw columns: tens of trained candidates per task cannot fit a hundred structural columns, and an
    operator count learned on one family of networks (a space's cells) says nothing about another (an LLM's
    modules), while a depth, a width or a residual ratio means the same in both: on benchmarks/graph_predictor.md's
    digits archive the raw columns cost LLM-style candidates Spearman and this summary gained a little."""
    if "graph.depth" not in features:
        return {}

    def get(name: str) -> float:
        return features.get(f"graph.{name}", math.nan)

    def count(*ops: str) -> float:
        return sum(features.get(f"graph.op.{op}", 0.0) for op in ops)

    def flag(name: str) -> float:
        value = get(name)
        return float(value > 0) if math.isfinite(value) else math.nan

    def share(which: str, sums: float, means: float, maxima: float) -> float:
        """The share of one kind among a network's sum, mean and max reductions; 0 where it has none."""
        total = sums + means + maxima
        if not math.isfinite(total):
            return math.nan
        return {"mean": means, "max": maxima}[which] / total if total > 0 else 0.0

    linear, linear_depth = max(get("linear"), 1.0), max(get("linear_depth"), 1.0)
    median = get("width.median")
    values = (
        math.log2(1 + get("depth")), math.log2(1 + get("linear_depth")), get("width.log2_mean"),
        math.log2(median) if median > 0 else 0.0, get("width.log2_std"), get("norms") / linear,
        get("activations") / linear, count(*_SATURATING) / linear,
        get("residual_adds") / linear_depth, float(get("products") > 0), float(get("gates") > 0),
        count("Conv", "ConvTranspose") / linear, get("pools"), get("log_flops") - get("log_params"),
        get("log_activations"), get("mp.layers"), share("mean", get("mp.sum"), get("mp.mean"), get("mp.max")),
        share("max", get("mp.sum"), get("mp.mean"), get("mp.max")), flag("mp.attention"), flag("mp.degree_norms"),
        share("mean", get("mp.readout_sum"), get("mp.readout_mean"), get("mp.readout_max")),
        share("max", get("mp.readout_sum"), get("mp.readout_mean"), get("mp.readout_max")), get("mp.log_flops_per_edge"),
    )  # fmt: skip
    return {name: value for name, value in zip(SUMMARY, values) if math.isfinite(value)}


def _trees(n: int) -> HistGradientBoostingRegressor:
    """Stumps-to-4-leaf trees, few steps: they correct the size prior, from tens of examples, not replace it."""
    return HistGradientBoostingRegressor(
        max_iter=100,
        learning_rate=0.05,
        max_leaf_nodes=4,
        min_samples_leaf=max(2, min(20, n // 10)),
        l2_regularization=1.0,
        random_state=0,
    )


def _columns(found: Sequence[Example]) -> list[str]:
    """The model's columns for these examples: the measured features in their order, then the rest sorted, the
    graph's as SUMMARY."""
    seen = {name for e in found for name in _model_view(e.features)}
    return [name for name in MEASURED if name in seen] + sorted(seen - set(MEASURED))


def _model_view(features: Mapping[str, float]) -> dict[str, float]:
    """What the model reads of a candidate's features: all but the graph's raw columns, and their summary."""
    return {
        **{k: v for k, v in features.items() if not k.startswith(GRAPH_PREFIX)},
        **graph_summary(features),
    }


def _matrix(rows: Sequence[Mapping[str, float]], columns: Sequence[str]) -> np.ndarray:
    return np.array([[row.get(c, math.nan) for c in columns] for row in rows], dtype=np.float64).reshape(
        len(rows), len(columns)
    )


class RankModel:
    """Predicts a candidate's rank among the fitted ones, then reads it as a score.

    Fitted to the examples' goodness ranks (0 to 1, best 1), not their scores: a held-out Spearman and the
    screening's choice are about order, and a few networks that failed to learn (chance accuracy) would pull a score
    regression their way. `pool` (other tasks' examples, `pooled_examples`, scored by their rank in their own task)
    is fitted with them; only the task's own scores read a rank back.

    The rank is a ridge regression on SIZE (standardised; a missing value is its column's mean), plus shallow
    boosted trees (`_trees`) fitted to what size leaves over, on every other feature (proxies, a space's settings,
    `graph_summary`), which take missing values as they are. `predict` maps the rank back through the fitted
    scores (linear between them, beyond them at their mean slope), so it is in the task's metric and strictly
    follows the rank."""

    def __init__(self, found: Sequence[Example], direction: Direction = "max", pool: Sequence[Example] = ()) -> None:
        rows = [_model_view(e.features) for e in (*found, *pool)]
        scores = np.array([e.score for e in found], dtype=np.float64)
        own = _goodness_ranks(scores, direction)
        ranks = np.concatenate([own, [e.score for e in pool]])
        self.pooled = len(pool)
        self.columns = _columns([*found, *pool])
        self.prior_columns = [c for c in self.columns if c in SIZE]
        self.tree_columns = [c for c in self.columns if c not in SIZE]
        prior = _matrix(rows, self.prior_columns)
        self.mean = np.nanmean(prior, axis=0) if self.prior_columns else np.zeros(0)
        self.scale = np.nanstd(prior, axis=0) if self.prior_columns else np.zeros(0)
        self.scale[~(self.scale > 0)] = 1.0
        self.ridge = RidgeCV(alphas=PRIOR_ALPHAS).fit(self._standard(prior), ranks) if self.prior_columns else None
        residual = ranks - self._prior(rows)
        self.trees = None
        if self.tree_columns:
            self.trees = _trees(len(rows)).fit(_matrix(rows, self.tree_columns), residual)
        self.positions, first = np.unique(own, return_index=True)
        self.levels = scores[first]
        self.slope = ranking.sign(direction) * float(np.ptp(scores))

    def _standard(self, prior: np.ndarray) -> np.ndarray:
        return (np.where(np.isnan(prior), self.mean, prior) - self.mean) / self.scale

    def _prior(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        if self.ridge is None:
            return np.full(len(rows), 0.5)
        return self.ridge.predict(self._standard(_matrix(rows, self.prior_columns)))

    def rank(self, features: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The predicted rank of each candidate (0 to 1 among the fitted ones, beyond at either end)."""
        rows = [_model_view(f) for f in features]
        found = self._prior(rows)
        if self.trees is not None:
            found = found + self.trees.predict(_matrix(rows, self.tree_columns))
        return found

    def predict(self, features: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The predicted score of each candidate, in the task's metric (better the higher its rank)."""
        ranks = self.rank(features)
        low, high = self.positions[0], self.positions[-1]
        inside = np.interp(ranks, self.positions, self.levels)
        below = self.levels[0] + (ranks - low) * self.slope
        above = self.levels[-1] + (ranks - high) * self.slope
        return np.where(ranks < low, below, np.where(ranks > high, above, inside))


def chosen(found: Sequence[Example], direction: Direction, pool: Sequence[Example] = ()) -> RankModel:
    """The task's own model, or the one that also learns from `pool`, whichever ranks the task's own examples better
    held out: an INNER_FOLDS cross-validation on `found` alone, the pool in every fitting fold (a tie keeps the own
    model). The choice sees only the examples it is fitted on, so a benchmark's outer folds stay unseen; pooling
    unrelated tasks that would mislead is turned down by the task's own evidence."""
    if not pool or len(found) < INNER_FOLDS:
        return RankModel(found, direction)
    truth = _goodness_ranks(np.array([e.score for e in found]), direction)
    held = {"own": np.empty(len(found)), "pooled": np.empty(len(found))}
    for fit_on, out in KFold(n_splits=INNER_FOLDS, shuffle=True, random_state=0).split(found):
        part, rows = [found[i] for i in fit_on], [found[i].features for i in out]
        held["own"][out] = RankModel(part, direction).rank(rows)
        held["pooled"][out] = RankModel(part, direction, pool).rank(rows)
    agree = {k: _finite(stats.spearmanr(v, truth)[0]) if np.ptp(v) > 0 else None for k, v in held.items()}
    pooled_better = (agree["pooled"] or -1.0) > (agree["own"] or -1.0)
    return RankModel(found, direction, pool if pooled_better else ())


def _fitted(found: Sequence[Example], direction: Direction = "max", pool: Sequence[Example] = ()) -> RankModel:
    """`chosen` on these examples, on one thread: the model is small, and on a host whose cores train candidates
    OpenMP's threads only wait for each other (tens of times slower)."""
    with threadpool_limits(1):
        return chosen(found, direction, pool)


def _predicted(model: RankModel, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
    with threadpool_limits(1):
        return model.predict(rows)


class Predictor:
    """A task's fitted predictor: `predict` gives a score in the task's metric, `key` a rank key (bigger is better)."""

    def __init__(
        self,
        task: str,
        direction: Direction,
        model: RankModel,
        trained_ids: frozenset[int],
        pool_ids: frozenset[int] = frozenset(),
    ) -> None:
        self.task = task
        self.direction = direction
        self.model = model
        self.trained_ids = trained_ids
        self.pool_ids = pool_ids

    @property
    def columns(self) -> list[str]:
        """The features the model reads, in order (the graph's as SUMMARY)."""
        return self.model.columns

    @property
    def n(self) -> int:
        """How many of the task's trained candidates it was fitted on."""
        return len(self.trained_ids)

    @property
    def pooled(self) -> int:
        """How many other tasks' candidates it learned from too (0 where pooling did not help, `chosen`)."""
        return self.model.pooled

    @classmethod
    def fit(cls, archive: Archive, task: str) -> Predictor | None:
        """The predictor of `task` from its archive; None while `shortfall` says why not (fewer than MIN_TRAINED
        trained candidates, or all with one score)."""
        found = examples(archive, task)
        if shortfall(found, task):
            return None
        return cls.on(found, task, archive.direction(task), pooled_examples(archive, task))

    @classmethod
    def on(cls, found: Sequence[Example], task: str, direction: Direction, pool: Sequence[Example] = ()) -> Predictor:
        """Fit on these examples, and on `pool` where that helps (`chosen`); PredictorError where `shortfall`
        objects."""
        reason = shortfall(found, task)
        if reason:
            raise PredictorError(reason)
        ids = frozenset(e.candidate_id for e in found)
        return cls(task, direction, _fitted(found, direction, pool), ids, frozenset(e.candidate_id for e in pool))

    def refit(self, archive: Archive) -> Predictor:
        """This predictor again, fitted on the archive as it is now: itself when no trained candidate of any task
        came or went since it was fitted (a query per task), otherwise a new one."""
        found, pool = examples(archive, self.task), pooled_examples(archive, self.task)
        if frozenset(e.candidate_id for e in found) == self.trained_ids and self.pool_ids == frozenset(
            e.candidate_id for e in pool
        ):
            return self
        return Predictor.on(found, self.task, self.direction, pool)

    def predict(self, features: Mapping[str, float]) -> float:
        """The predicted validation score, in the task's metric, of a candidate with these features (`features_of`)."""
        return float(_predicted(self.model, [features])[0])

    def key(self, features: Mapping[str, float]) -> float:
        """The prediction as a rank key that is larger the better it is, in the task's direction."""
        return ranking.key(self.predict(features), self.direction)


# -- how far to trust it ------------------------------------------------------------------------


def held_out(archive: Archive, task: str, folds: int = 5) -> dict[str, Any]:
    """Cross-validated rank correlation of predicted and true validation scores for `task` (see `cross_validate`),
    the other tasks pooled as the loop's predictor pools them; PredictorError when no predictor can be fitted yet."""
    return cross_validate(examples(archive, task), task, archive.direction(task), folds, pooled_examples(archive, task))


def cross_validate(
    found: Sequence[Example], task: str, direction: Direction, folds: int = 5, pool: Sequence[Example] = ()
) -> dict[str, Any]:
    """Each example predicted by a predictor fitted on the other folds (and `pool`, where its own inner
    cross-validation says so: `chosen`); Spearman and Kendall correlations of those predictions with the true scores
    over all examples (positive is good in either direction; None where the predictions are all equal), n, the
    folds, how many folds pooled and the features used."""
    reason = shortfall(found, task)
    if reason:
        raise PredictorError(reason)
    k = max(2, min(folds, len(found)))
    predicted, pooled = np.empty(len(found)), 0
    for fit_on, held in KFold(n_splits=k, shuffle=True, random_state=0).split(found):
        part = [found[i] for i in fit_on]
        if len({e.score for e in part}) < 2:  # a training fold with one score predicts that score
            predicted[held] = part[0].score
            continue
        model = _fitted(part, direction, pool)
        pooled += model.pooled > 0
        predicted[held] = _predicted(model, [found[i].features for i in held])
    truth = np.array([e.score for e in found])
    constant = bool(np.ptp(predicted) == 0)
    return {
        "task": task,
        "n": len(found),
        "folds": k,
        "pool": len(pool),
        "pooled_folds": pooled,
        "spearman": None if constant else _finite(stats.spearmanr(predicted, truth)[0]),
        "kendall": None if constant else _finite(stats.kendalltau(predicted, truth)[0]),
        "features": _columns(found),
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
