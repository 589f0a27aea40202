"""`agentarch knowledge add|ls|search`: the archive's knowledge base, the notes each proposal's prompt reads from.

Its own module because it is a sub-app about the notes themselves (agentarch.store.knowledge does the work): add a
folder, see what is indexed, and try the search a proposal would make before a run depends on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from agentarch import formats
from agentarch.cli.common import App, ArchiveOpt, archive_path, err, open_archive, out, print_table

if TYPE_CHECKING:
    from agentarch.store import knowledge

knowledge_app = App(
    help="The knowledge base: Markdown or text notes (papers' ideas, a lab's lessons) indexed in the archive, which "
    "`agentarch run --knowledge DIR` shows to each proposal, the entries most relevant to its parent, the latest "
    "analysis and the notebook. Start with the shipped starter notes: `agentarch knowledge add starter`.",
    no_args_is_help=True,
)

PREVIEW_CHARS = 160
"""How much of an entry's text `search` shows in its table (--full: all of it)."""


@knowledge_app.command("add")
def knowledge_add(
    path: Annotated[
        Path,
        typer.Argument(
            help="a folder of notes (Markdown .md split by heading, text .txt by paragraph; hidden files skipped), "
            "one note file, or 'starter' for the notes shipped with agentarch",
            show_default=False,
        ),
    ],
    archive: ArchiveOpt = None,
) -> None:
    """Index a folder (or file) of notes into the archive's knowledge base, or refresh it.

    Adding a folder again reads only what changed: a new or edited file is split into entries again, a removed
    file's entries are dropped. A run with --knowledge DIR does the same when it starts and, while it runs, at
    most once a minute. PDFs are not read (no PDF text extractor is installed): convert them to text first.

        agentarch knowledge add starter

        agentarch knowledge add notes/ --archive runs/a.db
    """
    from agentarch.store import knowledge

    with open_archive(archive_path(archive)) as db:
        done = knowledge.add(db, path)
    out.print(
        formats.line(
            (str(done.root), "bold"),
            f": {done.files} files, {done.entries} entries; {len(done.reindexed)} read again, "
            f"{len(done.removed)} removed",
        ),
        soft_wrap=True,
    )
    for skipped, why in done.skipped:
        err.print(formats.line(("skipped ", "yellow"), skipped, f": {why}"), soft_wrap=True)


@knowledge_app.command("ls")
def knowledge_ls(
    archive: ArchiveOpt = None,
    show_entries: Annotated[
        bool, typer.Option("--entries", help="list every entry (id, source, title, size) instead of the folders")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List the folders and files added, with their files and entries now indexed (--entries: every entry)."""
    from agentarch.store import knowledge

    with open_archive(archive_path(archive)) as db:
        rows: list[dict[str, Any]] = (
            [_entry_row(entry) for entry in knowledge.entries(db)] if show_entries else knowledge.roots(db)
        )
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    if show_entries:
        columns = [("id", "id"), ("source", "source"), ("title", "title"), ("chars", "chars")]
    else:
        columns = [("name", "name"), ("path", "root"), ("files", "files"), ("entries", "entries")]
        columns += [("refreshed", "refreshed_at"), ("exists", "exists")]
    table = Table(title="knowledge entries" if show_entries else "knowledge base")
    for header, _ in columns:
        table.add_column(header, overflow="fold", justify="right" if header in ("id", "chars", "files") else "left")
    for row in rows:
        table.add_row(*(formats.untrusted(formats.text(row.get(key))) for _, key in columns))
    print_table(table)
    if not rows:
        err.print("nothing indexed yet: `agentarch knowledge add DIR` (or `add starter`) adds notes")


@knowledge_app.command("search")
def knowledge_search(
    query: Annotated[str, typer.Argument(help="any text: words are searched, punctuation and operators ignored")],
    archive: ArchiveOpt = None,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="how many entries to show")] = 5,
    under: Annotated[
        Optional[Path], typer.Option("--in", help="only the notes of this folder (or file) as it was added")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="each entry's whole text, not its start")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """Show the entries most relevant to QUERY, best first.

    This is the search a proposal makes with its parent's analysis, the notebook and the parent's code, ranked by
    BM25 over titles and text; any text is safe to pass (words are searched; put -- before a query that starts
    with a dash).

        agentarch knowledge search "wider residual blocks with batch norm"
    """
    from agentarch.store import knowledge

    with open_archive(archive_path(archive)) as db:
        found = knowledge.search(db, query, k, [knowledge.resolve(under)] if under is not None else ())
    if as_json:
        for entry in found:
            print(json.dumps({**entry.shown(), "id": entry.id, "rank": entry.rank}))
        return
    table = Table(title="knowledge search")
    for header in ("id", "source", "title", "text"):
        table.add_column(header, overflow="fold", justify="right" if header == "id" else "left")
    for entry in found:
        text = entry.text if full else _preview(entry.text)
        table.add_row(*map(formats.untrusted, (entry.id, entry.source, entry.title, text)))
    print_table(table)
    if not found:
        err.print("no entry matches; `agentarch knowledge ls` shows what is indexed")


def _entry_row(entry: knowledge.Entry) -> dict[str, Any]:
    return {"id": entry.id, "source": entry.source, "title": entry.title, "chars": len(entry.text)}


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[:PREVIEW_CHARS] + " ..."
