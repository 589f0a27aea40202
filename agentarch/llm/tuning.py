"""`agentarch tune` (issue 28): fine-tune a local Hugging Face causal LM on the archive's chat data with LoRA, and
write the adapter, a merged model an OpenAI-compatible server loads, and a card that says what was done.

NNGPT/LEMUR close the loop from archive to generator: the proposals that trained and improved on their parent
(`agentarch dataset`) become supervised data, and the generator learns from them. Training is plain causal-LM loss on
the chat as the model's own chat template renders it, counted on the assistant turns only: the prompts are the
archive's, not something the model should learn to write. LoRA (peft) keeps it cheap enough for a CPU on a small
model and for one GPU on a larger one; the adapter is merged into the base so that vLLM, llama.cpp (after
conversion) or `transformers serve` load the result with no peft on their side.

Nothing is downloaded: the model is a local folder (config, weights, tokenizer) or a GGUF file (transformers
dequantises it with `gguf_file=`). torch, transformers and peft are imported inside the functions that use them, so
the rest of agentarch does not pay for them, and a missing `agentarch[tune]` extra is said as such.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentarch.errors import UsageError

ROLES = ("system", "user", "assistant")
IGNORE = -100
"""The label torch's cross-entropy skips: every token that is not the assistant's."""


class TuneError(UsageError):
    """A problem with what `agentarch tune` was given; the message says what to fix."""


@dataclass(frozen=True)
class TuneSettings:
    """The knobs of one fine-tuning run. The defaults suit a ~100M-1B model on a few hundred chats: rank 8 LoRA on
    every linear layer, a learning rate LoRA tolerates, and a window long enough for agentarch's code-mode prompts."""

    steps: int = 100
    lr: float = 2e-4
    rank: int = 8
    alpha: float = 16.0
    max_length: int = 2048
    seed: int = 0


@dataclass
class Tuned:
    """What `tune` did: where it wrote, and the numbers the card reports."""

    out: Path
    adapter: Path
    merged: Path
    card: Path
    examples: int
    truncated: int
    device: str
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


Progress = Callable[[str, int, int, float | None], None]
"""on_progress(phase, done, total, loss): phase is "load", "train" or "save"; loss is the step's, while training."""


@dataclass(frozen=True)
class Example:
    """One chat as token ids and labels (IGNORE outside the assistant turns)."""

    ids: list[int]
    labels: list[int]


def read_chats(path: Path) -> list[list[dict[str, str]]]:
    """The chats of a JSONL file in the trainers' format, checked line by line so that a bad line is named."""
    if not path.is_file():
        raise TuneError(f"no dataset at {path}; write one with `agentarch dataset --out {path}`")
    chats = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        chats.append(_chat(line, f"{path}:{number}"))
    if not chats:
        raise TuneError(
            f"{path} holds no chats; `agentarch dataset` writes none until a proposal improved on its parent "
            "(try `--all`, or a looser --min-score/--since)"
        )
    return chats


def _chat(line: str, where: str) -> list[dict[str, str]]:
    """One line as its messages, or an error saying what a line must look like."""
    shape = 'each line must be {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}'
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise TuneError(f"{where} is not JSON ({e.msg}); {shape}") from None
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise TuneError(f"{where} has no list of messages; {shape}")
    for message in messages:
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise TuneError(f"{where} has a message that is not a role and a text: {str(message)[:80]}; {shape}")
    if not any(m["role"] == "assistant" for m in messages):
        raise TuneError(f"{where} has no assistant turn, so nothing to learn; {shape}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def locate(model: str | Path) -> tuple[Path, str | None]:
    """The model's folder and, for a GGUF file, its name inside it. A hub id is refused: tune downloads nothing."""
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise TuneError(f"{path} is a file but not a GGUF; pass a model folder (config.json + weights) or a .gguf")
        return path.parent, path.name
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            hint = f" (it holds {ggufs[0].name}: pass that file)" if ggufs else ""
            raise TuneError(f"{path} has no config.json, so it is not a Hugging Face model folder{hint}")
        return path, None
    raise TuneError(
        f"no model at {path}; agentarch tune reads a local model folder or GGUF file and downloads nothing "
        f"(for a hub model, fetch it first: `hf download {model} --local-dir models/NAME`, then pass models/NAME)"
    )


def _needs() -> None:
    """Say which package of the tune extra is missing, rather than an ImportError from deep inside."""
    import importlib.util

    for package in ("torch", "transformers", "peft"):
        if importlib.util.find_spec(package) is None:
            raise TuneError(f"{package} is not installed; install the extra: pip install 'agentarch[tune]'")


def load_tokenizer(folder: Path, gguf: str | None) -> Any:
    """The model's tokenizer, with a chat template (training must render chats as serving will) and a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise TuneError(
            f"the tokenizer of {folder / (gguf or '')} has no chat template; use an instruct/chat model, or set "
            "`chat_template` in its tokenizer_config.json"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> tuple[Example, bool]:
    """A chat as ids and labels, the assistant turns labelled; and whether it had to be cut to max_length.

    The chat is rendered by the template turn by turn: the text up to each assistant turn (with the generation
    prompt, as serving asks) is context, the text that turn adds is what the model learns to write. A chat too long
    for the window loses its start, so the answer, at the end, is kept whole.
    """
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        after = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not before.startswith(done) or not after.startswith(before):
            raise TuneError("the tokenizer's chat template does not render a chat as a prefix of the longer chat")
        context = tokenizer(before[len(done) :], add_special_tokens=False)["input_ids"]
        answer = tokenizer(after[len(before) :], add_special_tokens=False)["input_ids"]
        ids += context + answer
        labels += [IGNORE] * len(context) + answer
        done = after
    cut = len(ids) > max_length
    return Example(ids[-max_length:], labels[-max_length:]), cut


def _device() -> tuple[str, Any]:
    """CUDA where there is one (bf16 where it runs it), else the CPU in float32 (CPUs train half precision badly)."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return "cpu", torch.float32


def tune(
    data: Path,
    model: str | Path,
    out: Path,
    settings: TuneSettings = TuneSettings(),
    on_progress: Progress | None = None,
) -> Tuned:
    """Fine-tune `model` on the chats of `data` with LoRA and write OUT/adapter, OUT/merged and OUT/README.md."""
    started = time.monotonic()
    report = on_progress or (lambda phase, done, total, loss: None)
    chats = read_chats(data)
    folder, gguf = locate(model)
    if settings.steps < 1 or settings.rank < 1 or settings.max_length < 8 or not settings.lr > 0:
        raise TuneError("--steps and --rank must be at least 1, --max-length at least 8, and --lr above 0")
    _needs()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # tqdm bars for loading and writing shards would tear the caller's progress
    report("load", 0, 1, None)
    tokenizer = load_tokenizer(folder, gguf)
    encoded = [encode(tokenizer, chat, settings.max_length) for chat in chats]
    examples = [e for e, _ in encoded if any(label != IGNORE for label in e.labels)]
    if not examples:
        raise TuneError(f"no chat of {data} has an answer left after the template; check its assistant turns")
    device, dtype = _device()
    torch.manual_seed(settings.seed)
    base = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, local_files_only=True, dtype=dtype)
    lora = LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(base, lora).to(device)
    report("load", 1, 1, None)

    losses = _train(peft_model, examples, settings, device, report)

    out.mkdir(parents=True, exist_ok=True)
    adapter, merged = out / "adapter", out / "merged"
    report("save", 0, 2, None)
    peft_model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    report("save", 1, 2, None)
    plain = _unquantised(peft_model.merge_and_unload())
    plain.save_pretrained(merged)  # safetensors: transformers 5 writes nothing else
    tokenizer.save_pretrained(merged)
    report("save", 2, 2, None)
    done = Tuned(
        out=out,
        adapter=adapter,
        merged=merged,
        card=out / "README.md",
        examples=len(examples),
        truncated=sum(cut for _, cut in encoded),
        device=device,
        losses=losses,
        seconds=time.monotonic() - started,
    )
    _write_card(done, data, Path(model), settings)
    return done


def _train(model: Any, examples: list[Example], settings: TuneSettings, device: str, report: Progress) -> list[float]:
    """`steps` AdamW steps of one chat each, in shuffled epochs; the loss of each step, in order.

    One chat a step: agentarch's chats differ in length by thousands of tokens, so padding a batch would mostly
    train on padding, and a person tuning on a CPU wants the first loss soon.
    """
    import torch

    rng = random.Random(settings.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.0)
    model.train()
    order: list[Example] = []
    losses = []
    for step in range(settings.steps):
        if not order:
            order = rng.sample(examples, len(examples))
        example = order.pop()
        ids = torch.tensor([example.ids], device=device)
        labels = torch.tensor([example.labels], device=device)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        report("train", step + 1, settings.steps, losses[-1])
    model.eval()
    return losses


def _unquantised(model: Any) -> Any:
    """`model`, told it is no longer a GGUF one. transformers reads a GGUF as de-quantised float weights but keeps its
    "quantizer", which refuses to save; with LoRA merged in they are plain weights, and the merged model is to be
    served as a plain Hugging Face model."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if str(getattr(method, "value", method)) == "gguf":
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        if getattr(model, "is_quantized", False):
            model.is_quantized = False
    return model


def curve(losses: list[float], points: int = 10) -> list[tuple[int, float]]:
    """The loss curve in `points` stretches: (last step of the stretch, its mean loss). One step is noisy."""
    size = max(1, math.ceil(len(losses) / points))
    return [
        (min(start + size, len(losses)), sum(losses[start : start + size]) / len(losses[start : start + size]))
        for start in range(0, len(losses), size)
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_card(done: Tuned, data: Path, model: Path, settings: TuneSettings) -> None:
    """OUT/README.md for the person who serves the model, and OUT/tune.json with the same facts for a program."""
    facts = {
        "base_model": str(model),
        "data": str(data),
        "data_sha256": _sha256(data),
        "examples": done.examples,
        "truncated": done.truncated,
        "device": done.device,
        "seconds": round(done.seconds, 1),
        "settings": asdict(settings),
        "losses": [round(x, 4) for x in done.losses],
    }
    (done.out / "tune.json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    rows = "\n".join(f"| {step} | {loss:.4f} |" for step, loss in curve(done.losses))
    s = settings
    served = done.merged.resolve()
    card = f"""# {model.name}, fine-tuned on an agentarch archive

Written by `agentarch tune`: LoRA (rank {s.rank}, alpha {s.alpha:g}, every linear layer) on the base model
`{model}`, merged into its weights.

- **Data**: `{data}` (sha256 `{facts["data_sha256"][:16]}…`): {done.examples} chats in the format of `agentarch
  dataset`, the prompt each proposal of an archive was sent and the answer it gave. The loss counts the assistant
  turns only, rendered with the model's own chat template; {done.truncated} chats longer than {s.max_length} tokens
  lost their start.
- **Training**: {s.steps} step{"" if s.steps == 1 else "s"} of one chat each, AdamW at lr {s.lr:g}, seed {s.seed},
  on {done.device}, in {done.seconds:.0f} s. Loss {done.losses[0]:.4f} at the first step, {done.losses[-1]:.4f} at
  the last.
- **Files**: `merged/` (safetensors, config, tokenizer: a plain Hugging Face model), `adapter/` (the LoRA adapter
  alone, for peft or vLLM's `--enable-lora`), `tune.json` (these facts and every step's loss).

## Loss

| step | mean loss over the stretch |
|---:|---:|
{rows}

## Serve it

```bash
vllm serve {served} --served-model-name tuned --port 8000
# or: transformers serve, then ask for the model {served}
# or llama.cpp: python convert_hf_to_gguf.py {served} --outfile tuned.gguf && llama-server -m tuned.gguf --port 8000
agentarch run --task digits --model openai/tuned --api-base http://127.0.0.1:8000/v1
```
"""
    done.card.write_text(card, encoding="utf-8")
