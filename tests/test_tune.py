"""`agentarch tune` (issue 28) end to end: an archive becomes chat data (`agentarch dataset`), a tiny Llama made here
(random weights, a byte-level BPE tokenizer trained on the test's own text, a ChatML template; nothing downloaded)
is fine-tuned on it with LoRA for a few steps on the CPU, the loss falls, and the merged model loads with plain
transformers and generates. Bad input is refused with a message that says what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.llm import tuning
from agentarch.store.archive import Archive
from agentarch.tasks.registry import get_task
from tests.scripted import fenced, mlp

pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_model(folder: Path, corpus: list[str], chat_template: str | None = CHATML) -> Path:
    """A 2-layer Llama of width 32 with a byte-level BPE tokenizer trained on `corpus`, saved as a model folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = ["<|im_start|>", "<|im_end|>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<pad>")
    tokenizer.chat_template = chat_template
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        initializer_range=0.2,  # logits far from uniform, so that LoRA on the inner layers moves the loss in few steps
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def chats(tmp_path) -> Path:
    """`agentarch dataset` on a real archive: a digits seed and three children, two of which improved on it."""
    path = tmp_path / "a.db"
    with Archive(path) as db:
        db.register_task(get_task("digits"))

        def add(val: float, parent: int | None, width: int) -> int:
            candidate = {
                "name": f"c{width}",
                "task": "digits",
                "code": mlp(width),
                "status": "trained",
                "proposer": "llm",
                "parents": [parent] if parent else [],
                "prompt": [
                    {"role": "system", "content": "You are a researcher."},
                    {"role": "user", "content": f"Improve the MLP of width {width - 1}."},
                ],
                "response": fenced(mlp(width)),
            }
            return db.record(candidate, {"status": "trained", "val_accuracy": val, "test_accuracy": val, "fidelity": 1})

        seed = add(0.80, None, 8)
        add(0.85, seed, 16)
        add(0.90, seed, 32)
        add(0.70, seed, 4)  # worse than its parent: not in the data
    out = tmp_path / "chats.jsonl"
    done = CliRunner().invoke(app, ["dataset", "--out", str(out), "--archive", str(path), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["examples"] == 2
    return out


def corpus_of(data: Path) -> list[str]:
    return [m["content"] for line in data.read_text().splitlines() for m in json.loads(line)["messages"]]


@pytest.mark.slow  # 8 to 35 s on a busy 2-core machine: loading, 24 steps, saving twice, reloading
def test_tune_lowers_the_loss_and_writes_a_merged_model_that_loads_and_generates(chats, tmp_path):
    model = make_model(tmp_path / "tiny", corpus_of(chats))
    out = tmp_path / "tuned"
    done = CliRunner().invoke(
        app,
        ["tune", "--data", str(chats), "--model", str(model), "--out", str(out), "--steps", "24", "--lr", "0.01"]
        + ["--rank", "8", "--alpha", "16", "--max-length", "512", "--json"],
    )
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["examples"] == 2 and result["device"] in ("cpu", "cuda")
    facts = json.loads((out / "tune.json").read_text())
    losses = facts["losses"]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < 0.6 * sum(losses[:4]) / 4, losses

    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    merged = out / "merged"
    assert (merged / "model.safetensors").is_file() and (merged / "config.json").is_file()
    card = (out / "README.md").read_text()
    assert "2 chats" in card and "24 steps" in card and "vllm serve" in card and "| step |" in card

    # The merged model is a plain Hugging Face model: no peft needed to load it, and it answers a chat.
    tokenizer = transformers.AutoTokenizer.from_pretrained(merged)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(merged)
    assert not any("lora" in name for name, _ in loaded.named_parameters())
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Improve the MLP of width 8."}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    generated = loaded.generate(ids, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > ids.shape[1]


def test_only_the_assistant_turns_are_learned(chats, tmp_path):
    tokenizer = tuning.load_tokenizer(make_model(tmp_path / "tiny", corpus_of(chats)), None)
    messages = tuning.read_chats(chats)[0]
    example, cut = tuning.encode(tokenizer, messages, 4096)
    learned = tokenizer.decode([t for t in example.labels if t != tuning.IGNORE])
    assert not cut and learned == messages[-1]["content"] + "<|im_end|>\n"
    short, cut = tuning.encode(tokenizer, messages, 40)
    assert cut and len(short.ids) == 40 and short.ids == example.ids[-40:]


def test_bad_input_is_refused_with_what_to_fix(chats, tmp_path):
    runner = CliRunner()
    model = make_model(tmp_path / "tiny", corpus_of(chats))

    def refused(data: Path, model_arg: str) -> str:
        done = runner.invoke(app, ["tune", "--data", str(data), "--model", model_arg, "--out", str(tmp_path / "o")])
        assert done.exit_code == 2, done.output
        return " ".join(done.output.split())

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert "holds no chats" in refused(empty, str(model))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(chats.read_text() + "not json\n")
    assert "broken.jsonl:3 is not JSON" in refused(broken, str(model))
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    assert "no assistant turn" in refused(no_answer, str(model))
    assert "no dataset at" in refused(tmp_path / "none.jsonl", str(model))
    hub = refused(chats, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "no model at" in hub and "downloads nothing" in hub
    no_template = make_model(tmp_path / "plain", corpus_of(chats), chat_template=None)
    assert "has no chat template" in refused(chats, str(no_template))
