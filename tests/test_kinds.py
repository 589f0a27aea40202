"""Every task kind and metric end to end: host-side checks and scores, and training in the real sandbox."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from agentarch.evaluation.stages import RunRequest, execute
from agentarch.isolation.policy import Limits, resolve_isolation
from agentarch.tasks.builtin import TASKS
from agentarch.tasks.preparation import prepare
from agentarch.tasks.scoring import output_shape, score
from agentarch.tasks.task import IGNORE_INDEX, SplitData, Task, TaskError
from tests.conftest import REPO


def make_task(name: str, kind: str, in_shape: tuple[int, ...], num_classes: int, metric: str, **extra) -> Task:
    return Task(name, kind, in_shape, num_classes, metric, 3, 32, 3e-3, 0.0, 1_000_000, False, "test", **extra)


# -- scores against hand-computed values and scikit-learn ------------------------------------------

Y = np.array([0, 0, 1, 1, 2, 2, 2])
PRED = np.array([0, 1, 1, 1, 2, 0, 2])


def logits_for(pred: np.ndarray, classes: int = 3) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[pred]


@pytest.mark.parametrize(
    ("metric", "hand", "sklearn"),
    [
        ("accuracy", 5 / 7, skm.accuracy_score),
        ("balanced_accuracy", (1 / 2 + 1 + 2 / 3) / 3, skm.balanced_accuracy_score),
        ("macro_f1", (1 / 2 + 4 / 5 + 4 / 5) / 3, lambda y, p: skm.f1_score(y, p, average="macro")),
    ],
)
def test_class_metrics(metric, hand, sklearn):
    task = make_task("t", "table", (4,), 3, metric)
    assert score(task, logits_for(PRED), Y) == pytest.approx(hand) == pytest.approx(sklearn(Y, PRED))


def test_class_metrics_skip_ignored_positions_and_count_nan_as_wrong():
    task = make_task("t", "token", (4,), 3, "macro_f1")
    labels = np.array([[0, 1, IGNORE_INDEX, 2], [2, IGNORE_INDEX, 1, 0]])
    pred = np.array([[0, 1, 2, 2], [2, 0, 1, 1]])
    want = skm.f1_score(labels[labels != IGNORE_INDEX], pred[labels != IGNORE_INDEX], average="macro")
    assert score(task, logits_for(pred), labels) == pytest.approx(want)
    logits = logits_for(PRED)
    logits[0, 1] = np.nan  # the one right answer for class 0 becomes no answer
    assert score(make_task("t", "table", (4,), 3, "accuracy"), logits, Y) == pytest.approx(4 / 7)


def test_regression_metrics():
    y = np.array([[1.0, 0.0], [2.0, 1.0], [4.0, -1.0]], dtype=np.float32)
    p = np.array([[1.5, 0.0], [2.0, 0.5], [3.0, -1.0]], dtype=np.float32)
    mse = (0.25 + 0 + 0 + 0.25 + 1 + 0) / 6
    mae = (0.5 + 0 + 0 + 0.5 + 1 + 0) / 6
    r2_first = 1 - 1.25 / (((y[:, 0] - y[:, 0].mean()) ** 2).sum())
    r2 = (r2_first + (1 - 0.25 / 2)) / 2
    for metric, hand, reference in (
        ("mse", mse, skm.mean_squared_error(y, p)),
        ("mae", mae, skm.mean_absolute_error(y, p)),
        ("r2", r2, skm.r2_score(y, p)),
    ):
        assert score(make_task("t", "table", (3,), 2, metric), p, y) == pytest.approx(hand) == pytest.approx(reference)


def test_bits_per_byte_from_per_sequence_nll():
    task = make_task("t", "lm", (5,), 256, "bits_per_byte")
    ids = np.zeros((2, 5), dtype=np.int64)
    uniform = np.full(2, 4 * math.log(256))  # 4 predicted bytes per sequence, each at 1/256
    assert score(task, uniform, ids) == pytest.approx(8.0)
    assert score(task, np.array([4 * math.log(2), 0.0]), ids) == pytest.approx(0.5)


def test_shape_dtype_and_value_mismatches_raise():
    table = make_task("t", "table", (4,), 3, "accuracy")
    with pytest.raises(TaskError, match=r"expected \(7, 3\)"):
        score(table, np.zeros((7, 4)), Y)
    with pytest.raises(TaskError, match="must be integers"):
        score(table, logits_for(PRED), Y.astype(np.float32))
    regression = make_task("t", "table", (4,), 2, "mse")
    with pytest.raises(TaskError, match="must be floats"):
        score(regression, np.zeros((3, 2)), np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(TaskError, match=r"expected \(3, 2\)"):
        score(regression, np.zeros((3, 1)), np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(TaskError, match="NaN"):
        score(regression, np.full((3, 2), np.nan), np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(TaskError, match="constant"):
        score(make_task("t", "table", (4,), 1, "r2"), np.zeros((3, 1)), np.ones((3, 1), dtype=np.float32))
    lm = make_task("t", "lm", (5,), 256, "bits_per_byte")
    with pytest.raises(TaskError, match=r"expected \(2,\)"):
        score(lm, np.zeros((2, 5, 256)), np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(TaskError, match="non-negative"):
        score(lm, np.array([-1.0, 1.0]), np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(TaskError, match="cannot be scored by mse"):
        score(make_task("t", "image", (1, 2, 2), 3, "mse"), np.zeros((7, 3)), Y)


def test_output_shape_per_kind():
    ids = np.zeros((6, 5), dtype=np.int64)
    assert output_shape(make_task("t", "lm", (5,), 256, "bits_per_byte"), ids) == (6,)
    assert output_shape(make_task("t", "token", (5,), 9, "accuracy"), ids) == (6, 5, 9)
    assert output_shape(make_task("t", "table", (5,), 2, "mae"), np.zeros((6, 2))) == (6, 2)
    assert output_shape(make_task("t", "sequence", (5, 2), 4, "accuracy"), np.zeros(6)) == (6, 4)


# -- small learnable tasks of every kind -----------------------------------------------------------


def learnable(task: Task, n: int = 480, seed: int = 0) -> SplitData:
    """Random inputs with a simple rule for the label, so a trained network beats chance."""
    rng = np.random.default_rng(seed)
    regression = task.metric in ("mse", "mae", "r2")
    if task.kind == "lm":
        period = rng.integers(0, 256, size=8)  # a repeating 8-byte pattern from a random offset
        starts = rng.integers(0, 8, size=n)
        x = period[(starts[:, None] + np.arange(task.in_shape[0])) % 8].astype(np.int64)
        y = x.copy()
    else:
        if task.vocab_size is not None:
            x = rng.integers(0, task.vocab_size, size=(n, *task.in_shape)).astype(np.int64)
            signal = (x[:, 0] % task.num_classes).astype(np.float64) + rng.uniform(0, 0.5, size=n)  # ties broken
        else:
            x = (rng.normal(size=(n, *task.in_shape)) * 3 + 5).astype(np.float32)  # not yet standardized
            signal = x.reshape(n, -1)[:, 0]
        if regression:
            y = np.stack([signal * (k + 1) * 10 for k in range(task.num_classes)], axis=1).astype(np.float32)
        else:
            y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, task.num_classes + 1)[1:-1]))
            y = y.astype(np.int64)
    a, b = n * 2 // 3, n * 5 // 6
    return SplitData(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


def with_builder(task: Task) -> Task:
    import dataclasses

    return dataclasses.replace(task, build=lambda t, data_dir, download, seed: learnable(t, seed=seed))


KIND_TASKS = {
    "table-classes": (make_task("k-table-classes", "table", (6,), 3, "balanced_accuracy"), "table/mlp.py", 0.6),
    "table-regression": (make_task("k-table-regression", "table", (6,), 2, "r2"), "table/resnet.py", 0.5),
    "sequence-ids": (
        make_task("k-sequence-ids", "sequence", (16,), 3, "accuracy", vocab_size=12),
        "sequence/conv.py",
        0.45,
    ),
    "sequence-floats": (make_task("k-sequence-floats", "sequence", (16, 3), 2, "macro_f1"), "sequence/conv.py", 0.7),
    "lm": (make_task("k-lm", "lm", (32,), 256, "bits_per_byte"), "lm/conv.py", None),
}


def test_prepare_writes_host_statistics_and_refuses_bad_data(tmp_path):
    table = with_builder(KIND_TASKS["table-regression"][0])
    meta = json.loads((prepare(table, tmp_path).inputs_dir / "meta.json").read_text())
    train = learnable(table)
    assert meta["kind"] == "table" and meta["regression"] is True
    np.testing.assert_allclose(meta["mean"], train.train_x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(meta["target_std"], train.train_y.std(axis=0), rtol=1e-5)
    ids = with_builder(KIND_TASKS["sequence-ids"][0])
    assert json.loads((prepare(ids, tmp_path).inputs_dir / "meta.json").read_text())["vocab_size"] == 12
    prepared = prepare(with_builder(KIND_TASKS["lm"][0]), tmp_path)
    np.testing.assert_array_equal(prepared.labels("val"), np.load(prepared.inputs_dir / "val_x.npy"))

    def broken(task, *_):
        splits = learnable(task)
        splits.train_x[3, 2] = np.nan
        return splits

    import dataclasses

    with pytest.raises(TaskError, match=r"NaN or Inf \(first at index \(3, 2\)\)"):
        prepare(dataclasses.replace(table, name="nan", build=broken), tmp_path)
    lm = dataclasses.replace(KIND_TASKS["lm"][0], name="lm-bad")
    with pytest.raises(TaskError, match="must equal its inputs"):
        prepare(
            dataclasses.replace(lm, build=lambda t, *_: learnable(t)._replace(val_y=learnable(t).val_y[::-1].copy())),
            tmp_path,
        )


@pytest.mark.parametrize("name", KIND_TASKS)
def test_every_kind_trains_end_to_end_in_the_sandbox(name, tmp_path, monkeypatch):
    task, seed, floor = KIND_TASKS[name]
    task = with_builder(task)
    monkeypatch.setitem(TASKS, task.name, task)
    result = execute(
        RunRequest(
            code=(REPO / "archive" / "seeds" / seed).read_text(),
            task=task.name,
            train={"epochs": 12, "batch_size": 32, "lr": 3e-3, "weight_decay": 0.0, "seed": 0},
            limits=Limits(timeout_s=120, smoke_timeout_s=60, threads=1),
            isolation=resolve_isolation("auto"),
            cache_dir=tmp_path,
            data_dir=None,
            split_seed=0,
        )
    )
    assert result.status == "trained", result.error
    val = result.scores["val_accuracy"]
    if task.kind == "lm":
        assert 0 < val < 6  # the repeating pattern is far more predictable than 8 bits per byte
    else:
        assert val >= floor, val


def test_an_lm_candidate_that_looks_ahead_is_refused(tmp_path, monkeypatch):
    task = with_builder(KIND_TASKS["lm"][0])
    monkeypatch.setitem(TASKS, task.name, task)
    peeking = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.embed = nn.Embedding(num_classes, num_classes)

    def forward(self, x):
        return self.embed(torch.roll(x, -1, dims=1))  # position t sees byte t + 1
"""
    result = execute(
        RunRequest(
            code=peeking,
            task=task.name,
            train={"epochs": 1, "batch_size": 32, "lr": 3e-3, "weight_decay": 0.0, "seed": 0},
            limits=Limits(timeout_s=60, smoke_timeout_s=60, threads=1),
            isolation=resolve_isolation("auto"),
            cache_dir=tmp_path,
            data_dir=None,
            split_seed=0,
        )
    )
    assert result.status == "failed" and "not-causal" in result.reason, result.reason


@pytest.mark.slow
def test_an_offline_run_on_the_builtin_lm_task(tmp_path):
    """`agentarch run` on stdlib-bytes with no model: offline evolution's one candidate trains and is scored in bits
    per byte. One candidate shows the whole path; a second (a random mixer, up to a minute of CPU) showed it again."""
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "agentarch"),
            "run",
            "--task",
            "stdlib-bytes",
            "--budget",
            "1",
            "--epochs",
            "1",
        ]
        + ["--archive", str(tmp_path / "a.db"), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["trained"] == 1, summary
