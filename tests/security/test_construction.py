"""The isolation's constructed guarantees, attacked in both modes (issue 11 and the red team's findings).

Each case runs end to end through a real Evaluator, as in test_escapes.py, once under bubblewrap
and once in the process mode, and must be contained in both: the candidate is not host root, the
kernel's global knobs are out of reach, the seccomp allowlist holds against argument tricks and
the calls a denylist forgets, no label source is readable, and (in the process mode, which has no
namespaces) the orchestrator's environment, limits, processes and files are out of reach too.
"""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from agentarch.isolation.bubblewrap import bubblewrap_problem
from agentarch.isolation.launch import gpu_devices
from agentarch.isolation.policy import SandboxError, refuse_untrusted
from agentarch.isolation.privileges import CANDIDATE_UID
from agentarch.isolation.process_mode import process_mode_gaps
from agentarch.isolation.seccomp import DENIED_EXAMPLES
from tests.security.harness import Case, candidate_code, check_contained, run_case

X86_64 = platform.machine() == "x86_64"
MODES = [
    pytest.param("bubblewrap", marks=pytest.mark.skipif(bubblewrap_problem() is not None, reason="no bubblewrap")),
    pytest.param("process", marks=pytest.mark.skipif(bool(process_mode_gaps()), reason="process mode has gaps")),
]
LIBC = (
    '        ctypes = _imp("ctypes"); libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long\n'
)

C = Case
CASES = [
    # -- not host root -----------------------------------------------------------------------------
    C(
        "not-root-and-no-capabilities",
        """
        status = _open("/proc/self/status").read()
        caps = [line for line in status.splitlines() if line.startswith(("Uid:", "CapEff:", "CapPrm:", "CapBnd:"))]
        report(*caps)
    """,
        "init",
        ("failed",),
        r"CapPrm:\s+0{16} \| CapEff:\s+0{16}",
        "setpriv drops uid (or every capability) first",
    ),
    C(
        "core-pattern",
        """
        report(attempt(lambda: _open("/proc/sys/kernel/core_pattern", "w").write("|/scratch/x.sh")))
    """,
        "module",
        ("failed",),
        r"REPORT (PermissionError|OSError|FileNotFoundError)",
        "uid, read-only /proc/sys, Landlock",
    ),
    C(
        "sysrq-and-modprobe",
        """
        report(attempt(lambda: _open("/proc/sysrq-trigger", "a")), attempt(lambda: _open("/proc/sys/kernel/modprobe", "a")),
               attempt(lambda: _open("/proc/sys/fs/binfmt_misc/register", "a")))
    """,
        "forward",
        ("failed",),
        r"REPORT \w+Error.*\| \w+Error.*\| \w+Error",
        "uid, read-only /proc, Landlock",
    ),
    C(
        "sys-writable",
        """
        found = []
        for path in ("/sys/kernel/mm/transparent_hugepage/enabled", "/sys/fs/cgroup/pids/cgroup.procs",
                     "/sys/fs/cgroup/cgroup.procs", "/sys/kernel/uevent_helper", "/sys/power/state"):
            found.append(attempt(lambda: _open(path, "a")))
        report(*found)
    """,
        "init",
        ("failed",),
        r"REPORT \w+Error",
        "no /sys (bubblewrap), Landlock (process)",
    ),
    C(
        "cgroup-escape",
        """
        me = str(os.getpid())
        report(attempt(lambda: _open("/sys/fs/cgroup/pids/cgroup.procs", "w").write(me)),
               attempt(lambda: _open("/sys/fs/cgroup/unified/cgroup.procs", "w").write(me)))
    """,
        "module",
        ("failed",),
        r"REPORT \w+Error.*\| \w+Error",
        "cgroup files are root's and outside the view",
    ),
    # -- seccomp: argument tricks and calls a denylist forgets ---------------------------------------
    C(
        "socket-high-bits",
        LIBC
        + """
        fd = libc.syscall(ctypes.c_long(41), ctypes.c_long((1 << 32) | 2), 1, 0)
        pair = (ctypes.c_int * 2)()
        bad = libc.syscall(ctypes.c_long(53), ctypes.c_long((1 << 32) | 2), 1, 0, pair)
        good = libc.syscall(ctypes.c_long(53), ctypes.c_long(1), 1, 0, pair)
        report(f"socket={fd}", f"inet-pair={bad}", f"unix-pair={good}")
    """,
        "init",
        ("failed",),
        r"socket=-1 \| inet-pair=-1 \| unix-pair=0",
        "seccomp compares the low 32 bits",
    ),
    C(
        "namespaces-from-inside",
        LIBC
        + """
        flags = (1 << 32) | 0x10000000 | 17  # CLONE_NEWUSER | SIGCHLD, with a high bit set
        pid = libc.syscall(ctypes.c_long(56), ctypes.c_long(flags), 0, 0, 0, 0)
        if pid == 0:
            os._exit(0)
        unshared = libc.unshare(0x10000000)
        report(f"clone={pid} errno={ctypes.get_errno()}", f"unshare={unshared}")
    """,
        "forward",
        ("failed",),
        r"clone=-1 errno=1 \| unshare=-1",
        "seccomp: clone flags masked, unshare denied",
    ),
    C(
        "denied-syscalls",
        LIBC
        + """
        numbers = {"io_uring_setup": 425, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250,
                   "add_key": 248, "ptrace": 101, "process_vm_readv": 310, "mount": 165, "setns": 308,
                   "kexec_load": 246, "init_module": 175, "open_by_handle_at": 304, "shmget": 29, "pidfd_getfd": 438,
                   "personality": 135, "chmod": 90, "fchown": 93, "utimensat": 280, "mknod": 133}
        out = []
        for name, nr in numbers.items():
            ret = libc.syscall(ctypes.c_long(nr), 0, 0, 0, 0, 0)
            out.append(f"{name}={ret}/{ctypes.get_errno()}")
        report(*out)
    """,
        "init",
        ("failed",),
        r"REPORT (\w+=-1/1(?: \| |\s)){20}",
        "seccomp allowlist: default EPERM",
    ),
    C(
        "datagram-pair-to-a-host-socket",
        LIBC
        + """
        s = _imp("socket")
        pair = (ctypes.c_int * 2)()
        raw = libc.syscall(ctypes.c_long(53), 1, ctypes.c_long((1 << 32) | 2), 0, pair)  # AF_UNIX, SOCK_DGRAM
        report(attempt(lambda: s.socketpair(s.AF_UNIX, s.SOCK_DGRAM)), f"raw={raw}", f"stream-pair={len(s.socketpair())}")
    """,
        "init",
        ("failed",),
        r"REPORT PermissionError.* \| raw=-1 \| stream-pair=2",
        "seccomp: stream and seqpacket pairs only (a datagram socket can sendto any path)",
    ),
    C(
        "x32-abi-socket",
        LIBC
        + """
        libc.syscall(ctypes.c_long(0x40000000 | 41), 2, 1, 0)
        report("the x32 call returned")
    """,
        "module",
        ("failed",),
        r"SIGSYS",
        "seccomp kills a call of a foreign ABI",
    ),
    C(
        "setuid-file-in-scratch",
        """
        report(attempt(lambda: os.chmod(_open("planted", "w").name, 0o4755)), attempt(lambda: os.chmod(".", 0o755)))
    """,
        "init",
        ("failed",),
        r"REPORT PermissionError.*\| PermissionError",
        "seccomp: no chmod; scratch is nosuid",
    ),
    C(
        "scratch-disk-fill",
        """
        out = []
        for i in range(40):  # 40 x 15 MiB, far past the scratch tmpfs (twice the 16 MiB file limit)
            fd = os.open(f"fill{i}", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, 15 * 2**20)
            except OSError as err:
                out.append(f"{type(err).__name__}: {err} after {i}")
                break
            finally:
                os.close(fd)
        report(*out or ["filled 600 MiB"])
    """,
        "module",
        ("failed",),
        r"No space left on device after [0-3]\b",
        "scratch is a sized tmpfs",
    ),
    C(
        "scratch-inode-fill",
        """
        made = 0
        try:
            for made in range(20000):
                os.close(os.open(f"f{made}", os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as err:
            report(f"{type(err).__name__}: {err} after {made}")
        report(f"made {made + 1} files")
    """,
        "init",
        ("failed",),
        r"No space left on device: 'f\d+' after 40\d\d\b",
        "the scratch tmpfs caps inodes",
    ),
    # -- the orchestrator's process, limits and environment -------------------------------------------
    C(
        "orchestrator-limits",
        LIBC
        + """
        class RL(ctypes.Structure):
            _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]
        ret = libc.prlimit64(HOST["host_pid"], 1, ctypes.byref(RL(0, 0)), None)  # RLIMIT_FSIZE = 0
        ret2 = libc.prlimit64(os.getppid(), 1, ctypes.byref(RL(0, 0)), None)
        report(f"host={ret}", f"parent={ret2}")
    """,
        "forward",
        ("failed",),
        r"host=-1 \| parent=-1",
        "seccomp: prlimit64 on pid 0 only",
    ),
    C(
        "pdeathsig-cleared",
        LIBC
        + """
        cleared = libc.prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG 0: outlive a killed orchestrator
        high = libc.syscall(ctypes.c_long(157), ctypes.c_long((1 << 32) | 1), 0, 0, 0, 0)
        named = libc.prctl(15, b"candidate", 0, 0, 0)  # PR_SET_NAME, which threads use
        report(f"cleared={cleared} high={high} named={named}")
    """,
        "module",
        ("failed",),
        r"cleared=-1 high=-1 named=0",
        "seccomp: prctl options on a list, PR_SET_PDEATHSIG not on it",
    ),
    C(
        "renice-and-pin-others",
        LIBC
        + """
        renice_all = libc.setpriority(2, 0, 19)  # PRIO_USER: every process of this uid
        pin_init = libc.syscall(ctypes.c_long(203), 1, 8, (ctypes.c_ulong * 1)(1))  # sched_setaffinity(1, ...)
        pin_self = libc.syscall(ctypes.c_long(203), 0, 8, (ctypes.c_ulong * 1)(1))
        report(f"renice_all={renice_all} pin_init={pin_init} pin_self={pin_self}")
    """,
        "init",
        ("failed",),
        r"renice_all=-1 pin_init=-1 pin_self=0",
        "seccomp: setpriority and sched_setaffinity on pid 0 only",
    ),
    C(
        "orchestrator-signal",
        """
        report(attempt(lambda: os.kill(HOST["host_pid"], 0)), attempt(lambda: os.kill(os.getppid(), 0) or "alive"))
    """,
        "module",
        ("failed",),
        r"REPORT (ProcessLookupError|PermissionError)",
        "pid namespace, Landlock signal scope",
    ),
    C(
        "orchestrator-environ-and-root",
        """
        pid = HOST["host_pid"]
        report(attempt(lambda: _open(f"/proc/{pid}/environ", "rb").read()),
               attempt(lambda: os.listdir(f"/proc/{pid}/root/root")), attempt(lambda: _open(f"/proc/{pid}/cmdline").read()))
    """,
        "init",
        ("failed",),
        r"REPORT \w+Error.*\| \w+Error.*\| \w+Error",
        "pid namespace; Landlock ptrace and path rules",
    ),
    C(
        "orphan-outlives-job",
        """
        try:
            pid = os.fork()
        except OSError as err:
            report("no-fork", f"{type(err).__name__}: {err}")
        if pid == 0:
            os.setsid()
            _imp("time").sleep(300)
            os._exit(0)
        report("forked", pid)
    """,
        "module",
        ("failed",),
        r"REPORT (no-fork|forked)",
        "process mode: no fork; bubblewrap: the pid namespace dies",
    ),
    C(
        "zombies-for-the-orchestrator",
        LIBC
        + """
        made = 0
        for _ in range(5):
            pid = libc.syscall(ctypes.c_long(56), ctypes.c_ulong(0x8000 | 17), None, None, None, None)  # CLONE_PARENT
            if pid == 0:
                os._exit(0)
            made += pid > 0
        report(f"made={made} errno={ctypes.get_errno()}")
    """,
        "init",
        ("failed",),
        r"made=0 errno=1",
        "seccomp: CLONE_PARENT refused",
    ),
    C(
        "archive-write",
        """
        report(attempt(lambda: _open(HOST["archive"], "r+b").write(b"x")), attempt(lambda: os.truncate(HOST["archive"], 0)))
    """,
        "forward",
        ("failed",),
        r"REPORT \w+Error.*\| \w+Error",
        "not mounted (bubblewrap), Landlock (process)",
    ),
    # -- label sources -----------------------------------------------------------------------------
    C(
        "sklearn-digits-labels",
        """
        report(attempt(lambda: _open(HOST["sklearn_digits"], "rb").read(10)),
               attempt(lambda: _imp("sklearn")), attempt(lambda: _imp("scipy")))
    """,
        "module",
        ("failed",),
        r"REPORT \w+Error.*\| \w+Error.*\| \w+Error",
        "runtime view: torch, numpy, einops, safetensors and their requirements only",
    ),
    C(
        "cache-labels",
        """
        report(attempt(lambda: _open(HOST["labels_dir"] + "/test_y.npy", "rb").read(10)),
               attempt(lambda: os.listdir(HOST["cache_dir"])))
    """,
        "init",
        ("failed",),
        r"REPORT \w+Error.*\| \w+Error",
        "labels dir 0700, not mounted, outside Landlock's rules",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_constructed_guarantee_holds(case: Case, mode: str, host, listeners, tmp_path, cache_dir, monkeypatch):
    if "libc.syscall" in case.attack and not X86_64:
        pytest.skip("x86_64 system call numbers")
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    case = Case(case.name, case.attack, case.where, case.status, case.reason, case.layer, case.limits, mode)
    code = candidate_code(case, dict(host["values"]))
    run = run_case(code, tmp_path, cache_dir, monkeypatch, isolation=mode, **case.limits)
    check_contained(case, run, host, listeners)
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core_pattern
    if case.name == "not-root-and-no-capabilities" and mode == "bubblewrap":
        assert f"Uid:\t{CANDIDATE_UID}" in run.text  # bubblewrap always drops to the candidate uid as root


def test_denied_examples_are_denied():
    """Every call named as left out is really absent from the allowlist (the docs list them)."""
    from agentarch.isolation.seccomp import ALLOWED, EXEC_CALLS, FORK_CALLS

    assert not set(DENIED_EXAMPLES) & {*ALLOWED, *FORK_CALLS, *EXEC_CALLS}


def test_a_slot_sees_only_its_own_gpu(tmp_path):
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    nodes = gpu_devices("1", dev=tmp_path)
    assert sorted(Path(n).name for n in nodes) == ["nvidia-uvm", "nvidia1", "nvidiactl"]
    assert gpu_devices(None, dev=tmp_path) == []


def test_process_mode_with_gaps_refuses_untrusted_code(monkeypatch):
    monkeypatch.setattr("agentarch.isolation.policy.process_mode_gaps", lambda: ["Landlock is not available"])
    with pytest.raises(SandboxError, match="apt-get install bubblewrap.*weak_sandbox_ok"):
        refuse_untrusted("process", trusted=lambda: False, weak_sandbox_ok=False)
    refuse_untrusted("process", trusted=lambda: True, weak_sandbox_ok=False)  # the project's own templates still run
    refuse_untrusted("process", trusted=lambda: False, weak_sandbox_ok=True)  # the user accepted the gap
    refuse_untrusted("bubblewrap", trusted=lambda: False, weak_sandbox_ok=False)
