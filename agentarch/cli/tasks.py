"""`agentarch tasks` and `agentarch tasks check`: list the tasks there are, and validate a task file.

Its own module because it is a sub-app about the tasks themselves, before any candidate is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from agentarch import formats
from agentarch.cli.common import App, fail, out, print_table, setting, settings_or_exit
from agentarch.errors import AgentarchError
from agentarch.tasks.builtin import TASKS
from agentarch.tasks.task import Task

tasks_app = App(help="The tasks: built-in ones, task files in ./tasks/, and tasks installed packages publish.")


@tasks_app.callback(invoke_without_command=True)
def tasks_command(ctx: typer.Context) -> None:
    """List the tasks, with their input shapes and default budgets (`agentarch tasks check FILE` checks a task file)."""
    from agentarch.tasks import taskfiles
    from agentarch.tasks.registry import get_task

    if ctx.invoked_subcommand is not None:
        return
    table = Table(title="tasks")
    for col in ("name", "kind", "in_shape", "classes", "metric", "epochs", "max params", "needs --data-dir"):
        table.add_column(col, overflow="fold")  # a narrow terminal folds a cell; it never cuts one to "…"
    found: list[Task | str] = [*TASKS.values(), *taskfiles.entry_point_names(), *map(str, taskfiles.listed_files())]
    for entry in found:
        try:
            t = entry if isinstance(entry, Task) else get_task(entry)
        except AgentarchError as e:  # one broken file must not hide the others
            table.add_row(
                formats.untrusted(entry), formats.untrusted("error", style="red"), formats.untrusted(_first_line(e))
            )
            continue
        # a task file writes its name, kind and metric: each cell is text, never markup
        table.add_row(
            *map(
                formats.untrusted,
                (
                    t.name if isinstance(entry, Task) else f"{t.name} ({entry})",
                    t.kind,
                    t.in_shape,
                    t.num_classes,
                    t.metric,
                    t.epochs,
                    formats.count(t.max_params),
                    "yes" if t.needs_data_dir else "no",
                ),
            )
        )
    print_table(table)


@tasks_app.command("check")
def tasks_check_command(
    path: Annotated[Path, typer.Argument(help="the task file (TOML)", show_default=False)],
    cache_dir: Annotated[Optional[Path], setting("cache_dir", "--cache-dir")] = None,
    split_seed: Annotated[Optional[int], setting("split_seed", "--split-seed")] = None,
) -> None:
    """Validate a task file, prepare its data, and say what a candidate will get; trains nothing.

    agentarch tasks check examples/shapes/task.toml
    """
    from agentarch.tasks import taskcheck

    settings = settings_or_exit(cache_dir=cache_dir, split_seed=split_seed)
    if not path.is_file():
        raise fail(f"no such file: {path}")
    for key, value in taskcheck.check(path, settings.cache_dir, settings.split_seed):
        out.print(formats.line((key, "bold"), ": ", value), soft_wrap=True)


def _first_line(error: Exception) -> str:
    lines = str(error).splitlines()
    return lines[0] if lines else type(error).__name__
