"""One candidate's sandbox job, stage by stage: the smoke verdict, then training and the host's scoring.

`stages` is what every executor runs for a `RunRequest` (plain data: code, training config, limits), on
this machine or on a Ray worker: it starts one sandbox job, stops a duplicate, a near-copy or an
over-budget network after its smoke run, meters the job's CPU time against the host's grant, and
scores the trained network's outputs (or its exported graph) where no candidate code runs. It never
touches the archive; the executors (agentarch/evaluation/executors.py) decide where it runs.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentarch.evaluation import budget, checkpoints, novelty
from agentarch.evaluation.checkpoints import Checkpoint
from agentarch.evaluation.graphs import scoring as graphs
from agentarch.isolation.job import Outcome
from agentarch.isolation.policy import IsolationMode, Limits, SandboxError
from agentarch.isolation.protocol import MAX_REASON_BYTES, MAX_TRACEBACK_BYTES, ProtocolError, cap_text
from agentarch.isolation.warm import Launch, WarmSlot, handed
from agentarch.tasks.preparation import prepare
from agentarch.tasks.registry import get_task
from agentarch.tasks.scoring import output_shape, score, secondary
from agentarch.tasks.task import Task, TaskError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRequest:
    """Everything a worker needs to smoke-run and train one candidate; picklable, no handles."""

    code: str
    task: str
    train: dict[str, Any]
    limits: Limits
    isolation: IsolationMode
    cache_dir: Path
    data_dir: Path | None
    split_seed: int
    known_functional: dict[str, int] = field(default_factory=dict)  # hash -> earliest candidate id
    known_structures: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # (id, structure signature)
    novelty_threshold: float = 1.0  # stop a candidate this similar to a known structure or more; 1.0: never
    smoke_only: bool = False  # stop after a passed smoke run (screening): the final result is `smoked`
    scoring: graphs.Scoring = "trusted"  # graph: train on the training split alone, score the exported ONNX graph
    digest: str | None = None  # graph scoring: the architecture an earlier job measured (screening), to train alone
    budget_slack: float = 0.0  # the training budget's slack (Settings.budget_slack, budget.py); 0: no budget
    checkpoint_s: float | None = None  # hand the host a checkpoint at an epoch's end this often (seconds); None: never
    resume: bytes | None = None  # a checkpoint's file (checkpoints.py): continue training from it, not from scratch


@dataclass
class RunResult:
    """What the sandbox said: status trained | duplicate | invalid | failed | timeout, or `smoked` for the
    smoke verdict of a job whose training goes on."""

    status: str
    reason: str | None = None
    smoke: dict[str, Any] | None = None  # functional_hash, params, flops, seconds, structure, ...
    duplicate_of: int | None = None
    dedup_level: str | None = None  # of a duplicate: functional (the same function) or structural (a near-copy)
    trained: dict[str, Any] | None = None  # the runner's "trained" event, with the host's figures (`host`, budget.py)
    # and, in graph scoring, the clean evaluator's (`graph`)
    scores: dict[str, float] | None = None  # val_accuracy, test_accuracy, scored on the host
    error: str | None = None  # reason, traceback and log tail of a failure
    wall_seconds: float = 0.0
    worker: str = ""  # where it ran (host and slot), for the record
    graph: bytes | None = None  # graph scoring: the exported ONNX file, kept beside the archive when recorded


def stages(
    request: RunRequest, gpu: str | None = None, task: Task | None = None, warm: WarmSlot | None = None
) -> Generator[RunResult | Checkpoint, None, None]:
    """Smoke-run, dedup by function and by structure, check the parameter budget, train and score one candidate,
    in one sandbox.

    Yields the smoke verdict first: `smoked` when the candidate passed and training goes on (then the
    final result follows), or the final result of a job that ended there (a failure, a functional
    duplicate, a near-copy of a known structure, over the parameter budget). While it trains, each checkpoint the
    runner hands over that passes the host's checks (checkpoints.py) comes between the two, as a `Checkpoint`; with a
    `resume` checkpoint the job continues from its epoch (trained from scratch if it fails the checks here).

    Whatever the candidate does, this yields RunResults: everything from the sandbox is hostile
    input, so an exception at any stage (the host tripping over what came back, or a plain bug)
    becomes a `failed` result that names the stage and the error, and one candidate never stops a
    run. Only SandboxError goes up: the sandbox itself cannot run here, which is the operator's to
    fix, and every later candidate would fail the same way.

    `task` is the request's task where the caller already has it (a Ray worker is sent it with its data,
    agentarch/evaluation/ray_data.py); otherwise it is looked up by name.
    `warm` is the slot's sandboxes started ahead (agentarch/isolation/warm.py): the job runs in its runner when it was
    started for this job's configuration, and the slot's next one is started while this job runs; in graph scoring
    the clean evaluator that scores this job is started while it trains (a screening job's, from its hand-off: its
    latency is measured right after its smoke stage) and is handed the graph.
    """
    started = time.perf_counter()
    where = f"{os.uname().nodename}" + (f" gpu {gpu}" if gpu is not None else "")
    stage, smoke = "prepare", None
    try:
        task = get_task(request.task) if task is None else task
        prepared = prepare(task, request.cache_dir, request.data_dir, False, request.split_seed)
        labels = {split: prepared.labels(split) for split in ("val", "test")}
        spec = {
            "kind": task.kind,
            "in_shape": list(task.in_shape),
            "num_classes": task.num_classes,
            "train": request.train,
        }
        inputs_dir = prepared.inputs_dir
        per_epoch = (
            1
            if task.kind == "graph"
            else budget.steps_per_epoch(
                budget.split_sizes(prepared.inputs_dir)["train"], int(request.train["batch_size"])
            )
        )
        resume = resumable(request, per_epoch)
        files = {checkpoints.RESUME_FILE: resume.data} if resume is not None else None
        if request.checkpoint_s is not None and not request.smoke_only:
            spec["checkpoint_s"] = request.checkpoint_s
        if resume is not None:
            spec["resume"] = checkpoints.RESUME_FILE
        if request.scoring == "graph":  # the training split alone: no held-out input reaches candidate code
            spec["scoring"], inputs_dir = "graph", prepared.train_dir
        startup = 0.0  # the host's reference job, before this one starts, so its wall clock is the candidate's alone
        if request.budget_slack > 0 and not request.smoke_only:
            code = budget.reference_code(task.kind, task.vocab_size)
            startup = budget.startup_seconds(code, spec, inputs_dir, request.limits, request.isolation, gpu)
        stage = "start"
        launch = Launch(inputs_dir, request.limits, request.isolation, gpu)
        job, warm_start = handed(warm, request.code, spec, launch, files)
        evaluator = graphs.evaluator_launch(prepared, request.limits, request.isolation)
        if warm is not None and request.scoring == "graph" and request.smoke_only:
            warm.order(evaluator)
        with job:

            def failure(event: dict[str, Any] | Outcome) -> RunResult:
                """The result of a run that ended at `stage` with this event or Outcome."""
                trace = ""
                if isinstance(event, Outcome):
                    status, reason = event.status, f"[{stage}{':' + event.kind if event.kind else ''}] {event.reason}"
                elif event["event"] == "error":
                    status, trace = "failed", event.get("traceback", "")
                    reason = f"[{event.get('stage', stage)}:{event.get('kind', '?')}] {event['message']}"
                else:
                    status, reason = "failed", f"[{stage}] the runner sent a {event['event']!r} event out of turn"
                reason = cap_text(reason, MAX_REASON_BYTES)
                error = "\n".join(filter(None, [reason, trace, job.log_tail()]))
                return RunResult(
                    status, reason, smoke, error=error, wall_seconds=time.perf_counter() - started, worker=where
                )

            stage = "smoke"
            event = job.read_event(request.limits.smoke_timeout_s)
            if isinstance(event, Outcome) or event["event"] != "smoke":
                yield failure(event)
                return
            smoke = event
            if request.scoring == "graph":  # the host's measures of the smoke stage's graph, not the runner's report
                smoke = graphs.unreported(event)  # believed in nothing it says about itself, even if it fails here
                try:
                    smoke = graphs.smoke_graph(
                        job, event, task, prepared, request.limits, request.isolation, request.smoke_only, warm
                    )
                except graphs.GraphFailed as err:
                    yield failure(Outcome("failed", str(err)))
                    return
                if request.digest not in (None, smoke["digest"]):
                    reason = "the network is not the one its screening job measured (another architecture)"
                    yield failure(Outcome("failed", reason))
                    return
            stopped = verdict(smoke, request, task.max_params, where)
            if stopped is not None:
                job.send("stop")
                yield stopped
                return
            if request.smoke_only:
                job.send("stop")
                yield RunResult("smoked", None, smoke, wall_seconds=time.perf_counter() - started, worker=where)
                return
            stage = "train"
            resumed = resume.epoch if resume is not None else 0
            grant = budget.job_grant(
                {**request.train, "epochs": request.train["epochs"] - resumed},  # the steps left to train
                request.scoring,
                request.budget_slack,
                request.limits,
                smoke,
                startup,
                prepared.inputs_dir,
                whole_graph=task.kind == "graph",
            )
            watch = budget.Watch(job, grant)
            refused = job.send("train")
            if refused is not None:
                yield failure(refused)
                return
            if warm is not None and request.scoring == "graph":  # its scorer starts while it trains
                warm.order(evaluator)
            yield RunResult("smoked", None, smoke, wall_seconds=time.perf_counter() - started, worker=where)
            trained, latest = watch.read(), resumed
            while not isinstance(trained, Outcome) and trained["event"] == "checkpoint":
                kept = checkpoints.read(
                    job, smoke.get("params"), request.train["epochs"], per_epoch, request.limits.max_file_mb
                )
                if kept is not None and kept.epoch > latest:
                    latest = kept.epoch
                    yield kept
                trained = watch.read()
            if isinstance(trained, Outcome) or trained["event"] != "trained":
                yield failure(trained)
                return
            job.kill()  # the runner is done; nothing it left behind may change the outputs while they are read
            over = watch.finish()
            if over is not None:
                yield failure(over)
                return
            stage, trained = "score", {**trained, "host": {**watch.record(), "warm_start": warm_start}}
            if resume is not None:
                trained["resumed_epoch"] = resume.epoch
            try:
                if request.scoring == "graph":
                    graph = job.read_file(graphs.GRAPH_FILE, graphs.max_graph_bytes(request.limits))
                    scored = graphs.score_graph(graph, task, prepared, request.limits, request.isolation, warm)
                    trained["host"]["evaluator_warm_start"] = scored.warm_start
                    smoke = graphs.trained_smoke(smoke, scored)  # what was scored is what is measured
                    scores = scored.scores
                    trained = {**trained, "graph": graph_record(trained, scored), "secondary": scored.secondary}
                else:
                    outputs = {
                        split: job.output(f"{split}_outputs.npy", output_shape(task, y)) for split, y in labels.items()
                    }
                    scores = {
                        f"{split}_accuracy": score(task, outputs[split], y, prepared.byte_counts(split))
                        for split, y in labels.items()
                    }
                    trained["secondary"] = {  # a dense task's other metric (SSIM beside PSNR): its evaluation's timings
                        f"{split}_{name}": value
                        for split, y in labels.items()
                        for name, value in secondary(task, outputs[split], y).items()
                    }
            except graphs.GraphFailed as err:
                yield failure(Outcome("failed", str(err)))
                return
            except (ProtocolError, TaskError) as err:
                yield failure(Outcome("failed", f"unusable outputs: {err}"))
                return
            stopped = verdict(smoke, request, task.max_params, where) if request.scoring == "graph" else None
            if stopped is not None:  # the trained graph's own functional hash, now known
                yield stopped
                return
    except SandboxError:
        raise
    except Exception as err:  # the point: no candidate's evaluation may raise out of here
        reason = cap_text(f"[{stage}] {type(err).__name__} on the host: {err}", MAX_REASON_BYTES)
        error = reason + "\n" + cap_text(traceback.format_exc(), MAX_TRACEBACK_BYTES)
        yield RunResult("failed", reason, smoke, error=error, wall_seconds=time.perf_counter() - started, worker=where)
        return
    yield RunResult(
        "trained",
        None,
        smoke,
        trained=trained,
        scores=scores,
        wall_seconds=time.perf_counter() - started,
        worker=where,
        graph=graph if request.scoring == "graph" else None,
    )


def resumable(request: RunRequest, steps_per_epoch: int) -> Checkpoint | None:
    """The request's resume checkpoint checked again against this job's training (the epochs and steps it asks for),
    or None: no checkpoint, a screening job, or one that fails (logged; the job trains from scratch)."""
    if request.resume is None or request.smoke_only:
        return None
    try:
        return checkpoints.check(request.resume, request.train["epochs"], steps_per_epoch)
    except ProtocolError as err:
        log.warning("a resume checkpoint was dropped, training from scratch: %s", err)
        return None


def verdict(smoke: dict[str, Any], request: RunRequest, max_params: int, where: str) -> RunResult | None:
    """The checks on what the smoke stage measured, in order: a functional duplicate, a near-copy of a known
    structure, over the task's parameter budget; None when it may go on. The one home of these rules, whoever
    measured (the runner's report in trusted scoring; in graph scoring the host, from the smoke stage's graph, and
    again from the trained graph, whose functional hash only the clean evaluator knows)."""
    earlier = request.known_functional.get(smoke.get("functional_hash") or "")
    if earlier is not None:
        trained = " (after training, on the host's probe inputs)" if "digest" in smoke else ""
        return RunResult(
            "duplicate",
            f"computes the same function as candidate {earlier}{trained}",
            smoke,
            earlier,
            "functional",
            worker=where,
        )
    copied = near_copy(smoke, request)
    if copied is not None:
        member, similar = copied
        reason = (
            f"[novelty] a near-copy of candidate {member} "
            f"(structural similarity {similar:.3f} ≥ {request.novelty_threshold:g})"
        )
        return RunResult("duplicate", reason, smoke, member, "structural", worker=where)
    if smoke["params"] > max_params:
        reason = f"[param-budget] {smoke['params']:,} parameters exceed the task's budget of {max_params:,}"
        if "digest" in smoke:  # graph scoring: the host's count of the graph's weights, whatever the runner said
            said = smoke.get("reported_params")
            reason = reason.replace("] ", "] the graph's ", 1)
            reason += f" (the network reported {said:,})" if isinstance(said, int) and said != smoke["params"] else ""
        return RunResult("invalid", reason, smoke, worker=where)
    return None


def graph_record(trained: dict[str, Any], scored: graphs.GraphScores) -> dict[str, Any]:
    """What graph scoring adds to a trained evaluation's timings: the export (the runner's), the clean evaluator's
    start, load and run, its latency for a batch of one, the graph's functional hash, and from the graph's measures
    its matmul FLOPs and its digest (the architecture, whatever the weights)."""
    measured = scored.measures
    return {
        "export_seconds": trained.get("export_seconds"),
        "graph_bytes": trained.get("graph_bytes"),
        **{f"evaluator_{key}": value for key, value in scored.timings.items()},
        "latency_ms": scored.latency_ms,
        "device": "cpu",
        "functional_hash": scored.functional_hash,
        **({"matmul_flops": measured.matmul_flops, "digest": measured.digest} if measured is not None else {}),
    }


def near_copy(smoke: dict[str, Any], request: RunRequest) -> tuple[int, float] | None:
    """The known member (candidate id, similarity) whose structure the smoke run's is at least `novelty_threshold`
    similar to, the nearest one; None for a novel structure, a smoke event without a signature (the protocol
    dropped a bad one) or the check off (threshold 1.0)."""
    if request.novelty_threshold >= 1.0 or "structure" not in smoke:
        return None
    found = novelty.nearest(smoke["structure"], request.known_structures)
    return found if found is not None and found[1] >= request.novelty_threshold else None


def execute(request: RunRequest, gpu: str | None = None) -> RunResult:
    """The final result of one candidate's sandbox job (`stages` without the look at the smoke verdict)."""
    *_, final = stages(request, gpu)
    return final  # type: ignore[return-value]  # the last item is always a RunResult
