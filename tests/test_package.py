"""The package works installed from a wheel, not only from a checkout: prompts and the runner ship inside it.

The wheel is built from this checkout and installed with no dependencies into a fresh virtual
environment, which borrows this environment's installed dependencies through a path entry (so the
test needs no download); commands then run from a folder outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_a_wheel_installs_and_runs_prompt_and_eval(tmp_path, cache_dir, digits):
    source, wheels = tmp_path / "source", tmp_path / "wheels"  # a copy: the build writes build/ beside the sources
    for folder in ("agentarch", "sandbox", "prompts", "archive/seeds"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / file, source / file)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("agentarch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "agentarch/runner/runner.py" in names and "agentarch/runner/landlock.py" in names
    assert "agentarch/prompt_templates/system.j2" in names and "agentarch/prompt_templates/tasks/digits.j2" in names
    assert "agentarch/prompt_templates/_knowledge.j2" in names  # the knowledge block, and the starter base:
    assert "agentarch/prompt_templates/knowledge/residual-connections.md" in names
    assert "agentarch/seeds/image/cnn.py" in names and "agentarch/seeds/lm/gpt.py" in names  # best-of-n's examples
    assert not any(name.startswith(("sandbox/", "prompts/")) for name in names), "generic top-level names installed"

    venv = tmp_path / "venv"  # without a pip of its own (seconds of ensurepip): this pip installs into it (--python)
    subprocess.run(
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)], check=True
    )
    site = next(venv.glob("lib/python3*/site-packages"))
    here = next(p for p in sys.path if p.endswith("site-packages"))
    (site / "borrowed-dependencies.pth").write_text(here + "\n")  # a path line: torch etc., not the editable finder
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    subprocess.run([*pip, "install", "--no-deps", "--quiet", str(wheel)], check=True, capture_output=True)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AGENTARCH_CACHE_DIR": str(cache_dir),
        "AGENTARCH_THREADS": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    where = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import agentarch.runner, agentarch.llm.prompts as p; print(agentarch.runner.__file__); print(p.PROMPTS_DIR)",
        ],
        cwd=outside,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(path.startswith(str(site)) for path in where), where

    prompt = subprocess.run(
        [venv / "bin" / "agentarch", "prompt", "--task", "digits"], cwd=outside, env=env, capture_output=True, text=True
    )
    assert prompt.returncode == 0, prompt.stderr[-2000:]
    assert "neural-architecture researcher" in prompt.stdout
    knowledge = [venv / "bin" / "agentarch", "--knowledge", "starter", "--archive", str(tmp_path / "k.db")]
    shown = subprocess.run(
        [knowledge[0], "prompt", "--task", "digits", *knowledge[1:]],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0 and "Source: knowledge/" in shown.stdout, shown.stderr[-2000:]  # the starter notes
    roots = subprocess.run(
        [knowledge[0], "knowledge", "ls", "--json", *knowledge[3:]],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
    )
    assert json.loads(roots.stdout)["root"].startswith(str(site)), roots.stdout  # read from the installed package

    seed = REPO / "archive" / "seeds" / "image" / "mlp.py"
    done = subprocess.run(
        [
            venv / "bin" / "agentarch",
            "eval",
            str(seed),
            "--task",
            "digits",
            "--epochs",
            "1",
            "--archive",
            str(tmp_path / "a.db"),
            "--json",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "trained" and result["metrics"]["test_accuracy"] > 0.5, result
