"""Language modelling over a tokenizer's ids: bits per byte from the bytes each held-out id stands for.

The byte counts travel with the held-out labels (host only); a task over more than 256 ids without
them is refused by name, since its likelihood could not be turned into bits per byte.
"""

import math
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.tasks.preparation import prepare
from agentarch.tasks.registry import get_task
from agentarch.tasks.scoring import score
from agentarch.tasks.task import Task, TaskError
from tests.conftest import REPO, requires_bubblewrap

VOCAB, LENGTH = 300, 16


def lm_task(num_classes: int) -> Task:
    return Task(
        name="tok",
        kind="lm",
        in_shape=(LENGTH,),
        num_classes=num_classes,
        metric="bits_per_byte",
        epochs=1,
        batch_size=8,
        lr=1e-3,
        weight_decay=0.0,
        max_params=200_000,
        needs_data_dir=False,
        description="a tokenized corpus",
    )


def test_bits_per_byte_divides_by_the_bytes_the_predicted_ids_stand_for():
    ids = np.zeros((2, 4), dtype=np.int64)
    counts = np.array([[9, 1, 2, 3], [9, 4, 0, 1]], dtype=np.int64)  # position 0 is never predicted
    nll = np.array([2.0, 3.0])  # nats per sequence
    expected = 5.0 / math.log(2) / (1 + 2 + 3 + 4 + 0 + 1)
    assert score(lm_task(VOCAB), nll, ids, counts) == pytest.approx(expected)
    assert score(lm_task(256), nll, ids) == pytest.approx(5.0 / math.log(2) / 6)  # bytes: one per id
    with pytest.raises(TaskError, match="needs the bytes each id stands for"):
        score(lm_task(VOCAB), nll, ids)
    with pytest.raises(TaskError, match="byte counts"):
        score(lm_task(VOCAB), nll, ids, counts[:, :3])


def tokenized(folder, with_bytes: bool = True):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("val", 8), ("test", 8)):
        ids = rng.integers(0, VOCAB, (n, LENGTH))
        arrays[f"{split}_x"] = arrays[f"{split}_y"] = ids
        if with_bytes:
            arrays[f"{split}_bytes"] = 1 + ids % 4  # an id stands for 1 to 4 bytes of text
    np.savez(folder / "tok.npz", **arrays)
    task = folder / "task.toml"
    task.write_text(
        'name = "tok"\ndescription = "a tokenized corpus"\nkind = "lm"\nmax_params = 200_000\n'
        '[data]\nsource = "npz"\npath = "tok.npz"\n[train]\nepochs = 1\nbatch_size = 8\n'
    )
    return task


def test_a_tokenized_corpus_keeps_its_byte_counts_with_the_labels_host_only(tmp_path):
    task = get_task(str(tokenized(tmp_path)))
    assert (task.kind, task.num_classes, task.in_shape) == ("lm", VOCAB, (LENGTH,))
    prepared = prepare(task, tmp_path / "cache")
    assert sorted(p.name for p in prepared.inputs_dir.iterdir()) == [
        "meta.json",
        "test_x.npy",
        "train_x.npy",
        "train_y.npy",
        "val_x.npy",
    ]
    counts = prepared.byte_counts("val")
    assert counts is not None and counts.shape == (8, LENGTH) and counts.min() >= 1
    assert (prepared.labels_dir / "test_bytes.npy").is_file()


def test_ids_beyond_bytes_without_byte_counts_are_refused_by_name(tmp_path):
    with pytest.raises(TaskError, match=r"tok\.npz: ids reach .* add train_bytes, val_bytes, test_bytes"):
        get_task(str(tokenized(tmp_path, with_bytes=False)))


@requires_bubblewrap
def test_a_tokenized_corpus_trains_and_is_scored_in_bits_per_byte(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    task = tokenized(tmp_path)
    seed = REPO / "archive" / "seeds" / "lm" / "gpt.py"
    result = CliRunner().invoke(app, ["eval", str(seed), "--task", str(task), "--archive", "a.db"])
    assert result.exit_code == 0, result.output
    status, bits = sqlite3.connect(tmp_path / "a.db").execute("SELECT status, val_accuracy FROM evaluations").fetchone()
    assert status == "trained" and 0 < bits < 100 and "val bits_per_byte" in " ".join(result.output.split())
