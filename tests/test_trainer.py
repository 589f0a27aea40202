"""The sandbox training loop (sandbox/trainer.py) and the seed architectures, on tiny data in tmp_path."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from agentarch.runner import trainer
from torch import nn

from agentarch.evaluation.checks import check
from agentarch.tasks.builtin import TASKS
from agentarch.tasks.task import Task
from tests.conftest import REPO

CPU = torch.device("cpu")
DEVICES = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
SEED_FILES = sorted((REPO / "archive" / "seeds").glob("*/*.py"))


def example_task(name: str, kind: str, in_shape: tuple[int, ...], num_classes: int, metric: str, **extra) -> Task:
    """A task of a kind no built-in task has (sequence, table), sized like a user's task file."""
    return Task(name, kind, in_shape, num_classes, metric, 1, 16, 1e-3, 0.0, 1_000_000, False, "example", **extra)


EXAMPLE_TASKS = [
    example_task("ids-sequence", "sequence", (40,), 3, "accuracy", vocab_size=50),
    example_task("float-series", "sequence", (30, 4), 5, "macro_f1"),
    example_task("series-regression", "sequence", (30, 4), 2, "mse"),
    example_task("table-classes", "table", (12,), 4, "balanced_accuracy"),
    example_task("table-regression", "table", (7,), 1, "r2"),
]
"""Every input form of every kind: the built-in tasks plus these."""


def tasks_of(kind: str) -> list[Task]:
    return [task for task in [*TASKS.values(), *EXAMPLE_TASKS] if task.kind == kind]


def example_batch(task: Task, batch: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """(x, y, expected output shape) for a batch of `task`, as the runner hands it to a candidate."""
    regression = task.metric in ("mse", "mae", "r2")
    if task.kind == "dense":
        return torch.rand(batch, *task.in_shape), torch.rand(batch, *task.out_shape), (batch, *task.out_shape)
    if task.kind in ("token", "lm"):
        x = torch.randint(0, task.num_classes, (batch, *task.in_shape))
        y = x if task.kind == "lm" else torch.randint(0, task.num_classes, (batch, *task.in_shape))
        return x, y, (batch, *task.in_shape, task.num_classes)
    if task.vocab_size is not None:
        x = torch.randint(0, task.vocab_size, (batch, *task.in_shape))
    else:
        x = torch.randn(batch, *task.in_shape)
    y = torch.randn(batch, task.num_classes) if regression else torch.randint(0, task.num_classes, (batch,))
    return x, y, (batch, task.num_classes)


def ring(nodes: int) -> torch.Tensor:
    """A graph task's edges for `nodes` nodes: a ring, both directions."""
    i = torch.arange(nodes)
    return torch.stack([torch.cat([i, (i + 1) % nodes]), torch.cat([(i + 1) % nodes, i])])


def call(model: nn.Module, task: Task, x: torch.Tensor) -> torch.Tensor:
    """The network on a batch as the runner calls it: a graph task's batch is one graph, its nodes on a ring."""
    return model(x, ring(len(x))) if task.kind == "graph" else model(x)


def build_seed(net_cls: type[nn.Module], task: Task) -> nn.Module:
    """Build a seed as the runner does: a sequence task over ids also passes vocab_size, a dense task out_shape."""
    extra = {} if task.vocab_size is None else {"vocab_size": task.vocab_size}
    extra |= {} if task.out_shape is None else {"out_shape": task.out_shape}
    return net_cls(task.in_shape, task.num_classes, **extra)


def write_inputs(
    directory: Path, meta: dict, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, test_x: np.ndarray
) -> Path:
    """An inputs folder in the layout tasks.prepare writes."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in (("train_x", train_x), ("train_y", train_y), ("val_x", val_x), ("test_x", test_x)):
        np.save(directory / f"{name}.npy", array, allow_pickle=False)
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def image_inputs(directory: Path, n: int = 96, seed: int = 0) -> Path:
    """Two-channel 4x4 uint8 images whose class is which channel is brighter (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    x = rng.integers(0, 8, (n, 2, 4, 4)).astype(np.uint8)
    x[np.arange(n), y] += 8
    meta = {
        "kind": "image",
        "scale": 16.0,
        "mean": [0.4, 0.6],
        "std": [0.2, 0.3],
        "in_shape": [2, 4, 4],
        "num_classes": 2,
    }
    return write_inputs(directory, meta, x, y, x[:10], x[10:20])


def token_inputs(directory: Path, n: int = 32, seq_len: int = 8, vocab: int = 5) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab, (n, seq_len)).astype(np.int64)
    y = np.full((n, seq_len), trainer.IGNORE_INDEX, dtype=np.int64)
    y[:, -1] = x[:, 0]  # recall the first token at the last position
    meta = {"kind": "token", "in_shape": [seq_len], "num_classes": vocab}
    return write_inputs(directory, meta, x, y, x[:4], x[4:8])


class TinyMLP(nn.Module):
    def __init__(self, in_features: int = 32, num_classes: int = 2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def run(inputs_dir: Path, seed: int, **overrides) -> tuple[nn.Module, trainer.TrainResult]:
    """Train TinyMLP the way the runner does: seed, build, train."""
    cfg = trainer.TrainConfig(
        **{"epochs": 4, "batch_size": 16, "lr": 1e-2, "weight_decay": 0.01, "seed": seed, **overrides}
    )
    trainer.seed_everything(cfg.seed)
    model = TinyMLP()
    return model, trainer.train(model, trainer.load_inputs(inputs_dir, CPU), cfg, CPU)


# -- loading --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_load_inputs_normalizes_images_per_channel_on_the_device(tmp_path, device):
    inputs = trainer.load_inputs(image_inputs(tmp_path), device)
    raw = np.load(tmp_path / "train_x.npy")
    want = (raw / 16.0 - np.array([0.4, 0.6])[None, :, None, None]) / np.array([0.2, 0.3])[None, :, None, None]
    assert inputs.kind == "image"
    for tensor in (inputs.train_x, inputs.train_y, inputs.val_x, inputs.test_x):
        assert tensor.device.type == device.type
    assert inputs.train_x.dtype == torch.float32 and inputs.train_y.dtype == torch.int64
    assert inputs.train_x.shape == (96, 2, 4, 4) and inputs.val_x.shape == (10, 2, 4, 4)
    np.testing.assert_allclose(inputs.train_x.cpu().numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inputs.test_x.cpu().numpy(), want[10:20], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_load_inputs_keeps_token_ids(tmp_path, device):
    inputs = trainer.load_inputs(token_inputs(tmp_path), device)
    assert inputs.kind == "token" and inputs.train_x.device.type == device.type
    assert inputs.train_x.dtype == inputs.train_y.dtype == torch.int64
    assert torch.equal(inputs.train_x.cpu(), torch.from_numpy(np.load(tmp_path / "train_x.npy")))
    assert (inputs.train_y[:, :-1] == trainer.IGNORE_INDEX).all()


def test_load_inputs_rejects_an_unknown_kind(tmp_path):
    image_inputs(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"kind": "audio"}))
    with pytest.raises(ValueError, match="unknown task kind 'audio'"):
        trainer.load_inputs(tmp_path, CPU)


# -- the loop -------------------------------------------------------------------------------------


def test_same_seed_gives_an_identical_run_and_another_seed_a_different_one(tmp_path):
    data = image_inputs(tmp_path)
    model_a, first = run(data, seed=0)
    model_b, again = run(data, seed=0)
    _, other = run(data, seed=1)
    assert first.curve == again.curve
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))
    assert first.curve != other.curve
    assert first.curve[-1]["loss"] < first.curve[0]["loss"]


def test_result_reports_steps_epochs_and_a_bounded_curve(tmp_path):
    _, result = run(image_inputs(tmp_path, n=112), seed=0, epochs=20, batch_size=16)  # 7 steps an epoch
    assert result.steps == 140 and result.epochs_done == 20 and not result.stopped_early
    steps = [point["step"] for point in result.curve]
    assert steps == [*range(3, 140, 3), 140]  # a point every ceil(140 / 50) steps, then the final one
    assert result.curve[-1]["epoch"] == 20
    assert result.train_seconds > 0 and result.peak_memory_mb > 0


def test_partial_last_batch_is_dropped_but_a_small_set_is_one_batch(tmp_path):
    _, result = run(image_inputs(tmp_path, n=33), seed=0, epochs=2, batch_size=16)
    assert result.steps == 4  # 33 // 16 a epoch: no batch of one
    _, result = run(image_inputs(tmp_path / "small", n=5), seed=0, epochs=2, batch_size=16)
    assert result.steps == 2


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_zero():
    total, base = 1000, 0.1
    lrs = [trainer.lr_at(step, total, base, warmup_frac=0.05) for step in range(total)]
    assert lrs[0] == pytest.approx(base / 50) and lrs[24] == pytest.approx(base / 2)
    assert max(lrs) == pytest.approx(base) and lrs.index(max(lrs)) in (49, 50)
    assert all(a < b for a, b in zip(lrs[:50], lrs[1:50]))  # warmup rises
    assert all(a >= b for a, b in zip(lrs[50:], lrs[51:]))  # then only falls
    assert lrs[525] == pytest.approx(base / 2, rel=1e-3)  # cosine: half way through the decay, half the rate
    assert lrs[-1] < 1e-4 * base
    assert trainer.lr_at(0, 10, base, warmup_frac=0.0) == pytest.approx(base)


def test_the_optimizer_follows_the_schedule(tmp_path, monkeypatch):
    seen = []
    step = trainer.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(trainer.AdamW, "step", recording_step)
    _, result = run(image_inputs(tmp_path), seed=0, epochs=5, warmup_frac=0.2)  # 6 steps an epoch
    assert seen == pytest.approx([trainer.lr_at(s, 30, 1e-2, 0.2) for s in range(30)])


@pytest.mark.parametrize("fused", [True, False])
def test_the_optimizer_takes_torchs_adamw_steps_bit_for_bit(fused):
    def trained(make_optimizer):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv1d(3, 8, 3), nn.GELU(), nn.Flatten(), nn.Linear(8 * 6, 2))
        params = list(model.parameters())
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = make_optimizer(groups)
        x = torch.randn(16, 3, 8)
        for step in range(6):
            for group in optimizer.param_groups:
                group["lr"] = 1e-2 / (step + 1)
            model(x).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return [p.detach() for p in params]

    ours = trained(lambda groups: trainer.AdamW(groups, lr=1e-2, fused=fused))
    theirs = trained(lambda groups: torch.optim.AdamW(groups, lr=1e-2, fused=fused))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_training_never_imports_dynamo(tmp_path):
    """Seeding and the optimizer: torch.use_deterministic_algorithms and torch.optim.AdamW's step would import
    the compiler, about 1 s in every fresh sandbox, and nothing is compiled."""
    code = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import torch\n"
        "from torch import nn\n"
        "from agentarch.runner import trainer\n"
        "model = nn.Linear(4, 2)\n"
        "trainer.seed_everything(0)\n"
        "assert torch.are_deterministic_algorithms_enabled()\n"
        "assert torch.is_deterministic_algorithms_warn_only_enabled()\n"
        "optimizer = trainer.build_optimizer(model, trainer.TrainConfig(1, 4, 1e-3, 0.1), torch.device('cpu'))\n"
        "model(torch.randn(3, 4)).sum().backward()\n"
        "optimizer.step()\n"
        "optimizer.zero_grad()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_weight_decay_only_on_matrices_and_kernels():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Conv1d(8, 8, 3), nn.BatchNorm1d(8), nn.LayerNorm(8), nn.Linear(8, 2))
    model[3].weight.requires_grad_(False)  # frozen parameters are not optimized at all
    cfg = trainer.TrainConfig(epochs=1, batch_size=4, lr=1e-3, weight_decay=0.1)
    decay, no_decay = trainer.build_optimizer(model, cfg, CPU).param_groups
    names = {id(p): name for name, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["0.weight", "1.weight", "4.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["1.bias", "2.bias", "2.weight", "3.bias", "4.bias"]


def test_token_loss_ignores_unscored_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    y = torch.full((2, 5), trainer.IGNORE_INDEX)
    y[0, 1], y[1, 4] = 3, 6
    scored = F.cross_entropy(torch.stack([logits[0, 1], logits[1, 4]]), torch.tensor([3, 6]))
    assert trainer.loss_fn("token", logits, y, 0.0) == pytest.approx(scored.item())
    changed = logits.clone()
    changed[0, 0] += 100.0  # an unscored position
    assert trainer.loss_fn("token", changed, y, 0.0) == pytest.approx(scored.item())
    nothing_scored = torch.full((2, 5), trainer.IGNORE_INDEX)
    assert trainer.loss_fn("token", logits, nothing_scored, 0.0).item() == 0.0


def test_image_loss_and_label_smoothing():
    torch.manual_seed(0)
    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    want = F.cross_entropy(logits, y, label_smoothing=0.1).item()
    assert trainer.loss_fn("image", logits, y, 0.1) == pytest.approx(want)
    with pytest.raises(ValueError, match="unknown task kind"):
        trainer.loss_fn("audio", logits, y, 0.0)


class NanAfter(nn.Module):
    """A network whose output turns to NaN from its `bad_call`-th forward on."""

    def __init__(self, bad_call: int):
        super().__init__()
        self.fc = nn.Linear(32, 2)
        self.bad_call, self.calls = bad_call, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.calls >= self.bad_call else out


@pytest.mark.parametrize("bad_call", [1, 3])
def test_nan_loss_raises_training_diverged_at_the_exact_step(tmp_path, bad_call):
    inputs = trainer.load_inputs(image_inputs(tmp_path), CPU)
    cfg = trainer.TrainConfig(epochs=10, batch_size=16, lr=1e-3, weight_decay=0.0)  # 60 steps, a point every 2
    with pytest.raises(trainer.TrainingDiverged, match=f"loss became nan at step {bad_call}$"):
        trainer.train(NanAfter(bad_call), inputs, cfg, CPU)


def test_max_seconds_stops_early_and_says_so(tmp_path):
    _, result = run(image_inputs(tmp_path), seed=0, epochs=50, max_seconds=0.0)
    assert result.stopped_early and result.steps == 1
    assert result.epochs_done == pytest.approx(1 / 6)
    assert [point["step"] for point in result.curve] == [1]


def test_token_training_and_predict(tmp_path):
    inputs = trainer.load_inputs(token_inputs(tmp_path), CPU)
    trainer.seed_everything(0)
    model = nn.Sequential(nn.Embedding(5, 8), nn.Linear(8, 5))
    result = trainer.train(model, inputs, trainer.TrainConfig(epochs=2, batch_size=8, lr=1e-2, weight_decay=0.0), CPU)
    assert result.steps == 8 and all(math.isfinite(point["loss"]) for point in result.curve)
    out = trainer.predict(model, inputs.test_x, batch_size=3, device=CPU)
    assert out.dtype == np.float32 and out.shape == (4, 8, 5)


def test_predict_is_in_eval_mode_and_batch_size_independent(tmp_path):
    inputs = trainer.load_inputs(image_inputs(tmp_path), CPU)
    torch.manual_seed(0)
    model = TinyMLP().train()
    first = trainer.predict(model, inputs.train_x, batch_size=7, device=CPU)
    second = trainer.predict(model, inputs.train_x, batch_size=96, device=CPU)
    assert first.dtype == np.float32 and first.shape == (96, 2)
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)  # dropout is off
    assert not model.training


# -- speed features: channels-last, torch.compile, no per-step syncs --------------------------------


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_cnn(inputs: trainer.Inputs, device: torch.device, **overrides) -> tuple[nn.Module, trainer.TrainResult]:
    cfg = trainer.TrainConfig(**{"epochs": 3, "batch_size": 16, "lr": 1e-2, "weight_decay": 0.01, **overrides})
    trainer.seed_everything(cfg.seed)
    model = TinyCNN()
    return model, trainer.train(model, inputs, cfg, device)


class FailsWhenCompiled(nn.Module):
    """Stands in for what torch.compile returns when compilation fails lazily, at the first call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("backend exploded\nlong traceback follows")


def test_channels_last_trains_deterministically_to_the_same_shapes(tmp_path):
    inputs = trainer.load_inputs(image_inputs(tmp_path), CPU)
    plain_model, plain = train_cnn(inputs, CPU)
    assert plain_model.net[0].weight.is_contiguous()  # off by default on CPU
    model, result = train_cnn(inputs, CPU, channels_last=True)
    _, again = train_cnn(inputs, CPU, channels_last=True)
    assert model.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert result.curve == again.curve and result.notes == []
    assert [p["step"] for p in result.curve] == [p["step"] for p in plain.curve] == list(range(1, 19))
    assert result.curve[-1]["loss"] < result.curve[0]["loss"]
    out = trainer.predict(model, inputs.test_x, batch_size=4, device=CPU)
    assert out.shape == trainer.predict(plain_model, inputs.test_x, batch_size=4, device=CPU).shape == (10, 2)


def test_channels_last_is_ignored_for_token_inputs(tmp_path):
    inputs = trainer.load_inputs(token_inputs(tmp_path), CPU)
    cfg = trainer.TrainConfig(epochs=1, batch_size=8, lr=1e-2, weight_decay=0.0, channels_last=True)
    result = trainer.train(nn.Sequential(nn.Embedding(5, 8), nn.Linear(8, 5)), inputs, cfg, CPU)
    assert result.steps == 4


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_default_flags_train_on_every_device(tmp_path, device):
    """On CUDA this takes the bf16, channels-last and pinned-index paths the CPU tests cannot."""
    inputs = trainer.load_inputs(image_inputs(tmp_path), device)
    model, result = train_cnn(inputs, device)
    assert result.steps == 18 and all(math.isfinite(p["loss"]) for p in result.curve)
    channels_last = model.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert channels_last == (device.type == "cuda")
    assert trainer.predict(model, inputs.test_x, batch_size=4, device=device).shape == (10, 2)


def test_no_host_sync_except_at_curve_points(tmp_path, monkeypatch):
    """Reading a tensor's value on the host waits for the GPU; the loop may do so only to log the curve."""
    reads = []

    def recording(name: str):
        original = getattr(torch.Tensor, name)

        def read(self, *args):
            reads.append(name)
            return original(self, *args)

        return read

    for name in ("item", "tolist", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, recording(name))
    _, result = run(image_inputs(tmp_path, n=112), seed=0, epochs=20, batch_size=16)  # 140 steps, a point every 3
    assert result.steps == 140 and reads == ["tolist"] * len(result.curve)


def test_compile_failing_at_the_first_step_falls_back_to_the_eager_run(tmp_path, monkeypatch):
    data = image_inputs(tmp_path)
    model_eager, eager = run(data, seed=0)
    monkeypatch.setattr(torch, "compile", FailsWhenCompiled)
    model, fallen_back = run(data, seed=0, compile=True)
    assert fallen_back.notes == ["torch.compile failed (RuntimeError: backend exploded); trained eagerly"]
    assert fallen_back.curve == eager.curve and fallen_back.steps == eager.steps
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model_eager.state_dict().values()))


def test_compile_unavailable_trains_eagerly_with_a_note(tmp_path, monkeypatch):
    def unavailable(model):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", unavailable)
    _, result = run(image_inputs(tmp_path), seed=0, compile=True)
    assert result.notes == [
        "torch.compile failed (RuntimeError: Dynamo is not supported on this Python); trained eagerly"
    ]
    assert result.steps == 24 and len(result.curve) == 24


def test_a_candidate_error_is_not_hidden_by_the_compile_fallback(tmp_path, monkeypatch):
    class Broken(TinyMLP):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("shape mismatch in the candidate")

    monkeypatch.setattr(torch, "compile", FailsWhenCompiled)
    cfg = trainer.TrainConfig(epochs=1, batch_size=16, lr=1e-3, weight_decay=0.0, compile=True)
    with pytest.raises(ValueError, match="shape mismatch in the candidate"):
        trainer.train(Broken(), trainer.load_inputs(image_inputs(tmp_path), CPU), cfg, CPU)


@pytest.mark.slow
def test_real_compile_on_cpu_trains_or_falls_back_with_a_note(tmp_path):
    """Inductor needs a C++ compiler on CPU and takes tens of seconds here, hence slow."""
    _, result = run(image_inputs(tmp_path), seed=0, epochs=2, compile=True)
    assert result.steps == 12 and len(result.curve) == 12 and all(math.isfinite(p["loss"]) for p in result.curve)
    assert result.notes == [] or (len(result.notes) == 1 and result.notes[0].startswith("torch.compile failed"))


# -- the seed architectures -----------------------------------------------------------------------


def load_seed(path: Path) -> type[nn.Module]:
    spec = importlib.util.spec_from_file_location(f"seed_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Net


def test_every_expected_seed_exists():
    names = {f"{p.parent.name}/{p.name}" for p in SEED_FILES}
    assert {"image/mlp.py", "image/cnn.py", "image/resnet.py", "token/transformer.py", "token/gated_conv.py"} <= names
    assert {"lm/gpt.py", "lm/conv.py", "sequence/conv.py", "sequence/transformer.py", "table/mlp.py"} <= names


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_seed_passes_the_static_check_and_has_a_docstring(path):
    code = path.read_text()
    result = check(code, path.parent.name)
    assert result.ok, result.reason
    assert code.startswith('"""Seed: ')


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_seed_builds_and_trains_a_step_for_every_task_of_its_kind(path):
    net_cls = load_seed(path)
    tasks = tasks_of(path.parent.name)
    assert tasks, f"no task of kind {path.parent.name!r}"
    for task in tasks:
        torch.manual_seed(0)
        model = build_seed(net_cls, task)
        params = sum(p.numel() for p in model.parameters())
        assert params <= task.max_params, f"{task.name}: {params} parameters > {task.max_params}"
        x, y, want = example_batch(task, 3)
        out = call(model.train(), task, x)
        assert out.shape == want, task.name
        loss = trainer.loss_fn(task.kind, out, y, 0.0, regression=task.metric in ("mse", "mae", "r2"))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "path", [p for p in SEED_FILES if p.parent.name in ("token", "lm")], ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_token_and_lm_seeds_are_causal(path):
    torch.manual_seed(0)
    model = load_seed(path)((16,), 10).eval()
    x = torch.randint(0, 10, (2, 16))
    changed = x.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % 10
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_the_smoke_runs_flop_count_equals_torchs_flop_counter(path):
    """The runner counts with torch's own per-operator formulas, without the counter that imports Dynamo."""
    from agentarch.runner.runner import count_flops
    from torch.utils.flop_counter import FlopCounterMode

    task = tasks_of(path.parent.name)[0]
    torch.manual_seed(0)
    model = build_seed(load_seed(path), task).eval()
    x, _, _ = example_batch(task, 2)
    reference = FlopCounterMode(display=False)
    with torch.no_grad(), reference:
        call(model, task, x) if task.kind == "graph" else model(x[:1])
    edges = ring(len(x)) if task.kind == "graph" else None
    assert count_flops(model, x, edges) == reference.get_total_flops() > 0
