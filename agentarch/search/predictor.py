"""A predictor of a candidate's validation score from what is known before it trains, learned from the archive.

Per task, a gradient-boosted tree ensemble (scikit-learn's HistGradientBoostingRegressor, which takes missing
values as they are) maps what the smoke stage measured (log parameters, log FLOPs, log latency, the zero-cost
proxies of sandbox/proxies.py), for a candidate rendered from a search space its architecture (the operation on
each nb201 edge one-hot; each setting of the macro and MLP spaces; the mixer space's width, depth and mixer per
layer), and for a candidate with an exported graph (graph scoring) the graph's features
(agentarch/evaluation/graphs/features.py: operator counts, depth, widths, kernels, sizes and a hashed text
encoding), to the task's metric as the archive holds it (`val_accuracy`). The graph is the one encoding every
network has, so an LLM's module outside any space is predicted from what it is, not only from its size. It
learns from every trained candidate of the task, whoever proposed it; a feature a candidate lacks is missing,
never zero: a candidate scored in its own process (`--scoring trusted`), or whose graph the retention policy
dropped (agentarch/store/graphs.py), is learned from and predicted with the other features.

Where the features come from: a trained candidate's from its evaluation row and its kept trained graph (read once
per process and graph, `kept_graph_features`); a candidate being screened from its smoke result, whose
`graph_features` the host computed from the graph the smoke stage exported
(agentarch/evaluation/graphs/scoring.py, `smoke_graph`). Both graphs are one architecture (the host checks their
digests), and the features read only its structure, never a weight's value, so they agree.

The search loop screens smoke-tested candidates with it: build it once per run (`Predictor.fit`), `refit` as
trained candidates arrive (it refits only when there are new ones), and rank candidates by `key`, which
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
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from agentarch.errors import AgentarchError
from agentarch.isolation.protocol import PROXY_NAMES
from agentarch.search.spaces import macro, mixer, mlp, nb201
from agentarch.search.spaces.base import SettingsString, SpaceError
from agentarch.store import measurements, ranking
from agentarch.store.archive import Archive
from agentarch.store.handle import ArchiveError
from agentarch.store.ranking import Direction

MIN_TRAINED = 8
"""Trained candidates a task needs before a predictor is fitted: fewer say nothing a tree could generalise."""

MEASURED = ("log_params", "log_flops", "log_latency_ms", "synflow", "log_grad_norm", "naswot")
"""The features every candidate can have, from its smoke run; search-space features follow them."""

GRAPH_PREFIX = "graph."
"""The names of the graph's features (agentarch/evaluation/graphs/features.py FEATURES) all start so."""
GRAPH_CACHE = 4096
"""Kept graphs whose features a process remembers (by sha256, so a refit reads only new graphs): about 1 kB each."""

_SETTINGS: dict[str, SettingsString] = {"macro": macro.ARCH, "mlp": mlp.ARCH}


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
    """The architecture as numbers: nb201's operation per edge one-hot; each macro and MLP setting (a number as
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


# -- the model ----------------------------------------------------------------------------------


def _regressor(n: int) -> HistGradientBoostingRegressor:
    """Small trees and many shallow steps: archives hold tens to thousands of trained candidates per task."""
    return HistGradientBoostingRegressor(
        max_iter=200,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=max(2, min(20, n // 10)),
        l2_regularization=1.0,
        random_state=0,
    )


def _columns(found: Sequence[Example]) -> list[str]:
    """The features any example has: the measured ones in their order, then the rest sorted."""
    seen = {name for e in found for name in e.features}
    return [name for name in MEASURED if name in seen] + sorted(seen - set(MEASURED))


def _matrix(rows: Sequence[Mapping[str, float]], columns: Sequence[str]) -> np.ndarray:
    return np.array([[row.get(c, math.nan) for c in columns] for row in rows], dtype=np.float64).reshape(
        len(rows), len(columns)
    )


def _fitted(found: Sequence[Example]) -> tuple[list[str], HistGradientBoostingRegressor]:
    """The feature columns of these examples and a model fitted on them, on one thread: the model is small, and
    on a host whose cores train candidates OpenMP's threads only wait for each other (tens of times slower)."""
    columns = _columns(found)
    with threadpool_limits(1):
        model = _regressor(len(found)).fit(_matrix([e.features for e in found], columns), [e.score for e in found])
    return columns, model


def _predicted(
    model: HistGradientBoostingRegressor, rows: Sequence[Mapping[str, float]], columns: Sequence[str]
) -> np.ndarray:
    with threadpool_limits(1):
        return model.predict(_matrix(rows, columns))


class Predictor:
    """A task's fitted predictor: `predict` gives a score in the task's metric, `key` a rank key (bigger is better)."""

    def __init__(
        self,
        task: str,
        direction: Direction,
        columns: list[str],
        model: HistGradientBoostingRegressor,
        trained_ids: frozenset[int],
    ) -> None:
        self.task = task
        self.direction = direction
        self.columns = columns
        self.model = model
        self.trained_ids = trained_ids

    @property
    def n(self) -> int:
        """How many trained candidates it was fitted on."""
        return len(self.trained_ids)

    @classmethod
    def fit(cls, archive: Archive, task: str) -> Predictor | None:
        """The predictor of `task` from its archive; None while `shortfall` says why not (fewer than MIN_TRAINED
        trained candidates, or all with one score)."""
        found = examples(archive, task)
        return None if shortfall(found, task) else cls.on(found, task, archive.direction(task))

    @classmethod
    def on(cls, found: Sequence[Example], task: str, direction: Direction) -> Predictor:
        """Fit on these examples (PredictorError where `shortfall` objects)."""
        reason = shortfall(found, task)
        if reason:
            raise PredictorError(reason)
        columns, model = _fitted(found)
        return cls(task, direction, columns, model, frozenset(e.candidate_id for e in found))

    def refit(self, archive: Archive) -> Predictor:
        """This predictor again, fitted on the archive as it is now: itself when no trained candidate came or
        went since it was fitted (one query), otherwise a new one."""
        found = examples(archive, self.task)
        if frozenset(e.candidate_id for e in found) == self.trained_ids:
            return self
        return Predictor.on(found, self.task, self.direction)

    def predict(self, features: Mapping[str, float]) -> float:
        """The predicted validation score, in the task's metric, of a candidate with these features (`features_of`)."""
        return float(_predicted(self.model, [features], self.columns)[0])

    def key(self, features: Mapping[str, float]) -> float:
        """The prediction as a rank key that is larger the better it is, in the task's direction."""
        return ranking.key(self.predict(features), self.direction)


# -- how far to trust it ------------------------------------------------------------------------


def held_out(archive: Archive, task: str, folds: int = 5) -> dict[str, Any]:
    """Cross-validated rank correlation of predicted and true validation scores for `task` (see `cross_validate`);
    PredictorError when no predictor can be fitted yet."""
    return cross_validate(examples(archive, task), task, archive.direction(task), folds)


def cross_validate(found: Sequence[Example], task: str, direction: Direction, folds: int = 5) -> dict[str, Any]:
    """Each example predicted by a predictor fitted on the other folds; Spearman and Kendall correlations of those
    predictions with the true scores over all examples (positive is good in either direction; None where the
    predictions are all equal), n, the folds and the features used."""
    reason = shortfall(found, task)
    if reason:
        raise PredictorError(reason)
    k = max(2, min(folds, len(found)))
    predicted = np.empty(len(found))
    for fit_on, held in KFold(n_splits=k, shuffle=True, random_state=0).split(found):
        part = [found[i] for i in fit_on]
        if len({e.score for e in part}) < 2:  # a training fold with one score predicts that score
            predicted[held] = part[0].score
            continue
        columns, model = _fitted(part)
        predicted[held] = _predicted(model, [found[i].features for i in held], columns)
    truth = np.array([e.score for e in found])
    constant = bool(np.ptp(predicted) == 0)
    return {
        "task": task,
        "n": len(found),
        "folds": k,
        "spearman": None if constant else _finite(stats.spearmanr(predicted, truth)[0]),
        "kendall": None if constant else _finite(stats.kendalltau(predicted, truth)[0]),
        "features": _columns(found),
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
