"""Shared fixtures: prepared task data (cached per session) and sandbox helpers."""

import functools
import os
from pathlib import Path

import pytest

from agentarch.isolation.bubblewrap import bubblewrap_problem
from agentarch.isolation.cgroups import Cgroup
from agentarch.isolation.job import SandboxJob
from agentarch.tasks.preparation import prepare
from agentarch.tasks.registry import get_task

REPO = Path(__file__).resolve().parent.parent

NET = """
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)
    def forward(self, x):
        return self.fc(x.flatten(1))
"""
"""A tiny digits candidate that passes its smoke run; sandbox tests prepend their attack to it."""

SPEC = {
    "kind": "image",
    "in_shape": [1, 8, 8],
    "num_classes": 10,
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.003, "weight_decay": 0.0, "seed": 0},
}
"""The runner spec of the digits task for that candidate."""

requires_bubblewrap = pytest.mark.skipif(
    bubblewrap_problem() is not None, reason=f"needs bubblewrap: {bubblewrap_problem()}"
)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def digits(cache_dir):
    return prepare(get_task("digits"), cache_dir)


@pytest.fixture(scope="session")
def mqar(cache_dir):
    return prepare(get_task("mqar"), cache_dir)


@functools.cache
def cgroups_work() -> bool:
    """Whether this host lets the sandbox make its per-job cgroups (root with cgroup v1, or a delegated v2)."""
    probe = Cgroup(f"probe-tests-{os.getpid()}", 8, None)
    probe.remove()
    return probe.problem is None


def job_processes(scratch_names: list[str]) -> list[int]:
    """Pids of processes that belong to these jobs and no other: bwrap (named in its command line) and
    everything inside (the scratch directory is in its mount table, or, in the process mode, in its
    command line), however it detached. Counting only a test's own jobs keeps the suite hermetic
    while a real run is active on the same machine."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            seen = (proc / "cmdline").read_bytes() + (proc / "mountinfo").read_bytes()
        except OSError:
            continue
        if any(name.encode() in seen for name in scratch_names):
            found.append(int(proc.name))
    return found


@pytest.fixture
def own_jobs(monkeypatch) -> list[Path]:
    """The scratch folders of every sandbox this test starts, warm ones included (they go through __init__ too)."""
    scratch: list[Path] = []
    real_init = SandboxJob.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        scratch.append(self.scratch)

    monkeypatch.setattr(SandboxJob, "__init__", spy)
    return scratch


def assert_nothing_left(scratch: list[Path]) -> None:
    """No scratch folder, process or cgroup of these sandboxes (a test's `own_jobs`) is left."""
    assert scratch and not any(s.exists() for s in scratch), "a scratch folder was left behind"
    assert job_processes([s.name for s in scratch]) == [], "a process of a sandbox outlived the executor"
    if cgroups_work():
        assert not [cg for s in scratch for cg in Path("/sys/fs/cgroup/pids/agentarch").glob(f"{s.name}.*")]
