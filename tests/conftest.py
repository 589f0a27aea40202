"""Shared fixtures: prepared task data (cached per session) and sandbox helpers."""

from pathlib import Path

import pytest

from agentarch.sandbox import bubblewrap_problem
from agentarch.tasks import get_task, prepare

REPO = Path(__file__).resolve().parent.parent

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


def sandbox_processes() -> list[int]:
    """Pids of any sandbox runner still alive on this machine (there should be none after a job)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"from sandbox.runner import main" in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found
