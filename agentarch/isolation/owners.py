"""Which orchestrator owns what a job leaves on the host, and whether that orchestrator still runs.

A job's scratch directory and its cgroups carry their orchestrator's tag, its pid, the kernel's start time of
that pid and its pid namespace, so a later orchestrator can tell what a killed one left behind (and reap it) from
what a live one, perhaps another run on the same machine, is still using. The start time tells a live pid from a
reused one; the namespace, a pid of this namespace from one of another (two containers that share /tmp), which
names no process here, alive or not.
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


def pid_namespace() -> str:
    """This process's pid namespace: the inode number of /proc/self/ns/pid ("0" where it cannot be read)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def owner_tag() -> str:
    """This orchestrator's mark in the names of what its jobs leave on the host: `<pid>-<start time>-<pid namespace>`."""
    return f"{os.getpid()}-{process_start(os.getpid())}-{pid_namespace()}"


PID_DIGITS = 10
"""The most digits a tag's pid may have: the kernel's pids stop at 2**22 (seven digits)."""


def owner_gone(tag: str) -> bool:
    """Whether the orchestrator a tag names no longer runs. False for a malformed tag, and for one from another pid
    namespace: its orchestrator may run in a container beside this one, and only an orchestrator of its own
    namespace can tell. A `<pid>-<start time>` tag (before the namespace was part of it) is this namespace's.

    Digits are ASCII ones and a pid has at most PID_DIGITS: `str.isdigit` is true of characters `int` refuses (a
    superscript two) or reads as another's (an Arabic-Indic one), and `int` refuses more than 4,300 digits; a tag
    is read from names anyone may plant, and the sweeps catch OSError only."""
    parts = tag.split("-")
    if len(parts) not in (2, 3) or not all(part.isascii() and part.isdigit() for part in parts):
        return False
    if len(parts[0]) > PID_DIGITS:
        return False
    if len(parts) == 3 and parts[2] != pid_namespace():
        return False
    return process_start(int(parts[0])) != parts[1]
