"""`agentarch dataset --out FILE`: the archive as supervised fine-tuning data (issue 28), one chat per line.

Its own module because it is the one command that turns the archive into training data for the generator; the work
(which candidates, the chat format, the scrubbing of credentials and local paths) is `agentarch.store.dataset`.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from agentarch import formats
from agentarch.cli.common import ArchiveOpt, archive_path, fail, open_archive, out


def dataset_command(
    out_file: Annotated[Path, typer.Option("--out", "-o", help="the JSONL file to write (replaced whole)")],
    archive: ArchiveOpt = None,
    only_task: Annotated[Optional[str], typer.Option("--task", "-t", help="only this task's candidates")] = None,
    min_score: Annotated[
        Optional[float],
        typer.Option(
            "--min-score",
            help="only candidates whose validation score is at least this good (in the "
            "task's direction: at most this for a lower-is-better metric)",
        ),
    ] = None,
    since: Annotated[
        Optional[str],
        typer.Option(
            "--since",
            metavar="DATE",
            help="only candidates created on or after DATE (ISO: 2026-12-01 or 2026-12-01T18:00)",
        ),
    ] = None,
    improved: Annotated[
        bool,
        typer.Option(
            "--improved/--all",
            help="only candidates that improved on their parent (default), or every trained LLM proposal",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print what was written as one JSON object")] = False,
) -> None:
    """Write the archive's LLM proposals as chat fine-tuning data: per line {"messages": [system, user, assistant]},
    the prompt each proposal was sent and the answer it gave, for the candidates that trained and improved on their
    parent (the format TRL, Axolotl and OpenAI's fine-tuning read). Credentials and local paths are scrubbed.

    Examples:

        agentarch dataset --out digits.jsonl --task digits
        agentarch dataset --out all.jsonl --all --since 2026-12-01
    """
    from agentarch.store import dataset

    path = archive_path(archive)
    if not path.is_file():
        raise fail(f"no archive at {path}; pass --archive with the archive to read")
    when = _date(since) if since is not None else None
    with open_archive(path) as db:
        done = dataset.write(db, out_file, task=only_task, min_score=min_score, since=when, improved=improved)
    if as_json:
        print(json.dumps({"out": str(done.path), "examples": done.examples, "left_out": done.left_out}))
        return
    out.print(
        formats.line(
            f"{done.examples} examples written to {done.path}; {done.left_out} trained LLM proposals left out by the "
            "filters"
        )
    )


def _date(text: str) -> date | datetime:
    """--since as a date or a date and time, or the form that works."""
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"--since {text!r} is not a date; write it as 2026-12-01 or 2026-12-01T18:00") from None
