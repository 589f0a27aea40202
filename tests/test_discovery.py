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


def test_the_in_space_mode_compares_the_loop_with_random_search_and_rea_at_equal_table_queries(tmp_path, capsys):
    """`--propose-in nb201` on nb201-cifar10: the loop (`agentarch run --propose-in nb201`, its proposals looked up in
    the table) against random search and REA, each 5 queries a seed, with the model's valid answers counted; the
    scripted server answers every fifth call with prose, which falls back to a uniform sample."""
    out = tmp_path / "in_space"
    args = ["--task", "nb201-cifar10", "--propose-in", "nb201", "--scripted", "--budget", "5", "--seeds", "2"]
    load_benchmark().main([*args, "--out", str(out)])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    summary = [row for row in rows if len(row) == 10][2:]  # the first table, under its header and its rule
    assert [row[1].strip() for row in summary] == ["llm-space", "rea", "random"]
    assert all(row[2].strip() == "2" and row[5].strip() == "10" for row in summary)  # every query answered
    assert [row[6].strip() for row in summary] == ["8/10 (80%)", "-", "-"]
    assert [row[7].strip() for row in summary] == ["2 of 10", "-", "-"]
    assert all(90 < float(row[4].split("±")[0]) < 95 for row in summary)  # test accuracy in the table's percent
    origins = {row[2].strip(): int(row[3]) for row in rows if len(row) == 7 and row[1].strip() == "llm-space"}
    assert origins == {"answer": 8, "invalid": 2}  # the loop's evaluations by where their cell came from
    text = out.with_suffix(".md").read_text()
    assert "--propose-in nb201 --scripted" in text and "scripted test server" in text and "seed 1" in text


def test_the_in_space_mode_has_its_own_methods(capsys):
    with pytest.raises(SystemExit):
        load_benchmark().main(["--propose-in", "nb201", "--methods", "llm"])
    assert "unknown methods ['llm']; choose from llm-space, rea, random" in capsys.readouterr().err
