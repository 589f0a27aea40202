"""The bubblewrap mode: whether bubblewrap can isolate here, and its command line for one job.

Namespaces (pid, net, ipc, uts), a root holding only the runtime view read-only, the task's inputs
and scratch, `--clearenv`, sized tmpfs mounts and the seccomp filter: what the job runs the runner
inside when the host allows it. Its own module because the mount layout is the bulk of the isolation
and reads best in one place, apart from the job that launches it.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

from agentarch.isolation.launch import RUNNER, Program, boot, gpu_devices, runner_dir, sandbox_env
from agentarch.isolation.privileges import drop_privileges, host_is_root
from agentarch.isolation.runtime_view import runtime_view, symlinked_roots

# Inside the bubblewrap sandbox the runner package, the data and the scratch directory live here.
BOX_PACKAGE_ROOT = "/opt/agentarch"
BOX_DATA = "/data"
BOX_SCRATCH = "/scratch"


def _namespace_args() -> list[str]:
    """bubblewrap's namespaces and capabilities for this host.

    As root, bubblewrap must not make a user namespace: its uid 0 would be host uid 0, which owns
    /proc/sys and every root file whatever capabilities are dropped. It makes the other namespaces
    as root, keeps only the capabilities to change uid and drop the rest, and `setpriv` (run inside, drop_privileges)
    becomes CANDIDATE_UID before Python starts. As an ordinary user, an unprivileged user
    namespace maps the candidate to that user, who is not root to begin with.
    """
    if host_is_root():
        return [
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--cap-add",
            "CAP_SETPCAP",
        ]
    return ["--unshare-all", "--cap-drop", "ALL"]


@cache
def bubblewrap_problem() -> str | None:
    """None when bubblewrap can make an isolated sandbox here (as the jobs will use it), else why not."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if host_is_root() and not shutil.which("setpriv"):
        return "setpriv (util-linux) is not installed; it drops a root host's sandbox to an unprivileged uid"
    probe = subprocess.run(
        [
            bwrap,
            *_namespace_args(),
            "--die-with-parent",
            "--clearenv",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--",
            *drop_privileges(True),
            "/bin/true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"bubblewrap cannot create namespaces here: {probe.stderr.strip() or probe.returncode}"
    return None


def bwrap_args(
    scratch: Path,
    inputs_dir: Path,
    seccomp_fd: int,
    threads: int,
    gpu: str | None = None,
    tmpfs_mb: int = 1024,
    program: Program = RUNNER,
) -> list[str]:
    """The bubblewrap command line; `gpu` pins the evaluation to that GPU (one slot per GPU).

    The root is an empty tmpfs holding only the runtime view (agentarch.isolation.runtime_view) of `program`'s
    packages, the program (the runner package, or the one module file of another program such as the graph worker),
    the task's inputs and scratch. `tmpfs_mb` sizes the writable tmpfs mounts (/tmp, /dev/shm):
    their pages are RAM that RLIMIT_AS does not count, so without a size a candidate could fill
    the host's memory.
    """
    args = ["bwrap", *_namespace_args(), "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in sandbox_env(threads, BOX_SCRATCH, "/tmp", gpu).items():
        args += ["--setenv", key, value]
    # /proc, /dev and the /tmp tmpfs come first: a later tmpfs would hide a venv that lives under /tmp.
    args += ["--proc", "/proc", "--dev", "/dev"]
    for tmpfs in ("/dev/shm", "/tmp"):  # sticky and world-writable, as on a host: the candidate uid writes here
        args += ["--perms", "1777", "--size", str(tmpfs_mb * 2**20), "--tmpfs", tmpfs]
    for link, target in symlinked_roots().items():
        args += ["--symlink", target, link]
    # Directories bubblewrap makes on its own are root-only (0700), which the candidate uid could not
    # pass through; the ones above each mount are made first, traversable and empty but for the mounts.
    view = runtime_view(program.packages)
    code = runner_dir() if program.module is None else program.module
    inside = Path(BOX_PACKAGE_ROOT) / code.name
    mounts = [*view.roots, *view.packages, inside]
    for parent in sorted({p for path in mounts for p in path.parents if p != Path("/")}, key=lambda p: len(p.parts)):
        args += ["--perms", "0755", "--dir", str(parent)]
    for path in view.roots:
        args += ["--ro-bind", str(path), str(path)]
    for hole in view.holes:  # package directories under a root: empty, but for torch and its requirements
        args += ["--perms", "0755", "--tmpfs", str(hole)]
    for path in view.packages:
        args += ["--ro-bind", str(path), str(path)]
    for hole in view.holes:
        args += ["--remount-ro", str(hole)]
    for node in gpu_devices(gpu):
        args += ["--dev-bind", node, node]
    if gpu is not None:
        args += ["--ro-bind-try", "/proc/driver/nvidia", "/proc/driver/nvidia", "--ro-bind", "/sys", "/sys"]
    args += [
        "--ro-bind",
        str(code),
        str(inside),
        "--ro-bind",
        str(inputs_dir),
        BOX_DATA,
        "--bind",
        str(scratch),
        BOX_SCRATCH,
        "--chdir",
        "/",  # bubblewrap is still root here, and scratch belongs to the candidate uid; the runner moves in
        # bwrap builds / and /dev as unsized tmpfs mounts; read-only, so the only writable places
        # are /scratch (on disk, RLIMIT_FSIZE per file) and the sized /tmp and /dev/shm.
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--seccomp",
        str(seccomp_fd),
        "--",
        *drop_privileges(True),
        *boot(BOX_PACKAGE_ROOT, f"{BOX_SCRATCH}/spec.json", program),
    ]
    return args
