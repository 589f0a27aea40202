"""Evaluate one candidate end to end: check, dedup, smoke, functional dedup, train, score, record.

Every proposer (a person with `agentarch eval`, a baseline, the LLM loop) goes through these steps,
so their results are comparable row for row in the archive. `Evaluator.evaluate` runs them in one
go; the agent loop runs the same steps as its graph's nodes (check, dedup, then `start`, whose one
sandbox job gives the smoke verdict and later the result).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agentarch.config import Settings
from agentarch.evaluation import dedup
from agentarch.evaluation.candidate import candidate_row
from agentarch.evaluation.checkpoints import Checkpoint
from agentarch.evaluation.checks import check, declared_recipe
from agentarch.evaluation.executors import Executor, LocalExecutor
from agentarch.evaluation.graphs.scoring import Scoring
from agentarch.evaluation.jobs import Pending
from agentarch.evaluation.stages import RunRequest, RunResult
from agentarch.isolation.policy import Limits, refuse_untrusted, resolve_isolation
from agentarch.search.spaces import SpaceError, get_space
from agentarch.store.archive import Archive
from agentarch.store.graphs import GraphPolicy
from agentarch.store.summaries import status_counts
from agentarch.tasks import taskfiles
from agentarch.tasks.preparation import PreparedTask, prepare
from agentarch.tasks.recipes import KEYS as RECIPE_KEYS
from agentarch.tasks.recipes import with_recipe
from agentarch.tasks.registry import get_task
from agentarch.tasks.task import TaskError

log = logging.getLogger(__name__)

METRIC_KEYS = ("val_accuracy", "test_accuracy", "params", "flops", "train_seconds")


@dataclass
class EvalResult:
    """What happened to one candidate; `to_json` is the line `agentarch eval --json` prints."""

    id: int
    name: str
    status: str
    reason: str | None = None
    duplicate_of: int | None = None
    dedup_level: str | None = None
    metrics: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(METRIC_KEYS))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "reason": self.reason,
            "duplicate_of": self.duplicate_of,
            "dedup_level": self.dedup_level,
            "metrics": self.metrics,
        }


def eval_summary(results: Sequence[EvalResult]) -> dict[str, Any]:
    """The summary of an `agentarch eval` run: how many files were evaluated, and their statuses."""
    return {"evaluated": len(results), "counts": status_counts(r.status for r in results)}


@dataclass
class Assessment:
    """A candidate's verdict before it is recorded: the rows to write and the result to report.

    `status` is always a verdict (trained, invalid, duplicate, failed, timeout, rejected): a candidate
    still on its way has no Assessment. Keeping assessment and recording apart lets the agent loop add
    what it learns in between (the analyst's notes, LLM provenance) and still write everything in one
    transaction.
    """

    status: str
    candidate: dict[str, Any]
    evaluation: dict[str, Any] | None = None
    reason: str | None = None
    duplicate_of: int | None = None
    dedup_level: str | None = None
    metrics: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(METRIC_KEYS))
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass
class SandboxRun:
    """A candidate's one sandbox job under way: its smoke verdict first, then its result.

    `smoke()` is None while the candidate passed its smoke run and trains on; otherwise it is the
    final verdict (a failure, a functional duplicate, over the parameter budget).
    """

    evaluator: Evaluator
    row: dict[str, Any]
    train_cfg: dict[str, Any]
    pending: Pending

    def smoke(self) -> Assessment | None:
        result = self.pending.smoke()
        return None if result.status == "smoked" else self.evaluator.judge(self.row, self.train_cfg, result)

    def result(self) -> Assessment:
        return self.evaluator.judge(self.row, self.train_cfg, self.pending.result())


def smoke_measures(smoke: dict[str, Any] | None) -> dict[str, Any]:
    """The evaluation columns the smoke stage measured beyond size: latency (ms per batch), peak memory (MB; training's
    own figure replaces it where training reports one) and the zero-cost proxies (stored as JSON), each only where
    the runner sent it (protocol.py checked every value)."""
    smoke = smoke or {}
    return {key: smoke[key] for key in ("latency_ms", "peak_memory_mb", "proxies") if smoke.get(key) is not None}


def checkpoint_job(request: RunRequest) -> str:
    """What a training checkpoint belongs to, as a sha256: the code, the task and the training asked for (not the wall
    clock's share, which a resume may change), so a resumed job continues only from a checkpoint of the same job."""
    train = {key: value for key, value in request.train.items() if key != "max_seconds"}
    identity = {"code": request.code, "task": request.task, "train": train, "scoring": request.scoring}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Evaluator:
    """Evaluates candidates for one task into one archive, under one run id."""

    def __init__(
        self,
        archive: Archive,
        settings: Settings,
        run_id: str | None = None,
        executor: Executor | None = None,
        scoring: Scoring | None = None,
        *,
        lookup: bool = False,
    ) -> None:
        """`scoring` says where held-out outputs come from (None: the settings' `scoring`, else "trusted"): "graph"
        trains on the training split alone and scores the exported ONNX graph in the clean evaluator
        (agentarch/evaluation/graphs/), "trusted" scores the outputs the candidate's own process wrote. `lookup`: the
        caller answers a table task's candidates from its table (the agent loop's `look_up` step), so this evaluator
        only checks, dedups and records them; without it a table task is refused here."""
        self.archive = archive
        self.scoring: Scoring = scoring or getattr(settings, "scoring", None) or "trusted"
        self.executor: Executor = executor or LocalExecutor(settings.slots)
        self.settings = settings
        self.run_id = run_id
        self.task = get_task(settings.task)
        if self.task.kind == "tabular" and not lookup:
            raise TaskError(
                f"{self.task.name} is answered from the NAS-Bench-201 table, so there is nothing to train; "
                f"search it with `agentarch baseline --space nb201 --task {self.task.name}`"
            )
        self.isolation = resolve_isolation(settings.isolation)
        self.limits = Limits(
            memory_mb=settings.memory_mb,
            timeout_s=settings.timeout_s,
            smoke_timeout_s=settings.smoke_timeout_s,
            max_pids=settings.max_pids,
            max_file_mb=settings.max_file_mb,
            threads=settings.threads or cpu_threads(),
        )
        self._prepared: PreparedTask | None = None

    @property
    def prepared(self) -> PreparedTask:
        """The task's data, prepared on first use (so a run of only invalid files loads nothing).

        Once the data is there, the archive keeps the task's metric and direction (every ranking reads them),
        before anything is trained: a task that cannot be prepared leaves the archive untouched.
        """
        if self._prepared is None:
            self._prepared = prepare(
                self.task,
                self.settings.cache_dir,
                self.settings.data_dir,
                self.settings.download,
                self.settings.split_seed,
            )
            self.archive.register_task(self.task)
        return self._prepared

    def train_config(
        self, hparams: dict[str, Any], epochs: int | None = None, recipe: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Task defaults, then the candidate's HPARAMS, then its RECIPE (validated: `check`); the epoch budget
        (fidelity) is a ceiling, and a recipe has no say in epochs, batch size or time."""
        budget = epochs or self.settings.epochs or self.task.epochs
        cfg = {
            "epochs": budget,
            "batch_size": self.task.batch_size,
            "lr": self.task.lr,
            "weight_decay": self.task.weight_decay,
            "seed": self.settings.seed,
            "max_seconds": self.limits.timeout_s * 0.85,
        }
        cfg.update({k: v for k, v in hparams.items() if k != "epochs"})
        cfg["epochs"] = min(budget, int(hparams.get("epochs", budget)))
        default = self.task.default_recipe()
        cfg.update({key: cfg.get(key, value) for key, value in default.items()}, **(recipe or {}))
        return cfg

    def row(
        self,
        code: str,
        name: str,
        proposer: str = "user",
        parents: list[int] | None = None,
        space: str | None = None,
        arch: str | None = None,
    ) -> dict[str, Any]:
        """The candidate row of this evaluator's run and task (`space` and `arch` name the search-space
        architecture the code was rendered from, if any)."""
        return candidate_row(
            run_id=self.run_id,
            task=self.task.name,
            name=name,
            proposer=proposer,
            code=code,
            parents=parents or [],
            space=space,
            arch=arch,
        )

    def reject(self, code: str, name: str, reason: str, proposer: str = "user") -> EvalResult:
        """Record a candidate that cannot even be read as Python source (e.g. not UTF-8)."""
        return self.record(self.without_running(code, name, "invalid", reason, proposer))

    def without_running(self, text: str, name: str, status: str, reason: str, proposer: str = "user") -> Assessment:
        """The verdict on text that is not run: unreadable (not UTF-8, no code in an answer) or rejected by a person."""
        return self._judged(self.row(text, name, proposer), status, reason=reason)

    def evaluate(
        self,
        code: str,
        name: str,
        proposer: str = "user",
        parents: list[int] | None = None,
        space: str | None = None,
        arch: str | None = None,
    ) -> EvalResult:
        """Run the whole pipeline for one candidate and record the outcome; never raises for a bad candidate."""
        row = self.row(code, name, proposer, parents, space, arch)
        verdict = self.screen(row) or self.start(row).result()
        return self.record(verdict)

    def screen(self, row: dict[str, Any]) -> Assessment | None:
        """The steps that need no sandbox (the static check, then text and AST dedup); None = passed."""
        return self.check(row) or self.dedup(row)

    def check(self, row: dict[str, Any]) -> Assessment | None:
        """The static check of the candidate contract; None = passed, and the row carries the code's HPARAMS."""
        checked = check(row["code"], self.task.kind, self.task.recipe_bounds())
        if not checked.ok:
            return self._judged(row, "invalid", reason=checked.reason)
        row["hparams"] = checked.hparams
        row["recipe"] = checked.recipe or None
        return None

    def dedup(self, row: dict[str, Any]) -> Assessment | None:
        """The text and AST dedup levels against the task's archive; None = new code (the functional level needs
        the sandbox and is the smoke run's)."""
        row["ast_hash"] = dedup.ast_hash(row["code"])
        for level, value in (("whitespace", row["text_hash"]), ("ast", row["ast_hash"])):
            earlier = self.archive.find_duplicate(self.task.name, level, value)  # type: ignore[arg-type]
            if earlier is not None:
                return self._judged(
                    row,
                    "duplicate",
                    reason=f"same code as candidate {earlier} ({level} level)",
                    duplicate_of=earlier,
                    dedup_level=level,
                )
        return None

    def start(
        self,
        row: dict[str, Any],
        epochs: int | None = None,
        known_functional: bool = True,
        ready: Callable[[], None] | None = None,
        smoke_only: bool = False,
        novelty: bool = True,
        digest: str | None = None,
        resumable: str | None = None,
    ) -> SandboxRun:
        """Start the candidate's sandbox job (smoke, functional and structural dedup, train, score); blocks until it
        has a slot.

        The row must have passed `check` (its HPARAMS set the training). `known_functional=False` skips
        functional dedup and `novelty=False` the structural one (both for re-training a recorded candidate on
        purpose; the structural check is also off at a `novelty_threshold` of 1.0). `ready` is called once the job
        has its slot, just before the sandbox starts; if it raises, nothing starts. `smoke_only` ends the job
        after a passed smoke run (screening by a predictor): its smoke verdict is then all it gives. `digest` (graph
        scoring): the architecture that job's smoke record names (`digest`); a job that exports another fails, so the
        network a screening group picked is the one that trains. `resumable` (a proposal key, with the `checkpoints`
        setting on): the job's training checkpoints are kept beside the archive under that key as they come, and the
        job continues from the one an earlier job of the same code and training left there (a run resumed after a
        kill), if any. With the setting on, every training job checkpoints (so a retried job can resume); only these
        are kept beside the archive.
        """
        row["recipe"] = declared_recipe(row["code"], self.task.recipe_bounds(), self.task.kind) or None
        refuse_untrusted(self.isolation, lambda: self._rendered(row), self.settings.weak_sandbox_ok)
        row.setdefault("ast_hash", dedup.ast_hash(row["code"]))
        train_cfg = self.train_config(row.get("hparams") or {}, epochs, row["recipe"])
        threshold = self.settings.novelty_threshold
        request = RunRequest(
            code=row["code"],
            task=taskfiles.reference(self.task),
            train=train_cfg,
            limits=self.limits,
            isolation=self.isolation,
            cache_dir=self.settings.cache_dir,
            data_dir=self.settings.data_dir,
            split_seed=self.settings.split_seed,
            known_functional=self.archive.functional_hashes(self.task.name, scoring=self.scoring, recipe=row["recipe"])
            if known_functional
            else {},
            known_structures=self.archive.structures(self.task.name, scoring=self.scoring, recipe=row["recipe"])
            if novelty and threshold < 1.0
            else [],
            novelty_threshold=threshold,
            smoke_only=smoke_only,
            scoring=self.scoring,
            digest=digest,
            budget_slack=self.settings.budget_slack,
        )
        if self.settings.checkpoints and not smoke_only:  # a retried job (a lost Ray worker) resumes from the latest
            request = replace(request, checkpoint_s=self.settings.checkpoint_s)
        keep = resumable is not None and request.checkpoint_s is not None
        job = checkpoint_job(request) if keep else ""
        if keep:  # and beside the archive, for a job started again after the orchestrator's own death
            request = replace(request, resume=self.archive.checkpoint(resumable, job, self.limits.max_file_mb * 2**20))
        self.prepared  # prepare (and download, if allowed) here, so a worker only ever reads the cache
        pending = self.executor.start(request, ready)
        if keep:

            def kept(checkpoint: Checkpoint) -> None:
                try:
                    self.archive.keep_checkpoint(resumable, job, checkpoint.data)
                except OSError as err:  # the host's disk: the candidate trains on, a resume would start it over
                    log.warning("could not keep %s's training checkpoint: %s", resumable, err)

            pending.checkpointed = kept
        return SandboxRun(self, row, train_cfg, pending)

    def reevaluate(self, candidate_id: int, epochs: int, stage: str | None = None) -> EvalResult:
        """Train a recorded candidate again at another fidelity and add that evaluation to its record (marked with
        `stage`: `verify` for a run's explore-then-verify retraining)."""
        recorded = self.archive.candidate(candidate_id)
        row = self.row(
            recorded["code"],
            recorded["name"] or "",
            recorded["proposer"],
            recorded["parents"],
            recorded.get("space"),
            recorded.get("arch"),
        )
        row["hparams"] = recorded["hparams"] or {}
        assessment = self.start(row, epochs, known_functional=False, novelty=False).result()
        if assessment.evaluation is not None:
            self.archive.add_evaluation(candidate_id, self.task.name, {**assessment.evaluation, "stage": stage})
        return EvalResult(
            candidate_id, row["name"], assessment.status, assessment.reason, None, None, assessment.metrics
        )

    def record(
        self, assessment: Assessment, extra: dict[str, Any] | None = None, llm_calls: list[int] = ()
    ) -> EvalResult:  # type: ignore[assignment]
        """Write an assessment (with any `extra` candidate columns) in one transaction (with the task kept first, for
        a candidate recorded without its data being prepared: a file that failed the static check)."""
        self.archive.register_task(self.task)
        candidate = {**assessment.candidate, **(extra or {})}
        candidate_id = self.archive.record(candidate, assessment.evaluation, llm_calls=llm_calls)
        if candidate.get("proposal_key"):  # recorded: it will not train again, so its last checkpoint goes
            self.archive.drop_checkpoints(candidate["proposal_key"])
        return EvalResult(
            candidate_id,
            candidate["name"],
            assessment.status,
            assessment.reason,
            assessment.duplicate_of,
            assessment.dedup_level,
            assessment.metrics,
        )

    def judge(self, row: dict[str, Any], train_cfg: dict[str, Any], result: RunResult) -> Assessment:
        """Turn what the sandbox said into the verdict and the rows to record.

        `result.smoke` holds the measures to believe: in graph scoring the executor has already put the graph's in
        place of the runner's (agentarch/evaluation/graphs/scoring.py, `believed`), so the rows, and every ranking,
        constraint, screening pick and dedup that reads them, see the graph's parameters, FLOPs, structure signature,
        latency and functional hash (none before the trained graph was scored: a failed candidate keeps no hash)."""
        base = dict(row)
        if result.smoke is not None:
            base.update(
                functional_hash=result.smoke.get("functional_hash"),
                params=result.smoke.get("params"),
                flops=result.smoke.get("flops"),
            )
            if "structure" in result.smoke:
                base["structure"] = result.smoke["structure"]
        metrics = {k: base.get(k) for k in ("params", "flops") if base.get(k) is not None}
        evaluation: dict[str, Any] = {
            "fidelity": train_cfg["epochs"],
            "seed": train_cfg["seed"],
            "recipe": {key: train_cfg[key] for key in RECIPE_KEYS},
            "isolation": self.isolation,
            "status": result.status,
            "wall_seconds": result.wall_seconds,
            "worker": result.worker,
            **smoke_measures(result.smoke),
        }
        if result.status == "duplicate":
            return self._judged(
                base,
                "duplicate",
                reason=result.reason,
                duplicate_of=result.duplicate_of,
                dedup_level=result.dedup_level,
                metrics=metrics,
            )
        if result.status == "invalid":
            return self._judged(base, result.status, reason=result.reason, metrics=metrics)
        if result.status != "trained":
            evaluation["error"] = result.error
            return self._judged(base, result.status, reason=result.reason, metrics=metrics, evaluation=evaluation)
        trained, smoke = result.trained or {}, result.smoke or {}
        host = trained.get("host") or {}  # the host's own figures (budget.py); the runner's `train_seconds` is its word
        metrics.update(result.scores or {}, train_seconds=host.get("train_seconds", trained["train_seconds"]))
        evaluation.update(
            **metrics,
            device=trained["device"],
            curve=trained["curve"],
            timings={
                "smoke_seconds": smoke["seconds"],
                "proxy_seconds": smoke.get("proxy_seconds"),
                **host,
                "train_seconds": metrics["train_seconds"],
                "reported_train_seconds": trained["train_seconds"],
                "steps": trained["steps"],
                "epochs_done": trained["epochs_done"],
                "stopped_early": trained["stopped_early"],
                **({"resumed_epoch": trained["resumed_epoch"]} if trained.get("resumed_epoch") else {}),
                "notes": trained.get("notes", []),
                **({"scoring": "graph", "graph": trained["graph"]} if "graph" in trained else {}),
                **({"secondary": trained["secondary"]} if trained.get("secondary") else {}),
            },
        )
        if trained["peak_memory_mb"] is not None:
            evaluation["peak_memory_mb"] = trained["peak_memory_mb"]
        if result.graph is not None:  # graph scoring: the trained graph kept beside the archive, its sha256 in the row
            evaluation["graph_sha256"] = self.archive.keep_graph(result.graph, GraphPolicy.from_settings(self.settings))
        return self._judged(base, "trained", metrics=metrics, evaluation=evaluation)

    def _rendered(self, base: dict[str, Any]) -> bool:
        """Whether the code is exactly what the project's own template renders for its search-space architecture."""
        if not (base.get("space") and base.get("arch")):
            return False
        try:
            rendered = get_space(base["space"]).render(base["arch"], self.task)
            return with_recipe(rendered, base.get("recipe")) == base["code"]
        except (SpaceError, TaskError, KeyError):
            return False

    def _judged(
        self,
        base: dict[str, Any],
        status: str,
        reason: str | None = None,
        duplicate_of: int | None = None,
        dedup_level: str | None = None,
        metrics: dict[str, Any] | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> Assessment:
        candidate = {
            **base,
            "status": status,
            "reason": reason,
            "duplicate_of": duplicate_of,
            "dedup_level": dedup_level,
        }
        full = dict.fromkeys(METRIC_KEYS)
        full.update(metrics or {})
        return Assessment(
            status, candidate, evaluation, reason, duplicate_of, dedup_level, full, dict(base.get("hparams") or {})
        )
