"""Unverified scores are marked everywhere a score is shown, and never mixed silently with verified ones (issue 25).

One real archive file holds graph-scored rows (verified), trusted rows (scored in the candidate's own process: one
recorded as `--scoring trusted` records it, one from before graph scoring, with no `scoring` key at all), a table's
answer, a failed row, and a run of each kind. The trusted row scores best, as a forged score would, and carries a
hostile name. The CLI (Typer's runner), the web pages (the app through the tests' browser), the static report and
the run's last line are read as a person reads them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.cli.run import run_summary_line
from agentarch.loop.summary import mark_scoring, summarize
from agentarch.store import browse, bundle, run_progress
from agentarch.store.archive import Archive
from agentarch.store.scoring import GRAPH, TABLE, TRUSTED, UNVERIFIED_WHY, ScoringMix, scoring_kind
from agentarch.web import create_app
from agentarch.web.report import write_report
from tests.conftest import REPO
from tests.web_client import Browser

EVIL = "<script>alert('x')</script>"
GRAPH_TIMINGS = {"scoring": "graph", "graph": {"latency_ms": 0.05}}
TITLE = "unverified: scored in the candidate&#39;s own process (--scoring trusted)"
"""The badge's title as the page holds it: escaped like all data."""


def candidate(name: str, tag: str, **extra) -> dict:
    return {
        "task": "digits",
        "name": name,
        "proposer": "user",
        "code": f"# {tag}\nx = 1\n",
        "status": "trained",
        "text_hash": tag,
        "ast_hash": tag,
        "parents": [],
        **extra,
    }


def evaluation(val: float, timings: dict | None = None, **extra) -> dict:
    return {
        "status": "trained",
        "fidelity": 3,
        "seed": 0,
        "val_accuracy": val,
        "test_accuracy": val - 0.01,
        "train_seconds": 1.5,
        "isolation": "bubblewrap",
        "curve": [{"step": 1, "epoch": 1.0, "loss": 1.0}],
        **({"timings": timings} if timings is not None else {}),
        **extra,
    }


@dataclass
class Mixed:
    path: Path
    run: str  # graph-scored candidates and one trusted
    verified_run: str  # graph-scored only
    graph_low: int
    graph_best: int
    forged: int  # trusted, the best score, a hostile name
    old: int  # trusted, recorded before graph scoring: no `scoring` key
    failed: int
    table: int  # nb201-cifar10: a table's answer
    pure: int  # graph-scored, in verified_run


@pytest.fixture
def mixed(tmp_path) -> Mixed:
    path = tmp_path / "archive.db"
    with Archive(path) as db:
        run = db.start_run("run", "digits", "llm", {"scoring": "graph"})
        verified_run = db.start_run("eval", "digits", "user", {"scoring": "graph"})
        graph_low = db.record(candidate("mlp.py", "g1", run_id=run), evaluation(0.93, GRAPH_TIMINGS))
        graph_best = db.record(
            candidate("cnn.py", "g2", run_id=run, parents=[graph_low]), evaluation(0.95, GRAPH_TIMINGS)
        )
        forged = db.record(
            candidate(f"{EVIL}.py", "t1", run_id=run, parents=[graph_best]),
            evaluation(0.99, {"scoring": "trusted", "steps": 10}),
        )
        old = db.record(candidate("old.py", "t2"), evaluation(0.90, {"steps": 10}))
        failed = db.record(
            candidate("broken.py", "f", status="failed"), {"status": "failed", "fidelity": 3, "error": "x"}
        )
        table = db.record(
            candidate("cell", "c", task="nb201-cifar10"),
            evaluation(0.91, isolation="table", device="nas-bench-201", fidelity=200),
        )
        pure = db.record(candidate("pure.py", "p", run_id=verified_run), evaluation(0.94, GRAPH_TIMINGS))
        db.finish_run(verified_run, "finished", {"proposed": 1, "trained": 1})
    return Mixed(path, run, verified_run, graph_low, graph_best, forged, old, failed, table, pure)


def cli(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def line_of(text: str, marker: str) -> str:
    return next(line for line in text.splitlines() if marker in line)


# -- the rule ---------------------------------------------------------------------------------------------------------


def test_the_rule_in_python_and_in_sql_agree_on_every_kind(mixed):
    expected = {
        mixed.graph_low: GRAPH,
        mixed.graph_best: GRAPH,
        mixed.pure: GRAPH,
        mixed.forged: TRUSTED,
        mixed.old: TRUSTED,  # no `scoring` key: from before graph scoring, unverified
        mixed.table: TABLE,
        mixed.failed: None,
    }
    with Archive(mixed.path) as db:
        for cid, kind in expected.items():
            assert scoring_kind(bundle.scoring_evaluation(db, cid)) == kind, cid
            row = db.scored(cid)
            assert (row["scoring"], row["unverified"]) == (kind, kind == TRUSTED), cid
        assert db.scoring_kinds(list(expected)) == expected
    assert scoring_kind(None) is None and scoring_kind({"timings": "not a dict"}) == TRUSTED


def test_the_verified_filter_leaves_out_only_unverified_rows_and_the_mix_counts_the_whole_listing(mixed):
    with Archive(mixed.path) as db:
        every = browse.Filters()
        kept = {row["id"] for row in browse.leaderboard(db, browse.Filters(verified=True), None)}
        assert kept == {mixed.graph_low, mixed.graph_best, mixed.pure, mixed.table, mixed.failed}
        assert browse.count_candidates(db, browse.Filters(verified=True)) == 5
        assert browse.scoring_mix(db, every) == ScoringMix(unverified=2, scored=6)
        assert browse.scoring_mix(db, browse.Filters(verified=True)) == ScoringMix(0, 4)
        assert browse.scoring_mix(db, browse.Filters(run=mixed.verified_run)) == ScoringMix(0, 1)
        one_page = browse.leaderboard(db, every, limit=2)  # the best two: the forged one and a graph one
        assert browse.rows_mix(one_page) == ScoringMix(1, 2) and browse.rows_mix(one_page).mixed
    assert (
        ScoringMix(2, 2).note() == f"⚠ all 2 scored rows are unverified, {UNVERIFIED_WHY}; --verified leaves them out"
    )
    assert ScoringMix(0, 3).note() is None and not ScoringMix(2, 2).mixed


# -- the CLI ----------------------------------------------------------------------------------------------------------


def test_archive_ls_marks_each_row_and_says_the_mix_and_verified_leaves_the_unverified_out(mixed):
    listed = cli("archive", "ls", "--archive", str(mixed.path)).stdout
    assert "⚠ trusted" in line_of(listed, "script") and "0.9900" in line_of(listed, "script")
    assert "⚠ trusted" in line_of(listed, "old.py")
    assert "graph" in line_of(listed, "cnn.py") and "⚠" not in line_of(listed, "cnn.py")
    assert "table" in line_of(listed, "cell") and "⚠" not in line_of(listed, "cell")
    assert "⚠" not in line_of(listed, "broken.py")
    assert f"⚠ 2 of 6 scored rows are unverified, {UNVERIFIED_WHY}; --verified leaves them out" in listed.replace(
        "\n", " "
    )

    only = cli("archive", "ls", "--archive", str(mixed.path), "--verified").stdout
    assert "script" not in only and "old.py" not in only and "unverified" not in only
    assert all(name in only for name in ("cnn.py", "mlp.py", "pure.py", "cell", "broken.py"))

    as_json = cli("archive", "ls", "--archive", str(mixed.path), "--json")
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]  # only rows on stdout
    by_id = {row["id"]: row for row in rows}
    assert by_id[mixed.forged]["scoring"] == "trusted" and by_id[mixed.forged]["unverified"] is True
    assert by_id[mixed.table]["scoring"] == "table" and by_id[mixed.failed]["scoring"] is None
    assert "2 of 6 scored rows are unverified" in as_json.stderr


def test_archive_top_says_when_its_best_is_unverified_and_which_verified_one_is_best(mixed):
    top = cli("archive", "top", "--task", "digits", "--archive", str(mixed.path)).stdout.replace("\n", " ")
    assert f"⚠ the best, #{mixed.forged} (val 0.9900), is unverified; the best verified is #{mixed.graph_best}" in top
    assert "3 of 5 scored rows" not in top and "2 of 5 scored rows are unverified" in top

    verified = cli("archive", "top", "--task", "digits", "--archive", str(mixed.path), "--verified", "--json").stdout
    ids = [json.loads(line)["id"] for line in verified.splitlines()]
    assert ids == [mixed.graph_best, mixed.pure, mixed.graph_low]

    alone = cli("archive", "top", "--task", "nb201-cifar10", "--archive", str(mixed.path)).stdout
    assert "unverified" not in alone and "table" in line_of(alone, "cell")


def test_archive_show_export_and_runs_say_how_each_score_was_computed(mixed):
    shown = cli("archive", "show", str(mixed.forged), "--archive", str(mixed.path)).stdout.replace("\n", " ")
    assert f"scoring=⚠ trusted (unverified: {UNVERIFIED_WHY})" in re.sub(r"\s+", " ", shown)
    graph = cli("archive", "show", str(mixed.graph_best), "--archive", str(mixed.path)).stdout
    assert "scoring=graph (verified)" in graph and "unverified" not in graph
    assert "scoring=table" in cli("archive", "show", str(mixed.table), "--archive", str(mixed.path)).stdout

    exported = cli("archive", "export", "--archive", str(mixed.path)).stdout
    rows = {int(row["id"]): row for row in csv.DictReader(io.StringIO(exported))}
    assert rows[mixed.forged]["scoring"] == "trusted" and rows[mixed.forged]["unverified"] == "True"
    assert rows[mixed.graph_best]["scoring"] == "graph" and rows[mixed.graph_best]["unverified"] == "False"


def test_the_runs_last_line_marks_an_unverified_best_and_names_the_best_verified(mixed):
    outcomes = [
        {"id": cid, "status": "trained", "val_accuracy": val, "test_accuracy": val - 0.01}
        for cid, val in ((mixed.graph_low, 0.93), (mixed.graph_best, 0.95), (mixed.forged, 0.99))
    ]
    with Archive(mixed.path) as db:
        kinds = db.scoring_kinds([o["id"] for o in outcomes])
    summary = mark_scoring(summarize(mixed.run, "finished", outcomes, "max-candidates"), outcomes, kinds)
    assert summary["best"] == {"id": mixed.forged, "test_accuracy": 0.98, "scoring": TRUSTED}
    assert summary["unverified"] == 1 and summary["best_verified"]["id"] == mixed.graph_best
    said = run_summary_line(summary).plain
    assert (
        f"best #{mixed.forged} test 0.9800 [⚠ unverified: {UNVERIFIED_WHY}; 1 of 3 trained unverified; "
        f"best verified #{mixed.graph_best} test 0.9400]" in said
    )

    honest = outcomes[:2]
    clean = mark_scoring(summarize(mixed.run, "finished", honest, None), honest, kinds)
    assert "unverified" not in clean and "best_verified" not in clean
    assert "unverified" not in run_summary_line(clean).plain


# -- the web and the report -------------------------------------------------------------------------------------------


def badge_of(html: str, cid: int) -> str:
    """The listing row of candidate `cid`."""
    found = re.search(rf'<tr>\s*(?:<td><input[^>]*></td>\s*)?<td><a href="/candidate/{cid}">.*?</tr>', html, re.S)
    assert found, cid
    return found[0]


def test_the_leaderboard_marks_unverified_rows_says_the_mix_and_filters_them_out(mixed):
    with Browser(create_app(mixed.path)) as client:
        page = client.get("/?task=digits").text
        assert f'title="{TITLE}">⚠ unverified</span>' in badge_of(page, mixed.forged)
        assert "⚠ unverified" in badge_of(page, mixed.old)
        assert "unverified" not in badge_of(page, mixed.graph_best)
        assert "&lt;script&gt;" in page and EVIL not in page  # the row's name escaped beside its mark
        notice = re.search(r'<p class="notice warn" id="unverified-rows">.*?</p>', page, re.S)[0]
        assert "2 of 5 scored candidates here are unverified" in notice and "own process" in notice
        assert 'href="/?task=digits&amp;verified=1"' in notice

        only = client.get("/?task=digits&verified=1").text
        assert f'href="/candidate/{mixed.forged}"' not in only and f'href="/candidate/{mixed.old}"' not in only
        assert f'href="/candidate/{mixed.graph_best}"' in only and f'href="/candidate/{mixed.failed}"' in only
        assert 'id="unverified-rows"' not in only and 'id="verified-only"' in only
        assert 'name="verified" value="1" checked' in only

        table = client.get("/?task=nb201-cifar10").text
        assert 'class="badge table"' in badge_of(table, mixed.table) and 'id="unverified-rows"' not in table
        assert 'id="unverified-rows"' not in client.get(f"/?task=digits&run={mixed.verified_run}").text

        download = client.get("/?task=digits&format=csv&all=1").text
        rows = {int(row["id"]): row for row in csv.DictReader(io.StringIO(download))}
        assert rows[mixed.forged]["scoring"] == "trusted" and rows[mixed.graph_best]["scoring"] == "graph"

        searched = client.get("/search?q=x").text  # every code holds "x = 1"
        assert "⚠ unverified" in badge_of(searched, mixed.forged) and 'id="unverified-rows"' in searched


def test_run_runs_compare_lineage_pareto_and_candidate_pages_mark_unverified_scores(mixed):
    with Browser(create_app(mixed.path)) as client:
        run = client.get(f"/run/{mixed.run}").text
        assert run.count('id="best"') == 1  # the chart's id stays the page's only "best"
        best = re.search(r'<dd id="best-score">.*?</dd>', run, re.S)[0]
        assert "0.9900" in best and TITLE in best
        assert f'the best verified: <a href="/candidate/{mixed.graph_best}">#{mixed.graph_best}</a> 0.9500' in best
        assert "1 of 3 scored candidates in this run are unverified" in run
        pure = client.get(f"/run/{mixed.verified_run}").text
        assert "unverified" not in re.search(r'<dd id="best-score">.*?</dd>', pure, re.S)[0]
        assert 'id="unverified-rows"' not in pure

        runs = client.get("/runs").text
        assert "(1 of 3 unverified)" in runs and TITLE in runs

        compare = client.get(f"/compare?ids={mixed.graph_best},{mixed.forged}").text
        assert "graph (verified)" in compare and TITLE in compare and 'id="unverified-rows"' in compare

        lineage = client.get(f"/candidate/{mixed.graph_best}/lineage").text
        descent = re.search(r'<ul class="tree" id="descent">.*?</ul>', lineage, re.S)[0]
        assert TITLE in descent and "&lt;script&gt;" in descent

        pareto = client.get("/pareto?task=digits").text  # its points carry no mark: the page says the mix
        assert "2 of 5 scored candidates on this chart are unverified" in pareto
        assert 'id="unverified-rows"' not in client.get(f"/pareto?task=digits&run={mixed.verified_run}").text

        page = client.get(f"/candidate/{mixed.forged}").text
        assert 'id="unverified"' in page and TITLE in page and EVIL not in page
        assert TITLE not in client.get(f"/candidate/{mixed.graph_best}").text


def test_the_report_marks_an_unverified_best_and_its_rows(mixed, tmp_path):
    html = write_report(mixed.path, mixed.run, tmp_path / "report").read_text()
    best = re.search(r'<dd id="best-score">.*?</dd>', html, re.S)[0]
    assert "⚠ unverified" in best and f"the best verified: #{mixed.graph_best} 0.9500" in best
    assert "1 of 3 scored candidates in this run are unverified" in html
    assert "⚠ trusted</strong>" in html and EVIL not in html
    with Archive(mixed.path) as db:
        overview = run_progress.run_overview(db, mixed.verified_run)
    assert overview["best_scoring"] == GRAPH and overview["best_verified"] is None


def test_the_datasette_leaderboard_says_how_each_row_was_scored(mixed):
    query = json.loads((REPO / "docs" / "datasette.json").read_text())["databases"]["archive"]["queries"]
    conn = sqlite3.connect(mixed.path)
    conn.row_factory = sqlite3.Row
    rows = {row["id"]: row["scoring"] for row in conn.execute(query["leaderboard"]["sql"], {"task": "digits"})}
    conn.close()
    assert rows[mixed.forged] == rows[mixed.old] == "⚠ trusted (unverified)"
    assert rows[mixed.graph_best] == rows[mixed.pure] == "graph"
