"""The host reads everything the sandbox sends back as hostile input.

Candidate code runs in the runner's process, so it can write the event pipe, the output files,
the log and the scratch directory, and fill its own stdin. Each attack that crashed or hung the
host on main (issue 11, item 4) runs here twice: its bytes fed straight to agentarch.isolation.protocol's
parsers (fast), and as a real candidate through a real Evaluator and sandbox on the digits task,
in both isolation modes. Contained means: the candidate is recorded `failed` with a reason that
names what happened, its archive rows stay small, nothing raised, the job ended within a time
bound, and no process or scratch directory of the job is left.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentarch.config import load_settings
from agentarch.evaluation import stages as stages_module
from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.stages import RunRequest, RunResult, execute
from agentarch.isolation import cgroups
from agentarch.isolation import warm as warm_module
from agentarch.isolation.bubblewrap import bubblewrap_problem
from agentarch.isolation.job import SandboxJob
from agentarch.isolation.policy import Limits, SandboxError
from agentarch.isolation.protocol import (
    MAX_CURVE_POINTS,
    MAX_EVENT_BYTES,
    MAX_REASON_BYTES,
    ProtocolError,
    cap_text,
    parse_event,
    read_capped,
    read_outputs,
)
from agentarch.store.archive import Archive
from tests.conftest import NET, SPEC, job_processes
from tests.security.harness import Case, candidate_code

SHAPE = (180, 10)  # digits' validation split: (samples, classes)

SMOKE = {
    "event": "smoke",
    "functional_hash": "ab" * 32,
    "params": 650,
    "flops": 1280,
    "seconds": 0.5,
    "device": "cpu",
    "output_shape": [8, 10],
}
TRAINED = {
    "event": "trained",
    "curve": [{"step": 10, "epoch": 0.5, "loss": 2.1}, {"step": 20, "epoch": 1.0, "loss": 1.9}],
    "train_seconds": 1.5,
    "steps": 20,
    "epochs_done": 1.0,
    "stopped_early": False,
    "notes": [],
    "peak_memory_mb": 312.5,
    "device": "cpu",
}
ERROR = {
    "event": "error",
    "stage": "smoke",
    "kind": "forward",
    "message": "forward raised ValueError: no",
    "traceback": "Traceback (most recent call last):\n  ...",
}


def line(event: Any) -> bytes:
    return json.dumps(event).encode()


def refused(data: bytes, pattern: str) -> None:
    with pytest.raises(ProtocolError, match=pattern):
        parse_event(data)


# -- event lines ---------------------------------------------------------------------------------


def test_honest_events_come_back_with_only_the_fields_the_host_uses():
    assert parse_event(line(SMOKE)) == {k: v for k, v in SMOKE.items() if k != "output_shape"}
    assert parse_event(line(TRAINED)) == TRAINED
    assert parse_event(line(ERROR)) == ERROR
    assert parse_event(line({**TRAINED, "peak_memory_mb": None, "val_accuracy": 1.0}))["peak_memory_mb"] is None


@pytest.mark.parametrize(
    "data, pattern",
    [
        (b"[" * 200_000 + b"]" * 200_000, r"unreadable event \(RecursionError\)"),
        (b'{"event": "smoke", "params": ' + b"9" * 5000 + b"}", r"an integer of 5,000 digits"),
        (b'{"event": ["smoke"]}', r"unknown event type \['smoke'\]"),
        (b'{"event": {"a": 1}}', r"unknown event type"),
        (b'{"event": "shell"}', r"unknown event type 'shell'"),
        (b"[1, 2]", r"JSON list, not an object"),
        (b'"smoke"', r"JSON str, not an object"),
        (b'{"event": "smoke", "seconds": NaN}', r"constant NaN"),
        (b'{"event": "smoke", "seconds": -Infinity}', r"constant -Infinity"),
        (b'{"event": "smoke", "seconds": 1' + b"0" * 100 + b".5}", r"number literal of 103 characters"),
        (b"\xff\xfe{}", r"UnicodeDecodeError"),
        (json.dumps({"event": "error", "message": "x"}).encode("utf-16"), r"UnicodeDecodeError"),
        (b"", r"JSONDecodeError"),
        (b"{" + b" " * (MAX_EVENT_BYTES + 1), r"event line of 1,048,578 bytes"),
    ],
)
def test_unreadable_lines_are_refused(data, pattern):
    refused(data, pattern)


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"params": True}, r"'params' is not an integer"),
        ({"params": -1}, r"'params' is not an integer"),
        ({"flops": 2**62}, r"'flops' is not an integer"),
        ({"params": 1.0}, r"'params' is not an integer"),
        ({"seconds": "1"}, r"'seconds' is not a finite number"),
        ({"seconds": -0.5}, r"'seconds' is not a finite number"),
        ({"functional_hash": "f" * 63}, r"'functional_hash' is not 64 lowercase hex"),
        ({"functional_hash": "F" * 64}, r"'functional_hash' is not 64 lowercase hex"),
        ({"functional_hash": None}, r"'functional_hash' is not 64"),
        ({"device": "c" * 65}, r"'device' is not a string of 1 to 64"),
        ({"device": ["cpu"]}, r"'device' is not a string"),
    ],
)
def test_smoke_fields_are_type_and_range_checked(change, pattern):
    refused(line({**SMOKE, **change}), r"malformed 'smoke' event: .*" + pattern)


def test_a_number_literal_that_overflows_is_not_finite():
    refused(line(SMOKE).replace(b'"seconds": 0.5', b'"seconds": 1e999'), r"'seconds' is not a finite number")
    refused(line(TRAINED).replace(b'"loss": 2.1', b'"loss": -1e999'), r"'loss' is not a finite number")


def test_a_missing_field_is_named():
    refused(line({k: v for k, v in SMOKE.items() if k != "flops"}), r"field 'flops' is missing")
    refused(line({"event": "error"}), r"malformed 'error' event: field 'message' is missing")


POINT = {"step": 1, "epoch": 0.1, "loss": 2.0}


@pytest.mark.parametrize(
    "curve, pattern",
    [
        ([POINT] * (MAX_CURVE_POINTS + 1), r"'curve' is not a list of at most 64 points"),
        ({"step": 1}, r"'curve' is not a list"),
        ("[]", r"'curve' is not a list"),
        ([[1, 0.1, 2.0]], r"not exactly \{step, epoch, loss\}"),
        ([{**POINT, "html": "<script>"}], r"not exactly \{step, epoch, loss\}"),
        ([{"step": 1, "loss": 2.0}], r"not exactly \{step, epoch, loss\}"),
        ([{**POINT, "loss": "nan"}], r"'loss' is not a finite number"),
        ([{**POINT, "loss": None}], r"'loss' is not a finite number"),
        ([{**POINT, "step": 1.5}], r"'step' is not an integer"),
        ([{**POINT, "epoch": -1}], r"'epoch' is not a finite number"),
    ],
)
def test_a_forged_curve_is_refused(curve, pattern):
    refused(line({**TRAINED, "curve": curve}), r"malformed 'trained' event: .*" + pattern)


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"stopped_early": 0}, r"'stopped_early' is not true or false"),
        ({"peak_memory_mb": -1}, r"'peak_memory_mb' is not a finite number"),
        ({"steps": "20"}, r"'steps' is not an integer"),
        ({"epochs_done": 1e300}, r"'epochs_done' is not a finite number"),
        ({"notes": ["x"] * 17}, r"'notes' is not a list of at most 16 strings"),
        ({"notes": [{"x": 1}]}, r"'notes' is not a list"),
        ({"notes": "compile failed"}, r"'notes' is not a list"),
    ],
)
def test_trained_fields_are_type_and_range_checked(change, pattern):
    refused(line({**TRAINED, **change}), r"malformed 'trained' event: .*" + pattern)


def test_text_fields_are_capped_and_safe_to_store():
    long_note = "n" * 100_000
    event = parse_event(
        line(
            {
                **ERROR,
                "message": "\x1b[2J" + "m" * 900_000 + "\ud800 end",
                "traceback": "t" * 100_000,
                "stage": "smoke\u0007",
            }
        )
    )
    assert len(event["message"].encode()) < MAX_REASON_BYTES + 100 and "bytes cut]" in event["message"]
    assert event["message"].startswith("\ufffd[2J") and event["message"].endswith("? end")
    assert len(event["traceback"].encode()) < 8100 and event["stage"] == "smoke\ufffd"
    assert len(parse_event(line({**TRAINED, "notes": [long_note]}))["notes"][0]) < 600
    con = sqlite3.connect(":memory:")  # SQLite refuses lone surrogates; what comes out of the parser it takes
    con.execute("CREATE TABLE t (x TEXT)")
    con.execute("INSERT INTO t VALUES (?)", [event["message"]])


def test_cap_text_keeps_head_and_tail_and_says_the_original_size():
    assert cap_text("short") == "short"
    capped = cap_text("a" * 1000 + "b" * 12_345_678 + "z" * 1000, 2000)
    assert capped.startswith("a" * 1000) and capped.endswith("z" * 1000)
    assert "…[12,345,678 bytes cut]…" in capped
    assert cap_text(b"\xff\xfeok") == "\ufffd\ufffdok"
    assert cap_text("tab\tand\nnewline\rcr") == "tab\tand\nnewline\ufffdcr"


def test_read_capped_reads_only_the_ends_of_a_huge_sparse_log(tmp_path):
    log = tmp_path / "candidate.log"
    with log.open("wb") as fh:
        fh.write(b"first line\n")
        fh.truncate(2**40)  # a terabyte, sparse: reading it whole would never end
        fh.seek(2**40)
        fh.write(b"last line\n")
    started = time.monotonic()
    with log.open("rb") as fh:
        text = read_capped(fh, 4000)
    assert time.monotonic() - started < 1
    assert text.startswith("first line") and text.rstrip().endswith("last line")
    assert len(text.encode()) < 4100 and "bytes cut]" in text


# -- output files --------------------------------------------------------------------------------


def npy(array: np.ndarray, **kwargs: Any) -> io.BytesIO:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, **kwargs)
    return buffer


def as_file(data: bytes | io.BytesIO, tmp_path: Path):
    path = tmp_path / "outputs.npy"
    path.write_bytes(data.getvalue() if isinstance(data, io.BytesIO) else data)
    return path.open("rb")


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8", ">f4"])
@pytest.mark.parametrize("fortran", [False, True])
def test_a_plain_float_npy_loads_as_written(tmp_path, dtype, fortran):
    array = np.random.default_rng(0).normal(size=SHAPE).astype(dtype)
    array = np.asfortranarray(array) if fortran else array
    with as_file(npy(array), tmp_path) as fh:
        loaded = read_outputs(fh, SHAPE)
    assert loaded.dtype.isnative and loaded.flags.c_contiguous and np.array_equal(loaded, array)


def header(shape: tuple[int, ...], descr: str = "<f4", version: tuple[int, int] = (1, 0)) -> bytes:
    buffer = io.BytesIO()
    write = np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0
    write(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def zip_bomb() -> bytes:
    """A zip whose central directory lists many members: np.load opens it as an .npz and reads it all."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(500):
            archive.writestr(f"{i}.npy", b"")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data, pattern",
    [
        (header((2**40, 10)) + b"\0" * 4096, r"shape \(1099511627776, 10\); expected \(180, 10\)"),
        (header((2**40, 10), version=(2, 0)) + b"\0" * 4096, r"shape \(1099511627776, 10\)"),
        (zip_bomb(), r"not a plain \.npy file \(ValueError"),
        (b"PK\x03\x04" + b"\0" * 100, r"not a plain \.npy file"),
        (b"\x80\x04\x95" + b"\0" * 100, r"not a plain \.npy file"),  # a pickle
        (header(SHAPE, "|O") + b"\0" * (180 * 10 * 8), r"dtype object"),
        (header(SHAPE, "<i8") + b"\0" * (180 * 10 * 8), r"dtype int64 \(logits must be float16"),
        (header(SHAPE, "<U3") + b"\0" * (180 * 10 * 12), r"dtype <U3"),
        (header(SHAPE, "<c8") + b"\0" * (180 * 10 * 8), r"dtype complex64"),
        (header(SHAPE, "[('a', '<f4')]") + b"\0" * (180 * 10 * 4), r"not a plain \.npy file|dtype"),
        (header((180, 11)) + b"\0" * (180 * 11 * 4), r"shape \(180, 11\); expected \(180, 10\)"),
        (header((1800,)) + b"\0" * (1800 * 4), r"shape \(1800,\)"),
        (header(SHAPE) + b"\0" * (180 * 10 * 4 - 1), r"its header says"),
        (header(SHAPE) + b"\0" * (180 * 10 * 4 + 1), r"its header says"),
        (header(SHAPE) + b"\0" * (2**21), r"more than logits of shape \(180, 10\) need"),
        (b"\x93NUMPY\x03\x00" + b"\0" * 200, r"npy format version \(3, 0\)"),
        (b"\x93NUMPY\x01\x00\xff\xff" + b"{'descr': " + b"[" * 5000 + b"]" * 5000, r"not a plain \.npy file"),
        (b"\x93NUMPY\x02\x00\xff\xff\xff\x7f", r"not a plain \.npy file"),
        (b"\x93NUM", r"not a plain \.npy file"),
        (b"", r"not a plain \.npy file"),
    ],
)
def test_hostile_output_files_are_refused_before_any_allocation(tmp_path, data, pattern):
    with as_file(data, tmp_path) as fh, pytest.raises(ProtocolError, match=pattern):
        read_outputs(fh, SHAPE)


def test_the_byte_cap_holds_even_for_the_expected_shape(tmp_path):
    with as_file(npy(np.zeros(SHAPE, np.float32)), tmp_path) as fh, pytest.raises(ProtocolError, match="more than"):
        read_outputs(fh, SHAPE, max_bytes=1000)


# -- the host's own failures -----------------------------------------------------------------------


def request(cache_dir: Path) -> RunRequest:
    return RunRequest(
        code="",
        task="digits",
        train=SPEC["train"],
        limits=Limits(timeout_s=30, smoke_timeout_s=30),
        isolation="process",
        cache_dir=cache_dir,
        data_dir=None,
        split_seed=0,
    )


def test_any_exception_in_execute_is_a_failed_result_naming_the_stage(cache_dir, monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("x" * 100_000)

    monkeypatch.setattr(stages_module, "prepare", broken)
    result = execute(request(cache_dir))
    assert result.status == "failed" and result.reason.startswith("[prepare] ZeroDivisionError on the host: xxx")
    assert len(result.reason.encode()) < MAX_REASON_BYTES + 100 and "bytes cut]" in result.reason
    assert "Traceback" in result.error and len(result.error) < 12_000


def test_a_sandbox_that_cannot_run_still_stops_the_operator(cache_dir, digits, monkeypatch):
    def unusable(*args: Any, **kwargs: Any) -> None:
        raise SandboxError("prlimit (util-linux) is not installed")

    monkeypatch.setattr(warm_module, "SandboxJob", unusable)  # where a job's sandbox is started
    with pytest.raises(SandboxError, match="prlimit"):
        execute(request(cache_dir))


def test_a_real_cgroup_shim_failure_still_stops_the_operator(cache_dir, digits, monkeypatch, tmp_path):
    """Exit 97 with the shim's words on stderr is the sandbox's failure (a candidate's exit 97 is its own: E2E)."""
    (tmp_path / "file").write_text("")  # a path under a plain file: no one can write it, whatever exists elsewhere
    procs = str(tmp_path / "file" / "cgroup.procs")
    monkeypatch.setattr(cgroups.Cgroup, "procs_files", property(lambda self: [procs]))
    with pytest.raises(SandboxError, match=rf"could not place the evaluation in its cgroup: {re.escape(procs)}"):
        execute(request(cache_dir))


def test_scratch_removal_survives_a_deep_locked_tree():
    """1,200 levels (past shutil.rmtree's recursion limit) of 10-character names (past PATH_MAX), locked modes, a
    fifo and a symlink out. Built and removed without capabilities (a root without them, when the
    tests run as root): an orchestrator that is not root must unlock the modes before removing."""
    scratch = Path(tempfile.mkdtemp(prefix="agentarch-job-"))
    capless = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"] if os.geteuid() == 0 else []
    script = f"""
import os
from pathlib import Path
from agentarch.isolation.scratch import remove_scratch
os.chdir({str(scratch)!r})
os.mkfifo("fifo")
os.symlink("/etc/passwd", "link")
os.mkdir("locked")
open("locked/f", "w").write("x")
os.chmod("locked", 0)
for _ in range(1200):
    os.mkdir("d" * 10)
    os.chdir("d" * 10)
open("f", "w").write("x")
os.chmod(".", 0)
os.chdir("/")
remove_scratch(Path({str(scratch)!r}))
"""
    try:
        subprocess.run([*capless, sys.executable, "-c", script], check=True, timeout=120)
        assert not scratch.exists() and Path("/etc/passwd").exists()
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", str(scratch)], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


@pytest.mark.slow
def test_a_task_that_raises_in_ray_is_a_failed_result(tmp_path):
    pytest.importorskip("ray")
    from agentarch.evaluation.ray_executor import RayExecutor

    def raises(req: RunRequest, gpu: str | None, task: object, warm: object = None) -> Iterator[RunResult]:
        if req.code == "no sandbox":
            raise SandboxError("bubblewrap cannot create namespaces here")
        raise RecursionError("deep")
        yield

    executor = RayExecutor(num_cpus=1, run=raises)
    try:
        result = executor.run(request(tmp_path / "cache"))
        assert result.status == "failed" and "[executor] the Ray task raised RecursionError: deep" in result.reason
        with pytest.raises(SandboxError, match="namespaces"):
            executor.run(dataclasses.replace(request(tmp_path / "cache"), code="no sandbox"))
        assert executor.free.qsize() == 1  # the actor raised, it was not lost: back in the pool
    finally:
        executor.close()


# -- end to end: real candidates through the real sandbox --------------------------------------------

ISOLATIONS = [
    pytest.param(
        "bubblewrap",
        marks=pytest.mark.skipif(bubblewrap_problem() is not None, reason=f"needs bubblewrap: {bubblewrap_problem()}"),
    ),
    "process",
]

FORGE = """
        json, sys = _imp("json"), _imp("sys")
        events = event_pipes()[0]
        smoke = {"event": "smoke", "params": 1, "flops": 1, "functional_hash": "e" * 64, "seconds": 0.0}
        os.write(events, (json.dumps(smoke) + "\\n").encode())
        sys.stdin.readline()
        trained = {"event": "trained", "curve": [], "train_seconds": 0.0, "steps": 1, "epochs_done": 1,
                   "stopped_early": False, "peak_memory_mb": None, "device": "cpu"}
        trained.update(%s)
        os.write(events, (json.dumps(trained) + "\\n").encode())
        os._exit(0)
"""

SAVE_INSTEAD = """
        np = _imp("numpy")
        def save(path, array, *args, **kwargs):
            with _open(path, "wb") as fh:
%s
        np.save = save
"""

E2E = [
    # 1. event lines the host's JSON parser crashed on
    Case(
        "deep-json-array",
        """
        os.write(event_pipes()[0], b"[" * 200000 + b"]" * 200000 + b"\\n")
        _imp("time").sleep(60)
    """,
        "module",
        ("failed",),
        r"^\[smoke\] the runner sent unreadable event \(RecursionError\)",
        "protocol",
    ),
    Case(
        "event-name-a-list",
        """
        os.write(event_pipes()[0], b'{"event": ["smoke"], "params": ' + b"9" * 5000 + b'}\\n')
        _imp("time").sleep(60)
    """,
        "init",
        ("failed",),
        r"^\[smoke\] the runner sent unreadable event: an integer of 5,000 digits",
        "protocol",
    ),
    # 2. output files np.load would have opened
    Case(
        "npy-header-2-to-the-40-rows",
        SAVE_INSTEAD
        % """
                np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (2**40, 10)})
                fh.write(b"\\0" * 4096)
    """,
        "module",
        ("failed",),
        r"^\[score\] unusable outputs: val_outputs\.npy: shape \(1099511627776, 10\)",
        "protocol",
    ),
    Case(
        "zip-central-directory-bomb",
        SAVE_INSTEAD
        % """
                zipfile = _imp("zipfile")
                with zipfile.ZipFile(fh, "w") as z:
                    for i in range(200):
                        z.writestr(f"{i}.npy", b"")
    """,
        "module",
        ("failed",),
        r"^\[score\] unusable outputs: val_outputs\.npy: not a plain \.npy file",
        "protocol",
    ),
    # 3. scratch the host could not remove: deep, locked, and still being written
    Case(
        "deep-locked-scratch-with-a-writer",
        """
        home = os.getcwd()
        for _ in range(3000):
            os.mkdir("d" * 10)
            os.chdir("d" * 10)
        locked = attempt(lambda: os.chmod(".", 0))  # the sandbox's seccomp filter may refuse chmod
        os.chdir(home)
        def writer():
            if os.fork() == 0:
                try:
                    os.setsid()
                finally:
                    fd = os.open(f"{home}/lingering", os.O_WRONLY | os.O_CREAT)
                    while True:
                        os.pwrite(fd, b"x" * 65536, 0)
            return "forked"
        report("left a 3000-deep tree", locked, attempt(writer))  # ... or fork may be refused
    """,
        "module",
        ("failed",),
        r"^\[smoke:import\] .*REPORT left a 3000-deep tree",
        "close: rm -rf, cgroup kill",
    ),
    # 4. the host's word to the runner, blocked by a pipe the candidate filled
    Case(
        "stdin-filled-through-proc",
        """
        fd = os.open("/proc/self/fd/0", os.O_WRONLY | os.O_NONBLOCK)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except BlockingIOError:
            pass
        class Stuck:
            def readline(self):
                _imp("time").sleep(600)
        _imp("sys").stdin = Stuck()
    """,
        "module",
        ("failed",),
        r"^\[train\] the runner's input stayed full for 5 s|^\[smoke:import\] .*Permission denied: '/proc/self/fd/0'",
        "send: non-blocking, deadline (or the uid drop refuses the open)",
    ),
    # 5. text that filled the archive
    Case(
        "seven-mib-exception",
        """
        raise RuntimeError("A" * 7 * 2**20)
    """,
        "module",
        ("failed",),
        r"^\[smoke:import\] .*RuntimeError: AAAA.*bytes cut\]…\nAAAA",
        "the runner clips messages; the host caps every text it keeps",
    ),
    Case(
        "event-line-over-the-cap",
        """
        for fd in event_pipes():
            os.write(fd, b'{"event": "error", "message": "' + b"A" * 2 * 2**20 + b'"}\\n')
    """,
        "module",
        ("failed",),
        r"^\[smoke\] the runner sent an event line over 1 MiB; killed",
        "protocol: line cap",
    ),
    Case(
        "long-exception-and-print-flood",
        """
        print("P" * 12_000_000, flush=True)
        raise RuntimeError("B" * 600_000)
    """,
        "init",
        ("failed",),
        r"^\[smoke:build\] .*RuntimeError: BBBB.*bytes cut\]…\nBBBB",
        "protocol: cap_text",
    ),
    # 6. a forged curve (and fields) in the trained event
    Case(
        "forged-curve",
        FORGE % '{"curve": [{"step": "<script>", "loss": 1e308}] * 5000}',
        "module",
        ("failed",),
        r"^\[train\] the runner sent malformed 'trained' event: field 'curve'",
        "protocol",
    ),
    # 7. an exit status that made the host blame the sandbox and stop the run
    Case(
        "exit-97-like-the-cgroup-shim",
        """
        os.unlink("candidate.log")
        os._exit(97)
    """,
        "module",
        ("failed",),
        r"^\[smoke\] the sandboxed process exited with code 97",
        "_death: shim failure needs stderr",
    ),
]


STUCK = (
    """
import sys, time
class Stuck:
    def readline(self):
        time.sleep(600)
sys.stdin = Stuck()
"""
    + NET
)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_full_stdin_pipe_cannot_block_the_host(isolation, digits):
    """However the pipe got full (the runner stopped reading; the candidate wrote into it), send() has a deadline."""
    limits = Limits(timeout_s=60, smoke_timeout_s=30, threads=1)
    with SandboxJob(STUCK, SPEC, digits.inputs_dir, limits, isolation) as job:  # type: ignore[arg-type]
        assert job.read_event(30)["event"] == "smoke"
        assert job.proc.stdin is not None
        os.set_blocking(job.proc.stdin.fileno(), False)
        with pytest.raises(BlockingIOError):
            while True:
                os.write(job.proc.stdin.fileno(), b"x" * 4096)
        started = time.monotonic()
        outcome = job.send("train", timeout_s=1)
        assert time.monotonic() - started < 3
        assert outcome is not None and outcome.status == "failed" and "input stayed full for 1 s" in outcome.reason
        assert job.proc.wait(timeout=10) is not None
        scratch = job.scratch
    assert not scratch.exists() and job_processes([scratch.name]) == []


def evaluate_hostile(code: str, tmp_path: Path, cache_dir: Path, isolation: str, monkeypatch) -> dict[str, Any]:
    """Evaluate `code` through a real Evaluator into a fresh archive, noting the scratch directories made."""
    scratch: list[Path] = []
    real_init = SandboxJob.__init__

    def spy_init(self, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        scratch.append(self.scratch)

    monkeypatch.setattr(SandboxJob, "__init__", spy_init)
    monkeypatch.setenv("AGENTARCH_WEAK_SANDBOX_OK", "1")  # what is tested is the host's reading, in both modes
    settings = load_settings(
        task="digits",
        epochs=1,
        archive=tmp_path / "a.db",
        cache_dir=cache_dir,
        isolation=isolation,
        scoring="trusted",  # the outputs the candidate's process writes are read only under trusted scoring
        threads=1,
        timeout_s=40,
        smoke_timeout_s=30,
        memory_mb=3072,
        max_pids=32,
        max_file_mb=16,
    )
    with Archive(tmp_path / "a.db") as archive:
        started = time.monotonic()
        result = Evaluator(archive, settings).evaluate(code, "hostile")
        seconds = time.monotonic() - started
        rows = {"candidate": archive.candidate(result.id), "evaluations": archive.evaluations(result.id)}
    return {"result": result, "rows": rows, "seconds": seconds, "scratch": scratch}


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("case", E2E, ids=[c.name for c in E2E])
def test_hostile_output_is_a_failed_result(case, isolation, tmp_path, cache_dir, digits, monkeypatch):
    run = evaluate_hostile(candidate_code(case, {}), tmp_path, cache_dir, isolation, monkeypatch)
    result, rows = run["result"], run["rows"]
    reason = result.reason or ""
    assert result.status in case.status, reason
    assert re.search(case.reason, reason, re.S), reason
    assert len(reason.encode()) <= MAX_REASON_BYTES + 100
    recorded = json.dumps(rows, default=str)
    assert len(recorded.encode()) - len(rows["candidate"]["code"].encode()) < 40_000, "the archive row is not bounded"
    assert run["seconds"] < 45, "the job outlasted its time bound"
    assert run["scratch"] and not any(path.exists() for path in run["scratch"]), "scratch left behind"
    assert job_processes([path.name for path in run["scratch"]]) == [], "a process of the job outlived it"
