"""Red team, round 7: the owner tag with its pid namespace (isolation/owners.py), the sweeps that read it from names
anyone may plant (scratch.py's temporary directory, cgroups.py's job groups), the soft-wrapped CLI lines and
wrapped code (cli/), and `checks.parse` with the collector paused.

A tag comes from a name: `str.isdigit` is true of characters `int` refuses (superscripts), and `int` refuses more
than 4,300 digits, so a tag that passes the digit test may still raise where the sweep only catches OSError.
"""

from __future__ import annotations

import gc
import io
import subprocess
import threading

import pytest
from rich.console import Console
from rich.syntax import Syntax

from agentarch import formats
from agentarch.evaluation import checks
from agentarch.isolation import cgroups, owners, scratch
from agentarch.isolation.owners import owner_tag


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


@pytest.mark.parametrize(
    "tag",
    [
        "\u00b2-1",  # a superscript two: isdigit() yes, int() no
        "1\u00b2-1-1",
        "9" * 5000 + "-1",  # past int()'s 4,300-digit limit
        "9" * 5000 + f"-1-{owners.pid_namespace()}",
        "\u0661-1",  # an Arabic-Indic one: int() reads it as 1, a pid no tag of ours is written with
        f"\U0001d7d9-1-{owners.pid_namespace()}",  # a mathematical bold one
    ],
)
def test_a_tag_of_digits_int_refuses_or_no_tag_of_ours_has_is_malformed_not_an_error(tag):
    assert owners.owner_gone(tag) is False


def test_a_planted_job_group_with_a_superscript_tag_does_not_stop_the_cgroup_sweep(tmp_path):
    """Every name in the jobs' parent reaches owner_gone; the sweep catches OSError only, so one name that made it
    raise ended the sweep, leaving every job after it (processes, group, scratch) unreaped."""
    (tmp_path / "agentarch-job-planted.\u00b2-1").mkdir()
    stale = tmp_path / f"agentarch-job-stale.{_dead_pid()}-1-{owners.pid_namespace()}"
    stale.mkdir()
    cgroups.sweep_stale(tmp_path)  # raised ValueError
    assert not stale.exists() and (tmp_path / "agentarch-job-planted.\u00b2-1").is_dir()


def test_the_scratch_sweep_keeps_a_live_owners_folder_and_another_namespaces_whatever_their_names(tmp_path):
    here = owners.pid_namespace()
    pid, start, _ = owner_tag().split("-")
    dead = _dead_pid()
    kept = [
        f"agentarch-job-{owner_tag()}-live",
        f"agentarch-job-{owner_tag()}-123-45",  # more dashed digits after a live tag
        f"agentarch-job-{pid}-{start}-{int(here) + 1}-x",  # this live pid under another namespace's number
        f"agentarch-job-{dead}-1-{int(here) + 1}-x",  # a dead pid of ours, another namespace's number
        f"agentarch-job-{dead}-1-0{here}-x",  # our namespace with a leading zero: not our tag
        f"agentarch-job-{dead}-1-{here}\u00b2-x",
        f"agentarch-job-\u0661-1-{here}-x",
        "agentarch-job-" + "9" * 200 + f"-1-{here}-x",
        f"agentarch-job-{pid}-{start}",  # no random part: not a scratch name
    ]
    for name in kept:
        (tmp_path / name).mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    link = tmp_path / f"agentarch-job-{dead}-1-{here}-link"
    link.symlink_to(outside)
    stale = tmp_path / f"agentarch-job-{dead}-1-{here}-abc"
    stale.mkdir()
    removed = scratch.sweep_stale_scratch(tmp_path, force=True)
    assert removed == [stale]
    assert all((tmp_path / name).is_dir() for name in kept)
    assert link.is_symlink() and (outside / "keep.txt").exists()


def test_hostile_archive_text_on_a_soft_wrapped_line_and_in_wrapped_code_stays_text():
    hostile = "\x1b]52;c;cGF5bG9hZA==\x07\x1b[2J[bold red]x[/]\u202e\r\x9b31m" * 3
    console = Console(file=io.StringIO(), width=40, force_terminal=True, color_system="truecolor")
    console.print(formats.line(("reason: ", "bold"), hostile), soft_wrap=True)
    console.print(Syntax(formats.printable(hostile + "\n" + "y" * 300), "text", line_numbers=True, word_wrap=True))
    shown = console.file.getvalue()
    for raw in ("\x1b]", "\x07", "\x1b[2J", "\u202e", "\r", "\x9b"):
        assert raw not in shown
    assert "[bold red]x[/]" in shown and "\\x1b" in shown


def test_wrapped_code_of_a_huge_line_is_linear():
    console = Console(file=io.StringIO(), width=80)
    console.print(Syntax(formats.printable("\u0301" * 200_000), "text", line_numbers=True, word_wrap=True))
    assert len(console.file.getvalue()) < 2_000_000


def test_parse_restores_the_collector_on_every_failure_and_releases_its_lock():
    assert gc.isenabled()
    for code, error in [
        ("def (", SyntaxError),
        ("(" * 300 + ")" * 300, (SyntaxError, RecursionError, MemoryError)),
        ("x\0", (SyntaxError, ValueError)),
    ]:
        with pytest.raises(error):
            checks.parse(code)
        assert gc.isenabled()
    with pytest.raises(ValueError):
        checks.parse("x", mode="nope")
    assert gc.isenabled()
    gc.disable()
    try:
        checks.parse("x = 1")
        assert not gc.isenabled()  # a caller's own pause is kept
    finally:
        gc.enable()
    done = threading.Event()
    threading.Thread(target=lambda: (checks.parse("y = 2"), done.set()), daemon=True).start()
    assert done.wait(10)
