"""A job's scratch directory: a tmpfs capped in bytes and inodes where the host may mount, and its removal.

The only place a candidate writes on the host, and the one thing a job leaves behind when its
orchestrator dies: the job mounts and removes it. Its name carries the orchestrator's tag (owners.py), so the next
job's start reaps what a killed orchestrator left (`sweep_stale_scratch`), whether or not its job got as far as a
cgroup; the sweep of stale cgroups (cgroups.py) unmounts the scratch of the jobs it kills too, so both share the
unmount from here.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from agentarch.isolation.owners import owner_gone, owner_tag
from agentarch.isolation.privileges import CANDIDATE_UID, host_is_root
from agentarch.isolation.protocol import cap_text

log = logging.getLogger(__name__)

SCRATCH_INODES = 4096
"""Files and directories a candidate may make in scratch: a few are all training writes."""
SCRATCH_PREFIX = "agentarch-job-"
OWNED_SCRATCH = re.compile(rf"{SCRATCH_PREFIX}([0-9]+-[0-9]+(?:-[0-9]+)?)-[^-]+")
"""A scratch directory's name, all of it (`fullmatch`): the prefix, its orchestrator's tag, then mkdtemp's random
part (no dash). Unanchored, `<pid>-<start>-<namespace>x-...` was read as the two-part tag `<pid>-<start>` of this
namespace."""
SWEEP_EVERY_S = 60.0
"""How often one orchestrator looks for stale scratch: a listing of the temporary directory per job start is cheap,
but a run starting jobs every second gains nothing from it."""

_swept = {"at": float("-inf")}
_sweep_lock = threading.Lock()


def make_scratch(parent: Path | None = None) -> Path:
    """A new job's scratch directory, private to the host (0700), named with this orchestrator's tag, under `parent`
    (the temporary directory)."""
    path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{owner_tag()}-", dir=parent))
    os.chmod(path, 0o700)
    return path


def sweep_stale_scratch_soon() -> None:
    """Start `sweep_stale_scratch` on a thread of its own, unless one ran within SWEEP_EVERY_S: a job's start does
    not wait on it. Where the host cannot mount, a killed orchestrator's scratch has no inode cap, and removing
    millions of files could otherwise hold a job start for minutes. A sweep cut short by the orchestrator's exit
    leaves its half-removed tree under this orchestrator's tag (`remove_scratch`), which the next one reaps."""
    with _sweep_lock:
        if time.monotonic() - _swept["at"] < SWEEP_EVERY_S:
            return
    threading.Thread(target=sweep_stale_scratch, name="agentarch-scratch-sweep", daemon=True).start()


def sweep_stale_scratch(parent: Path | None = None, force: bool = False) -> list[Path]:
    """Unmount and remove the scratch directories whose orchestrator no longer runs (killed mid-job: SIGKILL, an
    out-of-memory kill, a lost machine), under `parent` (the temporary directory); at most once per SWEEP_EVERY_S
    unless `force`. Returns what it removed.

    Only a real directory (never a symlink) owned by this host user or the candidate user is touched, so nothing
    another user names like one is followed or removed. A job of a killed orchestrator may still run for a moment
    (its parent-death signal, or the cgroup sweep, ends it): its tmpfs is then unmounted lazily, and it goes on in
    a directory no longer reachable from the host's file tree. Directories named before owner tags (no tag) are
    left alone: nothing says whose they are."""
    with _sweep_lock:
        now = time.monotonic()
        if not force and now - _swept["at"] < SWEEP_EVERY_S:
            return []
        _swept["at"] = now
    parent = Path(tempfile.gettempdir()) if parent is None else parent
    removed = []
    try:
        names = [name for name in os.listdir(parent) if name.startswith(SCRATCH_PREFIX)]
    except OSError:
        return removed
    for name in names:
        tag = OWNED_SCRATCH.fullmatch(name)
        path = parent / name
        if tag is not None and owner_gone(tag.group(1)) and reap_scratch(path):
            removed.append(path)
            log.info("removed the scratch directory %s, left by an orchestrator that no longer runs", path)
    return removed


def reap_scratch(path: Path) -> bool:
    """Unmount and remove what a dead orchestrator's job left at `path` (both sweeps: this module's, and the stale
    cgroups' in cgroups.py); whether it is gone.

    The name is public and may be anyone's by now (the folder already removed, the name made again), so only a real
    directory (never a symlink: `umount` follows one, and would detach the mount it points to) owned by this host
    user or the candidate user is touched. A mount point cannot be renamed or removed while mounted, so the one that
    `ismount` saw is the one unmounted."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (os.geteuid(), CANDIDATE_UID):
        return False
    if os.path.ismount(path):
        unmount_scratch(path)
    remove_scratch(path)
    return not os.path.lexists(path)


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

    The scratch's name is public (the temporary directory is listable, and sticky: anyone may make a free name), so
    once a first `rm` freed it, another user could make it a symlink before the `chmod -R`, which follows a symlink
    named on its command line: the host changed the modes of whatever it pointed to. So the tree is first moved
    into a fresh folder of this orchestrator's (make_scratch: private, and swept like scratch should this
    orchestrator die), and every command names the tree there, where no other user can make a name.
    """
    try:
        hold = make_scratch(scratch.parent)
    except OSError as err:
        log.warning("could not remove the scratch directory %s: %s", scratch, err)
        return
    tree = hold / "tree"
    try:
        os.rename(scratch, tree)
        moved = os.lstat(tree)
    except OSError as err:  # gone already, or a mount that would not come off (EBUSY)
        os.rmdir(hold)
        if os.path.lexists(scratch):
            log.warning("could not remove the scratch directory %s: %s", scratch, err)
        return
    if not stat.S_ISDIR(moved.st_mode):  # not a tree: what stood at the name is unlinked, never followed
        os.unlink(tree)
        os.rmdir(hold)
        return
    path = str(tree)
    attempts = (
        ["rm", "-rf", "--one-file-system", "--", path],
        ["chmod", "-R", "u+rwX", "--", path],
        ["rm", "-rf", "--one-file-system", "--", path],
    )
    said = ""
    for command in attempts:
        if not os.path.lexists(path):
            break
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
            said = done.stderr.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired) as err:
            said = str(err)
    if os.path.lexists(path):
        log.warning("could not remove the scratch directory %s (moved to %s): %s", scratch, path, cap_text(said, 500))
    else:
        os.rmdir(hold)
