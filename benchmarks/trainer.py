"""Training throughput of the sandbox trainer against a minimal hand-written PyTorch loop.

Run from the repository root:  .venv/bin/python benchmarks/trainer.py > benchmarks/trainer.md
On a GPU host:                  .venv/bin/python benchmarks/trainer.py --device cuda

The trainer does more per step than a bare loop (learning-rate schedule, gradient clipping, two
weight-decay groups, loss bookkeeping for the curve), and the point of this benchmark is to show
that this costs next to nothing. Both loops train the same seed architecture from the same initial
weights on the same device-resident data, with the same optimizer (AdamW), learning rate, batch
size, epochs, threads and precision (bf16 autocast on CUDA for all), and all shuffle every
epoch and drop the last partial batch. They run interleaved in one process, rotating which goes
first, so machine noise hits them alike; the table reports the median of the repeats.

The trainer uses PyTorch's fused AdamW kernel on CPU too, which a minimal loop does not ask for, so
a third loop, the hand-written one with `fused=True`, separates what the trainer gains from the
optimizer kernel from what its extra per-step work costs.

The default is one thread: this 2-core machine is shared with other jobs, and two OpenMP threads
contending for two busy cores make step times swing by a factor of ten; both loops always use
the same number of threads.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agentarch.runner import trainer  # noqa: E402

from agentarch.tasks.preparation import prepare  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402

SEEDS = REPO / "archive" / "seeds"


@dataclass(frozen=True)
class Case:
    """One benchmark row: a seed architecture trained on a task's data for a fixed number of steps."""

    name: str
    task: str
    seed_file: str
    epochs: int
    max_train: int | None = None  # keep only this many training samples (a few steps on the big sets)


CASES = (
    Case("digits / cnn", "digits", "image/cnn.py", epochs=10),
    Case("digits / mlp", "digits", "image/mlp.py", epochs=30),
    Case("mqar / transformer", "mqar", "token/transformer.py", epochs=1, max_train=64 * 24),
)


def load_net(seed_file: str) -> type[nn.Module]:
    path = SEEDS / seed_file
    spec = importlib.util.spec_from_file_location(f"seed_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Net


def hand_written(
    model: nn.Module, inputs: trainer.Inputs, cfg: trainer.TrainConfig, device: torch.device, fused: bool | None = None
) -> int:
    """The reference: the plainest correct loop, returning the number of steps it took."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    n = len(inputs.train_x)
    steps_per_epoch = max(1, n // cfg.batch_size)
    for _ in range(cfg.epochs):
        order = torch.randperm(n, device=device)
        for batch in range(steps_per_epoch):
            idx = order[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
            x, y = inputs.train_x[idx], inputs.train_y[idx]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(x)
            loss = F.cross_entropy(logits.float().flatten(0, -2), y.flatten(), ignore_index=trainer.IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return cfg.epochs * steps_per_epoch


def hand_written_fused(model: nn.Module, inputs: trainer.Inputs, cfg: trainer.TrainConfig, device: torch.device) -> int:
    return hand_written(model, inputs, cfg, device, fused=True)


def agentarch_trainer(model: nn.Module, inputs: trainer.Inputs, cfg: trainer.TrainConfig, device: torch.device) -> int:
    return trainer.train(model, inputs, cfg, device).steps


def timed(
    loop: Callable[..., int],
    net_cls: type[nn.Module],
    in_shape: tuple[int, ...],
    num_classes: int,
    inputs: trainer.Inputs,
    cfg: trainer.TrainConfig,
    device: torch.device,
) -> float:
    """Samples per second of one run of `loop` on a freshly built model (built outside the clock)."""
    trainer.seed_everything(cfg.seed)
    model = net_cls(in_shape, num_classes).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    steps = loop(model, inputs, cfg, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def bench_case(case: Case, cache: Path, device: torch.device, repeats: int) -> str:
    task = get_task(case.task)
    inputs = trainer.load_inputs(prepare(task, cache).inputs_dir, device)
    if case.max_train is not None:
        inputs = replace(inputs, train_x=inputs.train_x[: case.max_train], train_y=inputs.train_y[: case.max_train])
    cfg = trainer.TrainConfig(
        epochs=case.epochs, batch_size=task.batch_size, lr=task.lr, weight_decay=task.weight_decay
    )
    net_cls = load_net(case.seed_file)
    loops = {"trainer": agentarch_trainer, "hand": hand_written, "fused": hand_written_fused}
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for name, loop in loops.items():  # warm-up: thread pools, allocator, compilation caches
        timed(loop, net_cls, task.in_shape, task.num_classes, inputs, cfg, device)
    for repeat in range(repeats):
        order = list(loops)[repeat % len(loops) :] + list(loops)[: repeat % len(loops)]  # rotate who goes first
        for name in order:
            samples[name].append(timed(loops[name], net_cls, task.in_shape, task.num_classes, inputs, cfg, device))
    trained, hand, fused = (statistics.median(samples[name]) for name in loops)
    steps = case.epochs * max(1, len(inputs.train_x) // cfg.batch_size)
    return (
        f"| {case.name} | {steps} | {cfg.batch_size} | {trained:,.0f} | {hand:,.0f} | {fused:,.0f} "
        f"| **{trained / hand:.3f}** | {trained / fused:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print("# Sandbox trainer throughput\n")
    print(
        f"`.venv/bin/python benchmarks/trainer.py{' --device cuda' if device.type == 'cuda' else ''}"
        f"` on {platform.machine()}, {device.type}{gpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{args.threads} thread{'s' if args.threads != 1 else ''}, Python {platform.python_version()}, "
        f"{date.today()}.\n"
    )
    print(
        f"Samples per second, median of {args.repeats} interleaved repeats after one warm-up run each. "
        "Ratio = trainer / hand-written with plain AdamW (target: at least 0.95); the last column "
        "compares with the hand-written loop given the same fused AdamW as the trainer.\n"
    )
    print("| case | steps | batch | trainer | hand-written | hand-written, fused AdamW | ratio | ratio to fused |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as cache:
        for case in CASES:
            print(bench_case(case, Path(cache), device, args.repeats), flush=True)
    if device.type == "cpu":
        print("\nGPU figures need a GPU host: run the same script with `--device cuda` there.")


if __name__ == "__main__":
    main()
