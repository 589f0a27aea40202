"""Host side of the sandbox: start the runner (sandbox/runner.py) isolated, talk to it, clean up.

Layers, outermost first (docs/sandbox.md has the threat model and what each mode guarantees):

1. a pids cgroup (and a memory cgroup where one can be made), joined as root before anything else,
   which caps process count and lets the host kill every process the evaluation started;
2. rlimits set by `prlimit`: address space, CPU seconds, file size, open files, core dumps;
3. scratch on a tmpfs capped in bytes and inodes, nosuid and nodev (where the host can mount);
4. bubblewrap: pid, net, ipc and uts namespaces (no network, not even the host's loopback), a
   root holding only the runtime view (agentarch.isolation.runtime_view) read-only, the task's inputs and
   scratch, `--clearenv`; as root without a user namespace, and `setpriv` drops to CANDIDATE_UID;
5. a seccomp allowlist (agentarch.isolation.seccomp), default deny;
6. a wall-clock timeout after which the whole process group and cgroup are killed.

Where bubblewrap is missing or cannot create namespaces, the `process` mode keeps 1, 2, 3, 5 (with
no new processes) and 6, drops privileges with `setpriv`, and the runner confines its own file
access, signals and ptrace with Landlock (sandbox/landlock.py); on a kernel where Landlock cannot do
that, untrusted code is refused (refuse_untrusted).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agentarch.errors import AgentarchError
from agentarch.isolation.protocol import (
    MAX_EVENT_BYTES,
    MAX_LOG_BYTES,
    ProtocolError,
    cap_text,
    parse_event,
    read_capped,
    read_outputs,
)
from agentarch.isolation.runtime_view import runtime_view, symlinked_roots
from agentarch.isolation.seccomp import seccomp_program
from agentarch.runner import landlock

log = logging.getLogger(__name__)

IsolationMode = Literal["bubblewrap", "process"]

# Inside the bubblewrap sandbox the runner package, the data and the scratch directory live here.
BOX_PACKAGE_ROOT = "/opt/agentarch"
BOX_DATA = "/data"
BOX_SCRATCH = "/scratch"

_BOOT = (
    "import importlib, sys; root, package, spec, *paths = sys.argv[1:]; sys.path[:0] = [root]; sys.path += paths; "
    "sys.argv = [package, spec]; importlib.import_module(package + '.runner').main()"
)
"""The runner's start: its package from `root` under its folder's name, the runtime's import paths, the spec."""


class SandboxError(AgentarchError, RuntimeError):
    """The sandbox itself could not run (not the candidate's fault); the message says what to fix."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 6144
    timeout_s: float = 900.0
    smoke_timeout_s: float = 120.0
    max_pids: int = 64
    max_file_mb: int = 1024
    max_open_files: int = 256
    threads: int = 1

    @property
    def cpu_seconds(self) -> int:
        """CPU-time cap: the wall-clock budget on every thread, so it only binds a runaway."""
        return int(self.timeout_s * max(1, self.threads) + 30)


@dataclass
class Outcome:
    """How the sandboxed process ended, when it ended without a clean event."""

    status: Literal["failed", "timeout"]
    reason: str


# -- detection ----------------------------------------------------------------------------------

CANDIDATE_UID = 2_000_000_000
"""The host uid candidates run as when the orchestrator is root: no account, owns no file but scratch.

One high uid (far above login accounts and the usual subordinate-uid ranges) for every sandbox:
jobs are kept apart by their namespaces (bubblewrap) or Landlock domains (process mode), not by uid.
"""

CAPLESS_ROOT = (
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--bounding-set=-all",
    "--securebits=+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked,+keep_caps_locked",
)
"""setpriv options that leave uid 0 with no capability now or after any exec (the last resort)."""


def _host_is_root() -> bool:
    return os.geteuid() == 0


def _namespace_args() -> list[str]:
    """bubblewrap's namespaces and capabilities for this host.

    As root, bubblewrap must not make a user namespace: its uid 0 would be host uid 0, which owns
    /proc/sys and every root file whatever capabilities are dropped. It makes the other namespaces
    as root, keeps only the capabilities to change uid and drop the rest, and `setpriv` (run inside, _drop_privileges)
    becomes CANDIDATE_UID before Python starts. As an ordinary user, an unprivileged user
    namespace maps the candidate to that user, who is not root to begin with.
    """
    if _host_is_root():
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


def _drop_privileges(to_candidate_uid: bool) -> list[str]:
    """The `setpriv` prefix that takes a root host's process down before candidate code exists.

    `to_candidate_uid=False` is the process mode on a root host whose Python installation the
    candidate uid cannot read (a venv under /root): then uid 0 stays, but with no capability at all
    and securebits that keep exec from giving any back; Landlock does the rest.
    """
    if not _host_is_root():
        return []
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    if to_candidate_uid:
        return [
            setpriv,
            f"--reuid={CANDIDATE_UID}",
            f"--regid={CANDIDATE_UID}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    return [setpriv, *CAPLESS_ROOT, "--no-new-privs", "--"]


@cache
def _readable_by_candidate(paths: tuple[Path, ...]) -> bool:
    """Whether CANDIDATE_UID can read every path (the process mode has no mount namespace to help).

    Asked once per set of paths in a process: the answer is a probe process, and a task's paths and
    the runtime's do not change between its jobs.
    """
    probe = [
        *_drop_privileges(True),
        sys.executable,
        "-S",
        "-c",
        "import os, sys; sys.exit(not all(os.access(p, os.R_OK) for p in sys.argv[1:]))",
        *map(str, paths),
    ]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"}).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@cache
def bubblewrap_problem() -> str | None:
    """None when bubblewrap can make an isolated sandbox here (as the jobs will use it), else why not."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if _host_is_root() and not shutil.which("setpriv"):
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
            *_drop_privileges(True),
            "/bin/true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"bubblewrap cannot create namespaces here: {probe.stderr.strip() or probe.returncode}"
    return None


def process_mode_gaps() -> list[str]:
    """What the process mode cannot guarantee on this kernel, compared with bubblewrap (empty: it holds).

    With Landlock ABI 6 or later the runner confines itself to the runtime view, its inputs and its
    scratch directory and can signal or trace nothing outside its domain, so files, labels, the
    orchestrator's environment and processes are out of reach as they are under bubblewrap.
    """
    version = landlock.abi()
    if version < 1:
        return [
            "Landlock is not available (Linux 5.13 or later with landlock among the LSMs): a candidate "
            "could read every file this user can, validation and test labels included"
        ]
    if version < 6:
        return [f"Landlock ABI {version} cannot keep a candidate from signalling other processes (ABI 6, Linux 6.12)"]
    return []


def resolve_isolation(requested: str) -> IsolationMode:
    """Turn the configured isolation into the mode to use, refusing a bubblewrap that cannot work."""
    problem = bubblewrap_problem()
    if requested == "process":
        return "process"
    if problem is None:
        return "bubblewrap"
    if requested == "bubblewrap":
        raise SandboxError(f"isolation=bubblewrap was asked for, but {problem}")
    return "process"


def refuse_untrusted(isolation: IsolationMode, trusted: Callable[[], bool], weak_sandbox_ok: bool) -> None:
    """Raise when the process mode cannot contain this candidate and nobody said to run it anyway.

    Code rendered from the project's own search-space templates (`trusted()`) is known; an LLM answer
    or a user's file is not, and runs in a mode with gaps only with `weak_sandbox_ok`. `trusted` is
    asked only where there are gaps, so the common case renders no template.
    """
    gaps = process_mode_gaps() if isolation == "process" else []
    if gaps and not weak_sandbox_ok and not trusted():
        raise SandboxError(
            "refusing to run a candidate that was not rendered from a search space in the weak 'process' sandbox: "
            + "; ".join(gaps)
            + ". Install bubblewrap (apt-get install bubblewrap), or accept the gap with "
            "weak_sandbox_ok = true in agentarch.toml (AGENTARCH_WEAK_SANDBOX_OK=1); see docs/sandbox.md"
        )


FALLBACK_WARNING = (
    "WARNING: candidates run in the 'process' sandbox, without namespaces: {why}. They run as an unprivileged "
    "uid (or capless root), under seccomp, rlimits and a pids cgroup, and Landlock keeps them to the runtime "
    "view and their scratch directory; they can still see the host's process list and network interfaces. "
    "Install bubblewrap for full isolation; see docs/sandbox.md."
)


# -- cgroups ------------------------------------------------------------------------------------


STALE_CGROUP_S = 6 * 3600
"""A job's cgroup older than this with no process left was orphaned by a killed orchestrator."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), which tells a live pid from a reused one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_tag() -> str:
    """This orchestrator's mark in the names of its jobs' cgroups: pid and start time."""
    return f"{os.getpid()}-{_process_start(os.getpid())}"


def _owner_gone(name: str) -> bool:
    """Whether the orchestrator named in a job's cgroup (`<scratch>.<pid>-<start>`) no longer runs."""
    tag = name.rpartition(".")[2]
    pid, _, start = tag.partition("-")
    return pid.isdigit() and bool(start) and _process_start(int(pid)) != start


def sweep_stale(parent: Path) -> None:
    """Reap what orchestrators that were killed mid-job left: their jobs' processes, cgroups and scratch.

    The parent-death signal ends a job with its orchestrator, except when the orchestrator dies
    before the signal is armed; a job whose owner is gone is killed here, at the next job's start.
    An empty cgroup past STALE_CGROUP_S is removed too; the age guard keeps a concurrent
    orchestrator's just-made cgroup (not yet joined by its process) safe.
    """
    try:
        jobs = [d for d in parent.iterdir() if d.is_dir()]
    except OSError:
        return
    for job in jobs:
        try:
            if _owner_gone(job.name):
                Cgroup.at(job).kill_all()
                scratch = Path(tempfile.gettempdir()) / job.name.rpartition(".")[0]
                if scratch.name.startswith("agentarch-job-") and scratch.is_dir():
                    _unmount_scratch(scratch)
                    subprocess.run(
                        ["rm", "-rf", "--one-file-system", "--", str(scratch)], capture_output=True, timeout=60
                    )
            elif time.time() - job.stat().st_mtime <= STALE_CGROUP_S:
                continue
            job.rmdir()
        except (OSError, subprocess.TimeoutExpired):
            pass


CPU_SHARES_PER_CORE = 1024
CPU_SHARES_MAX = 262144
"""cgroup v1 `cpu.shares`: a nice-0 task's weight, and the kernel's cap. All jobs together (`cpu/agentarch`) weigh
as much as one busy nice-0 thread per core; each job's group weighs the same as every other job's."""


class Cgroup:
    """A per-evaluation cgroup (v1 hierarchies or a delegated v2 subtree), where the host may make one.

    Besides the pids (and memory) controller, a job gets a cpu group of its own where the host has the
    controller: the scheduler then shares CPU time between jobs, not between sessions. Without it, every
    session is an autogroup the scheduler treats as a peer of a whole job (sched_autogroup), so a candidate
    that forks processes which each call setsid() takes most of the machine from the jobs beside it (slower
    training, an inflated latency_ms, a smoke stage pushed past its timeout).
    """

    def __init__(self, name: str, max_pids: int, memory_bytes: int | None) -> None:
        self.dirs: list[Path] = []
        self.problem: str | None = None
        try:
            self._create(name, max_pids, memory_bytes)
        except OSError as err:
            self.remove()
            self.problem = f"cannot create a cgroup ({err}); process count is not capped"

    def _create(self, name: str, max_pids: int, memory_bytes: int | None) -> None:
        root = Path("/sys/fs/cgroup")
        if (root / "pids" / "cgroup.procs").exists():  # cgroup v1
            for controller in ("pids", "memory", "cpu"):
                sweep_stale(root / controller / "agentarch")
            self.dirs.append(self._mkdir(root / "pids" / "agentarch" / name, {"pids.max": str(max_pids)}))
            if (root / "cpu" / "cgroup.procs").exists():
                try:  # best effort: the job's CPU share, however many processes or sessions it makes
                    self.dirs.append(self._mkdir(root / "cpu" / "agentarch" / name, {}))
                except OSError:
                    pass
                else:
                    with contextlib.suppress(OSError):
                        (root / "cpu" / "agentarch" / "cpu.shares").write_text(
                            str(min(CPU_SHARES_MAX, CPU_SHARES_PER_CORE * (os.cpu_count() or 1)))
                        )
            if memory_bytes and (root / "memory" / "cgroup.procs").exists():
                try:  # best effort: without it, RLIMIT_AS still caps the address space on CPU hosts
                    self.dirs.append(
                        self._mkdir(root / "memory" / "agentarch" / name, {"memory.limit_in_bytes": str(memory_bytes)})
                    )
                except OSError:
                    try:
                        (root / "memory" / "agentarch" / name).rmdir()
                    except OSError:
                        pass
            return
        own = Path("/proc/self/cgroup").read_text().strip().splitlines()[-1].split("::", 1)[-1].lstrip("/")
        parent = root / own
        if "pids" not in (parent / "cgroup.subtree_control").read_text():
            raise OSError(f"the pids controller is not delegated to {parent}")
        limits = {"pids.max": str(max_pids)}
        if memory_bytes and "memory" in (parent / "cgroup.subtree_control").read_text():
            limits["memory.max"] = str(memory_bytes)
        self.dirs.append(self._mkdir(parent / f"agentarch-{name}", limits))

    @classmethod
    def at(cls, path: Path) -> Cgroup:
        """An existing cgroup directory (another orchestrator's job), to kill what is left in it."""
        found = cls.__new__(cls)  # adopted, not made: nothing of __init__'s creation applies
        found.dirs, found.problem = [path], None
        return found

    @staticmethod
    def _mkdir(path: Path, limits: dict[str, str]) -> Path:
        path.mkdir(parents=True)
        for key, value in limits.items():
            (path / key).write_text(value)
        return path

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        return found

    def kill_all(self) -> None:
        """Kill every process in the group, repeating until none is left (a fork can race one pass)."""
        if self.dirs and (self.dirs[0] / "cgroup.kill").exists():
            (self.dirs[0] / "cgroup.kill").write_text("1")
        for _ in range(200):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        for d in reversed(self.dirs):
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


# -- the command line ---------------------------------------------------------------------------


def _runner_dir() -> Path:
    """The runner package's folder: `sandbox/` in a checkout or editable install, `agentarch/runner/` in a wheel."""
    import agentarch.runner

    return Path(agentarch.runner.__file__).resolve().parent


def _boot(root: str, spec: str) -> list[str]:
    """The interpreter's command line that starts the runner (see _BOOT)."""
    paths = [str(p) for p in runtime_view().import_paths]
    return [sys.executable, "-E", "-s", "-c", _BOOT, root, _runner_dir().name, spec, *paths]


GPU_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


def gpu_devices(gpu: str | None, dev: Path = Path("/dev")) -> list[str]:
    """The device nodes a slot's sandbox gets: its own GPU(s) and the control nodes CUDA needs, no other GPU.

    `gpu` is the slot's CUDA_VISIBLE_DEVICES (indices in PCI bus order, matching /dev/nvidiaN).
    """
    if gpu is None:
        return []
    nodes = [dev / f"nvidia{index.strip()}" for index in gpu.split(",") if index.strip().isdigit()]
    nodes += [dev / name for name in GPU_CONTROL_NODES]
    nodes += sorted((dev / "nvidia-caps").glob("*"))
    return [str(node) for node in nodes if node.exists()]


def _sandbox_env(threads: int, home: str, tmp: str, gpu: str | None) -> dict[str, str]:
    """The whole environment a candidate sees: no key, no proxy, nothing of the orchestrator's."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmp,
        "USER": "candidate",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    if gpu is not None:
        env |= {"CUDA_VISIBLE_DEVICES": gpu, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    return env


def _bwrap_args(
    scratch: Path, inputs_dir: Path, seccomp_fd: int, threads: int, gpu: str | None = None, tmpfs_mb: int = 1024
) -> list[str]:
    """The bubblewrap command line; `gpu` pins the evaluation to that GPU (one slot per GPU).

    The root is an empty tmpfs holding only the runtime view (agentarch.isolation.runtime_view), the runner,
    the task's inputs and scratch. `tmpfs_mb` sizes the writable tmpfs mounts (/tmp, /dev/shm):
    their pages are RAM that RLIMIT_AS does not count, so without a size a candidate could fill
    the host's memory.
    """
    args = ["bwrap", *_namespace_args(), "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in _sandbox_env(threads, BOX_SCRATCH, "/tmp", gpu).items():
        args += ["--setenv", key, value]
    # /proc, /dev and the /tmp tmpfs come first: a later tmpfs would hide a venv that lives under /tmp.
    args += ["--proc", "/proc", "--dev", "/dev"]
    for tmpfs in ("/dev/shm", "/tmp"):  # sticky and world-writable, as on a host: the candidate uid writes here
        args += ["--perms", "1777", "--size", str(tmpfs_mb * 2**20), "--tmpfs", tmpfs]
    for link, target in symlinked_roots().items():
        args += ["--symlink", target, link]
    # Directories bubblewrap makes on its own are root-only (0700), which the candidate uid could not
    # pass through; the ones above each mount are made first, traversable and empty but for the mounts.
    view = runtime_view()
    runner = Path(BOX_PACKAGE_ROOT) / _runner_dir().name
    mounts = [*view.roots, *view.packages, runner]
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
        str(_runner_dir()),
        str(runner),
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
        *_drop_privileges(True),
        *_boot(BOX_PACKAGE_ROOT, f"{BOX_SCRATCH}/spec.json"),
    ]
    return args


def _landlock_rules(scratch: Path, inputs_dir: Path, gpu: str | None) -> dict[str, list[str]]:
    """What the process-mode runner may touch once it confines itself (sandbox/landlock.py)."""
    read = [
        *map(str, runtime_view().paths),
        str(_runner_dir()),
        str(inputs_dir),
        "/proc/self",
        "/proc/cpuinfo",
        "/proc/meminfo",
        "/sys/devices/system/cpu",
    ]
    return {
        "read": read,
        "write": [str(scratch)],
        "devices": ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", *gpu_devices(gpu)],
    }


def _prlimit_args(limits: Limits, cap_address_space: bool) -> list[str]:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        raise SandboxError("prlimit (util-linux) is not installed; it sets the sandbox's resource limits")
    args = [
        prlimit,
        f"--cpu={limits.cpu_seconds}",
        f"--fsize={limits.max_file_mb * 2**20}",
        f"--nofile={limits.max_open_files}",
        "--core=0",
    ]
    if cap_address_space:
        args.append(f"--as={limits.memory_mb * 2**20}")
    return args + ["--"]


SCRATCH_INODES = 4096
"""Files and directories a candidate may make in scratch: a few are all training writes."""


def _mount_scratch(path: Path, size_mb: int) -> bool:
    """Put a tmpfs on `path` capped in bytes and inodes, nosuid and nodev, where the host may mount.

    A plain directory on the host's disk let one candidate fill the disk the archive lives on
    (fallocate) or its inode table, and plant a setuid file in a directory other users can reach.
    Only a root host can mount; elsewhere scratch stays a directory (RLIMIT_FSIZE caps each file).
    """
    if not _host_is_root() or not shutil.which("mount"):
        return False
    options = f"size={size_mb}m,nr_inodes={SCRATCH_INODES},mode=0700,nosuid,nodev"
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "agentarch-scratch", str(path)], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _unmount_scratch(path: Path) -> None:
    """Unmount a job's scratch tmpfs (its processes are dead by now); lazily if something still holds it."""
    for command in (["umount", str(path)], ["umount", "--lazy", str(path)]):
        try:
            if subprocess.run(command, capture_output=True, timeout=30).returncode == 0:
                return
        except (OSError, subprocess.TimeoutExpired):
            pass
    log.warning("could not unmount the scratch tmpfs at %s", path)


# -- one job ------------------------------------------------------------------------------------


class SandboxJob:
    """One candidate's run in the sandbox: start, read events, send the host's word, clean up.

    Use as a context manager; leaving it kills whatever is left and removes the scratch directory.
    """

    def __init__(
        self,
        code: str,
        spec: dict[str, Any],
        inputs_dir: Path,
        limits: Limits,
        isolation: IsolationMode,
        gpu: str | None = None,
    ) -> None:
        self.limits = limits
        self.isolation = isolation
        self.scratch = Path(tempfile.mkdtemp(prefix="agentarch-job-"))
        os.chmod(self.scratch, 0o700)
        self.scratch_mounted = _mount_scratch(self.scratch, 2 * limits.max_file_mb)  # the log and outputs, each capped
        self.started = time.monotonic()
        self.deadline = self.started + limits.timeout_s
        self._buffer = b""
        self.cgroup: Cgroup | None = None  # made by _start, before the runner is launched
        try:
            self._start(code, spec, inputs_dir, gpu)
        except BaseException:  # nothing of a job that never started stays behind
            if self.cgroup is not None:
                self.cgroup.kill_all()
                self.cgroup.remove()
            if self.scratch_mounted:
                _unmount_scratch(self.scratch)
            self._remove_scratch()
            raise

    def _start(self, code: str, spec: dict[str, Any], inputs_dir: Path, gpu: str | None) -> None:
        """Write the candidate and its spec into scratch, then launch the runner under this job's isolation."""
        limits, isolation = self.limits, self.isolation
        boxed = isolation == "bubblewrap"
        (self.scratch / "candidate.py").write_text(code)
        # The process mode drops to the candidate uid only where that uid can read what it runs;
        # bubblewrap mounts everything as root, so its candidate uid always can.
        to_candidate_uid = boxed or (
            _host_is_root()
            and _readable_by_candidate(
                (
                    Path(sys.executable).resolve(),
                    Path(sysconfig.get_paths()["stdlib"]),
                    _runner_dir(),
                    Path(inputs_dir),
                    *(p for p in runtime_view().packages if p.name in ("torch", "numpy")),
                )
            )
        )
        if _host_is_root() and to_candidate_uid:
            os.chown(self.scratch, CANDIDATE_UID, CANDIDATE_UID)
        spec = {
            **spec,
            "code_path": f"{BOX_SCRATCH if boxed else self.scratch}/candidate.py",
            "inputs_dir": BOX_DATA if boxed else str(inputs_dir),
            "output_dir": BOX_SCRATCH if boxed else str(self.scratch),
            "threads": limits.threads,
            "smoke_timeout_s": limits.smoke_timeout_s,
            "seccomp_bpf": None if boxed else str(self.scratch / "seccomp.bpf"),
            "landlock": None if boxed else _landlock_rules(self.scratch, inputs_dir, gpu),
        }
        (self.scratch / "spec.json").write_text(json.dumps(spec))
        # CUDA reserves far more address space than it uses, so on GPU slots memory is capped by the cgroup alone.
        # On CPU slots the memory cgroup is made too, where it can be: RLIMIT_AS does not count tmpfs
        # or memfd pages (RAM a candidate can fill through /tmp, /dev/shm or memfd_create), the cgroup does.
        cgroup = self.cgroup = Cgroup(f"{self.scratch.name}.{owner_tag()}", limits.max_pids, limits.memory_mb * 2**20)
        shim = [
            "/bin/sh",
            "-c",
            'for p in $0; do echo $$ > "$p" || exit 97; done; exec "$@"',
            " ".join(cgroup.procs_files),
        ]
        command = shim + _prlimit_args(limits, cap_address_space=gpu is None)
        pass_fds: tuple[int, ...] = ()
        if boxed:
            seccomp_fd = self._seccomp_fd()
            pass_fds = (seccomp_fd,)
            command += _bwrap_args(
                self.scratch, inputs_dir, seccomp_fd, limits.threads, gpu, tmpfs_mb=limits.max_file_mb
            )
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:
            (self.scratch / "seccomp.bpf").write_bytes(seccomp_program(new_processes=False))
            command += [
                *_drop_privileges(to_candidate_uid),
                *_boot(str(_runner_dir().parent), str(self.scratch / "spec.json")),
            ]
            env = _sandbox_env(limits.threads, str(self.scratch), str(self.scratch), gpu)
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.scratch,
            env=env,
            pass_fds=pass_fds,
            start_new_session=True,
        )
        for fd in pass_fds:
            os.close(fd)

    def _seccomp_fd(self) -> int:
        path = self.scratch / "seccomp.bpf"
        path.write_bytes(seccomp_program(new_processes=True))
        fd = os.open(path, os.O_RDONLY)
        path.unlink()
        return fd

    def __enter__(self) -> SandboxJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_event(self, timeout_s: float | None = None) -> dict[str, Any] | Outcome:
        """The next event from the runner, checked by agentarch.isolation.protocol, or an Outcome.

        The Outcome says the runner died, ran out of time, or sent something the host cannot use
        (candidate code can write to the event pipe); in the last two cases the job is killed.
        """
        deadline = self.deadline if timeout_s is None else min(self.deadline, time.monotonic() + timeout_s)
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_EVENT_BYTES:
                self.kill()
                return Outcome("failed", f"the runner sent an event line over {MAX_EVENT_BYTES // 2**20} MiB; killed")
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return Outcome(
                    "timeout",
                    f"no result within {self._elapsed():.0f} s (wall-clock limit); the process group was killed",
                )
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return self._death()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return parse_event(line)
        except ProtocolError as err:
            self.kill()
            return Outcome("failed", f"the runner sent {err}; killed")

    def send(self, word: str, timeout_s: float = 5.0) -> Outcome | None:
        """Write the host's word to the runner without ever blocking for longer than `timeout_s`.

        The candidate can fill its own stdin pipe (through /proc/self/fd/0), and a blocking write
        would then hang the host past every timeout. Returns None when the word went out, or when
        the runner is gone already (the next read says how it ended); an Outcome, after killing the
        job, when the pipe stayed full.
        """
        assert self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        data = f"{word}\n".encode()
        deadline = time.monotonic() + timeout_s
        os.set_blocking(fd, False)
        while data:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return Outcome(
                    "failed",
                    f"the runner's input stayed full for {timeout_s:.0f} s (the candidate can "
                    "write to its own stdin); killed",
                )
            _, ready, _ = select.select([], [fd], [], left)
            try:
                if ready:
                    data = data[os.write(fd, data) :]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                return None
        return None

    def output(self, name: str, expected_shape: tuple[int, ...]) -> np.ndarray:
        """Load logits the runner wrote, refusing anything but a plain float .npy of `expected_shape`."""
        fh = self._open_scratch_file(name)
        if fh is None:
            raise ProtocolError(f"the runner did not write {name} as a regular file")
        with fh:
            try:
                return read_outputs(fh, expected_shape)
            except ProtocolError as err:
                raise ProtocolError(f"{name}: {err}") from None

    def _open_scratch_file(self, name: str) -> Any:
        """Open a file the sandbox wrote, or None when it is not a regular file.

        Checking the path and then opening it would leave a race: a process still alive in the
        sandbox could swap in a symlink in between and make the host read (and score, or copy
        into the archive) one of the host's own files. O_NOFOLLOW and fstat on the open file close it.
        """
        try:
            fd = os.open(self.scratch / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb")

    def log_tail(self, max_bytes: int = MAX_LOG_BYTES) -> str:
        """What the sandbox's tools said on stderr and what the candidate printed, at most `max_bytes`.

        Both are capped to their head and tail (a candidate can print gigabytes, or leave a sparse
        log), and stderr is read without blocking (a process the job left may hold it open).
        """
        said = self._stderr(max_bytes // 2)
        return "\n".join(filter(None, [said, self._printed(max(200, max_bytes - len(said.encode())))]))

    def _stderr(self, max_bytes: int) -> str:
        """What is waiting on the sandbox's stderr (bubblewrap's and prlimit's errors), capped; never blocks."""
        stream = self.proc.stderr
        if stream is None or stream.closed:
            return ""
        os.set_blocking(stream.fileno(), False)
        try:
            return cap_text(os.read(stream.fileno(), max_bytes), max_bytes).strip()
        except OSError:  # nothing there yet (BlockingIOError), or the pipe is gone
            return ""

    def _printed(self, max_bytes: int) -> str:
        """The head and tail of what the candidate printed (candidate.log), capped."""
        fh = self._open_scratch_file("candidate.log")
        if fh is None:
            return ""
        with fh:
            return read_capped(fh, max_bytes).strip()

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _death(self) -> Outcome:
        """How the runner ended, once its event pipe closed: its exit status in words, with the log's tail."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # it closed the event pipe but runs on
            self.kill()
            try:
                code = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                return Outcome("failed", "the sandboxed process closed its event pipe and could not be reaped; killed")
        said = self._stderr(MAX_LOG_BYTES // 2)
        # Exit 97 is the cgroup shim's, but candidate code can exit with 97 too. Only the shim's failure
        # puts the cgroup.procs path (its $0, sh's prefix for errors) on stderr, which candidate code
        # cannot write: the runner points fd 2 at its log before any candidate code runs.
        if code == 97 and "cgroup.procs" in said:
            raise SandboxError(f"could not place the evaluation in its cgroup: {said}")
        if code < 0 or code > 128:
            signum = -code if code < 0 else code - 128
            name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
            hint = {
                "SIGKILL": "killed: memory or process limit, or out of memory",
                "SIGXCPU": "CPU-time limit reached",
                "SIGXFSZ": "file-size limit reached",
                "SIGSEGV": "segmentation fault",
            }.get(name, "killed by a signal")
            return Outcome("failed", f"the sandboxed process died with {name} ({hint})")
        tail = "\n".join(filter(None, [said, self._printed(1200)]))
        return Outcome(
            "failed", f"the sandboxed process exited with code {code} before reporting" + (f": {tail}" if tail else "")
        )

    def kill(self) -> None:
        """Kill the whole evaluation: the process group, then anything left in its cgroup."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.cgroup.kill_all()

    def close(self) -> None:
        """Kill whatever is left of the evaluation, then remove its scratch directory; never raises.

        It runs on the way out of every job, often while an exception is on its way up: a failure
        here is logged, and the cleanup that follows it still runs.
        """
        try:
            if self.proc.poll() is None:
                self.kill()
            self.cgroup.kill_all()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired) as err:
            log.warning("could not end every process of the job in %s: %s", self.scratch, err)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self.cgroup.remove()
        if self.scratch_mounted:
            _unmount_scratch(self.scratch)
        self._remove_scratch()

    def _remove_scratch(self, timeout_s: float = 60.0) -> None:
        """Remove the scratch directory and whatever the candidate left in it, or log why not.

        shutil.rmtree recurses once per level (a 3,000-deep chain raises RecursionError and leaves
        the rest behind) and stops at directories the candidate made unreadable. GNU rm walks any
        depth without recursion, never follows a symlink and stays on one file system; when it
        leaves something (modes the host's user cannot override), `chmod -R u+rwX`, which skips
        symlinks, comes first. The processes of the job are dead by now, so nothing refills it.
        """
        path = str(self.scratch)
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
