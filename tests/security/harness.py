"""Helpers of the escape corpus: build a hostile candidate, run it end to end, check the host.

A hostile candidate is a valid candidate (it passes the static check and defines a `Net`) whose
`attack()` runs in module scope, in `Net.__init__` or in the first `forward`. The static check is a
courtesy, not a wall, so every candidate starts by stepping around it (`__builtins__["__import__"]`);
what is tested is the sandbox and the host-side scoring behind it.

The Net ignores its input (`x * 0`), so its honest accuracy is the majority-class rate, about 0.1:
any recorded accuracy near 1 could only come from a forged score.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentarch.config import load_settings
from agentarch.evaluation.evaluator import EvalResult, Evaluator
from agentarch.isolation.job import SandboxJob
from agentarch.store.archive import Archive
from tests.conftest import cgroups_work, job_processes

REPO = Path(__file__).resolve().parents[2]

SECRET_ENV = "sk-agentarch-env-5f1c2a"
SECRET_KEY = "sk-openai-9d8e7f6a5b4c"
SECRET_FILE = "agentarch-home-secret-7c3b"

HEADER = '''\
HOST = {host!r}
import torch
from torch import nn
# The static check forbids imports of os, socket, ...; the sandbox must hold without it.
_B = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
_imp, _open = _B["__import__"], _B["open"]
os = _imp("os")
_done = []

def attempt(fn):
    """What one try gave: ESCAPED (it worked) or the error that stopped it."""
    try:
        return f"ESCAPED {fn()!r}"[:300]
    except BaseException as err:
        return f"{type(err).__name__}: {err}"

def event_pipes():
    """Pipes this process holds besides stdin: the runner's event channel (its dup of the original stdout)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if int(fd) > 2 and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                found.append(int(fd))
        except OSError:
            pass
    return found

def report(*parts):
    raise RuntimeError("REPORT " + " | ".join(str(p) for p in parts))

def attack():
{attack}

'''

NET = """
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)
        {init_call}

    def forward(self, x):
        {forward_call}
        return self.fc(x.flatten(1) * 0.0)
"""


@dataclass(frozen=True)
class Case:
    """One escape attempt: `attack` is the body of `attack()`, run `where` (module, init, forward).

    `status` lists the acceptable outcomes; `reason` is a regex the recorded reason must match (it
    names what happened); `layer` is what contains it (for docs/reliability.md).
    """

    name: str
    attack: str
    where: str
    status: tuple[str, ...]
    reason: str | None
    layer: str
    limits: dict[str, Any] = field(default_factory=dict)
    isolation: str = "bubblewrap"


def candidate_code(case: Case, host: dict[str, Any]) -> str:
    calls = {"module": "", "init": "", "forward": ""}
    calls[case.where] = (
        "if not _done:\n            _done.append(1)\n            attack()" if case.where == "forward" else "attack()"
    )
    body = textwrap.indent(textwrap.dedent(case.attack).strip("\n"), "    ")
    code = HEADER.replace("{host!r}", repr(host)).replace("{attack}", body)
    if case.where == "module":
        code += "attack()\n"
    return code + NET.replace("{init_call}", calls["init"] or "pass").replace(
        "{forward_call}", calls["forward"] or "pass"
    )


# -- the host's side: listeners that must never hear from the sandbox ---------------------------


class Listeners:
    """TCP (v4, v6), UDP and Unix sockets on the host; every accepted connection or datagram is a hit."""

    def __init__(self, sock_dir: Path) -> None:
        self.hits: list[str] = []
        self.sockets: list[socket.socket] = []
        self.addresses: dict[str, Any] = {}
        self._stop = False
        self._listen("tcp4", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0))
        self._listen("tcp6", socket.AF_INET6, socket.SOCK_STREAM, ("::1", 0))
        self._listen("udp4", socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0))
        # A path the sandbox cannot see (the host's /tmp), and an abstract socket (per network namespace).
        self._listen("unix_hidden", socket.AF_UNIX, socket.SOCK_STREAM, str(sock_dir / "host.sock"))
        self._listen("unix_abstract", socket.AF_UNIX, socket.SOCK_STREAM, f"\0agentarch-escape-{id(self)}")
        self.threads = [
            threading.Thread(target=self._serve, args=(s, n), daemon=True) for n, s in zip(self.addresses, self.sockets)
        ]
        for thread in self.threads:
            thread.start()

    def add_unix(self, name: str, path: Path) -> None:
        """One more Unix listener, e.g. in a directory the sandbox *can* see."""
        self._listen(name, socket.AF_UNIX, socket.SOCK_STREAM, str(path))
        thread = threading.Thread(target=self._serve, args=(self.sockets[-1], name), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _listen(self, name: str, family: int, kind: int, address: Any) -> None:
        sock = socket.socket(family, kind)
        sock.bind(address)
        if kind == socket.SOCK_STREAM:
            sock.listen()
        sock.settimeout(0.1)
        self.sockets.append(sock)
        bound = sock.getsockname()
        self.addresses[name] = bound[1] if family in (socket.AF_INET, socket.AF_INET6) else address

    def _serve(self, sock: socket.socket, name: str) -> None:
        while not self._stop:
            try:
                if sock.type == socket.SOCK_STREAM:
                    conn, _ = sock.accept()
                    conn.close()
                else:
                    sock.recvfrom(65536)
                self.hits.append(name)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        for thread in self.threads:
            thread.join(2)
        for sock in self.sockets:
            sock.close()


# -- running a case ------------------------------------------------------------------------------


@dataclass
class Run:
    result: EvalResult
    row: dict[str, Any]
    evaluations: list[dict[str, Any]]
    archive_text: str  # the whole archive database, dumped as SQL text
    outputs: dict[str, np.ndarray]  # the arrays the host loaded and scored
    scratch: list[Path]
    seconds: float
    seed_before: Any
    seed_after: Any

    @property
    def text(self) -> str:
        """Everything recorded about the candidate: reason and error (traceback, log tail)."""
        return " ".join(filter(None, [self.result.reason, *(str(e.get("error") or "") for e in self.evaluations)]))


def dump(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def attack_settings(tmp_path: Path, cache_dir: Path, isolation: str, **overrides: Any) -> Any:
    """Settings for one attack evaluated through a real Evaluator: digits, one epoch, one thread, the tests' limits
    (90 s to run, 60 s to smoke, 4 GiB, 32 processes, 64 MiB files), a fresh archive; `overrides` on top."""
    return load_settings(
        **{
            "task": "digits",
            "epochs": 1,
            "archive": tmp_path / "a.db",
            "cache_dir": cache_dir,
            "isolation": isolation,
            "threads": 1,
            "timeout_s": 90,
            "smoke_timeout_s": 60,
            "memory_mb": 4096,
            "max_pids": 32,
            "max_file_mb": 64,
            **overrides,
        }
    )


def run_case(
    code: str,
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch,
    isolation: str = "bubblewrap",
    seed_row: bool = True,
    **limits: Any,
) -> Run:
    """Evaluate `code` through a real Evaluator into a fresh archive, spying on the sandbox job."""
    archive = Archive(tmp_path / "a.db")
    scratch: list[Path] = []
    outputs: dict[str, np.ndarray] = {}
    real_init, real_output = SandboxJob.__init__, SandboxJob.output

    def spy_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        scratch.append(self.scratch)

    def spy_output(self, name, *args):
        outputs[name] = array = real_output(self, name, *args)
        return array

    monkeypatch.setattr(SandboxJob, "__init__", spy_init)
    monkeypatch.setattr(SandboxJob, "output", spy_output)
    settings = load_settings(
        task="digits",
        epochs=1,
        archive=tmp_path / "a.db",
        cache_dir=cache_dir,
        isolation=isolation,
        # the corpus attacks the sandbox and the host's reading of what the candidate's process writes (its outputs
        # included), which only trusted scoring reads; graph scoring's own attacks are test_graph_forgery.py's
        scoring="trusted",
        threads=1,
        **{"timeout_s": 40, "smoke_timeout_s": 30, "memory_mb": 3072, "max_pids": 32, "max_file_mb": 16, **limits},
    )
    evaluator = Evaluator(archive, settings)
    seed_id = None
    if seed_row:  # another candidate's row, which no attack may change
        seed_id = evaluator.archive.record(
            {
                "run_id": None,
                "task": "digits",
                "name": "honest",
                "proposer": "user",
                "parents": [],
                "code": "pass",
                "text_hash": "h0",
                "ast_hash": "a0",
                "functional_hash": "f0",
                "status": "trained",
                "params": 650,
                "flops": 1280,
                "space": None,
                "arch": None,
            },
            {"status": "trained", "fidelity": 1, "seed": 0, "val_accuracy": 0.5, "test_accuracy": 0.5},
        )
    seed_before = (archive.candidate(seed_id), archive.evaluations(seed_id)) if seed_id else None
    started = time.monotonic()
    result = evaluator.evaluate(code, "hostile")
    seconds = time.monotonic() - started
    row = archive.candidate(result.id)
    evaluations = archive.evaluations(result.id)
    seed_after = (archive.candidate(seed_id), archive.evaluations(seed_id)) if seed_id else None
    archive.close()
    return Run(result, row, evaluations, dump(tmp_path / "a.db"), outputs, scratch, seconds, seed_before, seed_after)


def honest_accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy computed here, independently of agentarch.tasks.scoring.score."""
    return float(np.mean((np.argmax(outputs, axis=-1) == labels) & ~np.isnan(outputs).any(axis=-1)))


def matches(pattern: str | None, text: str) -> bool:
    return pattern is None or re.search(pattern, text or "", re.S) is not None


def check_contained(case: Case, run: Run, host: dict[str, Any], listeners: Listeners) -> None:
    """Assert that `case` was contained: expected outcome and reason, and the host unchanged."""
    text = run.text
    if os.environ.get("AGENTARCH_ESCAPE_REPORT"):  # figures for docs/reliability.md
        with open(os.environ["AGENTARCH_ESCAPE_REPORT"], "a") as fh:
            fh.write(
                json.dumps(
                    {
                        "case": case.name,
                        "isolation": case.isolation,
                        "status": run.result.status,
                        "reason": run.result.reason,
                        "test_accuracy": run.result.metrics.get("test_accuracy"),
                        "seconds": round(run.seconds, 2),
                    }
                )
                + "\n"
            )
    # The attack failed, in the way this case expects, and the record says so.
    assert run.result.status in case.status, f"{case.name}: {run.result.status}: {text[:1500]}"
    if run.result.status != "trained":
        assert matches(case.reason, text), f"{case.name}: reason does not name what happened: {text[:1500]}"
    assert "ESCAPED" not in text, f"{case.name}: an attempt worked: {text[:1500]}"

    # The host is unchanged.
    assert listeners.hits == [], f"{case.name}: a host listener was reached: {listeners.hits}"
    for secret in (SECRET_ENV, SECRET_KEY, SECRET_FILE):
        assert secret not in run.archive_text, f"{case.name}: a secret reached the archive"
    for target in host["targets"]:
        assert not Path(target).exists(), f"{case.name}: wrote {target} on the host"
    assert run.scratch and not any(s.exists() for s in run.scratch), "the scratch directory was left behind"
    assert job_processes([s.name for s in run.scratch]) == [], f"{case.name}: a process of the job outlived it"
    if cgroups_work():
        assert not [cg for s in run.scratch for cg in Path("/sys/fs/cgroup/pids/agentarch").glob(f"{s.name}.*")]
    assert run.seed_before == run.seed_after, "another candidate's row changed"

    # Any recorded score is the honest score of the outputs the host loaded, and no better than a guess.
    if run.result.status == "trained":
        metrics = run.result.metrics
        assert set(run.outputs) == {"val_outputs.npy", "test_outputs.npy"}
        assert metrics["test_accuracy"] == pytest.approx(
            honest_accuracy(run.outputs["test_outputs.npy"], host["labels"])
        )
        assert metrics["val_accuracy"] == pytest.approx(
            honest_accuracy(run.outputs["val_outputs.npy"], host["val_labels"])
        )
        assert metrics["test_accuracy"] < 0.5 and metrics["val_accuracy"] < 0.5, metrics
