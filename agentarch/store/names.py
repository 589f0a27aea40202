"""What a candidate is called: a few words of what it is, and where it comes from (run and proposal number).

Names are read on leaderboards, in the terminal and in search boxes, and the archive derives names for rows
recorded before names said anything (`LEGACY_NAME`), so the rule lives with the archive.
"""

from __future__ import annotations

import re

NAME_WORDS = 8
"""How many of the intent's words a name keeps (at most NAME_CHARS characters): enough to tell designs apart on a
leaderboard, short enough for a table cell."""
NAME_CHARS = 48
_TRAILING = frozenset({"a", "an", "the", "and", "or", "of", "to", "with", "for", "in", "on", "by", "from", "into"})
"""Words a name does not end on: "Widen the stem and add a" reads as cut off."""

LEGACY_NAME = re.compile(r"^round (\d+) slot (\d+)$")
"""The names the agent loop gave before `candidate_name`: the same few in every run, saying nothing of the design."""

_RUN_ID = re.compile(r"^[a-z]+-\d{8}-\d{6}-([0-9a-f]{6})$")
_EDGES = " \t\n.,;:!?-–—*_`'\"()[]{}"


def run_tag(run_id: str | None) -> str:
    """A short handle on a run for a name: the random suffix of an `Archive.start_run` id, else the id itself."""
    if not run_id:
        return "no run"
    found = _RUN_ID.match(run_id)
    return found.group(1) if found else run_id


def describe(intent: str | None, arch: str | None) -> str | None:
    """What a candidate is, in a few words: its search-space architecture, else the first words of its intent.

    The architecture wins because it is exact (`macro:d4-w16-k5-skip0-avg`); an LLM's intent is prose, so only its
    opening words are kept and cut on a word boundary. None when there is neither.
    """
    if arch and arch.strip():
        return arch.strip()
    words = (intent or "").replace("Intent:", " ").split()[:NAME_WORDS]
    while len(" ".join(words)) > NAME_CHARS and len(words) > 1:
        words.pop()
    while len(words) > 1 and words[-1].strip(_EDGES).lower() in _TRAILING:
        words.pop()
    text = " ".join(words).strip(_EDGES)[:NAME_CHARS].strip(_EDGES)
    return text or None


def candidate_name(run_id: str, seq: int, intent: str | None, arch: str | None) -> str:
    """The name of a run's proposal number `seq`: what it is (`describe`) and where it comes from, e.g.
    "depthwise separable stem with wider head (3f9a1c/12)" or "macro:d4-w16-k5-skip0-avg (3f9a1c/4)".

    The run tag and number keep names unique across runs, so a name pasted into search finds one candidate.
    """
    return f"{describe(intent, arch) or 'proposal'} ({run_tag(run_id)}/{seq})"
