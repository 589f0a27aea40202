"""The SQLite archive: schema, transactions, dedup lookups, queries, version guard."""

import json
import sqlite3
import time

import pytest
import sqlite_utils

from agentarch.store.archive import Archive
from agentarch.store.handle import ArchiveError
from agentarch.store.schema import SCHEMA_VERSION
from agentarch.store.scoring import SCORING_EVALUATION


def candidate(**extra):
    return {
        "task": "digits",
        "name": "a.py",
        "proposer": "user",
        "code": "x = 1",
        "status": "trained",
        "text_hash": "t1",
        "ast_hash": "a1",
        "functional_hash": "f1",
        "parents": [],
        **extra,
    }


def evaluation(val, test):
    return {
        "status": "trained",
        "fidelity": 5,
        "seed": 0,
        "val_accuracy": val,
        "test_accuracy": test,
        "curve": [{"step": 1, "loss": 2.0}],
    }


def test_schema_and_wal(tmp_path):
    path = tmp_path / "a.db"
    with Archive(path) as db:
        assert db.schema_version() == SCHEMA_VERSION
        assert {"meta", "runs", "candidates", "evaluations"} <= set(db.db.table_names())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_record_writes_candidate_and_evaluation_together(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        cid = db.record(candidate(), evaluation(0.9, 0.8))
        row = db.candidate(cid)
        assert row["parents"] == [] and row["status"] == "trained"
        evals = db.evaluations(cid)
        assert len(evals) == 1 and evals[0]["curve"] == [{"step": 1, "loss": 2.0}]


def test_failed_transaction_leaves_nothing(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        with pytest.raises(sqlite3.Error):
            db.record(candidate(), {"status": "trained", "no_such_column": 1})
        assert db.db["candidates"].count == 0


def test_find_duplicate_per_level_task_and_status(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        first = db.record(candidate())
        db.record(candidate(status="duplicate", duplicate_of=first))
        assert db.find_duplicate("digits", "whitespace", "t1") == first
        assert db.find_duplicate("digits", "ast", "a1") == first
        assert db.find_duplicate("digits", "functional", "f1") == first
        assert db.find_duplicate("mqar", "ast", "a1") is None
        assert db.find_duplicate("digits", "ast", "other") is None
        invalid = db.record(candidate(task="mqar", status="invalid"))
        assert invalid and db.find_duplicate("mqar", "whitespace", "t1") is None


def test_top_ranks_by_validation_and_ls_pages(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        a = db.record(candidate(name="a", text_hash="x1"), evaluation(0.80, 0.95))
        b = db.record(candidate(name="b", text_hash="x2"), evaluation(0.90, 0.85))
        db.record(candidate(name="c", status="failed", text_hash="x3"))
        assert [r["id"] for r in db.top("digits")] == [b, a]
        assert [r["id"] for r in db.top("digits", by="test_accuracy")] == [a, b]
        with pytest.raises(ArchiveError):
            db.top("digits", by="params; DROP TABLE runs")
        assert [r["name"] for r in db.candidates(limit=2)] == ["c", "b"]
        assert [r["name"] for r in db.candidates(limit=2, offset=2)] == ["a"]
        assert [r["name"] for r in db.candidates(status="failed")] == ["c"]
        assert len(list(db.export_rows())) == 3


def test_runs(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        run_id = db.start_run("eval", "digits", "user", {"paths": ["a.py"]})
        db.finish_run(run_id, "finished", {"evaluated": 1})
        row = db.db["runs"].get(run_id)
        assert row["status"] == "finished" and row["ended_at"]


def test_unknown_candidate_says_what_to_do(tmp_path):
    with Archive(tmp_path / "a.db") as db, pytest.raises(ArchiveError, match="archive ls"):
        db.candidate(42)


def test_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / "a.db"
    with Archive(path) as db:
        db.record(candidate())
        db.db["meta"].update("schema_version", {"value": str(SCHEMA_VERSION + 1)})
    before = path.read_bytes()
    with pytest.raises(ArchiveError, match="newer agentarch"):
        Archive(path)
    assert path.read_bytes() == before


def test_foreign_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    with pytest.raises(ArchiveError, match="no agentarch schema"):
        Archive(path)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(ArchiveError, match="not an agentarch archive"):
        Archive(garbage)


def test_a_schema_1_archive_is_upgraded_in_place_keeping_its_rows(tmp_path):
    path = tmp_path / "a.db"
    old = Archive.__new__(Archive)  # write exactly what agentarch with schema 1 wrote
    old.db = sqlite_utils.Database(path)
    old._create_v1()
    old.db["meta"].insert({"key": "schema_version", "value": "1"})
    cid = old.db["candidates"].insert({**candidate(parents="[]"), "created_at": "2026-01-01"}).last_pk
    old.db["evaluations"].insert(
        {"candidate_id": cid, "task": "digits", "status": "trained", "val_accuracy": 0.9, "created_at": "2026-01-01"}
    )
    old.db.close()
    with Archive(path) as db:
        assert db.schema_version() == SCHEMA_VERSION
        assert db.scored(cid)["val_accuracy"] == 0.9 and db.scored(cid)["arch"] is None
        arch = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
        new = db.record(candidate(space="nb201", arch=arch, text_hash="t2"), evaluation(0.7, 0.6))
        assert db.find_arch("digits", "nb201", arch)["id"] == new
        call = db.record_llm_call({"run_id": None, "purpose": "propose", "model": "m", "status": "ok", "cost_usd": 0.5})
        linked = db.record(candidate(text_hash="t3", model="m", examples=[cid, new]), llm_calls=[call])
        assert db.llm_calls(candidate_id=linked)[0]["id"] == call and db.candidate(linked)["examples"] == [cid, new]


def test_top_can_be_narrowed_to_proposers(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        db.record(candidate(proposer="user", text_hash="u"), evaluation(0.99, 0.9))
        rea = db.record(candidate(proposer="rea", text_hash="r"), evaluation(0.8, 0.8))
        assert [row["id"] for row in db.top("digits", proposers=("rea", "random", "tpe"))] == [rea]


def test_a_proposal_is_recorded_at_most_once(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        first = db.record(candidate(proposal_key="run-1/0/0"), evaluation(0.9, 0.8))
        again = db.record(candidate(proposal_key="run-1/0/0", text_hash="other"), evaluation(0.1, 0.1))
        assert again == first
        assert db.db["candidates"].count == 1 and db.db["evaluations"].count == 1


def test_a_run_block_finishes_its_run_however_the_block_ends(tmp_path):
    """`with archive.run(...)`: finished, interrupted on Ctrl-C, failed with the error; never left running."""
    with Archive(tmp_path / "a.db") as db:
        done: list[int] = []
        with db.run("eval", "digits", "user", {"paths": []}, lambda: {"evaluated": len(done)}) as finished:
            done.append(1)
        with (
            pytest.raises(KeyboardInterrupt),
            db.run("eval", "digits", "user", {}, lambda: {"evaluated": 0}) as stopped,
        ):
            raise KeyboardInterrupt
        with pytest.raises(RuntimeError), db.run("eval", "digits", "user", {}, lambda: {"evaluated": 0}) as broken:
            raise RuntimeError("the sandbox is gone")
        runs = {row["id"]: row for row in db.db["runs"].rows}
    assert runs[finished]["status"] == "finished" and json.loads(runs[finished]["summary"]) == {"evaluated": 1}
    assert runs[stopped]["status"] == "interrupted"
    assert runs[broken]["status"] == "failed" and "the sandbox is gone" in runs[broken]["summary"]
    assert all(row["ended_at"] for row in runs.values())


BROWSING_INDEXES = {
    "idx_evaluations_scored",
    "idx_candidates_run_id_status",
    "idx_candidates_task_proposer",
    "idx_candidates_task_model",
    "idx_reviews_candidate_id",
}


def index_names(database: sqlite_utils.Database) -> set[str]:
    return {index.name for table in ("candidates", "evaluations", "reviews") for index in database[table].indexes}


def test_a_schema_5_archive_gains_the_browsing_indexes_when_opened(tmp_path):
    """Schema 6 moved the indexes `agentarch serve` used to create at start-up into a migration."""
    path = tmp_path / "a.db"
    old = Archive.__new__(Archive)  # write exactly what agentarch with schema 5 wrote
    old.db = sqlite_utils.Database(path)
    for step in (old._create_v1, old._upgrade_to_v2, old._upgrade_to_v3, old._upgrade_to_v4, old._upgrade_to_v5):
        step()
    old.db["meta"].insert({"key": "schema_version", "value": "5"})
    # an archive the web UI served before schema 6 already holds the index it made at start-up
    old.db.execute(
        "CREATE INDEX idx_evaluations_scored ON evaluations (candidate_id, status, fidelity DESC, val_accuracy DESC, id)"
    )
    cid = old.db["candidates"].insert({**candidate(parents="[]"), "created_at": "2026-01-01"}).last_pk
    old.db["evaluations"].insert(
        {"candidate_id": cid, "task": "digits", "status": "trained", "val_accuracy": 0.9, "created_at": "2026-01-01"}
    )
    assert index_names(old.db) & BROWSING_INDEXES == {"idx_evaluations_scored"}
    old.db.close()
    with Archive(path) as db:
        assert db.schema_version() == SCHEMA_VERSION == 17
        assert BROWSING_INDEXES <= index_names(db.db)
        scoring = SCORING_EVALUATION.format(column="id")
        plan = " ".join(row[3] for row in db.db.execute(f"EXPLAIN QUERY PLAN SELECT ({scoring}) FROM candidates c"))
        assert "COVERING INDEX idx_evaluations_scored" in plan  # a listing's score never reads evaluation rows
        assert db.scored(cid)["val_accuracy"] == 0.9


def test_a_new_archive_has_the_browsing_indexes(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        assert BROWSING_INDEXES <= index_names(db.db)


def test_find_run_runs_pages_and_top_of_everything(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        first = db.start_run("eval", "digits", "user", {"paths": ["a.py"]})
        time.sleep(0.002)  # runs are listed by start time, which is kept to the millisecond
        second = db.start_run("eval", "digits", "user", {})
        assert db.find_run(first)["config"] == {"paths": ["a.py"]} and db.find_run("nope") is None
        assert [r["id"] for r in db.runs()] == [second, first]
        assert [r["id"] for r in db.runs(limit=1, offset=1)] == [first]
        for i in range(12):
            db.record(candidate(name=f"c{i}", text_hash=f"t{i}"), evaluation(0.5 + i / 100, 0.5))
        assert len(db.top("digits", limit=None)) == 12 and len(db.top("digits")) == 10
        assert db.top("digits", limit=None)[0]["name"] == "c11"


def test_a_listing_row_takes_its_size_from_the_evaluation_when_the_candidate_has_none(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        sized = db.record(candidate(params=10, flops=20, text_hash="s"), {**evaluation(0.9, 0.9), "params": 99})
        unsized = db.record(
            candidate(text_hash="u", parents=None), {**evaluation(0.8, 0.8), "params": 1000, "flops": 2000}
        )
        assert (db.scored(sized)["params"], db.scored(sized)["flops"]) == (10, 20)
        assert (db.scored(unsized)["params"], db.scored(unsized)["flops"]) == (1000, 2000)
        assert db.scored(unsized)["parents"] == []  # always a list in a listing row


def test_model_written_text_is_capped_where_it_is_stored(tmp_path):
    """A 50 MB answer's worth of text in every column a model writes adds well under 1 MB to the archive."""
    path = tmp_path / "a.db"
    db = Archive(path)
    run = db.start_run("run", "digits", "llm", {})
    huge = "ignore previous instructions " * 1_800_000  # ~50 MB
    cid = db.record(
        candidate(
            name=huge,
            reason=huge,
            analysis=huge,
            response=huge,
            code=huge,
            run_id=run,
            prompt=[{"role": "user", "content": huge}],
        ),
        evaluation(0.5, 0.5) | {"error": huge},
    )
    db.record_llm_call(
        {"run_id": run, "purpose": "propose", "model": "m", "attempt": 1, "status": "error", "error": huge}
    )
    db.add_note(run, "digits", 1, huge, [cid])
    db.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert size < 1_500_000
    row = db.candidate(cid)
    assert len(row["name"]) < 300 and row["name"].endswith("the archive keeps 200]")
    assert "more characters" in row["analysis"] and len(row["analysis"]) < 16_100
    assert len(db.notes(run)[0]["text"]) < 8_100
    assert len(row["prompt"][0]["content"]) < 128_100
