"""Finding a task by name: a built-in task, a task file, or a task an installed package publishes.

Its own module because it asks both the built-in tasks and task files in turn, and task files know the built-in
tasks (a task file may not take a built-in name), so the lookup sits above both.
"""

from __future__ import annotations

from agentarch.tasks import taskfiles
from agentarch.tasks.builtin import TASKS
from agentarch.tasks.task import Task, TaskError


def get_task(name: str) -> Task:
    """The built-in task called `name`, a task file (a path ending in .toml), or a task an installed
    package publishes under the `agentarch.tasks` entry points; the error lists the known ones."""
    if name in TASKS:
        return TASKS[name]
    found = taskfiles.resolve(name)
    if found is None:
        raise TaskError(
            f"unknown task {name!r}; known tasks: {', '.join([*TASKS, *taskfiles.entry_point_names()])}, "
            "or the path of a task file (.toml)"
        )
    return found
