"""The web UI and the static report against a real archive file: pages, filters, reviews, export, access."""

import csv
import io
import json
import re
import shutil
from dataclasses import dataclass

import pytest
from starlette.testclient import TestClient

from agentarch.archive import Archive
from agentarch.queries import RunHistory
from agentarch.ranking import running_best
from agentarch.report import write_report
from agentarch.web import create_app, serve
from agentarch.web.plots import best_so_far_lines, mean_of_runs, pareto_front

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
    with TestClient(create_app(sample.path)) as c:
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
    response = client.post(f"/reviews/{sample.pending}", data={"decision": "approved", "by": "ada"})
    assert response.status_code == 200 and "Review queue (1 pending)" in response.text  # redirected to the queue
    row = review_row(sample, sample.pending)
    assert row["status"] == "approved" and row["decided_by"] == "ada"
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
    bad = client.get('/search?q="unclosed')
    assert bad.status_code == 400 and "quote phrases" in bad.text


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


def test_a_token_is_needed_for_every_request_and_form(sample):
    app = create_app(sample.path, token="s3cret")
    with TestClient(app) as anonymous:
        assert anonymous.get("/").status_code == 401
        assert anonymous.get("/?token=wrong").status_code == 401
        assert anonymous.get("/static/style.css").status_code == 401
        assert anonymous.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert anonymous.post(f"/reviews/{sample.pending}", data={"decision": "approved"}).status_code == 401
    with TestClient(app) as browser:
        first = browser.get("/reviews?token=s3cret")
        assert first.status_code == 200 and 'name="token" value="s3cret"' in first.text
        assert "httponly" in first.headers["set-cookie"].lower()
        assert browser.get("/runs").status_code == 200  # the cookie
        # the cookie alone does not authorize a write: the form must carry the token
        assert browser.post(f"/reviews/{sample.pending}", data={"decision": "approved"}).status_code == 401
        assert review_row(sample, sample.pending)["status"] == "pending"
        ok = browser.post(f"/reviews/{sample.pending}", data={"decision": "approved", "token": "s3cret"})
        assert ok.status_code == 200 and review_row(sample, sample.pending)["status"] == "approved"


def test_serve_refuses_a_public_address_without_a_token(sample):
    with pytest.raises(ValueError, match="without a token"):
        serve(sample.path, host="0.0.0.0")
    with pytest.raises(ValueError, match="without a token"):
        serve(sample.path, host="192.168.1.5", token="")


def test_report_writes_index_and_plots(sample, tmp_path):
    index = write_report(sample.path, sample.llm_run, tmp_path / "report")
    assert index == tmp_path / "report" / "index.html"
    html = index.read_text()
    assert sample.llm_run in html and "depthwise.py" in html and "$0.0123" in html
    for name in ("best_so_far.png", "pareto.png", f"curve-{sample.child}.png"):
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG), name
        assert f'src="{name}"' in html
    assert "<link" not in html  # self-contained: the stylesheet is inlined


def test_plot_helpers():
    assert running_best([None, 0.5, 0.4, None, 0.7], "max") == [None, 0.5, 0.5, 0.5, 0.7]
    assert running_best([None, 0.5, 0.4, None, 0.7], "min") == [None, 0.5, 0.4, 0.4, 0.4]  # an MSE goes down
    points = [(10, 0.5), (100, 0.9), (50, 0.4), (10, 0.6), (200, 0.8)]
    assert pareto_front(points, "max") == [(10, 0.6), (100, 0.9)]
    assert pareto_front(points, "min") == [(10, 0.5), (50, 0.4)]
    # a baseline's line: the mean over its runs, a run that stopped early held at its final best
    assert mean_of_runs([[None, 0.5, 0.7], [0.2, 0.3]]) == [0.2, 0.4, 0.5]
    history = RunHistory("llm", [0.5, None, 0.6], {"rea": [[0.4]], "tpe": [[None, 0.5, 0.7], [0.2, 0.3]]})
    assert best_so_far_lines(history) == [
        ("this run (llm)", [0.5, 0.5, 0.6]),
        ("rea (1 run, mean)", [0.4]),
        ("tpe (2 runs, mean)", [0.2, 0.4, 0.5]),
    ]
    lower = RunHistory("llm", [0.5, None, 0.6, 0.3], {"tpe": [[0.4, 0.2]]}, metric="mse", direction="min")
    assert best_so_far_lines(lower) == [("this run (llm)", [0.5, 0.5, 0.5, 0.3]), ("tpe (1 run, mean)", [0.4, 0.2])]
