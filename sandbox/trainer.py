"""The training loop the runner uses for every candidate: plain, short and readable (nanoGPT style).

It runs inside the sandbox process, so it imports only torch, numpy and the standard library, never
the orchestrator. One loop serves every task, so that candidates are compared on their
architecture (and the few knobs they may set in HPARAMS), not on bespoke training tricks:

- the whole (small) dataset lives on the device and batches are sliced from it, no DataLoader;
- AdamW (the fused kernel), weight decay only on matrices and kernels, linear warmup then cosine
  decay to zero, unless the candidate's RECIPE (checked by the host against the task's bounds) picks another
  optimizer (Adam, SGD with momentum or Nesterov momentum), schedule (linear, constant, step), label smoothing or
  augmentations (`augment`); the epochs and the time budget stay the task's whatever the recipe says;
- gradient clipping, bf16 autocast on CUDA, channels-last images on CUDA, optional torch.compile;
- no host-device synchronization per step: losses are read back only when the curve is logged;
- a fixed shuffle per seed, so the same seed gives the same run (bitwise on CPU, without compile);
- a graph task (node classification) is one example: every step is the whole graph, `net(x, edge_index)`, its loss
  over the training nodes only (the others carry IGNORE_INDEX: their labels are not in the sandbox);
- a graphs task (graph classification) batches graphs: a step's batch is some graphs joined into one,
  `net(x, edge_index, batch)` (sandbox/graphbatch.py), one label per graph.

benchmarks/trainer.py measures the loop against a minimal hand-written one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.adamw import adamw

from .checkpoint import Resume, Saver
from .graphbatch import GraphBatch, GraphSplit
from .recipe import AUGMENTATIONS, OPTIMIZERS, SCHEDULES, SGD, augment, zero_grad

IGNORE_INDEX = -100
"""Label value at token positions that are not scored (the PyTorch cross-entropy convention)."""

MAX_CURVE_POINTS = 50
"""Loss points logged over a run (plus the final one): enough to plot, small enough to archive."""

# cuBLAS reads this once, when it first runs, and needs it for deterministic matmuls on CUDA. The
# runner's smoke stage runs the model on the device before training seeds anything, so it is set
# here, when the runner imports this module, rather than in seed_everything.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message says at which step."""


@dataclass
class TrainConfig:
    """One training run's knobs: the task's defaults overlaid with the candidate's HPARAMS."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int = 0
    warmup_frac: float = 0.05  # linear warmup over this fraction of all steps, then cosine to 0
    label_smoothing: float = 0.0
    optimizer: str = "adamw"  # one of OPTIMIZERS (the candidate's RECIPE, checked by the host)
    schedule: str = "cosine"  # after warmup: one of SCHEDULES
    augment: list[str] = field(default_factory=list)  # names in AUGMENTATIONS, applied to each training batch
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    max_seconds: float | None = None  # wall-clock budget; past it, training stops and says so
    channels_last: bool | None = None  # 4-D images and model in channels-last layout; None: on CUDA only
    compile: bool = False  # torch.compile the model; if that fails, train eagerly and say so in notes


KINDS = ("image", "token", "sequence", "table", "lm", "dense", "graph", "graphs")


@dataclass
class Inputs:
    """A task's inputs, already on the device and ready for the network.

    Images and float features are normalized; ids stay int64. A regression's training targets are
    standardized, `(y - target_mean) / target_std` per target, so one learning rate suits targets
    of any scale; predictions are mapped back to the targets' units before the host sees them. A dense
    task's inputs and training targets are images with pixel values in [0, 1], as stored. A graph task's `train_x`
    is every node's features, `train_y` the training nodes' labels (IGNORE_INDEX elsewhere), `val_x` and `test_x`
    the held-out nodes' indices, and `edge_index` its edges. A graphs task's `train_x`, `val_x` and `test_x` are each
    split's graphs (a GraphSplit: indexing it gives a GraphBatch of graphs), `train_y` one label per training graph.
    """

    kind: str  # one of KINDS
    train_x: torch.Tensor | GraphSplit
    train_y: torch.Tensor
    val_x: torch.Tensor | GraphSplit | None  # None where the folder holds the training split alone (graph scoring)
    test_x: torch.Tensor | GraphSplit | None
    vocab_size: int | None = None  # id sequences of a sequence task
    target_mean: torch.Tensor | None = None  # a regression's training targets, per target
    target_std: torch.Tensor | None = None
    out_shape: tuple[int, ...] | None = None  # dense: the restored image's (C, H, W)
    edge_index: torch.Tensor | None = None  # graph: (2, E) int64 node ids

    def args(self, x: torch.Tensor | GraphBatch) -> tuple[torch.Tensor, ...]:
        """What the network is called with for inputs `x`: `(x,)`, for a graph task `(x, edge_index)`, for a graphs
        task's batch `(x, edge_index, batch)`."""
        if isinstance(x, GraphBatch):
            return x.args()
        return (x,) if self.edge_index is None else (x, self.edge_index)

    @property
    def regression(self) -> bool:
        """Whether the network predicts values (scored by MSE, MAE or R²) rather than classes."""
        return self.target_mean is not None


@dataclass
class TrainResult:
    """What happened during training, reported to the host and kept in the archive."""

    curve: list[dict[str, float]]  # {"step", "epoch", "loss"}; loss is the mean since the previous point
    train_seconds: float
    steps: int
    epochs_done: float
    stopped_early: bool  # the max_seconds budget ran out before the last epoch
    peak_memory_mb: float  # CUDA: peak allocated tensors; CPU: peak resident size of the process
    notes: list[str] = field(default_factory=list)  # what did not go as configured, e.g. compile fell back


def pick_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, compiled: bool = False) -> None:
    """Seed every generator a model might draw from and ask for deterministic kernels.

    Kernels without a deterministic version only warn (warn_only=True): a candidate that uses one
    still trains, it is merely not bit-for-bit reproducible on that device. `torch.use_deterministic_algorithms`
    also sets torch.compile's own flag, importing the compiler to do it (about 1 s in each fresh
    sandbox); an eager run (`compiled=False`) sets only the eager flag, which is the rest of what it does.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    if compiled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def load_inputs(inputs_dir: Path, device: torch.device) -> Inputs:
    """Read a task's inputs folder (see docs/architecture.md, "Data contracts") onto the device.

    Images are stored as uint8 and normalized on the device, `(x / scale - mean[c]) / std[c]`, in
    place, so the only full-size float copy is the one the model trains on. Float sequences and
    tables are normalized per feature (the last axis) with the training statistics in meta.json,
    which the host computed (a dense task's are the identity: its pixels stay in [0, 1]). Token, lm and id-sequence
    inputs are int64 ids; a dense task's training targets are float images; a graph task's held-out "inputs" are node
    indices, and its edges come from edge_index.npy; a graphs task's splits are GraphSplits of their nodes, edges
    ({split}_edges.npy) and node offsets ({split}_ptr.npy). Under graph scoring the folder
    holds the training split alone, and the held-out inputs are None: nothing in the sandbox can read them.
    """
    inputs_dir = Path(inputs_dir)
    meta = json.loads((inputs_dir / "meta.json").read_text())
    kind = meta["kind"]
    if kind not in KINDS:
        raise ValueError(f"{inputs_dir / 'meta.json'}: unknown task kind {kind!r}; expected one of {', '.join(KINDS)}")

    def load(name: str) -> torch.Tensor:
        return torch.from_numpy(np.load(inputs_dir / f"{name}.npy", allow_pickle=False)).to(device)

    def stats(key: str, ndim: int) -> torch.Tensor:
        """meta[key] shaped to broadcast against the channel axis of images or the last axis of features."""
        shape = (1, -1) + (1,) * (ndim - 2) if kind == "image" else (-1,)
        return torch.tensor(meta[key], dtype=torch.float32, device=device).reshape(shape)

    def read_x(name: str) -> torch.Tensor:
        x = load(name)
        if not x.is_floating_point() and kind != "image":
            return x.long()
        x = x.float()
        if kind == "image":
            x.div_(meta["scale"])
        return x.sub_(stats("mean", x.ndim)).div_(stats("std", x.ndim))

    train_y = load("train_y")
    mean = std = None
    if meta.get("regression"):
        mean, std = stats("target_mean", 2), stats("target_std", 2)
        train_y = (train_y.float() - mean) / std
    elif kind == "dense":
        train_y = train_y.float()
    else:
        train_y = train_y.long()

    def read_split(split: str) -> torch.Tensor | GraphSplit | None:
        if not (inputs_dir / f"{split}_x.npy").exists():
            return None
        x = read_x(f"{split}_x")
        return GraphSplit(x, load(f"{split}_edges"), load(f"{split}_ptr")) if kind == "graphs" else x

    val_x, test_x = read_split("val"), read_split("test")
    out_shape = tuple(meta["out_shape"]) if kind == "dense" else None
    edge_index = load("edge_index").long() if kind == "graph" else None
    return Inputs(
        kind, read_split("train"), train_y, val_x, test_x, meta.get("vocab_size"), mean, std, out_shape, edge_index
    )


def loss_fn(
    kind: str, out: torch.Tensor, y: torch.Tensor, label_smoothing: float, regression: bool = False
) -> torch.Tensor:
    """The training loss for a batch of network outputs, computed in float32.

    - classes (image, sequence, table): cross-entropy of (B, C) logits against (B,) labels;
    - token: cross-entropy of (B, L, V) logits against (B, L) labels with IGNORE_INDEX at unscored
      positions; a batch with no scored position gives 0, not NaN, so it cannot pass for divergence;
    - lm: the shift is done here, not by the candidate: logits at positions 0..L-2 against the ids at
      1..L-1 (`y` is the batch of ids itself);
    - regression (sequence, table): mean squared error of (B, T) outputs against standardized targets;
    - dense: mean squared error of the restored images (B, C, H, W) against the clean ones: what PSNR, the
      score, is a monotone function of (per image);
    - graph: cross-entropy of (N, C) node logits against (N,) labels, IGNORE_INDEX at every node outside the
      training split (their labels are not in the sandbox);
    - graphs: cross-entropy of (G, C) logits against (G,) labels, one per graph, as any classifier's.

    Label smoothing applies to class labels only: it would bias a regression, and an lm is scored
    by the likelihood it assigns, which smoothing caps.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS)}")
    if regression or kind == "dense":
        return F.mse_loss(out.float(), y.float())
    if kind == "lm":
        return F.cross_entropy(out[:, :-1].float().reshape(-1, out.shape[-1]), y[:, 1:].reshape(-1))
    if kind == "graph":
        return F.cross_entropy(out.float(), y, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
    if kind == "token":
        flat_y = y.reshape(-1)
        total = F.cross_entropy(
            out.float().reshape(flat_y.numel(), -1),
            flat_y,
            ignore_index=IGNORE_INDEX,
            label_smoothing=label_smoothing,
            reduction="sum",
        )
        return total / (flat_y != IGNORE_INDEX).sum().clamp(min=1)
    return F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)


def lr_at(step: int, total_steps: int, base_lr: float, warmup_frac: float, schedule: str = "cosine") -> float:
    """Learning rate for 0-based `step`: linear warmup to base_lr, then the schedule: cosine or linear decay towards
    0, constant, or `step` (x0.1 at half the steps after warmup, x0.01 at three quarters)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    warmup = int(warmup_frac * total_steps)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if schedule == "linear":
        return base_lr * (1.0 - progress)
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * (0.01 if progress >= 0.75 else 0.1 if progress >= 0.5 else 1.0)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class AdamW:
    """AdamW as torch computes it (`torch.optim.adamw.adamw`: its fused or single-tensor kernel), its state kept here.

    torch.optim.AdamW runs the same update, bit for bit, but its `step` imports torch._dynamo on
    first use (about 1 s here, a sixth of a small candidate's whole evaluation in its fresh sandbox)
    even when nothing is compiled. The interface is the part the training loop uses: `param_groups`
    (each with params, lr and weight_decay), `step` and `zero_grad`.
    """

    def __init__(
        self,
        groups: list[dict],
        lr: float,
        fused: bool,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        decoupled: bool = True,
    ) -> None:
        """`decoupled=False` is Adam with L2 weight decay (added to the gradient) instead of AdamW's decoupled decay."""
        self.param_groups = [{**group, "lr": lr} for group in groups]
        self.fused, self.betas, self.eps, self.decoupled = fused, betas, eps, decoupled
        self.state: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            decay = group["weight_decay"]
            if not self.decoupled and decay:
                for p in params:
                    p.grad.add_(p, alpha=decay)
            for p in params:
                if p not in self.state:  # first moment, second moment, step count (a float tensor, as torch keeps it)
                    step = torch.zeros((), dtype=torch.float32, device=p.device if self.fused else "cpu")
                    self.state[p] = (torch.zeros_like(p), torch.zeros_like(p), step)
            exp_avgs, exp_avg_sqs, steps = zip(*(self.state[p] for p in params))
            adamw(
                params,
                [p.grad for p in params],
                list(exp_avgs),
                list(exp_avg_sqs),
                [],
                list(steps),
                foreach=False,
                fused=self.fused,
                amsgrad=False,
                beta1=self.betas[0],
                beta2=self.betas[1],
                lr=group["lr"],
                weight_decay=decay if self.decoupled else 0.0,
                eps=self.eps,
                maximize=False,
                capturable=False,
                differentiable=False,
                has_complex=any(torch.is_complex(p) for p in params),
            )

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grad(self.param_groups, set_to_none)


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> AdamW | SGD:
    """The recipe's optimizer (AdamW by default) that decays only weight matrices and kernels (ndim >= 2).

    Decaying biases and normalization gains only pulls them towards zero for no regularizing
    benefit, so they form a second group without decay. The fused kernel (one per parameter instead
    of about ten) is used on CPU as well as CUDA: on small models the optimizer step is a large
    share of the step time. It needs floating-point parameters, so a candidate with, say, complex
    ones gets the plain implementation.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
    if cfg.optimizer in ("sgd", "nesterov"):
        return SGD(groups, lr=cfg.lr, nesterov=cfg.optimizer == "nesterov")
    fused = device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    return AdamW(groups, lr=cfg.lr, fused=fused, decoupled=cfg.optimizer == "adamw")


def compile_or_eager(model: nn.Module, notes: list[str]) -> nn.Module:
    """`torch.compile(model)`, or `model` itself with a note when torch cannot compile here at all.

    Compilation is lazy, so most failures surface only at the first forward or backward pass; the
    training loop catches those and falls back to `model` the same way.
    """
    try:
        return torch.compile(model)
    except Exception as err:  # noqa: BLE001 - any failure to compile means: train eagerly
        notes.append(compile_failure_note(err))
        return model


def compile_failure_note(err: Exception) -> str:
    """One line for TrainResult.notes: compiler errors run to pages, and the first line says what broke."""
    first_line = (str(err).strip().splitlines() or [""])[0][:300]
    return f"torch.compile failed ({type(err).__name__}: {first_line}); trained eagerly"


def train(
    model: nn.Module,
    inputs: Inputs,
    cfg: TrainConfig,
    device: torch.device,
    saver: Saver | None = None,
    resume: Resume | None = None,
) -> TrainResult:
    """Train `model` in place on the training split and report the loss curve.

    Every epoch sees a fresh permutation drawn from a generator seeded with cfg.seed. The last
    partial batch of each epoch is dropped (a different remainder every epoch), so no step runs on
    a batch of one, which batch normalization cannot train on.

    Nothing in a step waits for the device: batches are gathered on the device with an index
    tensor copied there once per epoch (asynchronously, from pinned memory), the schedule is
    computed on the host, and losses stay on the device until a curve point reads them back, so
    the GPU runs ahead of the Python loop. A non-finite loss is still reported at the exact step.
    With cfg.compile, compilation time counts towards train_seconds and max_seconds. A graph task's epoch is one
    step on the whole graph (its nodes depend on each other, so they cannot be cut into batches), whatever
    cfg.batch_size says.

    `saver` hands the host a checkpoint at an epoch's end (sandbox/checkpoint.py, every so many seconds); `resume`
    continues from one: the model, optimizer, generators and curve as they were then, so the steps that follow are
    the ones an uninterrupted run takes.
    """
    graph = inputs.kind == "graph"
    n = 1 if graph else len(inputs.train_y)  # examples: a graphs task's train_x holds their nodes
    if len(inputs.train_x) == 0:
        raise ValueError("the training split is empty")
    steps_per_epoch = 1 if graph else max(1, n // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    log_every = max(1, math.ceil(total_steps / MAX_CURVE_POINTS))
    on_cuda = device.type == "cuda"
    channels_last = (on_cuda if cfg.channels_last is None else cfg.channels_last) and inputs.train_x.ndim == 4

    model.to(device).train()
    if channels_last:  # before the optimizer is built, so its state takes the same layout
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg, device)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    notes: list[str] = []
    forward = compile_or_eager(model, notes) if cfg.compile else model
    shuffle = torch.Generator().manual_seed(cfg.seed)
    unknown = sorted(set(cfg.augment) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentation(s) {', '.join(unknown)}; expected some of {', '.join(AUGMENTATIONS)}")
    augmenting = torch.Generator(device=device).manual_seed(cfg.seed + 1) if cfg.augment else None
    window: list[torch.Tensor] = []  # losses since the last curve point, still on the device
    curve: list[dict[str, float]] = []
    stopped_early = False
    step = 0
    if resume is not None:
        step = resume.restore(model, optimizer, shuffle, curve, window, device)

    def log(steps_done: int) -> None:
        values = torch.stack(window).tolist()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss became {value} at step {steps_done - len(values) + offset + 1}")
        curve.append({"step": steps_done, "epoch": steps_done / steps_per_epoch, "loss": sum(values) / len(values)})
        window.clear()

    def forward_backward(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        precision = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
        with precision:
            loss = loss_fn(inputs.kind, net(*inputs.args(x)), y, cfg.label_smoothing, inputs.regression)
        loss.backward()
        return loss

    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    while step < total_steps and not stopped_early:
        order = torch.randperm(n, generator=shuffle)
        if on_cuda:  # a pinned source lets the copy below overlap with the queued steps instead of draining them
            order = order.pin_memory()
        order = order.to(device, non_blocking=True)
        for batch in range(steps_per_epoch):
            if graph:
                x, y = inputs.train_x, inputs.train_y
            else:
                idx = order[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
                x, y = inputs.train_x[idx], inputs.train_y[idx]
            if augmenting is not None:
                x, y = augment(inputs.kind, x, y, cfg.augment, augmenting)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, cfg.lr, cfg.warmup_frac, cfg.schedule)
            try:
                loss = forward_backward(forward, x, y)
            except Exception as err:
                if forward is model:
                    raise
                notes.append(compile_failure_note(err))
                forward = model
                optimizer.zero_grad(set_to_none=True)
                loss = forward_backward(model, x, y)
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            window.append(loss.detach())
            step += 1
            if step % log_every == 0:
                log(step)
            if cfg.max_seconds is not None and time.perf_counter() - started >= cfg.max_seconds:
                stopped_early = step < total_steps
                break
        else:  # a whole epoch: a point to continue from
            if saver is not None and step < total_steps:
                saver.epoch_end(step // steps_per_epoch, step, model, optimizer, shuffle, curve, window)
    if saver is not None and saver.off is not None:
        notes.append(saver.off)
    if window:
        log(step)
    if on_cuda:
        torch.cuda.synchronize(device)
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return TrainResult(
        curve=curve,
        train_seconds=time.perf_counter() - started,
        steps=step,
        epochs_done=step / steps_per_epoch,
        stopped_early=stopped_early,
        peak_memory_mb=peak_mb,
        notes=notes,
    )


def predict(
    model: nn.Module,
    x: torch.Tensor | GraphSplit,
    batch_size: int,
    device: torch.device,
    inputs: Inputs | None = None,
) -> np.ndarray:
    """What the host scores for `x`, in eval mode, batch by batch, as a float array on the CPU.

    Without `inputs` (or for class tasks), the network's float32 outputs as they are. With the
    task's `inputs`: a regression's predictions mapped back to the targets' units, and for an lm
    task one float64 per sequence, the summed negative log-likelihood in nats of bytes 1..L-1 under
    the logits at positions 0..L-2. The runner computes it rather than the candidate's code, and
    sends (N,) instead of (N, L, vocab) logits, which would be 1 KiB per held-out byte. For a graph task `x` holds
    the node indices to predict: the network runs once on the whole graph and their rows of its logits come back;
    for a graphs task `x` is a split's graphs (a GraphSplit), predicted batch by batch of graphs.
    """
    model.to(device).eval()
    if inputs is not None and inputs.kind == "graph":
        with torch.no_grad():
            out = model(*inputs.args(inputs.train_x.to(device))).float()
        return out[x.to(device)].cpu().numpy().astype(np.float32, copy=False)
    outputs = []
    # bfloat16 keeps 8 bits of a pixel value (an error of 0.002 at 0.5 caps PSNR near 50 dB): images are restored in
    # float32, as the clean evaluator runs a graph
    low_precision = device.type == "cuda" and (inputs is None or inputs.kind != "dense")
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=low_precision):
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device)
            out = model(*(batch.args() if isinstance(batch, GraphBatch) else (batch,))).float()
            if inputs is not None and inputs.kind == "lm":
                nll = F.cross_entropy(out[:, :-1].transpose(1, 2), batch[:, 1:], reduction="none")
                outputs.append(nll.double().sum(dim=1).cpu().numpy())
                continue
            if inputs is not None and inputs.regression:
                out = out * inputs.target_std + inputs.target_mean
            outputs.append(out.cpu().numpy().astype(np.float32, copy=False))
    return np.concatenate(outputs)
