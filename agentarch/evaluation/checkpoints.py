"""Training checkpoints, the host's side: a sandbox's checkpoint read as hostile input, and what a resumed job is given.

The runner leaves a checkpoint in scratch at an epoch's end (sandbox/checkpoint.py) and says so with a `checkpoint`
event. The process that runs `stages()` (never candidate code) reads the file here as it reads every sandbox output:
at most `max_bytes` (relative to the network's parameter count, never above the file-size limit), safetensors only and
parsed by this module from its header (no pickle, nothing allocated that the header merely claims): the names the
runner writes and no others, an allowlist of dtypes, each tensor's bytes exactly its shape's, the tensors tiling the
data with no gap or overlap, and the JSON metadata size-capped and checked against its schema (the epoch inside the
run, the step the epoch's end is at). A checkpoint that fails is dropped with the reason logged: training goes on, and
a resume without it trains from scratch.

The host keeps the bytes it checked (`Checkpoint`) and never loads the tensors; a resumed job gets them back in its
scratch, read-only, and continues from the epoch they say.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentarch.isolation.protocol import ProtocolError, _curve, cap_text

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.safetensors"  # sandbox/checkpoint.py's names: the host imports nothing of the runner's
RESUME_FILE = "resume.safetensors"
META_KEY = "agentarch"
VERSION = 1

BYTES_PER_PARAM = 32
"""Checkpoint bytes a parameter may take: its weight and AdamW's two moments, each up to float64 (24), and room for
the buffers that go with it."""
OVERHEAD_BYTES = 16 * 2**20
"""Checkpoint bytes on top of the parameters': the header, the random generators' states, the losses not yet on the
curve, buffers a small network keeps beside its weights."""
MAX_HEADER_BYTES = 8 * 2**20
MAX_META_BYTES = 64 * 2**10
MAX_TENSORS = 65_536
MAX_NAME_CHARS = 512
MAX_NDIM = 8

DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "F16": 2, "BF16": 2, "F32": 4, "F64": 8}
"""The dtypes a checkpoint may hold, with their sizes in bytes: plain numbers only (no float8, no complex, no object)."""

_NAME = re.compile(
    r"model\.[^\x00-\x1f]+|optimizer\.\d{1,9}\.\d{1,2}|rng\.(torch|shuffle|python|numpy|cuda\.\d{1,3})|window"
)
REQUIRED = {"rng.torch": "U8", "rng.shuffle": "U8", "rng.python": "I64", "rng.numpy": "I64", "window": "F32"}
"""Tensors every checkpoint has, with their dtypes (the CUDA generators', `rng.cuda.N`, are uint8 too)."""
SHAPES = {"rng.python": (625,), "rng.numpy": (624,)}


@dataclass(frozen=True)
class Checkpoint:
    """A checked checkpoint: its bytes (one safetensors file), and the epoch and step a resumed job continues from."""

    data: bytes
    epoch: int
    step: int


class CheckpointKeeper:
    """What a streamed job (local or on Ray) does with the checkpoints on its stream: keeps the latest, for a
    restarted job to resume from, and hands each to `checkpointed` (the orchestrator's store), one rule for both."""

    checkpointed: Callable[[Checkpoint], None] | None = None
    checkpoint: Checkpoint | None = None

    def _keep(self, item: Checkpoint) -> None:
        self.checkpoint = item
        if self.checkpointed is not None:
            self.checkpointed(item)


def max_checkpoint_bytes(params: Any, max_file_mb: int) -> int:
    """The largest checkpoint read from a network of `params` parameters (the smoke stage's count): BYTES_PER_PARAM
    each plus OVERHEAD_BYTES, and never more than one file the sandbox may write."""
    count = params if isinstance(params, int) and params > 0 else 0
    return min(BYTES_PER_PARAM * count + OVERHEAD_BYTES, max_file_mb * 2**20)


def check(data: bytes, epochs: int, steps_per_epoch: int) -> Checkpoint:
    """The checkpoint in `data`, checked against the run's `epochs` and its `steps_per_epoch` (the host's count);
    ProtocolError says what is wrong. The size cap is the caller's, before the bytes are read."""
    if len(data) < 8:
        raise ProtocolError(f"a checkpoint of {len(data)} bytes has no header")
    header_bytes = int.from_bytes(data[:8], "little")
    if header_bytes > min(MAX_HEADER_BYTES, len(data) - 8):
        raise ProtocolError(
            f"a checkpoint header of {header_bytes:,} bytes (at most {MAX_HEADER_BYTES:,}, and the file)"
        )
    try:
        header = json.loads(data[8 : 8 + header_bytes].decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise ProtocolError(
            f"an unreadable checkpoint header ({type(err).__name__}: {cap_text(str(err), 200)})"
        ) from None
    if not isinstance(header, dict):
        raise ProtocolError("a checkpoint header that is not a JSON object")
    meta = _meta(header.pop("__metadata__", None), epochs, steps_per_epoch)
    _tensors(header, len(data) - 8 - header_bytes)
    return Checkpoint(data, meta["epoch"], meta["step"])


def _no_constant(name: str) -> Any:
    raise ValueError(f"the non-standard JSON constant {name}")


def _tensors(header: dict[str, Any], data_bytes: int) -> None:
    """Every entry a known name with an allowed dtype and a shape its bytes match, the entries tiling the data."""
    if not 0 < len(header) <= MAX_TENSORS:
        raise ProtocolError(f"a checkpoint of {len(header):,} tensors (1 to {MAX_TENSORS:,})")
    spans = []
    for name, entry in header.items():
        shown = cap_text(repr(name), 120)
        if len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name):
            raise ProtocolError(f"a checkpoint tensor named {shown}, which the trainer does not write")
        if not isinstance(entry, dict) or entry.keys() != {"dtype", "shape", "data_offsets"}:
            raise ProtocolError(f"checkpoint tensor {shown} is not exactly {{dtype, shape, data_offsets}}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise ProtocolError(
                f"checkpoint tensor {shown} has dtype {cap_text(repr(dtype), 40)} (allowed: {', '.join(DTYPES)})"
            )
        want = REQUIRED.get(name, "U8" if name.startswith("rng.") else None)
        if want is not None and dtype != want:
            raise ProtocolError(f"checkpoint tensor {shown} is {dtype}, not {want}")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(type(n) is int and 0 <= n <= data_bytes for n in shape)
        ):
            raise ProtocolError(f"checkpoint tensor {shown} has no shape of at most {MAX_NDIM} sizes")
        if name in SHAPES and tuple(shape) != SHAPES[name]:
            raise ProtocolError(f"checkpoint tensor {shown} has shape {shape}, not {list(SHAPES[name])}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)):
            raise ProtocolError(f"checkpoint tensor {shown} has no [begin, end] offsets")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPES[dtype]:
            raise ProtocolError(
                f"checkpoint tensor {shown}: {offsets[1] - offsets[0]:,} bytes for shape {shape} of {dtype}"
            )
        spans.append((offsets[0], offsets[1]))
    missing = [name for name in REQUIRED if name not in header]
    if missing or not any(name.startswith("model.") for name in header):
        raise ProtocolError(f"a checkpoint without {', '.join(missing) or 'the model state'}")
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise ProtocolError(f"checkpoint tensors overlap or leave a gap at byte {min(begin, end):,}")
        end = stop
    if end != data_bytes:
        raise ProtocolError(f"checkpoint tensors cover {end:,} bytes of the file's {data_bytes:,}")


def _meta(found: Any, epochs: int, steps_per_epoch: int) -> dict[str, Any]:
    """The checkpoint's JSON document, checked: exactly the runner's keys, the epoch inside the run, the step at it."""
    if not isinstance(found, dict) or set(found) != {META_KEY} or not isinstance(found[META_KEY], str):
        raise ProtocolError(f"checkpoint metadata is not exactly {{{META_KEY!r}: JSON text}}")
    if len(found[META_KEY].encode("utf-8", "replace")) > MAX_META_BYTES:
        raise ProtocolError(f"checkpoint metadata over {MAX_META_BYTES:,} bytes")
    try:
        meta = json.loads(found[META_KEY], parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise ProtocolError(f"unreadable checkpoint metadata ({type(err).__name__})") from None
    keys = {"version", "epoch", "step", "curve", "python", "numpy"}
    if not isinstance(meta, dict) or meta.keys() != keys:
        raise ProtocolError(f"checkpoint metadata is not exactly {{{', '.join(sorted(keys))}}}")
    epoch, step = meta["epoch"], meta["step"]
    if meta["version"] != VERSION:
        raise ProtocolError(f"checkpoint version {cap_text(repr(meta['version']), 40)} (this host reads {VERSION})")
    if type(epoch) is not int or not 0 < epoch < epochs:
        raise ProtocolError(f"a checkpoint at epoch {cap_text(repr(epoch), 40)}, not inside the run's {epochs}")
    if type(step) is not int or step != epoch * steps_per_epoch:
        raise ProtocolError(
            f"a checkpoint at step {cap_text(repr(step), 40)}; epoch {epoch} ends at {epoch * steps_per_epoch}"
        )
    _curve(meta["curve"], "curve")
    python, numpy = meta["python"], meta["numpy"]
    if not (
        isinstance(python, list)
        and len(python) == 2
        and type(python[0]) is int
        and (python[1] is None or _finite(python[1]))
        and isinstance(numpy, list)
        and len(numpy) == 3
        and type(numpy[0]) is int
        and 0 <= numpy[0] <= 624
        and numpy[1] in (0, 1)
        and _finite(numpy[2])
    ):
        raise ProtocolError("checkpoint metadata has no valid random generator state")
    return meta


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def read(job: Any, params: Any, epochs: int, steps_per_epoch: int, max_file_mb: int) -> Checkpoint | None:
    """The checkpoint a job's runner left in scratch (`job`: a SandboxJob), checked; None, with the reason logged, for
    one that fails (training goes on without it)."""
    try:
        data = job.read_file(CHECKPOINT_FILE, max_checkpoint_bytes(params, max_file_mb))
        return check(data, epochs, steps_per_epoch)
    except ProtocolError as err:
        log.warning("a training checkpoint was dropped: %s", err)
        return None
