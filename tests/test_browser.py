"""The web UI in a real browser: headless Chromium (Debian's chromium and chromedriver) driven by Selenium.

A paused `agentarch run --review` waits on two candidates; a person approves one and rejects the other
by filling the review queue's forms and clicking its buttons in `agentarch serve`, and the run goes on
by itself. Screenshots of every page land in test-artifacts/screenshots/ (CI keeps them).
"""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agentarch.archive import Archive
from tests.conftest import REPO, requires_bubblewrap

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
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


def _chrome() -> "webdriver.Chrome":
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--hide-scrollbars",
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


def _decide(driver, review_id: int, decision: str, reason: str | None = None) -> None:
    """Fill and send the `decision` form of one pending review, then wait for the queue to come back without it."""
    section = driver.find_element(By.ID, f"review-{review_id}")
    form = section.find_element(By.XPATH, f".//form[input[@name='decision' and @value='{decision}']]")
    by = form.find_element(By.NAME, "by")
    by.clear()
    by.send_keys(REVIEWER)
    if reason is not None:
        form.find_element(By.NAME, "reason").send_keys(reason)
    button = form.find_element(By.TAG_NAME, "button")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    WebDriverWait(driver, 20).until(EC.staleness_of(section))  # the POST redirected back to a fresh /reviews
    WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/reviews"))
    _check_page(driver, "Reviews")
    assert not driver.find_elements(By.ID, f"review-{review_id}")


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
                    "--batch",
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
