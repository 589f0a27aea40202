"""One base for every error a user can fix, one CLI handler for it, and bugs left as bugs."""

import pytest
from typer.testing import CliRunner

from agentarch import cli
from agentarch.config import ConfigError
from agentarch.errors import AgentarchError, UsageError
from agentarch.isolation.policy import SandboxError
from agentarch.isolation.protocol import ProtocolError
from agentarch.llm.client import LLMError
from agentarch.llm.prompts import ExtractError, PromptError
from agentarch.loop.run import RunError
from agentarch.search.spaces import SpaceError
from agentarch.store.handle import ArchiveError
from agentarch.tasks.tabular import TableError
from agentarch.tasks.task import TaskError


@pytest.mark.parametrize(
    "error",
    [
        ArchiveError,
        ConfigError,
        LLMError,
        ExtractError,
        PromptError,
        ProtocolError,
        RunError,
        SandboxError,
        SpaceError,
        TableError,
        TaskError,
        UsageError,
    ],
)
def test_every_project_error_is_an_agentarch_error(error):
    assert issubclass(error, AgentarchError)


def test_a_users_problem_from_deep_inside_a_command_is_exit_2_with_its_message(monkeypatch, tmp_path):
    def deep(name):
        raise TaskError(f"unknown task {name!r}; known tasks: digits")

    monkeypatch.setattr("agentarch.cli.run.get_task", deep)
    result = CliRunner().invoke(cli.app, ["prompt", "--task", "nope", "--archive", str(tmp_path / "a.db")])
    assert result.exit_code == 2 and "unknown task 'nope'" in result.output


def test_a_bug_stays_a_traceback_not_a_usage_error(monkeypatch, tmp_path):
    def buggy(name):
        raise ValueError("a programming error")

    monkeypatch.setattr("agentarch.cli.run.get_task", buggy)
    result = CliRunner().invoke(cli.app, ["prompt", "--task", "digits", "--archive", str(tmp_path / "a.db")])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
