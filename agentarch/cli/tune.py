"""`agentarch tune`: fine-tune a local causal LM on `agentarch dataset`'s chats with LoRA (issue 28).

Its own module because it is the one command that trains the generator rather than candidates; the work (reading the
chats, the template, LoRA, the merged model and its card) is `agentarch.llm.tuning`. This layer parses flags, shows
progress to the person waiting (loading, each step's loss, saving) and says where the files went.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agentarch import formats
from agentarch.cli.common import err, fail, out
from agentarch.llm import tuning

DEFAULTS = tuning.TuneSettings()


def tune_command(
    data: Annotated[Path, typer.Option("--data", "-d", help="chat JSONL, as `agentarch dataset --out` writes it")],
    model_path: Annotated[
        str, typer.Option("--model", "-m", help="a local model folder (config + weights + tokenizer) or a .gguf file")
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="the folder to write adapter/, merged/ and README.md")],
    steps: Annotated[int, typer.Option("--steps", help="optimiser steps, one chat each")] = DEFAULTS.steps,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate")] = DEFAULTS.lr,
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank")] = DEFAULTS.rank,
    alpha: Annotated[float, typer.Option("--alpha", help="LoRA alpha (the update is scaled by alpha/rank)")] = (
        DEFAULTS.alpha
    ),
    max_length: Annotated[
        int, typer.Option("--max-length", help="tokens per chat; a longer chat loses its start, not its answer")
    ] = DEFAULTS.max_length,
    tune_seed: Annotated[int, typer.Option("--seed", help="seeds the LoRA weights and the order of the chats")] = (
        DEFAULTS.seed
    ),
    as_json: Annotated[bool, typer.Option("--json", help="print what was written as one JSON object")] = False,
) -> None:
    """Fine-tune a local Hugging Face causal LM on the archive's chat data with LoRA, and write the adapter, a merged
    model that vLLM, llama.cpp (after conversion) or `transformers serve` load, and a card. Nothing is downloaded; a
    CUDA GPU is used where there is one, else the CPU (fine for a ~100M model). Needs peft: the `tune` extra of agentarch.

    Examples:

        agentarch dataset --out digits.jsonl --task digits
        agentarch tune --data digits.jsonl --model models/SmolLM2-135M-Instruct --out tuned --steps 200
    """
    settings = tuning.TuneSettings(steps=steps, lr=lr, rank=rank, alpha=alpha, max_length=max_length, seed=tune_seed)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, disable=as_json) as progress:
        bars: dict[str, object] = {}
        titles = {"load": f"loading {escape(formats.printable(model_path))}", "train": "training", "save": "saving"}

        def show(phase: str, done: int, total: int, loss: float | None) -> None:
            if phase not in bars:
                bars[phase] = progress.add_task(titles[phase], total=total, loss="")
            progress.update(bars[phase], completed=done, loss="" if loss is None else f"loss {loss:.4f}")

        try:
            done = tuning.tune(data, model_path, out_dir, settings, on_progress=show)
        except tuning.TuneError as e:
            progress.stop()
            raise fail(str(e)) from None
    if as_json:
        print(
            json.dumps(
                {
                    "out": str(done.out),
                    "adapter": str(done.adapter),
                    "merged": str(done.merged),
                    "examples": done.examples,
                    "truncated": done.truncated,
                    "device": done.device,
                    "first_loss": done.losses[0],
                    "last_loss": done.losses[-1],
                }
            )
        )
        return
    out.print(
        formats.line(
            f"{steps} steps on {done.examples} chats ({done.device}, {done.seconds:.0f} s): loss {done.losses[0]:.4f} "
            f"-> {done.losses[-1]:.4f}. Merged model in {done.merged}, adapter in {done.adapter}; {done.card} says "
            "how to serve it"
        )
    )
