"""Which orchestrator owns what a job leaves on the host, and whether that orchestrator still runs.

A job's scratch directory and its cgroups carry their orchestrator's tag, its pid and the kernel's start time of
that pid, so a later orchestrator can tell what a killed one left behind (and reap it) from what a live one,
perhaps another run on the same machine, is still using. The start time tells a live pid from a reused one.
"""

from __future__ import annotations

import os

from agentarch.isolation.cputime import process_seconds


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if no such process runs.

    Read by cputime.py's parser of /proc/PID/stat: a process names itself with any bytes, and a tag's pid may be
    anyone's (a folder any local user named like scratch), so the file is not text."""
    found = process_seconds(pid)
    return None if found is None else found[0]


def owner_tag() -> str:
    """This orchestrator's mark in the names of what its jobs leave on the host: `<pid>-<start time>`."""
    return f"{os.getpid()}-{process_start(os.getpid())}"


def owner_gone(tag: str) -> bool:
    """Whether the orchestrator a `<pid>-<start time>` tag names no longer runs (False for a malformed tag)."""
    pid, _, start = tag.partition("-")
    return pid.isdigit() and start.isdigit() and process_start(int(pid)) != start
