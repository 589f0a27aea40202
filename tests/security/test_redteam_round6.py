"""Red team, round 6: the stale scratch sweep (isolation/scratch.py, cgroups.py) and the fork rule under bubblewrap
without a cgroup CPU counter (seccomp.py, job.py).

The scratch names are public: any local user can list the temporary directory, see a job's scratch, and make an
entry of that name the moment the host removes it. Root acting on the name again after that (`chmod -R` follows a
symlink named on its command line; `umount` follows one too) acts wherever the other user points it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from agentarch.isolation import cgroups, owners, scratch
from agentarch.isolation.cgroups import Cgroup
from agentarch.isolation.owners import owner_tag
from tests.conftest import requires_bubblewrap
from tests.test_sandbox import message, run_hostile

ROOT = os.geteuid() == 0


def _dead_tag() -> str:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return f"{gone.pid}-1"


def test_a_name_made_again_after_the_first_rm_is_not_chmodded_through(tmp_path, monkeypatch):
    """Between remove_scratch's first `rm` and its `chmod -R`, another user makes a symlink of the freed name (the
    race is placed here by running the attacker's step right after the host's `rm`). GNU `chmod -R` follows a
    symlink named on its command line, so the host used to change the modes of the tree the link points to."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "read-only").write_text("kept read-only on purpose")
    os.chmod(victim / "read-only", 0o400)
    job = scratch.make_scratch()
    (job / "left.bin").write_bytes(b"x")
    real_run = subprocess.run

    def attacker_after_rm(command, *args, **kwargs):
        done = real_run(command, *args, **kwargs)
        if command[0] == "rm" and not os.path.lexists(job):
            os.symlink(victim, job)  # the attacker wins the race for the freed name
        return done

    monkeypatch.setattr(scratch.subprocess, "run", attacker_after_rm)
    try:
        scratch.remove_scratch(job)
        assert (victim / "read-only").stat().st_mode & 0o777 == 0o400, "the host chmodded through a planted symlink"
    finally:
        if os.path.islink(job):
            os.unlink(job)
        shutil.rmtree(job, ignore_errors=True)


@pytest.mark.skipif(not ROOT or not shutil.which("mount"), reason="mounts need a root host")
def test_the_cgroup_sweep_does_not_unmount_through_a_planted_symlink(tmp_path, monkeypatch):
    """A killed orchestrator's job leaves a cgroup named after its scratch; the scratch sweep (or anyone) removes the
    folder first, and any local user makes a symlink of that name to a mount of the host's. The cgroup sweep then
    ran `umount` (then `umount --lazy`) on the name, which follows the link: the host's mount was detached."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    host_mount = tmp_path / "host-mount"
    host_mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "agentarch-test", str(host_mount)], check=True)
    try:
        (host_mount / "data").write_text("the host's")
        dead = _dead_tag()
        name = f"agentarch-job-{dead}-abc"
        (temp / name).symlink_to(host_mount)
        parent = tmp_path / "cgroups"
        (parent / f"{name}.{dead}").mkdir(parents=True)
        cgroups.sweep_stale(parent)
        assert os.path.ismount(host_mount), "the sweep unmounted a mount a planted symlink pointed to"
        assert (host_mount / "data").exists()
    finally:
        subprocess.run(["umount", "--lazy", str(host_mount)], capture_output=True, check=False)


def test_the_cgroup_sweep_still_removes_a_dead_jobs_real_scratch(tmp_path, monkeypatch):
    """The guard above must not stop the cgroup sweep from reaping the real folder of a dead orchestrator's job."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    dead = _dead_tag()
    name = f"agentarch-job-{dead}-abc"
    (temp / name / "deep").mkdir(parents=True)
    (temp / name / "deep" / "f").write_text("x")
    parent = tmp_path / "cgroups"
    (parent / f"{name}.{dead}").mkdir(parents=True)
    cgroups.sweep_stale(parent)
    assert not (temp / name).exists() and not (parent / f"{name}.{dead}").exists()


def test_remove_scratch_leaves_no_holding_folder_behind(tmp_path):
    """Whatever remove_scratch does to keep the name out of other users' reach, the temporary directory holds nothing
    of this orchestrator's afterwards."""
    job = scratch.make_scratch(tmp_path)
    (job / "a" / "b").mkdir(parents=True)
    scratch.remove_scratch(job)
    assert list(tmp_path.iterdir()) == []
    assert not any(p.name.startswith(f"agentarch-job-{owner_tag()}") for p in tmp_path.iterdir())


FORK_ROUTES = r"""
import ctypes, errno, mmap, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SIGCHLD, CLONE_VM, CLONE_VFORK, CLONE_SIGHAND, CLONE_THREAD = 17, 0x100, 0x4000, 0x800, 0x10000
said = []


def raw(name, number, *args):
    ctypes.set_errno(0)
    got = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
    if got == 0:
        os._exit(0)  # a child: it must never return into the interpreter
    if got > 0:
        said.append(f"{name}: ALLOWED")
        try:
            os.waitpid(got, 0)
        except ChildProcessError:
            pass
    else:
        said.append(f"{name}: {errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno())}")


def call(name, f):
    try:
        f()
        said.append(f"{name}: ALLOWED")
    except OSError as err:
        said.append(f"{name}: {errno.errorcode.get(err.errno, err.errno)}")


call("os.fork", lambda: os.fork() == 0 and os._exit(0))
call("posix_spawn", lambda: os.waitpid(os.posix_spawn("/bin/true", ["true"], {}), 0))
call("subprocess", lambda: subprocess.run(["/bin/true"], check=False))
raw("clone SIGCHLD", 56, SIGCHLD, 0, 0, 0, 0)
raw("clone VM|VFORK", 56, CLONE_VM | CLONE_VFORK | SIGCHLD, 0, 0, 0, 0)
raw("clone THREAD without VM", 56, CLONE_THREAD | SIGCHLD, 0, 0, 0, 0)
raw("clone THREAD|SIGHAND without VM", 56, CLONE_THREAD | CLONE_SIGHAND, 0, 0, 0, 0)
raw("clone high bits", 56, (1 << 32) | SIGCHLD, 0, 0, 0, 0)
raw("clone3", 435, 0, 0)
raw("fork", 57)
raw("vfork", 58)
raw("io_uring_setup", 425, 8, 0)
raise RuntimeError("routes: " + "; ".join(said))
"""


@requires_bubblewrap
def test_no_route_to_a_new_process_under_bubblewrap_without_a_cpu_counter(monkeypatch, digits):
    """Every way to a new process a candidate has (libc's fork, posix_spawn and subprocess; raw clone with any flags
    but a thread's, clone3, fork, vfork, io_uring; an x32 entry point kills the process) is refused where the /proc meter counts the
    job's CPU time: a thread is all that runs, and its time is its process's."""
    monkeypatch.setattr(Cgroup, "cpu_seconds", lambda self: None)  # a host without a CPU account: /proc meters
    said = message(run_hostile(FORK_ROUTES, digits.inputs_dir, isolation="bubblewrap"))
    assert "routes: " in said and "ALLOWED" not in said, said
    x32 = 'import ctypes\nctypes.CDLL(None).syscall(ctypes.c_long(0x40000000 | 57))\nraise RuntimeError("x32 fork returned")'
    said = message(run_hostile(x32, digits.inputs_dir, isolation="bubblewrap"))
    assert "SIGSYS" in said, said  # another ABI's entry point kills the process (ACT_BADARCH)


def test_a_process_named_in_bytes_that_are_not_utf8_does_not_break_the_sweep(tmp_path):
    """Any local user can make a folder named like scratch with its own pid in the tag, and name its process in bytes
    that are not UTF-8 (/proc/self/comm): the sweep read /proc/PID/stat as text before checking whose the folder
    was, and the UnicodeDecodeError came out of SandboxJob's constructor, failing the job start."""
    named = subprocess.Popen(
        [sys.executable, "-c", "open('/proc/self/comm', 'wb').write(b'\\xff\\xfe)x'); print(1, flush=True); input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert named.stdout.readline().strip() == b"1"
        (tmp_path / f"agentarch-job-{named.pid}-1-zzz").mkdir()
        assert scratch.sweep_stale_scratch(tmp_path, force=True) == [tmp_path / f"agentarch-job-{named.pid}-1-zzz"]
        assert not owners.owner_gone(f"{named.pid}-{owners.process_start(named.pid)}")
    finally:
        named.kill()
        named.wait()


@pytest.mark.slow  # a local Ray of its own: about 15 s to start and stop
def test_an_actor_replaced_while_an_executor_that_found_ray_running_closes_is_ended_too():
    """An executor that found Ray running ends its own actors on close, and leaves Ray up for its owner. A job that
    lost its worker replaces it from its own thread: where the close landed between `replace`'s check of `closed`
    and the new actor (placed there by closing from inside the actor's making), the new actor outlived the close,
    holding its slot's CPU on the owner's Ray for the rest of the run."""
    ray = pytest.importorskip("ray")
    from agentarch.evaluation.ray_executor import RayExecutor, start_local_ray

    start_local_ray(ray, num_cpus=2)  # someone else's Ray: the executor below did not start it
    try:
        executor = RayExecutor(slots=1)
        make = executor._actor

        def closed_meanwhile() -> object:
            executor.close()
            return make()

        executor._actor = closed_meanwhile
        executor.replace(executor.actors[0])
        assert ray.is_initialized()
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(executor.actors[-1].node.remote(), timeout=60)
    finally:
        ray.shutdown()
