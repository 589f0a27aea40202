"""Human review from the terminal: what a reviewer sees of a paused candidate, and how a decision is taken.

The run that paused waits on the archive, so deciding here (or in the web UI, or on another machine
sharing the archive) is all it takes for it to go on.
"""

from __future__ import annotations

import difflib
import getpass
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agentarch.formats import printable, too_long_to_diff
from agentarch.store.archive import Archive


@dataclass
class ReviewView:
    """One pending review as a person should see it. `code` is the proposal as it is (what $EDITOR gets and a
    decision covers); what a terminal shows (`shown_code`, `diff`) has each control character written as its code,
    so an escape sequence in the proposal is read, not run."""

    review_id: int
    run_id: str | None
    intent: str | None
    code: str
    parent_id: int | None
    diff: str  # unified diff against the parent's code ("" without a parent), control characters as codes

    @property
    def shown_code(self) -> str:
        return printable(self.code)


def view(archive: Archive, review: dict) -> ReviewView:
    """The review with its parent diff (what changed is what a reviewer should read first)."""
    diff = ""
    parent = archive.candidate(review["parent_id"])["code"] if review.get("parent_id") else None
    refused = too_long_to_diff(parent, review["code"]) if parent is not None else None
    if refused:
        diff = f"({refused})"
    elif parent is not None:
        diff = printable(
            "".join(
                difflib.unified_diff(
                    parent.splitlines(keepends=True),
                    (review["code"] or "").splitlines(keepends=True),
                    f"candidate {review['parent_id']} (parent)",
                    "proposal",
                )
            )
        )
    return ReviewView(
        review["id"], review.get("run_id"), review.get("intent"), review["code"] or "", review.get("parent_id"), diff
    )


def reviewer() -> str:
    """Who decides: AGENTARCH_REVIEWER, else the login name (kept with every decision)."""
    return os.environ.get("AGENTARCH_REVIEWER") or getpass.getuser()


def edit_in_editor(code: str) -> str:
    """Open $VISUAL/$EDITOR (vi if neither) on the code and return what was saved."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.py"
        path.write_text(code)
        subprocess.run([*shlex.split(editor), str(path)], check=True)
        return path.read_text()
