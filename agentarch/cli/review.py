"""`agentarch review`: decide on the candidates a `run --review` paused, by flag or walking the queue.

Its own module because it is the one interactive command (prompts, $EDITOR).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from agentarch import formats
from agentarch.cli.common import ArchiveOpt, archive_path, fail, open_archive, out, print_table
from agentarch.store.handle import ArchiveError

if TYPE_CHECKING:
    from agentarch.store.archive import Archive


def review_command(
    archive: ArchiveOpt = None,
    list_only: Annotated[bool, typer.Option("--list", help="list pending reviews and exit")] = False,
    approve: Annotated[Optional[int], typer.Option(help="approve this review id")] = None,
    reject: Annotated[Optional[int], typer.Option(help="reject this review id (needs --reason)")] = None,
    edit: Annotated[Optional[int], typer.Option(help="replace this review's code with --file (or $EDITOR)")] = None,
    flag: Annotated[
        Optional[int], typer.Option(help="flag this recorded candidate id after the fact (needs --reason)")
    ] = None,
    reason: Annotated[Optional[str], typer.Option(help="why (required to reject or flag)")] = None,
    file: Annotated[Optional[Path], typer.Option(help="edited code for --edit")] = None,
    by: Annotated[
        Optional[str],
        typer.Option(help=escape("who decides, kept with the decision [default: AGENTARCH_REVIEWER, else your login]")),
    ] = None,
) -> None:
    """Review paused candidates of `agentarch run --review`: approve, reject with a reason, or edit.

    With no option it walks the queue interactively: each candidate's intent, its diff against its
    parent and its code, then \\[a]pprove, \\[r]eject, \\[e]dit in $EDITOR, \\[s]kip or \\[q]uit. Edited code
    goes back through the checks and dedup. The paused run picks decisions up by itself. Examples:

        agentarch review

        agentarch review --reject 3 --reason "copies the parent with a renamed layer"
    """
    from agentarch.loop import review as review_lib

    who = by or review_lib.reviewer()
    with open_archive(archive_path(archive)) as db:
        try:
            if flag is not None:
                db.flag(flag, who, reason or "")
                out.print(f"flagged candidate {flag}")
            elif approve is not None:
                db.decide(approve, "approved", who)
                out.print(f"approved review {approve}")
            elif reject is not None:
                db.decide(reject, "rejected", who, reason=reason)
                out.print(f"rejected review {reject}")
            elif edit is not None:
                code = file.read_text() if file else review_lib.edit_in_editor(db.review(edit)["code"] or "")
                db.decide(edit, "edited", who, reason=reason, code=code)
                out.print(f"edited review {edit}; the new code goes back through the checks")
            else:
                _review_queue(db, who, list_only)
        except (ArchiveError, OSError, subprocess.CalledProcessError) as e:
            raise fail(str(e)) from None


def _review_queue(db: Archive, who: str, list_only: bool) -> None:
    from agentarch.loop import review as review_lib

    pending = db.reviews(status="pending")
    if not pending:
        out.print("no candidate waits for review")
        return
    if list_only:
        table = Table(title="pending reviews")
        for header in ("review", "run", "parent", "intent"):
            table.add_column(header)
        for r in pending:
            table.add_row(
                str(r["id"]),
                formats.untrusted(r["run_id"] or "-"),
                formats.text(r["parent_id"]),
                formats.untrusted((r["intent"] or "")[:80]),
            )
        print_table(table)
        return
    for row in pending:
        shown = review_lib.view(db, row)
        out.rule(formats.line((f"review {shown.review_id}", "bold"), f" (run {shown.run_id})"))
        out.print(formats.line("intent: ", shown.intent or "(none given)"))
        if shown.diff:  # the view's diff and code are printable already (control characters as codes)
            out.print(Syntax(shown.diff, "diff", word_wrap=True))
        lexer = "python" if formats.lexable(shown.shown_code) else "text"  # a long line: plain (formats.lexable)
        out.print(Syntax(shown.shown_code, lexer, line_numbers=True, word_wrap=True))  # long lines wrap, never cropped
        choice = typer.prompt("[a]pprove, [r]eject, [e]dit, [s]kip, [q]uit", default="s").strip().lower()[:1]
        if choice == "q":
            return
        if choice == "a":
            db.decide(shown.review_id, "approved", who)
        elif choice == "r":
            db.decide(shown.review_id, "rejected", who, reason=typer.prompt("why"))
        elif choice == "e":
            db.decide(shown.review_id, "edited", who, code=review_lib.edit_in_editor(shown.code))  # the code itself
