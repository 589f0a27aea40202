"""The store's query modules (browse, lineage, review_log, run_progress, measurements) on a real archive file:
ranking, search, lineage, reviews, runs' progress."""

import time
from dataclasses import dataclass

import pytest

from agentarch.search.proposers.baselines import ALGOS
from agentarch.store import browse, lineage, measurements, review_log, run_progress
from agentarch.store.archive import Archive
from agentarch.store.browse import Filters, Sort
from agentarch.store.handle import ArchiveError
from agentarch.store.names import candidate_name, describe, run_tag

MODEL = "openai/gpt-4o-mini"


def candidate(name, **extra):
    return {
        "task": "digits",
        "name": name,
        "proposer": "user",
        "code": f"# {name}\nx = 1\n",
        "status": "trained",
        "text_hash": name,
        "ast_hash": name,
        "functional_hash": name,
        "parents": [],
        **extra,
    }


def trained(val, epochs=5, params=1000):
    return {
        "status": "trained",
        "fidelity": epochs,
        "seed": 0,
        "val_accuracy": val,
        "test_accuracy": val - 0.01,
        "params": params,
        "curve": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}],
    }


FAILED = {"status": "failed", "fidelity": 5, "error": "RuntimeError: shape mismatch"}


@dataclass
class Sample:
    db: Archive
    llm_run: str
    rea_run: str
    old_rea_run: str
    seed: int  # user seed: 0.80 at 5 epochs, 0.70 at 20 (its score: the 20-epoch one)
    child: int  # LLM, child of seed, 0.90, analysis mentions depthwise
    failed: int  # LLM, child of child, failed
    rea: int  # rea run, 0.85
    tie: int  # rea run, 0.85 as well, recorded later
    invalid: int  # no evaluation
    other_task: int  # mqar, child of seed


@pytest.fixture
def sample(tmp_path):
    with Archive(tmp_path / "archive.db") as db:
        runs = []
        for kind, proposer, config in (("baseline", "rea", {}), ("run", MODEL, {"budget": 3}), ("baseline", "rea", {})):
            time.sleep(0.002)  # runs are listed by start time, which is kept to the millisecond
            runs.append(db.start_run(kind, "digits", proposer, config))
        old_rea_run, llm_run, rea_run = runs
        seed = db.record(candidate("seed"), trained(0.80))
        db.add_evaluation(seed, "digits", trained(0.70, epochs=20, params=5000))
        call = db.record_llm_call(
            {
                "run_id": llm_run,
                "purpose": "propose",
                "model": MODEL,
                "status": "ok",
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "cost_usd": 0.01,
            }
        )
        child = db.record(
            candidate(
                "child",
                proposer="llm",
                model=MODEL,
                run_id=llm_run,
                parents=[seed],
                analysis="depthwise convolutions",
                proposal_key=f"{llm_run}/0/0",
            ),
            trained(0.90, params=2000),
            llm_calls=[call],
        )
        failed = db.record(
            candidate("failed", proposer="llm", model=MODEL, run_id=llm_run, parents=[child], status="failed"), FAILED
        )
        rea = db.record(candidate("rea", proposer="rea", run_id=rea_run), trained(0.85))
        tie = db.record(candidate("tie", proposer="rea", run_id=rea_run), trained(0.85))
        db.record(candidate("old-rea", proposer="rea", run_id=old_rea_run), trained(0.60))
        invalid = db.record(candidate("invalid", status="invalid", reason="[imports] os"))
        other_task = db.record(candidate("other", task="mqar", parents=[seed]), trained(0.99))
        yield Sample(db, llm_run, rea_run, old_rea_run, seed, child, failed, rea, tie, invalid, other_task)


def ids(rows):
    return [row["id"] for row in rows]


def test_the_leaderboard_ranks_by_the_scoring_evaluation_untrained_last_ties_newest_first(sample):
    rows = browse.leaderboard(sample.db, Filters(task="digits"), limit=None)
    assert ids(rows)[:5] == [sample.child, sample.tie, sample.rea, sample.seed, sample.rea + 2]
    assert ids(rows)[5:] == [sample.invalid, sample.failed]  # untrained, newest first
    seed_row = rows[3]
    assert (seed_row["val_accuracy"], seed_row["fidelity"], seed_row["params"]) == (0.70, 20, 5000)
    assert "code" not in seed_row and rows[0]["parents"] == [sample.seed] and rows[0]["model"] == MODEL
    assert ids(browse.leaderboard(sample.db, Filters(task="digits"), limit=2, offset=1)) == [sample.tie, sample.rea]
    assert browse.count_candidates(sample.db, Filters(task="digits")) == 7
    assert browse.count_candidates(sample.db, Filters()) == 8


def test_filters_narrow_by_task_proposer_or_model_status_and_run(sample):
    def ranked(**given):
        return ids(browse.leaderboard(sample.db, Filters(**given), limit=None))

    assert ranked(proposer=MODEL) == ranked(proposer="llm") == [sample.child, sample.failed]
    assert ranked(status="failed") == [sample.failed]
    assert ranked(run=sample.rea_run) == [sample.tie, sample.rea]
    assert ranked(task="mqar") == [sample.other_task]
    assert ranked(task="digits", proposer="rea", status="trained", run=sample.old_rea_run) == [sample.rea + 2]


def test_the_pickers_tasks_proposers_and_runs(sample):
    assert browse.tasks(sample.db) == ["digits", "mqar"]
    assert browse.newest_task(sample.db) == "mqar"
    assert browse.proposers(sample.db, "digits") == ["llm", MODEL, "rea", "user"]
    assert run_progress.run_ids(sample.db, "digits") == [sample.rea_run, sample.llm_run, sample.old_rea_run]
    assert run_progress.run_ids(sample.db, "mqar") == []


def test_a_new_archive_has_no_newest_task(tmp_path):
    with Archive(tmp_path / "empty.db") as db:
        assert browse.newest_task(db) is None and browse.tasks(db) == []


def test_search_counts_every_match_and_returns_one_page_of_listing_rows(sample):
    total, rows = browse.search(sample.db, "depthwise", limit=10)
    assert total == 1 and ids(rows) == [sample.child] and rows[0]["val_accuracy"] == 0.90
    total, rows = browse.search(sample.db, "x", limit=2, offset=1)  # every candidate's code holds `x = 1`
    assert total == 8 and len(rows) == 2
    assert len(browse.search(sample.db, "x", limit=None)[1]) == 8
    assert browse.search(sample.db, '"unclosed', limit=10) == (0, [])  # typed text, never FTS5 syntax
    assert browse.search(sample.db, "= :", limit=10) == (0, [])


def test_fts_query_quotes_every_piece_and_keeps_or_and_prefixes():
    assert browse.fts_query("macro:d4-w16-k5-skip0-avg") == '"macro d4 w16 k5 skip0 avg"'
    assert browse.fts_query("nn.Conv2d") == '"nn Conv2d"'
    assert browse.fts_query("SKIP = True") == '"SKIP" AND "True"'
    assert browse.fts_query('"depthwise conv" OR attn* NOT') == '("depthwise conv" OR "attn"*) AND "NOT"'
    assert browse.fts_query('col:x AND "a""b"') == '"col x" AND "AND" AND "a" AND "b"'
    assert browse.fts_query("= : OR") is None


def test_exact_target_opens_a_pasted_candidate_or_run_id(sample):
    assert browse.exact_target(sample.db, f" #{sample.child} ") == ("candidate", sample.child)
    assert browse.exact_target(sample.db, sample.llm_run) == ("run", sample.llm_run)
    assert browse.exact_target(sample.db, "#999") is None and browse.exact_target(sample.db, "child") is None


def test_candidate_fields_fetches_texts_for_any_number_of_ids(sample):
    found = browse.candidate_fields(sample.db, [sample.child, sample.seed, sample.child, 999, None], ("name", "code"))
    assert found == {
        sample.child: {"id": sample.child, "name": "child", "code": "# child\nx = 1\n"},
        sample.seed: {"id": sample.seed, "name": "seed", "code": "# seed\nx = 1\n"},
    }
    many = [*range(100_000, 140_000), sample.rea]  # beyond SQLite's cap on placeholders: one JSON argument
    assert list(browse.candidate_fields(sample.db, many, ("status",))) == [sample.rea]
    assert browse.candidate_fields(sample.db, [], ("name",)) == {}
    with pytest.raises(ValueError, match="no column"):
        browse.candidate_fields(sample.db, [sample.seed], ("name; DROP TABLE runs",))


def test_ranked_with_code_is_the_trained_pool_best_first_with_code_and_analysis(sample):
    pool = browse.ranked_with_code(sample.db, "digits")
    assert ids(pool) == ids(sample.db.top("digits", limit=None))
    assert ids(pool)[:3] == [sample.child, sample.rea, sample.tie]  # equal scores: the earlier first, as top ranks
    assert pool[0]["code"] == "# child\nx = 1\n" and pool[0]["analysis"] == "depthwise convolutions"
    assert sample.failed not in ids(pool) and sample.other_task not in ids(pool)


def test_children_and_child_counts_read_the_parents_lists_exactly(sample):
    assert lineage.children(sample.db, sample.seed) == [
        {"id": sample.child, "name": "child", "status": "trained"},
        {"id": sample.other_task, "name": "other", "status": "trained"},
    ]
    assert lineage.children(sample.db, sample.child) == [{"id": sample.failed, "name": "failed", "status": "failed"}]
    assert lineage.children(sample.db, sample.failed) == []
    assert lineage.child_counts(sample.db, "digits") == {sample.seed: 1, sample.child: 1}
    assert lineage.child_counts(sample.db, "mqar") == {sample.seed: 1}


def test_children_are_not_matched_by_a_substring_of_another_id(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        first = db.record(candidate("first"))
        db.record(candidate("second", parents=[first * 10 + first]))  # e.g. 11: contains "1", is not 1
        assert lineage.children(db, first) == []


def test_reviews_of_a_candidate_decided_and_pending(sample):
    gate = sample.db.request_review(
        {"run_id": sample.llm_run, "proposal_key": f"{sample.llm_run}/0/0", "code": "x = 1\n", "intent": "wider"}
    )
    waiting = sample.db.request_review(
        {"run_id": sample.llm_run, "proposal_key": f"{sample.llm_run}/1/0", "code": "y = 2\n", "intent": "deeper"}
    )
    sample.db.decide(gate, "approved", by="ada")
    flag = sample.db.flag(sample.child, by="bob", reason="suspicious")
    assert ids(review_log.candidate_reviews(sample.db, sample.child, f"{sample.llm_run}/0/0")) == [gate, flag]
    assert ids(review_log.candidate_reviews(sample.db, sample.child, None)) == [flag]
    assert ids(review_log.decided_reviews(sample.db, limit=None)) == [flag, gate]
    assert ids(review_log.decided_reviews(sample.db, limit=1, offset=1)) == [gate]
    assert review_log.count_decided_reviews(sample.db) == 2
    assert review_log.count_pending_reviews(sample.db, sample.llm_run) == 1
    assert review_log.count_pending_reviews(sample.db, sample.rea_run) == 0
    assert waiting not in ids(review_log.decided_reviews(sample.db, limit=None))


def test_runs_with_progress_and_a_runs_overview(sample):
    runs = {run["id"]: run for run in run_progress.runs_with_progress(sample.db, limit=None)}
    assert list(runs) == [sample.rea_run, sample.llm_run, sample.old_rea_run]
    llm, rea = runs[sample.llm_run], runs[sample.rea_run]
    assert (llm["proposed"], llm["trained"], llm["best_val_accuracy"], llm["cost_usd"]) == (2, 1, 0.90, 0.01)
    assert (rea["proposed"], rea["trained"], rea["best_val_accuracy"], rea["cost_usd"]) == (2, 2, 0.85, None)
    assert ids(run_progress.runs_with_progress(sample.db, limit=1, offset=1)) == [sample.llm_run]
    assert run_progress.count_runs(sample.db) == 3
    overview = run_progress.run_overview(sample.db, sample.llm_run)
    assert overview["statuses"] == {"trained": 1, "failed": 1} and overview["config"] == {"budget": 3}
    assert (overview["llm_calls"], overview["prompt_tokens"], overview["completion_tokens"]) == (1, 100, 20)
    assert overview["summary"] == {}  # not finished yet
    assert run_progress.run_overview(sample.db, sample.rea_run)["cost_usd"] == 0.0
    with pytest.raises(ArchiveError, match="archive runs"):
        run_progress.run_overview(sample.db, "nope")


def test_run_history_keeps_failed_evaluations_and_groups_other_baseline_runs(sample):
    llm = run_progress.run_history(sample.db, sample.db.find_run(sample.llm_run), ALGOS)
    assert (llm.proposer, llm.values) == (MODEL, [0.90, None])
    assert llm.baselines == {("rea", 5): [[0.85, 0.85], [0.60]]}  # by proposer and fidelity
    assert (llm.fidelities, llm.candidates) == ([5, 5], [sample.child, sample.failed])
    rea = run_progress.run_history(sample.db, sample.db.find_run(sample.rea_run), ALGOS)
    assert rea.values == [0.85, 0.85] and rea.baselines == {("rea", 5): [[0.60]]}  # never itself


def test_pareto_points_and_loss_curves(sample):
    assert measurements.pareto_points(sample.db, sample.llm_run) == [(2000.0, 0.90)]  # the failed child has no point
    assert sorted(measurements.pareto_points(sample.db, sample.rea_run)) == [(1000.0, 0.85), (1000.0, 0.85)]
    curves = measurements.loss_curves(sample.db, sample.seed)
    assert [label for label, _ in curves] == [
        f"evaluation {i} ({epochs} epochs, seed 0)"
        for i, epochs in zip([e["id"] for e in sample.db.evaluations(sample.seed)], (5, 20))
    ]
    assert curves[0][1] == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]
    assert measurements.loss_curves(sample.db, sample.invalid) == []


def test_sorts_and_ranges_over_the_scoring_evaluation(sample):
    def ranked(sort=Sort(), **given):
        return ids(browse.leaderboard(sample.db, Filters(task="digits", **given), limit=None, sort=sort))

    assert ranked(Sort("params", descending=False))[:2] == [sample.rea + 2, sample.tie]  # 1000 each, newest first
    assert ranked(Sort("params"))[0] == sample.seed  # 5000 params at its 20-epoch training
    assert ranked(Sort("best", descending=False))[:2] == [sample.rea + 2, sample.seed]  # worst first
    assert ranked(Sort("best", descending=False))[-2:] == [sample.invalid, sample.failed]  # unscored still last
    assert ranked(ranges=(("val", 0.8, 0.86),)) == [sample.tie, sample.rea]
    assert ranked(ranges=(("params", 2000, None),)) == [sample.child, sample.seed]
    assert ranked(ranges=(("fidelity", 20, 20),)) == [sample.seed]
    assert ranked(until="2000-01-01") == [] and len(ranked(since="2000-01-01")) == 7
    with pytest.raises(ArchiveError, match="cannot sort by"):
        Sort("code")
    with pytest.raises(ArchiveError, match="cannot filter by"):
        Filters(ranges=(("code", 1, 2),))


def test_marks_and_stages_filter_and_annotate_rows(sample):
    db = sample.db
    db.add_evaluation(sample.rea, "digits", {**trained(0.95, epochs=15), "stage": "verify", "latency_ms": 2.5})
    db.flag(sample.tie, by="bo", reason="odd")
    edit = db.request_review({"run_id": sample.llm_run, "proposal_key": f"{sample.llm_run}/0/0", "code": "x = 1\n"})
    db.decide(edit, "edited", "ana", code="x = 2\n")

    def ranked(**given):
        return ids(browse.leaderboard(db, Filters(task="digits", **given), limit=None))

    assert ranked(stage="verify") == [sample.rea] and sample.rea not in ranked(stage="explore")
    assert ranked(marks=("flagged",)) == [sample.tie] and ranked(marks=("edited",)) == [sample.child]
    assert ranked(marks=("reviewed",)) == [sample.child] and ranked(marks=("flagged", "edited")) == []
    rows = browse.annotate(db, browse.leaderboard(db, Filters(task="digits"), limit=3))
    by_id = {row["id"]: row for row in rows}
    assert (by_id[sample.rea]["stage"], by_id[sample.rea]["latency_ms"]) == ("verify", 2.5)
    assert (by_id[sample.child]["stage"], by_id[sample.child]["edited"], by_id[sample.tie]["flagged"]) == (
        "explore",
        True,
        True,
    )
    assert [r["id"] for r in browse.rows_by_id(db, [sample.tie, 999, sample.seed])] == [sample.tie, sample.seed]


def test_candidate_names_say_what_a_candidate_is_and_where_it_comes_from():
    run = "run-20261129-101112-3f9a1c"
    assert run_tag(run) == "3f9a1c" and run_tag("my-run") == "my-run" and run_tag(None) == "no run"
    assert candidate_name(run, 12, "Intent: Depthwise separable stem, then a wider head.", None) == (
        "Depthwise separable stem, then a wider head (3f9a1c/12)"
    )
    assert candidate_name(run, 4, "anything", "macro:d4-w16-k5-skip0-avg") == "macro:d4-w16-k5-skip0-avg (3f9a1c/4)"
    assert candidate_name(run, 1, None, None) == candidate_name(run, 1, "  ", "") == "proposal (3f9a1c/1)"
    long = describe("Replace every convolution of the stem with a depthwise separable one and widen the head", None)
    assert long == "Replace every convolution of the stem" and len(long) <= 48  # whole words, not ending on "with"


def test_readable_names_for_rows_named_by_round_and_slot(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        run = db.start_run("run", "digits", MODEL, {})
        tag = run_tag(run)
        llm = db.record(candidate("round 2 slot 1", run_id=run, response="Intent: Add squeeze-excitation.\n\ncode"))
        offline = db.record(
            candidate("round 1 slot 0", run_id=run, code='"""MLP search space, architecture h64-relu"""')
        )
        analysed = db.record(candidate("round 3 slot 0", run_id=run, analysis="Pooling earlier halves the cost."))
        spaced = db.record(candidate("round 1 slot 1", run_id=run, space="nb201", arch="|conv_3x3~0|"))
        bare = db.record(candidate("round 4 slot 0", run_id=run))
        kept = db.record(candidate("mine.py"))
        names = browse.readable_names(db, db.candidates(limit=10))
    assert names == {
        llm: f"Add squeeze-excitation ({tag}/r2.1)",
        offline: f"h64-relu ({tag}/r1.0)",
        analysed: f"Pooling earlier halves the cost ({tag}/r3.0)",
        spaced: f"nb201:|conv_3x3~0| ({tag}/r1.1)",
        bare: "round 4 slot 0",  # nothing says what it is: its name stays
        kept: "mine.py",
    }


def test_lineage_walks_ancestors_and_descendants_once_each(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        a = db.record(candidate("a"), trained(0.5))
        b = db.record(candidate("b", parents=[a]), trained(0.6))
        c = db.record(candidate("c", parents=[b]), trained(0.7))
        d = db.record(candidate("d", parents=[b]))
        e = db.record(candidate("e", parents=[c, d]), trained(0.9))
        tree = lineage.lineage(db, b)
        assert (tree.ancestors, tree.descendants, tree.cut) == (1, 3, 0)
        assert tree.ancestry.row["id"] == b and [n.row["id"] for n in tree.ancestry.below] == [a]
        assert [n.row["id"] for n in tree.descent.below] == [c, d]
        via_c, via_d = tree.descent.below
        assert [n.row["id"] for n in via_c.below] == [e] and via_c.below[0].row["val_accuracy"] == 0.9
        assert [(n.row["id"], n.repeat) for n in via_d.below] == [(e, True)]  # e has two parents: shown once in full
        top = lineage.lineage(db, e)
        assert top.ancestors == 4 and top.descendants == 0
        assert lineage.lineage(db, a, limit=2).cut == 2  # b and c fit; the links to d and e are left out, counted
        with pytest.raises(ArchiveError):
            lineage.lineage(db, 999)


def test_measure_points_and_run_statuses(sample):
    points = measurements.measure_points(sample.db, "digits", ["params", "val", "latency_ms"], run=sample.rea_run)
    assert [(p["id"], p["params"], p["val_accuracy"], p["latency_ms"]) for p in points] == [
        (sample.rea, 1000, 0.85, None),
        (sample.tie, 1000, 0.85, None),
    ]
    assert len(measurements.measure_points(sample.db, "digits", ["val"])) == 5  # trained only
    sample.db.finish_run(sample.rea_run, "interrupted", {})
    assert run_progress.run_statuses(sample.db, [sample.rea_run, sample.llm_run, None, "nope"]) == {
        sample.rea_run: "interrupted",
        sample.llm_run: "running",
    }


def test_measure_rows_carry_every_filtered_candidate_for_the_front_sort(sample):
    rows = browse.measure_rows(sample.db, Filters(task="digits", run=sample.llm_run), ["val", "params", "params"])
    assert sorted((r["id"], r["val_accuracy"], r["params"]) for r in rows) == [
        (sample.child, 0.90, 2000),
        (sample.failed, None, None),  # untrained rows come too: the front sort puts them last
    ]
    assert len(browse.measure_rows(sample.db, Filters(task="digits"), ["val"])) == 7
    assert Sort(browse.FRONT).key == "front"  # a sort a page may ask for, ranked outside SQL
    with pytest.raises(ArchiveError, match="front sort"):
        browse.leaderboard(sample.db, Filters(task="digits"), limit=10, sort=Sort(browse.FRONT))
    with pytest.raises(ArchiveError, match="cannot sort by"):
        Sort("code")
