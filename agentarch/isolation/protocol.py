"""What comes back from the sandbox, read as hostile input: event lines, output arrays, text.

Candidate code runs in the runner's process, so everything the runner can write the candidate can
write too: the event pipe (through its file descriptor), the output files and the log in scratch.
Nothing here trusts any of it. An event line is bounded in size and parsed with bounded numbers;
each event keeps only the fields the host uses, each checked for type and range, so what reaches
the archive is small and well-typed; an output array must be a plain version 1 or 2 `.npy` of a
float dtype and exactly the shape the task expects, checked from its header before any array is
allocated. Every violation raises `ProtocolError`, which the host turns into a `failed` result
(docs/sandbox.md, "The protocol").
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from agentarch.errors import AgentarchError

# An honest event is a few KB (a trained event with a 51-point curve is about 5 KB); 1 MiB leaves
# room for a long honest error message and keeps a forged line from costing the host memory.
MAX_EVENT_BYTES = 2**20

# Caps on text the host keeps from the sandbox (UTF-8 bytes); a longer text keeps its head and tail.
MAX_REASON_BYTES = 2000  # a result's one-line reason, shown in listings and the CLI
MAX_TRACEBACK_BYTES = 8000  # the runner formats at most 8 frames
MAX_LOG_BYTES = 4000  # the tail of what the candidate printed, and what the sandbox's tools said
MAX_NOTE_BYTES = 500  # one note of a trained event (the trainer writes one line per note)
MAX_NOTES = 16
MAX_NAME_CHARS = 64  # a device, an error's stage or kind

# trainer.MAX_CURVE_POINTS is 50, and a last partial window adds one point; a bit more is allowed.
MAX_CURVE_POINTS = 64

# Bounds on numbers: what SQLite stores as an integer, and what any real run could report.
MAX_COUNT = 2**62  # parameters, FLOPs, steps
MAX_SECONDS = 10**7  # about 116 days
MAX_MEMORY_MB = 10**9
MAX_EPOCHS = 10**7
MAX_NUMBER_CHARS = 40  # a JSON number literal longer than this is no honest count or timing
MAX_LATENCY_MS = MAX_SECONDS * 1000
MAX_MODULES = 10_000  # the graph worker's imported modules (a debug answer)
MAX_MODULE_CHARS = 200

# Zero-cost proxies (sandbox/proxies.py): these names only, each a finite number of at most this magnitude. The
# runner leaves out any value it could not send within these bounds, so an honest candidate is never refused.
PROXY_NAMES = ("synflow", "grad_norm", "naswot")
MAX_PROXY_VALUE = 1e30

# The structure signature (sandbox/runner.py, FlopCount.structure; agentarch/evaluation/novelty.py): at most this many tokens,
# each a short string, each count a small integer. A signature out of these bounds is dropped, not refused.
MAX_STRUCTURE_TOKENS = 256
MAX_TOKEN_CHARS = 120
MAX_TOKEN_COUNT = 10**6

# Output arrays: the header is a few hundred bytes; the data size is set by the task's shape.
MAX_NPY_HEADER_BYTES = 2**16
MAX_OUTPUT_BYTES = 2**30
OUTPUT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ProtocolError(AgentarchError, ValueError):
    """What the sandbox sent cannot be used; the message says why (and is safe to record)."""


# -- text ---------------------------------------------------------------------------------------


def cap_text(text: str | bytes, limit: int = MAX_REASON_BYTES) -> str:
    """`text` as safe, bounded text: at most `limit` UTF-8 bytes of its head and tail, and how much was cut.

    Bytes are decoded leniently; lone surrogates (valid in JSON, refused by SQLite) and control
    characters other than newline and tab (terminal escapes, in the CLI) become replacement marks.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    data = _CONTROL.sub("\ufffd", text).encode("utf-8", "replace")
    if len(data) <= limit:
        return data.decode("utf-8")
    half = max(1, limit // 2)
    return data[:half].decode("utf-8", "replace") + _cut(len(data) - 2 * half) + data[-half:].decode("utf-8", "replace")


def _cut(size: int) -> str:
    return f"\n…[{size:,} bytes cut]…\n"


def read_capped(fh: BinaryIO, limit: int = MAX_LOG_BYTES) -> str:
    """A file's text capped like `cap_text`, reading only its head and tail (it may be huge, or sparse)."""
    size = os.fstat(fh.fileno()).st_size
    if size <= limit:
        return cap_text(fh.read(limit), limit)
    half = limit // 2
    head = fh.read(half)
    fh.seek(size - half)
    tail = fh.read(half)
    return cap_text(head, half) + _cut(size - len(head) - len(tail)) + cap_text(tail, half)


# -- events -------------------------------------------------------------------------------------


def _bounded_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise ProtocolError(f"an integer of {len(literal):,} digits")
    return int(literal)


def _bounded_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise ProtocolError(f"a number literal of {len(literal):,} characters")
    return float(literal)


def _no_constant(name: str) -> float:
    raise ProtocolError(f"the non-standard JSON constant {name}")


Check = Callable[[Any, str], Any]
"""A field's check: takes the value and the field's name, returns what to keep or raises ProtocolError."""


def _count(value: Any, name: str) -> int:
    if type(value) is not int or not 0 <= value < MAX_COUNT:
        raise ProtocolError(f"field {name!r} is not an integer in [0, 2^62)")
    return value


def _number(low: float, high: float) -> Check:
    def check(value: Any, name: str) -> float:
        if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
            raise ProtocolError(f"field {name!r} is not a finite number in [{low:g}, {high:g}]")
        return float(value)

    return check


def _text(limit: int) -> Check:
    def check(value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise ProtocolError(f"field {name!r} is not a string")
        return cap_text(value, limit)

    return check


def _name(value: Any, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
        raise ProtocolError(f"field {name!r} is not a string of 1 to {MAX_NAME_CHARS} characters")
    return cap_text(value, MAX_NAME_CHARS * 4)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"field {name!r} is not true or false")
    return value


def _hash(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ProtocolError(f"field {name!r} is not 64 lowercase hex digits")
    return value


_seconds = _number(0, MAX_SECONDS)
_epochs = _number(0, MAX_EPOCHS)
_loss = _number(-1e30, 1e30)


def _memory(value: Any, name: str) -> float | None:
    return None if value is None else _number(0, MAX_MEMORY_MB)(value, name)


_proxy_value = _number(-MAX_PROXY_VALUE, MAX_PROXY_VALUE)


def _proxies(value: Any, name: str) -> dict[str, float]:
    """Zero-cost proxy scores: an object of at most len(PROXY_NAMES) known names, each a finite bounded number."""
    if not isinstance(value, dict) or len(value) > len(PROXY_NAMES):
        raise ProtocolError(f"field {name!r} is not an object of at most {len(PROXY_NAMES)} proxies")
    unknown = [key for key in value if key not in PROXY_NAMES]
    if unknown:
        raise ProtocolError(f"field {name!r} names unknown proxies {cap_text(repr(unknown), 200)}")
    return {key: _proxy_value(value[key], f"{name}.{key}") for key in PROXY_NAMES if key in value}


def _structure(value: Any, name: str) -> dict[str, int]:
    """The structure signature: an object of at most MAX_STRUCTURE_TOKENS tokens of 1 to MAX_TOKEN_CHARS characters,
    each counted by an integer in [1, MAX_TOKEN_COUNT].

    The candidate's own process reports it, so a candidate can forge it: it can look novel (as if not checked) or
    like a copy of a member (and be stopped itself), and, once trained, get later candidates of the structure it
    claimed stopped as its near-copies, as a forged functional hash can (docs/sandbox.md, "Novelty before
    training"). A search-quality filter, not a security boundary: no score depends on it.
    """
    if (
        not isinstance(value, dict)
        or len(value) > MAX_STRUCTURE_TOKENS
        or not all(isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS for token in value)
        or not all(type(count) is int and 0 < count <= MAX_TOKEN_COUNT for count in value.values())
    ):
        raise ProtocolError(
            f"field {name!r} is not an object of at most {MAX_STRUCTURE_TOKENS} tokens of at most "
            f"{MAX_TOKEN_CHARS} characters, each counted by an integer in [1, {MAX_TOKEN_COUNT:,}]"
        )
    return {cap_text(token, MAX_TOKEN_CHARS * 4): count for token, count in value.items()}


def _curve(value: Any, name: str) -> list[dict[str, float]]:
    """The loss curve: at most MAX_CURVE_POINTS points, each exactly {step, epoch, loss}, all finite."""
    if not isinstance(value, list) or len(value) > MAX_CURVE_POINTS:
        raise ProtocolError(f"field {name!r} is not a list of at most {MAX_CURVE_POINTS} points")
    points = []
    for point in value:
        if not isinstance(point, dict) or point.keys() != {"step", "epoch", "loss"}:
            raise ProtocolError(f"a point of {name!r} is not exactly {{step, epoch, loss}}")
        points.append(
            {
                "step": _count(point["step"], "step"),
                "epoch": _epochs(point["epoch"], "epoch"),
                "loss": _loss(point["loss"], "loss"),
            }
        )
    return points


def _module_names(value: Any, name: str) -> list[str]:
    """The graph worker's answer to a debug request: the names of the modules it has imported."""
    if (
        not isinstance(value, list)
        or len(value) > MAX_MODULES
        or not all(isinstance(v, str) and 0 < len(v) <= MAX_MODULE_CHARS for v in value)
    ):
        raise ProtocolError(f"field {name!r} is not a list of at most {MAX_MODULES} module names")
    return [cap_text(v, MAX_MODULE_CHARS * 4) for v in value]


def _notes(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_NOTES or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"field {name!r} is not a list of at most {MAX_NOTES} strings")
    return [cap_text(v, MAX_NOTE_BYTES) for v in value]


# Each event's fields and their checks. A field not in OPTIONAL must be there; a field not listed is
# dropped, so nothing unchecked reaches the archive.
EVENT_FIELDS: dict[str, dict[str, Check]] = {
    "smoke": {
        "functional_hash": _hash,
        "params": _count,
        "flops": _count,
        "seconds": _seconds,
        "device": _name,
        "latency_ms": _number(0, MAX_LATENCY_MS),
        "peak_memory_mb": _memory,
        "proxies": _proxies,
        "proxy_seconds": _seconds,
        "structure": _structure,
    },
    "trained": {
        "curve": _curve,
        "train_seconds": _seconds,
        "steps": _count,
        "epochs_done": _epochs,
        "stopped_early": _flag,
        "peak_memory_mb": _memory,
        "device": _name,
        "notes": _notes,
        "export_seconds": _seconds,  # graph scoring: the runner's export of the trained network to ONNX
        "graph_bytes": _count,
    },
    # A training checkpoint the runner left in scratch (sandbox/checkpoint.py); the host reads the file itself as
    # hostile input (agentarch/evaluation/checkpoints.py) and believes the epoch the file says, not this.
    "checkpoint": {"epoch": _count, "step": _count, "bytes": _count},
    # The graph worker's events (agentarch/evaluation/graphs/worker.py): it runs no candidate code, but it loads
    # hostile graphs, so what it says is read like the runner's.
    "ready": {"seconds": _seconds},
    "ran": {"load_seconds": _seconds, "run_seconds": _seconds, "latency_ms": _number(0, MAX_LATENCY_MS)},
    "modules": {"names": _module_names},
    "error": {
        "stage": _name,
        "kind": _name,
        "message": _text(MAX_REASON_BYTES),
        "traceback": _text(MAX_TRACEBACK_BYTES),
    },
}
OPTIONAL = {
    "smoke": {"device", "latency_ms", "peak_memory_mb", "proxies", "proxy_seconds", "structure"},
    "trained": {"notes", "export_seconds", "graph_bytes"},
    "checkpoint": set(),
    "ready": set(),
    "ran": {"latency_ms"},
    "modules": set(),
    "error": {"stage", "kind", "traceback"},
}
DROPPED_IF_BAD = {"smoke": {"structure"}}
"""Fields a search heuristic reads, not a record: one that fails its check is left out, and the event is kept."""


def parse_event(line: bytes) -> dict[str, Any]:
    """One event line from the runner, checked: a dict of exactly the known, validated fields.

    Raises ProtocolError for anything else: bytes that are not UTF-8 JSON, nesting too deep for the
    parser, numbers too long to be honest, an unknown or non-string `event`, a missing or mistyped field
    (except one in DROPPED_IF_BAD, which is left out).
    """
    if len(line) > MAX_EVENT_BYTES:
        raise ProtocolError(f"an event line of {len(line):,} bytes (at most {MAX_EVENT_BYTES:,})")
    try:
        event = json.loads(
            line.decode("utf-8"), parse_int=_bounded_int, parse_float=_bounded_float, parse_constant=_no_constant
        )
    except ProtocolError as err:
        raise ProtocolError(f"unreadable event: {err}") from None
    except (ValueError, RecursionError, MemoryError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ProtocolError(f"unreadable event ({type(err).__name__}): {cap_text(str(err), 200)}") from None
    if not isinstance(event, dict):
        raise ProtocolError(f"an event that is a JSON {type(event).__name__}, not an object")
    kind = event.get("event")
    if not isinstance(kind, str) or kind not in EVENT_FIELDS:
        raise ProtocolError(f"unknown event type {cap_text(repr(kind), 80)}")
    checked: dict[str, Any] = {"event": kind}
    for name, check in EVENT_FIELDS[kind].items():
        if name not in event:
            if name in OPTIONAL[kind]:
                continue
            raise ProtocolError(f"malformed {kind!r} event: field {name!r} is missing")
        try:
            checked[name] = check(event[name], name)
        except ProtocolError as err:
            if name in DROPPED_IF_BAD.get(kind, ()):
                continue
            raise ProtocolError(f"malformed {kind!r} event: {err}") from None
    return checked


# -- output arrays ------------------------------------------------------------------------------


def read_outputs(fh: BinaryIO, expected_shape: tuple[int, ...], max_bytes: int = MAX_OUTPUT_BYTES) -> np.ndarray:
    """A plain `.npy` of logits with exactly `expected_shape`, checked from its header before loading.

    np.load would open a zip (an `.npz`, where a central-directory bomb costs the host memory), may
    unpickle, and allocates whatever shape the header declares; this reads the header itself and
    refuses all of that: version 1 or 2 only, float16/32/64 only, the expected shape, and a file
    size equal to the header plus the data, so the one read is of a size the host chose.
    """
    size = os.fstat(fh.fileno()).st_size
    want = math.prod(expected_shape) * 8 + MAX_NPY_HEADER_BYTES
    if size > min(want, max_bytes):
        raise ProtocolError(f"the file is {size:,} bytes, more than logits of shape {expected_shape} need")
    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fh, max_header_size=MAX_NPY_HEADER_BYTES)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(fh, max_header_size=MAX_NPY_HEADER_BYTES)
        else:
            raise ProtocolError(f"npy format version {version} (only 1.0 and 2.0 are read)")
    except ProtocolError:
        raise
    except Exception as err:  # numpy raises ValueError for most bad headers; a hostile header may find others
        raise ProtocolError(f"not a plain .npy file ({type(err).__name__}: {cap_text(str(err), 200)})") from None
    if dtype.hasobject or dtype.newbyteorder("=") not in OUTPUT_DTYPES:
        raise ProtocolError(f"dtype {cap_text(str(dtype), 100)} (logits must be float16, float32 or float64)")
    if tuple(shape) != tuple(expected_shape):
        raise ProtocolError(f"shape {cap_text(str(shape), 100)}; expected {tuple(expected_shape)}")
    nbytes = math.prod(expected_shape) * dtype.itemsize
    if size != fh.tell() + nbytes:
        raise ProtocolError(f"the file is {size:,} bytes; its header says {fh.tell() + nbytes:,}")
    data = fh.read(nbytes)
    if len(data) != nbytes:
        raise ProtocolError("the file changed while it was read")
    array = np.frombuffer(data, dtype=dtype).reshape(expected_shape, order="F" if fortran else "C")
    return array.astype(dtype.newbyteorder("="), order="C")
