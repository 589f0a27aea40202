"""The training budget the host holds: how many CPU seconds a candidate's sandbox job may use, and the verdict on one
that uses more.

The runner's report of its training (epochs, steps, seconds) is the candidate's word: its code runs in the trainer's
process and can train on inside any forward pass, the export's or the held-out prediction's included, or during its
smoke stage. So the host grants each job CPU seconds before it trains, reads what the job uses from outside it
(agentarch/isolation/cputime.py) while it waits for the `trained` event, and kills a job past its grant: the
candidate is `failed` with a `[train:budget]` reason and never scored.

The grant is priced from what the candidate cannot cheaply inflate: the host's own measure of this machine's fixed
cost of a job, the size of the network as the host measured it (graph scoring: the smoke stage's ONNX graph,
agentarch/evaluation/graphs/measures.py; trusted scoring: the runner's report, the candidate's word like everything
there) and the work the host asked for; never from a timing the candidate's process could stretch:

    grant = STARTUP_FACTOR x startup + threads x (ALLOWANCE_S + slack x work x step_s)
    step_s = STEP_BASE_S + STEP_OP_S x ops + STEP_FLOP_S x flops x batch_size + STEP_PARAM_S x params

`startup` is the CPU time a job of the same configuration (task, isolation, threads, device) takes up to its smoke
event with a one-layer reference network of the host's (`startup_seconds`, measured once per process): starting
Python and torch, loading the data, the device, the smoke stage's fixed costs. `step_s` is a generous estimate of
one training step's CPU time on one thread (the trainer's loop per step, Python and autograd per operator,
arithmetic per example, the optimizer per weight), from the operator count (the structure signature's total), the
forward FLOPs per example and the parameters. `work` is the steps asked for (epochs x batches per epoch), plus
SMOKE_STEPS for the candidate's own smoke passes, plus a third of a step per held-out batch the job predicts
(trusted scoring). The whole job counts, its smoke stage included, so training done before the host's word to train
is charged too. `threads` because each of a job's threads adds CPU time (torch's idle workers spin a while before
they sleep). docs/sandbox.md ("A training budget the host holds") gives the honest seeds' use of their grants and
the bound on what a cheat can still buy.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from agentarch.isolation.job import Outcome, SandboxJob
from agentarch.isolation.policy import IsolationMode, Limits
from agentarch.tasks import graphsets

log = logging.getLogger(__name__)

FALLBACK_STARTUP_S = 10.0
"""The fixed cost assumed where the reference job could not measure it: several times what it is on this machine."""
STARTUP_FACTOR = 1.5
"""How much of the reference job's fixed cost a job may use: a candidate's smoke stage does the same, with a network
of its own (a bigger graph to export, more passes, which SMOKE_STEPS prices)."""
ALLOWANCE_S = 1.0
"""CPU seconds per thread any job may use on top: the exporter's first call on a bigger network (up to 0.8 s for
the resnet seed), building and exporting the trained network."""
SMOKE_STEPS = 40
"""The candidate's smoke passes in training steps: the functional hash's, the FLOP trace's, one forward and backward,
the latency runs, the proxies' (at 32 examples), the export's trace."""
STEP_BASE_S = 1e-3
"""CPU seconds of the trainer's own work per step: the batch's gather, the schedule, the clipping and the optimizer's
call."""
STEP_OP_S = 60e-6
"""CPU seconds per operator of a training step: its forward, backward and the autograd graph in Python and C++."""
STEP_FLOP_S = 3 / 16e9
"""CPU seconds per forward FLOP of one example in a training step: forward and backward are about 3 forward passes,
priced at 16 GFLOP/s (the seeds' training ran at 40 to 50 on one core of this machine)."""
STEP_PARAM_S = 20e-9
"""CPU seconds per parameter of a training step: AdamW's update and the gradient clipping read every weight."""


@dataclass(frozen=True)
class Grant:
    """CPU seconds a job may use in all, and the figures it was priced from (for the record and the reason)."""

    cpu_seconds: float
    startup_seconds: float  # the reference job's fixed cost on this machine
    steps: int  # training steps asked for: epochs x batches per epoch
    epochs: int
    batches: int  # per epoch
    step_seconds: float  # the estimate of one training step's single-thread CPU time
    slack: float
    threads: int

    def record(self) -> dict[str, Any]:
        """What the evaluation's timings keep of the grant."""
        return {
            "cpu_grant_seconds": round(self.cpu_seconds, 3),
            "startup_cpu_seconds": round(self.startup_seconds, 3),
            "steps_granted": self.steps,
            "step_estimate_ms": round(self.step_seconds * 1000, 4),
            "slack": self.slack,
        }

    def reason(self, used_s: float, smoke_s: float) -> str:
        """Why a job past the grant was stopped, in figures the repair prompt can act on."""
        return (
            f"the job used {used_s:.1f} CPU seconds ({smoke_s:.1f} of them before training), past the "
            f"{self.cpu_seconds:.1f} granted for the {self.steps:,} training steps asked for ({self.epochs} epoch"
            f"{'s' if self.epochs != 1 else ''} x {self.batches:,} batches), on {self.threads} thread"
            f"{'s' if self.threads != 1 else ''}; killed. Train only in the trainer's loop: a forward pass that "
            "trains, or work beyond the steps asked for, is stopped"
        )


def steps_per_epoch(train_examples: int, batch_size: int) -> int:
    """Batches per epoch as the trainer counts them: the last partial batch is dropped (sandbox/trainer.py)."""
    return max(1, train_examples // max(1, batch_size))


def grant(
    smoke: dict[str, Any],
    train: dict[str, Any],
    train_examples: int,
    held_out_examples: int,
    limits: Limits,
    slack: float,
    startup_s: float,
    whole_graph: bool = False,
) -> Grant:
    """The CPU seconds a job may use, from the network's measures in `smoke` (the host's in graph scoring), the
    train config, the task's split sizes (`held_out_examples`: what the job predicts itself, 0 in graph scoring),
    the job's threads (`limits`) and the reference job's fixed cost (`startup_seconds`). `whole_graph`: a graph
    task's, whose one example is the whole graph, so its measures are one step's and an epoch is one step."""
    if whole_graph:
        train_examples, held_out_examples, train = 1, min(held_out_examples, 1), {**train, "batch_size": 1}
    batch = int(train["batch_size"])
    batches = steps_per_epoch(train_examples, batch)
    steps = int(train["epochs"]) * batches
    ops = sum((smoke.get("structure") or {}).values()) or 1
    flops, params = _count(smoke, "flops"), _count(smoke, "params")
    step_s = STEP_BASE_S + STEP_OP_S * ops + STEP_FLOP_S * flops * batch + STEP_PARAM_S * params
    work = steps + SMOKE_STEPS + math.ceil(held_out_examples / batch) / 3
    threads = max(1, limits.threads)
    cpu = STARTUP_FACTOR * startup_s + threads * (ALLOWANCE_S + slack * work * step_s)
    return Grant(cpu, startup_s, steps, int(train["epochs"]), batches, step_s, slack, threads)


def _count(smoke: dict[str, Any], key: str) -> int:
    value = smoke.get(key)
    return value if isinstance(value, int) and value > 0 else 0


def job_grant(
    train: dict[str, Any],
    scoring: str,
    slack: float,
    limits: Limits,
    smoke: dict[str, Any],
    startup_s: float,
    task_dir: Path,
    whole_graph: bool = False,
) -> Grant | None:
    """The CPU seconds a training job may use (`grant`), priced from the task's split sizes in `task_dir`: the job
    predicts its held-out examples itself under trusted scoring only; None with the budget off (`slack` 0)."""
    if slack <= 0:
        return None
    sizes = split_sizes(task_dir)
    held_out = 0 if scoring == "graph" else sizes["val"] + sizes["test"]
    return grant(smoke, train, sizes["train"], held_out, limits, slack, startup_s, whole_graph)


def split_sizes(inputs_dir: Path) -> dict[str, int]:
    """Examples per split of a task's prepared inputs (`train`, `val`, `test`), from the host's own files' headers
    (memory-mapped, nothing read): the counts a grant is priced from."""
    graphs = graphsets.split_sizes(inputs_dir)
    if graphs is not None:  # a graphs task's examples are its graphs, not its nodes
        return graphs
    sizes = {}
    for split in ("train", "val", "test"):
        path = inputs_dir / f"{split}_x.npy"
        sizes[split] = int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0]) if path.is_file() else 0
    return sizes


REFERENCE = {
    "positions": "self.out = nn.Embedding(num_classes, num_classes)\n    def forward(self, x):\n        return self.out(x)",
    "ids": "self.emb = nn.Embedding(vocab_size, 8)\n        self.out = nn.Linear(8, num_classes)\n"
    "    def forward(self, x):\n        return self.out(self.emb(x).mean(1))",
    "values": "self.out = nn.Linear(math.prod(in_shape), num_classes)\n"
    "    def forward(self, x):\n        return self.out(x.flatten(1))",
    "pixels": "f = out_shape[-1] // in_shape[-1]\n        self.out = nn.Sequential(nn.Conv2d(in_shape[0], num_classes * f * f, 1), "
    "nn.PixelShuffle(f))\n    def forward(self, x):\n        return self.out(x)",
    "nodes": "self.out = nn.Linear(in_shape[0], num_classes)\n    def forward(self, x, edge_index):\n        h = self.out(x)\n"
    "        return h.index_add(0, edge_index[1], h[edge_index[0]])",
    "graphs": "self.out = nn.Linear(in_shape[0], num_classes)\n    def forward(self, x, edge_index, batch):\n"
    "        h = x.index_add(0, edge_index[1], x[edge_index[0]])\n"
    "        return self.out(torch.zeros(batch.max() + 1, x.shape[1]).index_add(0, batch, h))",
}
"""The host's reference network per input kind, one layer: per-position logits over ids (token, lm), one output per
sequence of ids, one per example of values (images, tables, float sequences), one image per image (dense: a 1x1
convolution and a pixel shuffle up to the target's size), logits per node of a graph (graph: a linear layer summed
over each node's in-neighbours, called `forward(x, edge_index)` as a graph task's networks are), logits per graph of a
batch (graphs: those sums summed per graph, then the linear layer, `forward(x, edge_index, batch)`; the graph count a
tensor, so that graph scoring's export computes it)."""


def reference_code(kind: str, vocab_size: int | None) -> str:
    """The reference network's module for a task of `kind` (`vocab_size`: a sequence task over ids)."""
    body = REFERENCE[
        "positions"
        if kind in ("token", "lm")
        else "pixels"
        if kind == "dense"
        else "nodes"
        if kind == "graph"
        else "graphs"
        if kind == "graphs"
        else "ids"
        if vocab_size is not None
        else "values"
    ]
    return (
        "import math\nimport torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self, in_shape, num_classes, vocab_size=None, out_shape=None):\n        super().__init__()\n        "
        + body
        + "\n"
    )


_startup: dict[tuple[Any, ...], float] = {}  # measured fixed costs, by what an honest job's cost depends on
_startup_failed: dict[tuple[Any, ...], float] = {}  # configurations whose reference job failed: when (monotonic)
_startup_lock = threading.Lock()

STARTUP_RETRY_S = 600.0
"""How long a configuration whose reference job failed keeps FALLBACK_STARTUP_S before the next job measures again: a
failure is a moment of the host's (a load spike, a disk briefly full), and the fallback, several times the real
cost, would otherwise raise every later grant of the process for good (some 13 CPU seconds of free training each)."""


def startup_seconds(
    code: str, spec: dict[str, Any], inputs_dir: Path, limits: Limits, isolation: IsolationMode, gpu: str | None
) -> float:
    """The CPU seconds a job of this configuration uses up to its smoke event with the reference network `code`:
    Python, torch and the task's data, the device's start, the smoke stage's fixed costs (the exporter's first call),
    on this machine, measured by the host on its own job (no candidate code runs in it), once per configuration
    and process. It is most of an honest job's fixed cost, which a grant must cover whatever the machine, and no
    candidate can stretch it. A reference job that does not reach its smoke event (a host too loaded for its
    wall clock) leaves FALLBACK_STARTUP_S in its place, with a warning, for STARTUP_RETRY_S: then it is measured
    again.

    A measurement is kept by what the cost depends on (task, data, scoring, isolation, threads, device), not by the
    bounds it ran under: a time, memory, process or file limit stops a job, it does not change what an honest start
    costs, so a run whose jobs differ only in their bounds measures once. A failure is kept with the whole of its
    limits: a bound too tight for the reference (a small memory cap, a short smoke limit) must not hand its
    fallback to jobs whose reference would have finished."""
    cost = (spec["kind"], tuple(spec["in_shape"]), str(inputs_dir), spec.get("scoring"), limits.threads, isolation, gpu)
    bounded = (*cost, limits)
    with _startup_lock:
        if cost in _startup:
            return _startup[cost]
        failed = _startup_failed.get(bounded)
        if failed is not None and time.monotonic() - failed <= STARTUP_RETRY_S:
            return FALLBACK_STARTUP_S
        reference = {**spec, "train": {**spec["train"], "epochs": 1}}
        patient = replace(limits, timeout_s=max(limits.timeout_s, limits.smoke_timeout_s))
        with SandboxJob(code, reference, inputs_dir, patient, isolation, gpu=gpu) as job:
            event = job.read_event(limits.smoke_timeout_s)
            used = job.cpu.seconds()
            job.send("stop")
        if isinstance(event, Outcome) or event["event"] != "smoke":
            said = event.reason if isinstance(event, Outcome) else str(event.get("message", event["event"]))
            log.warning("the training budget's reference job failed (%s); assuming %g s", said, FALLBACK_STARTUP_S)
            _startup_failed[bounded] = time.monotonic()
            return FALLBACK_STARTUP_S
        _startup_failed.pop(bounded, None)
        _startup[cost] = used
        return used


class Watch:
    """One job's training under its grant: the host's word to train starts it, the `trained` event (or the kill) ends
    it; the job's CPU time is read from outside it throughout (SandboxJob.cpu), and its wall time here.

    `granted` None: the budget is off (`budget_slack = 0`); the figures are still measured and recorded.
    """

    def __init__(self, job: SandboxJob, granted: Grant | None) -> None:
        self.job, self.granted = job, granted
        self.smoke_cpu_s = job.cpu.seconds()  # the smoke stage, and the wait for the host's word
        self.began = time.perf_counter()
        self.cpu_s = self.smoke_cpu_s
        self.wall_s = 0.0

    def read(self) -> dict[str, Any] | Outcome:
        """The job's next event, as SandboxJob.read_event gives it, or an over-budget Outcome (the job killed) whose
        reason gives the figures."""
        limit = self.granted.cpu_seconds if self.granted is not None else None
        event = self.job.read_event(cpu_limit_s=limit)
        self.wall_s = time.perf_counter() - self.began
        if isinstance(event, Outcome) and event.kind == "budget":
            return self._over()
        return event

    def finish(self) -> Outcome | None:
        """The last reading, once the job is killed (its count is final): an over-budget Outcome if the job went past
        its grant after the last poll, else None."""
        self.cpu_s = self.job.cpu.seconds()
        if self.granted is not None and self.cpu_s > self.granted.cpu_seconds:
            return self._over()
        return None

    def _over(self) -> Outcome:
        assert self.granted is not None
        self.cpu_s = self.job.cpu.seconds()
        return Outcome("failed", self.granted.reason(self.cpu_s, self.smoke_cpu_s), "budget")

    def record(self) -> dict[str, Any]:
        """The host's figures for the evaluation's timings: training wall and CPU seconds (from the word to train to
        the `trained` event), the smoke stage's CPU seconds, where the CPU time was read, and the grant."""
        return {
            "train_seconds": round(self.wall_s, 4),
            "train_cpu_seconds": round(self.cpu_s - self.smoke_cpu_s, 4),
            "smoke_cpu_seconds": round(self.smoke_cpu_s, 4),
            "cpu_source": self.job.cpu.source,
            **({"budget": self.granted.record()} if self.granted is not None else {}),
        }
