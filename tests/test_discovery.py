"""benchmarks/discovery.py runs end to end against the scripted test server: every method, its table and its plot."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import REPO, requires_bubblewrap


def load_benchmark():
    spec = importlib.util.spec_from_file_location("discovery", REPO / "benchmarks" / "discovery.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["discovery"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@requires_bubblewrap
def test_the_discovery_benchmark_prints_its_table_from_the_scripted_server(tmp_path, cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    discovery = load_benchmark()
    out = tmp_path / "discovery"
    discovery.main(["--scripted", "--budget", "2", "--seeds", "1", "--epochs", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split("|")[1].strip() for row in rows[1:]] == ["llm", "best-of-n", "rea", "random"]
    assert all(row.split("|")[5].strip() == "2" for row in rows[1:])  # every evaluation trained
    assert "scripted test server" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 5_000


def test_an_unknown_method_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        load_benchmark().main(["--methods", "llm,magic"])
    assert "unknown methods ['magic']; choose from llm, best-of-n, rea, random" in capsys.readouterr().err
