"""`agentarch` starts without the heavy library: its help, every command's help and an argument error import none of
torch, ONNX, the loop's LangGraph, the LLM client, the predictor's scipy and scikit-learn, the web's matplotlib and
starlette, the archive's sqlite_utils or Ray (agentarch/cli/__init__.py says why), and the help still lists every
command and every option.

Each start-up check runs in a fresh interpreter, since this test process has long imported all of it. How long the
start takes is measured in benchmarks/cli_startup.py, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from agentarch import cli
from tests.conftest import REPO
from tests.test_cli_options import commands

HEAVY = frozenset(
    {
        "torch",
        "onnx",
        "onnxruntime",
        "langgraph",
        "langchain_core",
        "litellm",
        "openai",
        "httpx",
        "matplotlib",
        "scipy",
        "sklearn",
        "optuna",
        "ray",
        "sqlite_utils",
        "starlette",
        "uvicorn",
    }
)
"""Top-level packages a command imports when it runs, never to parse its flags or print its help."""

LEAF_HELPS = [[*path, "--help"] for path, _ in commands()]
GROUP_HELPS = [["--help"], *([name, "--help"] for name in ("archive", "tasks", "knowledge"))]
ARGUMENT_ERRORS = [["run", "--epochs", "many"], ["baseline", "--budget", "0"], ["archive", "show", "not-an-id"]]


def heavy_after(argvs: list[list[str]]) -> tuple[list[int], set[str]]:
    """Run `agentarch ARGV` for each of `argvs` in one fresh interpreter; their exit codes, and the heavy packages
    imported by the end."""
    script = (
        "import json, sys\n"
        "from agentarch.cli import app\n"
        "codes = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        app(argv, prog_name='agentarch')\n"
        "    except SystemExit as e:\n"
        "        codes.append(e.code or 0)\n"
        "print(json.dumps([codes, sorted({name.split('.')[0] for name in sys.modules})]), file=sys.__stderr__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(argvs)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    codes, loaded = json.loads(done.stderr.splitlines()[-1])
    return codes, HEAVY & set(loaded)


def test_importing_the_cli_imports_no_heavy_package():
    _, heavy = heavy_after([])
    assert not heavy, f"`import agentarch.cli` imports {sorted(heavy)}: import it inside the command that needs it"


def test_every_help_and_an_argument_error_import_no_heavy_package():
    codes, heavy = heavy_after(GROUP_HELPS + LEAF_HELPS + ARGUMENT_ERRORS)
    assert codes == [0] * (len(GROUP_HELPS) + len(LEAF_HELPS)) + [2] * len(ARGUMENT_ERRORS)
    assert not heavy, f"printing help or a usage error imports {sorted(heavy)}"


def test_a_command_imports_what_it_runs_with(tmp_path):
    """The other side of the rule: the work still happens, with its library, once a command runs."""
    not_an_archive = tmp_path / "a.db"
    not_an_archive.write_text("not SQLite")
    codes, heavy = heavy_after([["archive", "ls", "--archive", str(not_an_archive)]])
    assert codes == [2] and "sqlite_utils" in heavy


def test_python_m_agentarch_cli_is_the_same_app():
    done = subprocess.run(
        [sys.executable, "-m", "agentarch.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    for name in typer.main.get_command(cli.app).commands:
        assert f" {name} " in done.stdout, name


@pytest.mark.parametrize("argv", GROUP_HELPS, ids=" ".join)
def test_a_groups_help_lists_each_of_its_commands(argv):
    group = typer.main.get_command(cli.app)
    for word in argv[:-1]:
        group = group.commands[word]
    shown = CliRunner().invoke(cli.app, argv, env={"COLUMNS": "1000"}).output
    for name, command in group.commands.items():
        assert f" {name} " in shown, f"{' '.join(argv)} does not list {name}"
        summary = (command.help or "").strip().splitlines()[0]
        assert summary.split(":")[0] in shown, f"{' '.join(argv)} does not give {name}'s summary"


@pytest.mark.parametrize(("path", "command"), commands(), ids=lambda p: " ".join(p) if isinstance(p, tuple) else "")
def test_a_commands_help_lists_each_of_its_options_and_arguments(path, command):
    result = CliRunner().invoke(cli.app, [*path, "--help"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        shown = param.opts[0] if param.param_type_name == "option" else (param.metavar or param.name)
        assert shown in result.output, f"agentarch {' '.join(path)} --help does not show {shown}"
