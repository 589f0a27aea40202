"""A job's scratch directory: a tmpfs capped in bytes and inodes where the host may mount, and its removal.

The only place a candidate writes on the host, and the one thing a job leaves behind when its
orchestrator dies: the job mounts and removes it, and the sweep of stale cgroups (cgroups.py)
unmounts what a killed orchestrator left, so both share it from here.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from agentarch.isolation.privileges import host_is_root
from agentarch.isolation.protocol import cap_text

log = logging.getLogger(__name__)

SCRATCH_INODES = 4096
"""Files and directories a candidate may make in scratch: a few are all training writes."""


def mount_scratch(path: Path, size_mb: int) -> bool:
    """Put a tmpfs on `path` capped in bytes and inodes, nosuid and nodev, where the host may mount.

    A plain directory on the host's disk let one candidate fill the disk the archive lives on
    (fallocate) or its inode table, and plant a setuid file in a directory other users can reach.
    Only a root host can mount; elsewhere scratch stays a directory (RLIMIT_FSIZE caps each file).
    """
    if not host_is_root() or not shutil.which("mount"):
        return False
    options = f"size={size_mb}m,nr_inodes={SCRATCH_INODES},mode=0700,nosuid,nodev"
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "agentarch-scratch", str(path)], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def unmount_scratch(path: Path) -> None:
    """Unmount a job's scratch tmpfs (its processes are dead by now); lazily if something still holds it."""
    for command in (["umount", str(path)], ["umount", "--lazy", str(path)]):
        try:
            if subprocess.run(command, capture_output=True, timeout=30).returncode == 0:
                return
        except (OSError, subprocess.TimeoutExpired):
            pass
    log.warning("could not unmount the scratch tmpfs at %s", path)


def remove_scratch(scratch: Path, timeout_s: float = 60.0) -> None:
    """Remove the scratch directory and whatever the candidate left in it, or log why not.

    shutil.rmtree recurses once per level (a 3,000-deep chain raises RecursionError and leaves
    the rest behind) and stops at directories the candidate made unreadable. GNU rm walks any
    depth without recursion, never follows a symlink and stays on one file system; when it
    leaves something (modes the host's user cannot override), `chmod -R u+rwX`, which skips
    symlinks, comes first. The processes of the job are dead by now, so nothing refills it.
    """
    path = str(scratch)
    attempts = (
        ["rm", "-rf", "--one-file-system", "--", path],
        ["chmod", "-R", "u+rwX", "--", path],
        ["rm", "-rf", "--one-file-system", "--", path],
    )
    said = ""
    for command in attempts:
        if not os.path.lexists(path):
            return
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
            said = done.stderr.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired) as err:
            said = str(err)
    if os.path.lexists(path):
        log.warning("could not remove the scratch directory %s: %s", path, cap_text(said, 500))
