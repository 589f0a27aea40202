"""Training checkpoints are sandbox output: the host reads them as hostile input (agentarch/evaluation/checkpoints.py).

Candidate code runs in the trainer's process, so it decides every byte of a checkpoint. Each forgery here is fed to
the host's checks straight (fast): a pickle, a header that claims more than the file, tensors that overlap or leave a
gap, a dtype off the allowlist, a name the trainer never writes, metadata too large or off its schema, an epoch outside
the run. Then as a real candidate in a real sandbox: a candidate that turns its checkpoints into pickles is trained and
scored all the same, each checkpoint dropped with the reason logged, and a forged resume checkpoint makes the job
train from scratch.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from agentarch.runner import trainer
from agentarch.runner.checkpoint import CHECKPOINT_FILE, Saver
from torch import nn

from agentarch.evaluation import checkpoints
from agentarch.evaluation.checkpoints import Checkpoint, check, max_checkpoint_bytes
from agentarch.evaluation.stages import stages
from agentarch.isolation.protocol import ProtocolError
from tests.test_checkpoints import MLP, request

EPOCHS, PER_EPOCH = 4, 6


@pytest.fixture(scope="module")
def honest() -> bytes:
    """A real checkpoint of a small network, taken at the end of epoch 2 of 4."""
    folder = Path(tempfile.mkdtemp())
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 10, generator=gen), torch.randint(0, 3, (200,), generator=gen)
    data = trainer.Inputs("table", x, y, x, x)
    cfg = trainer.TrainConfig(epochs=EPOCHS, batch_size=32, lr=0.01, weight_decay=0.0)
    net = nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    kept = []

    def emit(event):
        if event["epoch"] == 2:
            kept.append((folder / CHECKPOINT_FILE).read_bytes())

    trainer.train(net, data, cfg, torch.device("cpu"), Saver(folder, 0.0, emit))
    return kept[0]


def split(data: bytes) -> tuple[dict, bytes]:
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def pack(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


def with_meta(data: bytes, **changes) -> bytes:
    header, body = split(data)
    meta = {**json.loads(header["__metadata__"]["agentarch"]), **changes}
    header["__metadata__"]["agentarch"] = json.dumps(meta)
    return pack(header, body)


def test_an_honest_checkpoint_passes_with_the_epoch_and_step_it_says(honest):
    kept = check(honest, EPOCHS, PER_EPOCH)
    assert (kept.epoch, kept.step, kept.data) == (2, 12, honest)


def pickled() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model.0.weight": torch.zeros(3)}, buffer)
    return buffer.getvalue()


def tensor_forgery(honest: bytes, name: str, change) -> bytes:
    header, body = split(honest)
    change(header, body)
    return pack(header, body) if name != "body" else pack(header, body + b"\0" * 8)


FORGERIES = {
    "pickle": lambda h: pickled(),
    "empty": lambda h: b"",
    "header-claims-more-than-the-file": lambda h: (2**60).to_bytes(8, "little") + h[8:],
    "not-json": lambda h: (5).to_bytes(8, "little") + b"\x80abcd" + h[13:],
    "nan-constant": lambda h: pack(
        {**split(h)[0], "window": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}, b""
    ),
    "bad-dtype": lambda h: pack(_retype(split(h)[0], "window", "F8_E4M3"), split(h)[1]),
    "object-dtype": lambda h: pack(_retype(split(h)[0], "window", "O"), split(h)[1]),
    "unknown-name": lambda h: pack(_rename(split(h)[0], "window", "../../etc/passwd"), split(h)[1]),
    "overlap": lambda h: pack(_shift(split(h)[0], -4), split(h)[1]),
    "gap": lambda h: pack(_shift(split(h)[0], 4), split(h)[1] + b"\0" * 4),
    "trailing-bytes": lambda h: h + b"\0" * 64,
    "bytes-unlike-shape": lambda h: pack(_reshape(split(h)[0], "window", [3]), split(h)[1]),
    "no-model": lambda h: pack({k: v for k, v in split(h)[0].items() if not k.startswith("model.")}, split(h)[1]),
    "meta-too-large": lambda h: with_meta(h, curve=[{"step": 1, "epoch": 0.1, "loss": 1.0}] * 4000),
    "meta-extra-key": lambda h: with_meta(h, exploit="x"),
    "epoch-past-the-run": lambda h: with_meta(h, epoch=EPOCHS, step=EPOCHS * PER_EPOCH),
    "epoch-zero": lambda h: with_meta(h, epoch=0, step=0),
    "step-not-at-the-epoch": lambda h: with_meta(h, step=13),
    "huge-integer": lambda h: with_meta(h, epoch=10**400),
    "no-rng-state": lambda h: with_meta(h, numpy=[9999, 0, 0.0]),
}
NaN = float("nan")
REASONS = {
    "pickle": "header of",
    "empty": "no header",
    "header-claims-more-than-the-file": "header of",
    "not-json": "unreadable checkpoint header",
    "nan-constant": "constant NaN",
    "bad-dtype": "has dtype 'F8_E4M3'",
    "object-dtype": "has dtype 'O'",
    "unknown-name": "the trainer does not write",
    "overlap": "overlap or leave a gap",
    "gap": "overlap or leave a gap",
    "trailing-bytes": "cover",
    "bytes-unlike-shape": "bytes for shape",
    "no-model": "without the model state",
    "meta-too-large": "metadata over",
    "meta-extra-key": "metadata is not exactly",
    "epoch-past-the-run": "not inside the run",
    "epoch-zero": "not inside the run",
    "step-not-at-the-epoch": "epoch 2 ends at 12",
    "huge-integer": "not inside the run",
    "no-rng-state": "random generator state",
}


def _retype(header: dict, name: str, dtype: str) -> dict:
    header[name]["dtype"] = dtype
    return header


def _rename(header: dict, old: str, new: str) -> dict:
    header[new] = header.pop(old)
    return header


def _reshape(header: dict, name: str, shape: list[int]) -> dict:
    header[name]["shape"] = shape
    return header


def _shift(header: dict, by: int) -> dict:
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    header[last]["data_offsets"] = [header[last]["data_offsets"][0] + by, header[last]["data_offsets"][1] + by]
    return header


@pytest.mark.parametrize("name", FORGERIES)
def test_a_forged_checkpoint_is_refused_with_the_reason(honest, name):
    forged = FORGERIES[name](honest)
    with pytest.raises(ProtocolError, match=REASONS[name]) as refused:
        check(forged, EPOCHS, PER_EPOCH)
    assert len(str(refused.value)) < 1000  # the reason is bounded, whatever the forgery said


def test_the_size_cap_follows_the_parameter_count_and_never_passes_the_file_limit():
    assert max_checkpoint_bytes(1000, 1024) == 32 * 1000 + checkpoints.OVERHEAD_BYTES
    assert max_checkpoint_bytes(10**12, 64) == 64 * 2**20  # a forged count buys no more than a file may hold
    assert max_checkpoint_bytes("many", 1024) == checkpoints.OVERHEAD_BYTES


PICKLING = """import io
import sys

import torch
from torch import nn


def forged(tensors, metadata=None):
    buffer = io.BytesIO()
    torch.save({"model.0.weight": torch.zeros(3)}, buffer)
    return buffer.getvalue()


for module in list(sys.modules.values()):
    if getattr(module, "__name__", "").endswith("checkpoint") and hasattr(module, "save_tensors"):
        module.save_tensors = forged

"""


@pytest.mark.slow
def test_a_candidate_that_writes_pickles_trains_and_each_checkpoint_is_dropped(cache_dir, digits, caplog):
    caplog.set_level(logging.WARNING, logger="agentarch.evaluation.checkpoints")
    forging = replace(request(cache_dir, checkpoint_s=0.0), code=PICKLING + MLP)  # the seed's Net after the preamble
    items = list(stages(forging))
    assert not [i for i in items if isinstance(i, Checkpoint)]
    assert items[-1].status == "trained", items[-1].error
    dropped = [r.getMessage() for r in caplog.records if "checkpoint was dropped" in r.getMessage()]
    assert len(dropped) == 3 and all("header" in reason for reason in dropped), dropped  # epochs 1 to 3 of 4


@pytest.mark.slow
def test_a_forged_resume_checkpoint_trains_from_scratch(cache_dir, digits, caplog):
    caplog.set_level(logging.WARNING, logger="agentarch.evaluation.stages")
    *_, final = stages(request(cache_dir, resume=pickled()))
    assert final.status == "trained", final.error
    assert "resumed_epoch" not in final.trained and final.trained["epochs_done"] == 4
    assert any("resume checkpoint was dropped" in r.getMessage() for r in caplog.records)
