"""The web UI and the static report against a real archive file: pages, filters, reviews, export.

Who may use it, and from where (Host, token, CSRF, origin) and what hostile input it withstands: test_web_security.py."""

import csv
import io
import json
import re
import shutil
from dataclasses import dataclass
from datetime import date

import pytest
from typer.testing import CliRunner

from agentarch.cli import app as cli_app
from agentarch.errors import UsageError
from agentarch.store.archive import Archive
from agentarch.store.ranking import running_best
from agentarch.store.run_progress import RunHistory
from agentarch.web import create_app, runview
from agentarch.web.plots import (
    best_so_far_figure,
    best_so_far_lines,
    fit_margins,
    mean_of_runs,
    pareto_figure,
    pareto_front,
)
from agentarch.web.report import shareable, write_report
from tests.web_client import Browser

PNG = b"\x89PNG\r\n\x1a\n"
MODEL = "openai/gpt-4o-mini"
PROMPT = [
    {"role": "system", "content": "You design PyTorch networks."},
    {"role": "user", "content": "Propose a better Net than example #1."},
]
EVIL = "<script>alert('x')</script>"


def candidate(name, text_hash, **extra):
    return {
        "task": "digits",
        "name": name,
        "proposer": "user",
        "code": f"# {name}\nx = 1\n",
        "status": "trained",
        "text_hash": text_hash,
        "ast_hash": text_hash,
        "functional_hash": text_hash,
        "parents": [],
        **extra,
    }


def evaluation(val, test, epochs=5):
    return {
        "status": "trained",
        "fidelity": epochs,
        "seed": 0,
        "val_accuracy": val,
        "test_accuracy": test,
        "params": 1000,
        "train_seconds": 2.5,
        "curve": [{"step": s, "epoch": s / 10, "loss": 2.0 / s} for s in range(1, 21)],
    }


@dataclass
class Sample:
    path: object
    llm_run: str
    rea_run: str
    seed: int  # a user seed, parent of `child`
    child: int  # LLM-proposed, with prompt, response, analysis and an LLM call
    grandchild: int  # failed, in the LLM run
    rea: int
    evil: int
    pending: int  # a pending review
    pending_key: str


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One filled archive, built once; each test gets its own copy (some tests write)."""
    path = tmp_path_factory.mktemp("web") / "archive.db"
    with Archive(path) as db:
        llm_run = db.start_run("run", "digits", MODEL, {"budget": 4, "examples": 3})
        rea_run = db.start_run("baseline", "digits", "rea", {"algo": "rea", "budget": 3})
        seed = db.record(candidate("seed.py", "s", params=5000), evaluation(0.80, 0.79))
        call = db.record_llm_call(
            {
                "run_id": llm_run,
                "purpose": "propose",
                "model": MODEL,
                "status": "ok",
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "cost_usd": 0.0123,
            }
        )
        child = db.record(
            candidate(
                "depthwise.py",
                "c",
                proposer="llm",
                model=MODEL,
                run_id=llm_run,
                parents=[seed],
                examples=[seed],
                prompt=PROMPT,
                response="```python\nclass Net: ...\n```",
                analysis="Depthwise separable convolutions cut parameters by 4x.",
                proposal_key=f"{llm_run}/0/0",
                params=2000,
                cost_usd=0.0123,
            ),
            evaluation(0.90, 0.88),
            llm_calls=[call],
        )
        grandchild = db.record(
            candidate(
                "broken.py",
                "g",
                proposer="llm",
                model=MODEL,
                run_id=llm_run,
                parents=[child],
                status="failed",
                reason="RuntimeError: shape mismatch",
            ),
            {"status": "failed", "fidelity": 5, "error": "RuntimeError: shape mismatch"},
        )
        rea = db.record(candidate("rea-1", "r", proposer="rea", run_id=rea_run, params=800), evaluation(0.85, 0.84))
        db.record(candidate("rea-2", "r2", proposer="rea", run_id=rea_run, params=900), evaluation(0.70, 0.70))
        # scores come from the highest fidelity, whatever a shorter training scored
        db.add_evaluation(rea, "digits", evaluation(0.99, 0.99, epochs=1))
        db.add_evaluation(seed, "digits", evaluation(0.83, 0.82, epochs=20))
        evil = db.record(
            candidate(f"{EVIL}.py", "e", code=f"# {EVIL}\nx = '</pre>{EVIL}'\n", analysis=EVIL), evaluation(0.10, 0.10)
        )
        for i in range(55):  # enough rows for a second leaderboard page
            db.record(candidate(f"filler-{i}", f"f{i}", status="invalid", reason="[imports] os"))
        key = f"{llm_run}/1/0"
        pending = db.request_review(
            {
                "run_id": llm_run,
                "proposal_key": key,
                "code": "class Net:\n    pass\n",
                "intent": "try a wider stem",
                "parent_id": child,
            }
        )
        db.request_review({"run_id": llm_run, "proposal_key": f"{llm_run}/1/1", "code": "y = 2\n", "intent": "other"})
        db.finish_run(rea_run, "finished", {"best": {"id": rea}})
    return Sample(path, llm_run, rea_run, seed, child, grandchild, rea, evil, pending, key)


@pytest.fixture
def sample(template, tmp_path):
    path = tmp_path / "archive.db"
    shutil.copy(template.path, path)
    return Sample(**{**template.__dict__, "path": path})


@pytest.fixture
def client(sample):
    with Browser(create_app(sample.path)) as c:
        yield c


def ids_in(html: str) -> list[int]:
    """Candidate ids linked from a listing, in order."""
    return [int(i) for i in re.findall(r'<td><a href="/candidate/(\d+)">', html)]


def test_every_page_renders(client, sample):
    for url, expected in [
        ("/", "Leaderboard: digits"),
        ("/runs", sample.llm_run),
        (f"/run/{sample.llm_run}", "Best so far"),
        ("/reviews", "try a wider stem"),
        ("/search?q=depthwise", "depthwise.py"),
        (f"/diff?a={sample.seed}&b={sample.child}", "seed.py"),
        (f"/candidate/{sample.child}", "depthwise.py"),
        ("/diff", "Compare"),
    ]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert expected in response.text, url
    for url in (
        f"/run/{sample.llm_run}/best.png",
        f"/run/{sample.llm_run}/pareto.png",
        f"/candidate/{sample.child}/curve.png",
        f"/candidate/{sample.grandchild}/curve.png",
    ):
        response = client.get(url)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png", url
        assert response.content.startswith(PNG), url
    assert client.get("/static/style.css").status_code == 200
    assert ".highlight" in client.get("/highlight.css").text


def test_unknown_things_are_404_and_bad_params_400(client):
    assert client.get("/candidate/9999").status_code == 404
    assert "archive ls" in client.get("/candidate/9999").text
    assert client.get("/run/nope").status_code == 404
    assert client.get("/run/nope/best.png").status_code == 404
    assert client.get("/?page=zero").status_code == 400
    assert client.get("/diff?a=1&b=x").status_code == 400


def test_leaderboard_ranks_filters_and_pages(client, sample):
    first = client.get("/").text
    assert ids_in(first)[:4] == [sample.child, sample.rea, sample.seed, sample.rea + 1]
    seed_row = first[first.index(f'href="/candidate/{sample.seed}"') :].split("</tr>")[0]
    assert "0.8300" in seed_row and '<td class="num">20</td>' in seed_row  # the fidelity the score comes from
    assert "page 1 of 2" in first and "next" in first
    second = client.get("/?page=2").text
    assert "page 2 of 2" in second and len(ids_in(first)) == 50 and len(ids_in(second)) == 61 - 50
    assert set(ids_in(first)).isdisjoint(ids_in(second))
    assert ids_in(client.get("/?proposer=rea").text) == [sample.rea, sample.rea + 1]
    assert ids_in(client.get(f"/?proposer={MODEL}").text) == [sample.child, sample.grandchild]
    assert ids_in(client.get("/?status=failed").text) == [sample.grandchild]
    assert ids_in(client.get(f"/?run={sample.llm_run}&status=trained").text) == [sample.child]
    page = client.get(f"/?run={sample.llm_run}").text
    assert f"<option selected>{sample.llm_run}</option>" in page and "page 1 of 1" in page


def test_candidate_page_shows_lineage_both_ways_and_provenance(client, sample):
    page = client.get(f"/candidate/{sample.child}").text
    assert f'href="/candidate/{sample.seed}"' in page  # parent and few-shot example
    assert f'href="/candidate/{sample.grandchild}"' in page  # child
    assert f"/diff?a={sample.seed}&b={sample.child}" in page
    assert "You design PyTorch networks." in page and "Propose a better Net" in page
    assert "Depthwise separable convolutions cut parameters" in page
    assert "class Net: ..." in page  # the response
    assert "1,200" in page and "$0.0123" in page  # the LLM call
    assert "0.9000" in page and "5 epochs" in page
    assert f"/candidate/{sample.child}/curve.png" in page
    parent_page = client.get(f"/candidate/{sample.seed}").text
    assert f'href="/candidate/{sample.child}"' in parent_page
    assert "RuntimeError: shape mismatch" in client.get(f"/candidate/{sample.grandchild}").text


def test_candidate_text_is_escaped(client, sample):
    for url in (f"/candidate/{sample.evil}", "/", "/search?q=alert"):
        page = client.get(url).text
        assert EVIL not in page, url
        assert "&lt;script&gt;" in page or "&lt;/" in page, url


def test_diff_shows_changed_lines(client, sample):
    page = client.get(f"/diff?a={sample.seed}&b={sample.child}").text
    assert '<span class="del">-# seed.py</span>' in page and '<span class="add">+# depthwise.py</span>' in page
    assert "The code is identical" in client.get(f"/diff?a={sample.seed}&b={sample.seed}").text
    assert client.get(f"/diff?a={sample.seed}&b=9999").status_code == 404


def review_row(sample, review_id):
    with Archive(sample.path) as db:
        return db.review(review_id)


def test_approve_through_the_form_then_a_second_decision_is_400(client, sample):
    response = client.post(f"/reviews/{sample.pending}", data={"decision": "approved", "by": "ada", "code": "x"})
    assert response.status_code == 200 and "Review queue (1 pending)" in response.text  # redirected to the queue
    assert f"Review {sample.pending} approved by ada." in response.text  # confirmed
    assert 'id="reviewer" value="ada"' in response.text  # and the name is remembered for the next card
    row = review_row(sample, sample.pending)
    assert row["status"] == "approved" and row["decided_by"] == "ada"
    assert row["decision_code"] is None  # the form's code field counts for an edit only
    again = client.post(f"/reviews/{sample.pending}", data={"decision": "rejected", "reason": "no"})
    assert again.status_code == 400 and "already decided" in again.text
    assert review_row(sample, sample.pending)["status"] == "approved"


def test_reject_needs_a_reason_and_changes_nothing_without_one(client, sample):
    refused = client.post(f"/reviews/{sample.pending}", data={"decision": "rejected", "reason": "  "})
    assert refused.status_code == 400 and "say why when rejecting" in refused.text
    assert review_row(sample, sample.pending)["status"] == "pending"
    client.post(f"/reviews/{sample.pending}", data={"decision": "rejected", "reason": "copies the parent"})
    row = review_row(sample, sample.pending)
    assert row["status"] == "rejected" and row["reason"] == "copies the parent" and row["decided_by"] == "web"
    assert "copies the parent" in client.get("/reviews").text


def test_edit_stores_the_code_with_unix_newlines(client, sample):
    client.post(f"/reviews/{sample.pending}", data={"decision": "edited", "code": "class Net:\r\n    x = 2\r\n"})
    row = review_row(sample, sample.pending)
    assert row["status"] == "edited" and row["decision_code"] == "class Net:\n    x = 2\n"


def test_reviews_page_diffs_against_the_parent(client, sample):
    page = client.get("/reviews").text
    assert "Diff against the parent" in page and f"parent #{sample.child}" in page
    assert page.count('name="decision"') == 6  # approve, reject, edit for each pending review
    assert page.count('<form method="post" action="/reviews/') == 2  # one form per card
    assert page.count('id="reviewer"') == 1  # the name is asked once for the page


def test_flag(client, sample):
    assert client.post(f"/candidate/{sample.rea}/flag", data={"reason": ""}).status_code == 400
    response = client.post(f"/candidate/{sample.rea}/flag", data={"by": "bob", "reason": "val set leak?"})
    assert response.status_code == 200 and "val set leak?" in response.text
    with Archive(sample.path) as db:
        flags = db.reviews(status="flagged")
    assert [(f["candidate_id"], f["decided_by"]) for f in flags] == [(sample.rea, "bob")]


def test_search(client, sample):
    assert ids_in(client.get("/search?q=depthwise").text) == [sample.child]
    assert ids_in(client.get("/search?q=filler").text)[:1] and "page 1 of 2" in client.get("/search?q=filler").text
    unclosed = client.get('/search?q="unclosed')  # FTS5 syntax is never passed through: no 400 for a typo
    assert unclosed.status_code == 200 and "No candidates match" in unclosed.text


def test_search_takes_what_the_pages_show(client, sample):
    for pasted in ("depthwise.py", "Depthwise separable", "cut parameters by 4x.", "depthwise OR nothing", "depth*"):
        response = client.get("/search", params={"q": pasted})
        assert response.status_code == 200 and ids_in(response.text) == [sample.child], pasted
    for pasted in ("filler-1", "x = 1", "[imports] os", "(", "#", "= :"):
        assert client.get("/search", params={"q": pasted}).status_code == 200, pasted
    assert "holds no letters or digits" in client.get("/search", params={"q": "= :"}).text
    jump = client.get("/search", params={"q": f"#{sample.rea}"}, follow_redirects=False)
    assert (jump.status_code, jump.headers["location"]) == (303, f"/candidate/{sample.rea}")
    jump = client.get("/search", params={"q": sample.rea_run}, follow_redirects=False)
    assert jump.headers["location"] == f"/run/{sample.rea_run}"


def test_export_of_a_filtered_view(client, sample):
    page = client.get("/?proposer=rea&format=csv")
    assert page.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(page.text)))
    assert [int(r["id"]) for r in rows] == [sample.rea, sample.rea + 1]
    assert (rows[0]["val_accuracy"], rows[0]["fidelity"]) == ("0.85", "5")
    assert len(client.get("/?status=invalid&format=json").json()) == 50  # this page
    assert len(client.get("/?status=invalid&format=json&all=1").json()) == 55  # every page
    runs = client.get("/runs?format=json").json()
    assert {r["id"]: r["trained"] for r in runs} == {sample.llm_run: 1, sample.rea_run: 2}
    assert [r["proposer"] for r in client.get("/search?q=depthwise&format=json").json()] == ["llm"]
    assert len(client.get("/reviews?format=json").json()) == 2
    assert client.get("/?format=xml").status_code == 400
    assert json.loads(client.get(f"/?run={sample.llm_run}&format=json").text)[0]["parents"] == [sample.seed]


def test_report_writes_index_and_plots(sample, tmp_path):
    index = write_report(sample.path, sample.llm_run, tmp_path / "report")
    assert index == tmp_path / "report" / "index.html"
    html = index.read_text()
    assert sample.llm_run in html and "depthwise.py" in html and "$0.0123" in html
    for name in ("best_so_far.png", "pareto.png", f"curve-{sample.child}.png"):
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG), name
        assert f'src="{name}"' in html
    assert "<link" not in html  # self-contained: the stylesheet is inlined


def test_plots_fit_their_labels_and_label_log_axes_within_a_decade():
    history = RunHistory("llm", [12345.678, 9876.5, 15000.25], {}, metric="mse", direction="min")
    figure = best_so_far_figure(history)
    fit_margins(figure)  # what saving does
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    assert axes.yaxis.label.get_window_extent(renderer).x0 >= 0  # the label is inside the image
    assert min(t.get_window_extent(renderer).x0 for t in axes.get_yticklabels() if t.get_text()) >= 0
    figure = pareto_figure([(30_000, 0.5), (45_000, 0.7), (80_000, 0.8)], "accuracy", "max")
    axes = figure.axes[0]
    low, high = axes.get_xlim()
    shown = [t for t in axes.get_xticks() if low <= t <= high]
    assert len(shown) >= 3, shown  # 30k..80k: every ten thousand labelled, not one tick or none
    assert axes.xaxis.get_major_formatter()(50_000, 0) == "50k"


def test_plot_helpers():
    assert running_best([None, 0.5, 0.4, None, 0.7], "max") == [None, 0.5, 0.5, 0.5, 0.7]
    assert running_best([None, 0.5, 0.4, None, 0.7], "min") == [None, 0.5, 0.4, 0.4, 0.4]  # an MSE goes down
    points = [(10, 0.5), (100, 0.9), (50, 0.4), (10, 0.6), (200, 0.8)]
    assert pareto_front(points, "max") == [(10, 0.6), (100, 0.9)]
    assert pareto_front(points, "min") == [(10, 0.5), (50, 0.4)]
    # a baseline's line: the mean over its runs, a run that stopped early held at its final best
    assert mean_of_runs([[None, 0.5, 0.7], [0.2, 0.3]]) == [0.2, 0.4, 0.5]
    history = RunHistory("llm", [0.5, None, 0.6], {("rea", 5): [[0.4]], ("tpe", 5): [[None, 0.5, 0.7], [0.2, 0.3]]})
    assert best_so_far_lines(history) == [
        ("this run (llm)", [0.5, 0.5, 0.6]),
        ("rea (1 run, mean)", [0.4]),
        ("tpe (2 runs, mean)", [0.2, 0.4, 0.5]),
    ]
    lower = RunHistory("llm", [0.5, None, 0.6, 0.3], {("tpe", 5): [[0.4, 0.2]]}, metric="mse", direction="min")
    assert best_so_far_lines(lower) == [("this run (llm)", [0.5, 0.5, 0.5, 0.3]), ("tpe (1 run, mean)", [0.4, 0.2])]


# -- browsing thousands: sort, filter, compare, lineage, charts, names ------------------------------------------

LEGACY_ANSWER = "Intent: Widen the stem and add a residual skip to every block.\n\n```python\nclass Net: ...\n```"
MACRO_CODE = '"""Macro CNN search space, architecture d4-w16-k5-skip0-avg\n"""\nimport torch\nSKIP = True\n'


@dataclass
class Rich:
    path: object
    run: str  # running, objectives val:max and params:min, constraint params<=50000
    stopped: str  # interrupted, with a pending review
    ids: dict  # name -> candidate id
    pending: int
    decided: int  # approved, its candidate not recorded yet


@pytest.fixture(scope="module")
def rich_template(tmp_path_factory):
    """An archive with what browsing needs: legacy names, sizes over decades, a verify retraining, latencies, a flag,
    an edit, a lineage graph (a -> b -> c, b -> d, c and d -> e), a running and an interrupted run."""
    path = tmp_path_factory.mktemp("rich") / "archive.db"
    goals = {"objectives": ["val:max", "params:min"], "constraints": ["params<=50000"], "archive": "/home/ada/a.db"}
    with Archive(path) as db:
        run = db.start_run("run", "digits", MODEL, goals)
        stopped = db.start_run("run", "digits", MODEL, {})
        db.finish_run(stopped, "interrupted", {})
        ids = {}

        def add(name, val, params, parents=(), **extra):
            row = candidate(name, f"h-{name}", run_id=run, parents=[ids[p] for p in parents], params=params, **extra)
            scores = {**evaluation(val, val - 0.01), "params": params, "latency_ms": params / 1000} if val else None
            ids[name] = db.record(row, scores)

        add("a", 0.70, 1_000, code="x = nn.Conv2d(1, 8, 3)\n")
        add("round 1 slot 0", 0.80, 20_000, ["a"], proposer="llm", response=LEGACY_ANSWER, proposal_key=f"{run}/1/0")
        ids["b"] = ids.pop("round 1 slot 0")
        add("round 1 slot 1", 0.85, 60_000, ["b"], proposer="rea", code=MACRO_CODE)
        ids["c"] = ids.pop("round 1 slot 1")
        add("macro:d4-w16-k5-skip0-avg", 0.60, 300_000, ["b"], space="macro", arch="d4-w16-k5-skip0-avg")
        ids["d"] = ids.pop("macro:d4-w16-k5-skip0-avg")
        add("e", 0.90, 40_000, ["c", "d"], proposal_key=f"{run}/9/9")
        add("untrained", None, None, status="invalid")
        db.add_evaluation(ids["a"], "digits", {**evaluation(0.95, 0.94, epochs=15), "stage": "verify"})
        db.flag(ids["d"], by="bob", reason="suspicious")
        edit = db.request_review({"run_id": run, "proposal_key": f"{run}/9/9", "code": "x = 1\n", "intent": "e"})
        db.decide(edit, "edited", "ana", code="x = 2\n")
        db.link_review(f"{run}/9/9", ids["e"])
        decided = db.request_review({"run_id": run, "proposal_key": f"{run}/5/0", "code": "y = 5\n", "intent": "z"})
        db.decide(decided, "approved", "ana")
        pending = db.request_review({"run_id": stopped, "proposal_key": f"{stopped}/1/0", "code": "z = 1\n"})
    return Rich(path, run, stopped, ids, pending, decided)


@pytest.fixture
def rich(rich_template, tmp_path):
    path = tmp_path / "rich.db"
    shutil.copy(rich_template.path, path)
    with Browser(create_app(path)) as c:
        yield Rich(**{**rich_template.__dict__, "path": path}), c


def listed(client, url):
    response = client.get(url)
    assert response.status_code == 200, (url, response.text[:500])
    return ids_in(response.text)


def test_the_leaderboard_sorts_by_any_column_both_ways(rich):
    r, client = rich
    i = r.ids
    assert listed(client, "/") == [i["a"], i["e"], i["c"], i["b"], i["d"], i["untrained"]]  # a: 0.95, verified
    assert listed(client, "/?sort=params&order=asc") == [i["a"], i["b"], i["e"], i["c"], i["d"], i["untrained"]]
    assert listed(client, "/?sort=params") == [i["d"], i["c"], i["e"], i["b"], i["a"], i["untrained"]]
    assert listed(client, "/?sort=best&order=asc")[:2] == [i["d"], i["b"]]  # worst first, untrained still last
    assert listed(client, "/?sort=latency_ms&order=asc")[0] == i["b"]  # a's scores come from its verify training
    page = client.get("/?sort=params").text
    assert 'href="/?sort=params&amp;order=asc"' in page and "params ▼" in page  # the header flips the order
    assert client.get("/?sort=code").status_code == 400


def test_the_leaderboard_filters_ranges_dates_marks_stage_and_any(rich):
    r, client = rich
    i = r.ids
    assert listed(client, "/?params_max=50k") == [i["a"], i["e"], i["b"]]
    assert listed(client, "/?params_min=20,000&params_max=1.5e5&val_min=0.85") == [i["e"], i["c"]]
    assert listed(client, "/?flops_min=1") == []  # nothing counted FLOPs
    assert client.get("/?params_max=lots").status_code == 400 and "200k" in client.get("/?params_max=lots").text
    today = date.today().isoformat()
    assert len(listed(client, f"/?since={today}&until={today}")) == 6
    assert listed(client, "/?until=2000-01-01") == []
    assert client.get("/?since=yesterday").status_code == 400
    assert listed(client, "/?flagged=1") == [i["d"]] and listed(client, "/?edited=1") == [i["e"]]
    assert listed(client, "/?stage=verify") == [i["a"]] and i["a"] not in listed(client, "/?stage=explore")
    assert ">retrained</span>" in client.get("/?stage=verify").text  # the verify retraining, not graph scoring
    assert len(listed(client, "/?status=any&proposer=any&run=any")) == 6
    page = client.get("/?task=mqar").text  # a task with no candidates: shown, and picked in the dropdown
    assert "Leaderboard: mqar" in page and "<option selected>mqar</option>" in page and "No candidates match" in page
    assert len(listed(client, "/?task=all")) == 6 and '<option value="all" selected>' in client.get("/?task=all").text


def test_the_leaderboard_jumps_to_a_page_and_takes_a_page_size(client):
    assert "page 1 of 3" in client.get("/?size=25").text and len(ids_in(client.get("/?size=25").text)) == 25
    last = client.get("/?size=25&page=999").text  # past the end: the last page
    assert "page 3 of 3" in last and len(ids_in(last)) == 61 - 50
    assert 'name="page" type="number"' in last and "<option selected>25</option>" in last
    assert client.get("/?size=7").status_code == 400


def test_names_say_what_a_candidate_is_for_old_rows_too(rich):
    r, client = rich
    tag = r.run.rsplit("-", 1)[1]
    board = client.get("/").text
    assert f"Widen the stem and add a residual skip ({tag}/r1.0)" in board  # the LLM's intent
    assert f"d4-w16-k5-skip0-avg ({tag}/r1.1)" in board  # the architecture its code's docstring names
    assert "round 1 slot" not in board
    page = client.get(f"/candidate/{r.ids['b']}").text
    assert "Widen the stem" in page and "Recorded as “round 1 slot 0”" in page


def test_search_finds_pasted_names_code_and_identifiers(rich):
    r, client = rich
    for pasted, wanted in (
        ("macro:d4-w16-k5-skip0-avg", {r.ids["d"]}),  # d's name
        ("d4-w16-k5-skip0-avg", {r.ids["d"], r.ids["c"]}),  # and c's docstring
        ("d4-w16", {r.ids["d"], r.ids["c"]}),
        ("nn.Conv2d", {r.ids["a"]}),
        ("SKIP = True", {r.ids["c"]}),
    ):
        response = client.get("/search", params={"q": pasted})
        assert response.status_code == 200 and set(ids_in(response.text)) == wanted, pasted


def test_compare_sets_candidates_side_by_side(rich):
    r, client = rich
    a, b, e = r.ids["a"], r.ids["b"], r.ids["e"]
    page = client.get(f"/compare?ids={a},%23{b}&ids={e}").text
    assert f'Compare: <a href="/candidate/{a}">#{a}</a>' in page
    assert page.count('class="udiff"') + page.count("The code is identical") == 2  # each against the first
    assert f"/api/curves.json?ids={a},{b},{e}" in page
    assert '<td class="num best">0.9500</td>' in page  # a's verified score is the best of the row
    curves = client.get(f"/api/curves.json?ids={a},{b}").json()
    assert [s["label"].split(":")[0] for s in curves["series"]] == [f"#{a} a"] * 2 + [
        f"#{b} Widen the stem and add a residual skip ({r.run.rsplit('-', 1)[1]}/r1.0)"
    ]
    assert {p[2] for s in curves["series"] for p in s["points"]} == {a, b}  # a click opens the candidate
    assert "Tick rows on the" in client.get("/compare").text
    assert client.get(f"/compare?ids={a}").status_code == 400
    assert client.get(f"/compare?ids={a},999").status_code == 404
    assert client.get("/compare?ids=a,b").status_code == 400
    hint = client.get("/diff").text
    assert "Give two candidate ids" in hint and 'href="/compare"' in hint


def test_the_lineage_tree_shows_ancestors_and_descendants_with_scores(rich):
    r, client = rich
    i = r.ids
    page = client.get(f"/candidate/{i['b']}/lineage").text
    ancestry = page[page.index('id="ancestry"') : page.index('id="descent"')]
    descent = page[page.index('id="descent"') :]
    assert f'href="/candidate/{i["a"]}"' in ancestry and f'href="/candidate/{i["e"]}"' not in ancestry
    for name in ("c", "d", "e"):
        assert f'href="/candidate/{i[name]}"' in descent, name
    assert descent.count(f'href="/candidate/{i["e"]}"') == 2 and "(shown above)" in descent  # e has two parents
    assert "val accuracy 0.8500" in descent  # c's score on its node
    assert "1 ancestor(s) and 3 descendant(s)" in page
    assert f"/candidate/{i['b']}/lineage" in client.get(f"/candidate/{i['b']}").text
    assert client.get("/candidate/999/lineage").status_code == 404


def test_the_charts_data_best_so_far_by_fidelity_and_clickable_fronts(rich):
    r, client = rich
    i = r.ids
    best = client.get(f"/api/run/{r.run}/best.json").json()
    assert [s["label"] for s in best["series"]] == [
        "this run (openai/gpt-4o-mini), 5 epochs",
        "this run (openai/gpt-4o-mini), 15 epochs",
    ]
    assert best["series"][0]["points"][-1] == [6, 0.9, i["e"]]  # the corner at the last evaluation, held by e
    assert best["series"][1]["points"] == [[6, 0.95, i["a"]]]
    front = client.get(f"/api/pareto.json?run={r.run}").json()  # params <= 50000: c and d break it
    assert front["x"] == {"label": "parameters", "log": True} and front["y"]["label"] == "validation accuracy"
    feasible, broken, line = front["series"]
    assert {p[2] for p in broken["points"]} == {i["c"], i["d"]}
    assert [p[2] for p in line["points"]] == [i["a"]]  # 1k params at 0.95 (verified): it beats every other
    task_wide = client.get("/api/pareto.json?task=digits&x=latency_ms&y=val").json()
    assert len(task_wide["series"]) == 2 and task_wide["x"]["label"] == "latency (ms per batch)"
    assert [p[2] for p in task_wide["series"][1]["points"]] == [i["b"], i["e"]]  # a: its verify training has no latency
    bad = client.get("/api/pareto.json?x=code")
    assert bad.status_code == 400 and "x is one of" in bad.json()["error"]
    assert client.get("/api/run/nope/best.json").status_code == 404


def test_the_run_page_is_live_while_the_run_writes_and_charts_follow_its_objectives(rich):
    r, client = rich
    page = client.get(f"/run/{r.run}").text
    assert 'id="live" data-refresh="5"' in page and "● live" in page
    assert f"/api/run/{r.run}/best.json" in page and "x=val&amp;y=params" in page  # its objectives' axes
    assert "objectives</dt><dd>val:max, params:min; constraints params&lt;=50000" in page
    assert "data-refresh" not in client.get(f"/run/{r.stopped}").text
    pareto = client.get(f"/pareto?task=digits&run={r.run}&x=flops&y=val").text
    assert "/api/pareto.json?task=digits&amp;run=" in pareto and '<option value="flops" selected>' in pareto
    assert client.get("/pareto?x=weight").status_code == 400


def test_reviews_say_when_a_run_is_not_running_and_show_decided_code(rich):
    r, client = rich
    page = client.get("/reviews").text
    assert f'Not running now: <a href="/run/{r.stopped}">' in page and "goes on by itself" not in page
    assert f'<a href="/reviews/{r.decided}">not recorded yet: its code</a>' in page
    review = client.get(f"/reviews/{r.decided}").text
    assert '<span class="n">y</span>' in review and "the run picks the decision up" in review
    done = client.post(f"/reviews/{r.pending}", data={"decision": "approved", "by": "cy"}).text
    assert f"Run {r.stopped} is interrupted: the decision is kept" in done and f"--resume {r.stopped}" in done
    edited = client.get(f"/candidate/{r.ids['e']}").text
    assert "edited" in edited


def test_a_missing_archive_is_refused_not_created(tmp_path):
    missing = tmp_path / "typo.db"
    with pytest.raises(UsageError, match="no archive at"):
        create_app(missing)
    result = CliRunner().invoke(cli_app, ["serve", "--archive", str(missing)])
    assert result.exit_code == 2 and "no archive at" in result.output
    assert not missing.exists()


def test_the_report_reads_cleanly_and_keeps_no_local_paths(rich, tmp_path):
    r, _ = rich
    html = write_report(r.path, r.run, tmp_path / "report").read_text()
    assert " ," not in html and "trained, 1 invalid" in html
    assert "/home/ada" not in html and str(tmp_path) not in html and "&#34;a.db&#34;" in html
    assert shareable({"paths": ["/x/y/net.py"], "task": "/t/task.toml", "model": "openai/gpt"}) == {
        "paths": ["net.py"],
        "task": "task.toml",
        "model": "openai/gpt",
    }


# -- what schemas 8 and 9 added: the notebook, several models, smoke measurements, screening, fronts ------------

PROXIES = {"synflow": 12.3, "grad_norm": 0.4, "naswot": 220.1}


@dataclass
class Modern:
    path: object
    run: str  # two configured models, openai/a and ollama/b; openai/old proposed too, before it was dropped
    ids: dict  # name -> candidate id


@pytest.fixture(scope="module")
def modern_template(tmp_path_factory):
    """An LLM run with several models (one since dropped, one whose server never answered once), a notebook, smoke
    measurements with proxies, a verify retraining, a screened candidate, and ten trained candidates for a
    predictor."""
    path = tmp_path_factory.mktemp("modern") / "archive.db"
    config = {"models": ["openai/a", "ollama/b@http://127.0.0.1:11434#B_KEY"], "notebook_every": 2}
    with Archive(path) as db:
        run = db.start_run("run", "digits", "openai/a", config)
        ids = {}

        def add(name, val, params, model=None, cost=0.0, seconds=1.0, status="trained", **extra):
            calls = []
            if model:
                call = {"run_id": run, "purpose": "propose", "model": model, "status": "ok", "attempt": 1}
                calls = [db.record_llm_call({**call, "cost_usd": cost, "latency_s": seconds})]
            row = candidate(name, f"m-{name}", run_id=run, params=params, model=model, **extra)
            if model:
                row.update(proposer="llm", parents=[ids["seed"]])
            smoke = {
                "latency_ms": params / 500,
                "peak_memory_mb": 40.0,
                "proxies": {**PROXIES, "synflow": params / 100},
            }
            scores = {**evaluation(val, val - 0.02), "params": params, **smoke} if status == "trained" else None
            ids[name] = db.record({**row, "status": status}, scores, llm_calls=calls)

        add("seed", 0.50, 1_000)
        add("a-better", 0.60, 2_000, model="openai/a", cost=0.01, seconds=2.0)
        add("a-worse", 0.40, 3_000, model="openai/a", cost=0.01, seconds=3.0)
        add("b-invalid", None, 4_000, model="ollama/b", seconds=10.0, status="invalid", reason="[imports] os")
        add("old-better", 0.70, 5_000, model="openai/old", cost=0.02, seconds=4.0)
        for i in range(6):
            add(f"more-{i}", 0.45 + 0.05 * i, 6_000 + 1_000 * i)
        db.record_llm_call(  # ollama/b's server timed out: no candidate, still a failed proposal of it
            {
                "run_id": run,
                "purpose": "propose",
                "model": "ollama/b",
                "status": "timeout",
                "attempt": 1,
                "latency_s": 30,
            }
        )
        verify = {**evaluation(0.65, 0.64, epochs=15), "stage": "verify", "latency_ms": 4.2, "peak_memory_mb": 41.0}
        db.add_evaluation(ids["a-better"], "digits", {**verify, "proxies": PROXIES, "timings": {"proxy_seconds": 0.05}})
        ids["screened"] = db.record(
            candidate("screened", "m-screened", run_id=run, status="screened", params=9_000, island=2, prediction=0.42)
        )
        db.add_note(
            run, "digits", 2, f"#{ids['a-better']} beat its parent; <b>wider</b> helps, not #999.", [ids["a-better"]]
        )
        db.add_note(
            run, "digits", 4, f"Since #{ids['a-worse']}: depth hurts (#{ids['a-worse']} again).", [ids["a-worse"]]
        )
    return Modern(path, run, ids)


@pytest.fixture
def modern(modern_template, tmp_path):
    path = tmp_path / "modern.db"
    shutil.copy(modern_template.path, path)
    app = create_app(path)
    with Browser(app) as c:
        yield Modern(**{**modern_template.__dict__, "path": path}), c, app


def test_the_run_page_shows_its_notebook_newest_first_citations_linked(modern):
    m, client, _ = modern
    page = client.get(f"/run/{m.run}").text
    notebook = page[page.index('id="notebook"') :]
    assert notebook.index("After 4 candidates") < notebook.index("After 2 candidates")  # newest first
    better, worse = m.ids["a-better"], m.ids["a-worse"]
    assert f'<a href="/candidate/{better}">#{better}</a> beat its parent' in notebook
    assert notebook.count(f'<a href="/candidate/{worse}">#{worse}</a>') == 2
    assert "not #999." in notebook and 'href="/candidate/999"' not in notebook  # cited ids only
    assert "&lt;b&gt;wider&lt;/b&gt;" in notebook  # the LLM's text is escaped
    assert "show every entry" not in notebook


def test_a_long_notebook_shows_its_newest_entries_and_links_to_all(modern, monkeypatch):
    m, client, _ = modern
    monkeypatch.setattr("agentarch.web.pages.runs.NOTES_SHOWN", 1)
    page = client.get(f"/run/{m.run}").text
    assert "After 4 candidates" in page and "After 2 candidates" not in page
    assert "The newest 1 of 2 entries" in page and f'href="/run/{m.run}?notes=all#notebook"' in page
    every = client.get(f"/run/{m.run}?notes=all").text
    assert "After 4 candidates" in every and "After 2 candidates" in every and "show every entry" not in every


def test_a_run_without_notes_or_models_says_so_and_shows_no_model_table(client, sample):
    page = client.get(f"/run/{sample.rea_run}").text
    assert "No entries yet" in page and 'id="model-table"' not in page


def test_the_run_page_has_a_table_per_model_from_the_bandits_own_summary(modern):
    m, client, _ = modern
    page = client.get(f"/run/{m.run}").text
    table = page[page.index('id="model-table"') : page.index("</table>", page.index('id="model-table"'))]
    rows = [re.sub(r"<[^>]+>", "|", row) for row in table.split("<tr>")[2:]]
    cells = [[c.strip() for c in row.split("|") if c.strip()] for row in rows]
    # configured models first, in order; then openai/old, no longer configured
    assert [c[0] for c in cells] == ["openai/a", "ollama/b", "openai/old"]
    assert cells[0][1:] == ["2", "2", "100%", "1", "$0.0200", "5.0", "5"]  # 0.1 gained over $0.02
    assert cells[1][1:] == ["2", "0", "0%", "0", "$0.0000", "40.0", "0"]  # the invalid one and the timeout
    assert cells[2][1] == "(no longer one of the run's models)" and cells[2][-1] == "10"


def test_the_models_a_run_was_configured_with_old_and_new_configs():
    assert [a.name for a in runview.configured_arms({"model": "openai/gpt-4o-mini"})] == ["openai/gpt-4o-mini"]
    both = runview.configured_arms({"model": "x", "models": ["openai/a", "ollama/b@http://h:1#K", "openai/a"]})
    assert [(a.name, a.api_base) for a in both] == [("openai/a", None), ("ollama/b", "http://h:1")]
    assert runview.configured_arms({"model": None}) == [] and runview.configured_arms({}) == []
    assert [a.name for a in runview.configured_arms({"models": ["has space"]})] == ["has space"]  # kept as written


def test_the_candidate_page_explains_its_smoke_measurements_and_marks_a_verify_evaluation(modern):
    m, client, _ = modern
    page = client.get(f"/candidate/{m.ids['a-better']}").text
    smoke_part = page[page.index('id="smoke"') : page.index('id="analysis"')]
    for name in ("synflow", "grad_norm", "naswot", "proxy seconds", "latency", "peak memory"):
        assert f"<dt>{name}</dt>" in smoke_part, name
    assert "needs no data" in smoke_part and "real training data" in smoke_part and "ReLU-like" in smoke_part
    table = smoke_part[smoke_part.index('id="smoke-table"') :]
    assert '<td>explore</td><td class="num">4.0</td>' in table and '<td class="num">20</td>' in table  # synflow
    assert '<td>verify</td><td class="num">4.2</td>' in table and "0.050" in table and "220.1" in table
    evaluations = page[page.index('id="evaluations"') : page.index('id="smoke"')]
    assert 'verify <span class="badge verify"' in evaluations and "<td>explore</td>" in evaluations
    assert "ms per batch on the training device" in page and "<dt>peak memory</dt><dd>41.0 MB" in page
    bare = client.get(f"/candidate/{m.ids['b-invalid']}").text
    assert "No smoke measurements recorded" in bare


def test_a_screened_candidate_says_why_it_did_not_train_with_its_island_and_prediction(modern):
    m, client, _ = modern
    page = client.get(f"/candidate/{m.ids['screened']}").text
    assert 'id="screened"' in page and "recorded without training" in page
    assert "ranked it below the other proposals" in page and "0.4200" in page
    assert "<dt>island</dt><dd>2 " in page and "<dt>predicted validation accuracy</dt><dd>0.4200" in page
    assert 'id="screened"' not in client.get(f"/candidate/{m.ids['seed']}").text
    assert "screened" in client.get("/?status=screened").text and m.ids["screened"] in ids_in(
        client.get("/?status=screened").text
    )


def test_the_predictor_page_says_when_there_are_too_few_candidates(client, sample):
    page = client.get("/predictor?task=digits")
    assert page.status_code == 200
    assert "Too few candidates for a predictor" in page.text and "needs at least 8" in page.text
    assert "Spearman" not in page.text.split('id="quality"')[1].split("</p>")[0]
    assert 'href="/predictor?task=digits"' in client.get("/").text


def test_the_predictor_page_gives_held_out_correlations_once_per_trained_count(modern):
    m, client, app = modern
    board = client.get("/").text
    assert "How well the task&#39;s predictor ranks" in board  # nothing computed by a leaderboard
    page = client.get("/predictor?task=digits").text
    summary = re.search(r"predictor: Spearman (-?\d\.\d\d), Kendall (-?\d\.\d\d) on 10 held-out candidates", page)
    assert summary, page[page.index('id="quality"') :][:300]
    assert "log_params" in page and "synflow" in page  # the features it learnt from
    assert '<input name="q" value=""' in page  # the search box stays empty
    assert summary.group(0) in client.get("/").text and summary.group(0) in client.get(f"/run/{m.run}").text
    with Archive(m.path) as db:
        assert app.state.qualities.kept(db, "digits") is not None
        db.record(candidate("late", "m-late", params=123), evaluation(0.61, 0.6))
        assert app.state.qualities.kept(db, "digits") is None  # a new trained candidate: worked out again on request
    assert "on 11 held-out candidates" in client.get("/predictor?task=digits").text


def fronts_in(html):
    """The front column of a leaderboard sorted by front, in order."""
    return re.findall(r'<td class="status-\w+">\w+</td>\s*<td class="num">([^<]*)</td>', html)


def test_the_leaderboard_sorts_by_pareto_front_over_the_task_or_the_runs_objectives(rich):
    r, client = rich
    i = r.ids
    page = client.get("/?sort=front").text  # score against size: a beats all; then b and e; then c; then d
    assert ids_in(page) == [i["a"], i["e"], i["b"], i["c"], i["d"], i["untrained"]]
    assert fronts_in(page) == ["1", "2", "2", "3", "4", "–"]
    assert "Pareto standing over val:max, params:min (score against size)" in page and "front ▼" in page
    worst = client.get("/?sort=front&order=asc").text
    assert ids_in(worst) == [i["d"], i["c"], i["e"], i["b"], i["a"], i["untrained"]]  # unranked last either way
    run = client.get(f"/?run={r.run}&sort=front").text  # the run's own: params<=50000 rules c and d out
    assert ids_in(run) == [i["a"], i["e"], i["b"], i["untrained"], i["d"], i["c"]]
    assert fronts_in(run) == ["1", "2", "2", "–", "–", "–"]
    assert f"run {r.run}&#39;s objectives; constraints params&lt;=50000" in run
    assert ids_in(client.get("/?sort=front&params_max=30k").text) == [i["a"], i["b"]]  # filters still apply
    exported = client.get("/?sort=front&format=json").json()
    assert [(row["id"], row["front"]) for row in exported][:2] == [(i["a"], 1), (i["e"], 2)]
    assert client.get("/?task=all&sort=front").status_code == 400
    assert 'href="/?sort=front&amp;order=desc">Sort by Pareto front</a>' in client.get("/").text
