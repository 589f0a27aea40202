"""The escape corpus: hostile candidates, each trying one thing, each run end to end.

Every case goes through a real `Evaluator` (static check, sandbox, host-side scoring, archive) on
the digits task. A case passes when the attack was contained: the recorded outcome is the expected
one, its reason names what stopped the attack, and the host is unchanged (no listener heard from
the sandbox, no secret reached the archive, no file appeared outside scratch, no process of the
job survived it, the archive's other row is untouched, and any recorded score is what honest
scoring of the outputs the host loaded gives). docs/reliability.md has the table and the figures.
"""

from __future__ import annotations

import pytest

from tests.conftest import requires_bubblewrap
from tests.security.harness import Case, candidate_code, check_contained, run_case

pytestmark = [requires_bubblewrap, pytest.mark.slow]


SMOKE_FAIL = r"\[smoke:(import|build|exception)\]"
SECCOMP = r"PermissionError: \[Errno 13\] Permission denied"
HIDDEN = r"FileNotFoundError: \[Errno 2\]"

C = Case
CASES = [
    # -- network ---------------------------------------------------------------------------------
    C(
        "tcp-127.0.0.1",
        """
        s = _imp("socket")
        report(attempt(lambda: s.create_connection(("127.0.0.1", HOST["tcp4"]), timeout=3)))
    """,
        "module",
        ("failed",),
        SMOKE_FAIL + ".*" + SECCOMP,
        "seccomp (inet), then the empty net namespace",
    ),
    C(
        "tcp6-::1",
        """
        s = _imp("socket")
        report(attempt(lambda: s.create_connection(("::1", HOST["tcp6"]), timeout=3)))
    """,
        "init",
        ("failed",),
        SECCOMP,
        "seccomp (inet6), then the empty net namespace",
    ),
    C(
        "udp-sendto",
        """
        s = _imp("socket")
        report(attempt(lambda: s.socket(s.AF_INET, s.SOCK_DGRAM).sendto(b"x" * 512, ("127.0.0.1", HOST["udp4"]))))
    """,
        "forward",
        ("failed",),
        SECCOMP,
        "seccomp (inet)",
    ),
    C(
        "unix-host-tmp",
        """
        s = _imp("socket")
        report(attempt(lambda: s.socket(s.AF_UNIX).connect(HOST["unix_hidden"])),
               "visible" if os.path.exists(HOST["unix_hidden"]) else "path-hidden")
    """,
        "module",
        ("failed",),
        SECCOMP + r".*path-hidden",
        "seccomp (unix); the path is not mounted",
    ),
    C(
        "unix-abstract",
        """
        s = _imp("socket")
        report(attempt(lambda: s.socket(s.AF_UNIX).connect(HOST["unix_abstract"])))
    """,
        "init",
        ("failed",),
        SECCOMP,
        "seccomp (unix); abstract names are per net namespace",
    ),
    C(
        "unix-visible-dir",
        """
        s = _imp("socket")
        report(attempt(lambda: s.socket(s.AF_UNIX).connect(HOST["unix_visible"])),
               "visible" if os.path.exists(HOST["unix_visible"]) else "path-hidden")
    """,
        "forward",
        ("failed",),
        SECCOMP + r".*visible",
        "seccomp (unix): a visible path socket ignores namespaces",
    ),
    C(
        "dns",
        """
        s = _imp("socket")
        report(attempt(lambda: s.getaddrinfo("example.com", 80)), attempt(lambda: s.gethostbyname("pypi.org")))
    """,
        "module",
        ("failed",),
        r"REPORT gaierror.*\| gaierror",
        "seccomp + net namespace (no resolver reachable)",
    ),
    C(
        "raw-packet-netlink",
        """
        s = _imp("socket")
        report(attempt(lambda: s.socket(s.AF_INET, s.SOCK_RAW, s.IPPROTO_ICMP)),
               attempt(lambda: s.socket(s.AF_PACKET, s.SOCK_RAW)),
               attempt(lambda: s.socket(s.AF_NETLINK, s.SOCK_RAW)))
    """,
        "init",
        ("failed",),
        SECCOMP + ".*" + SECCOMP + ".*" + SECCOMP,
        "seccomp (inet, packet, netlink)",
    ),
    C(
        "ctypes-syscall-socket",
        """
        ctypes = _imp("ctypes")
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.syscall(41, 2, 1, 0)  # socket(AF_INET, SOCK_STREAM, 0), bypassing Python's socket module
        report(f"fd={fd} errno={ctypes.get_errno()}")
    """,
        "forward",
        ("failed",),
        r"fd=-1 errno=13",
        "seccomp (filters the syscall itself)",
    ),
    # -- secrets and files -------------------------------------------------------------------------
    C(
        "env-secrets",
        """
        report("ENV", sorted(os.environ.items()))
    """,
        "module",
        ("failed",),
        r"REPORT ENV",
        "--clearenv (only PATH, HOME, TMPDIR and thread counts)",
    ),
    C(
        "proc-1-environ",
        """
        report("ENV1", attempt(lambda: _open("/proc/1/environ", "rb").read()))
    """,
        "init",
        ("failed",),
        r"ENV1 \| PermissionError",
        "pid namespace: pid 1 is bwrap's own, and another uid's",
    ),
    C(
        "proc-self-environ",
        """
        report("ENVS", _open("/proc/self/environ", "rb").read())
    """,
        "forward",
        ("failed",),
        r"ENVS",
        "--clearenv",
    ),
    C(
        "home-secret-file",
        """
        report(attempt(lambda: _open(HOST["home_secret"]).read()),
               attempt(lambda: _open(os.path.expanduser("~/.agentarch-secret")).read()),
               sorted(os.listdir(HOST["real_home"])) if os.path.isdir(HOST["real_home"]) else "no-home")
    """,
        "module",
        ("failed",),
        HIDDEN + ".*" + HIDDEN,
        "mount namespace: $HOME is not mounted",
    ),
    C(
        "archive-database",
        """
        report(attempt(lambda: _open(HOST["archive"], "r+b").write(b"corrupt")))
    """,
        "init",
        ("failed",),
        HIDDEN,
        "mount namespace: the archive is not mounted",
    ),
    C(
        "labels",
        """
        found = []
        for top in ("/", ):
            for root, dirs, files in os.walk(top):
                dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/usr", "/dev")]
                found += [os.path.join(root, f) for f in files if f in ("val_y.npy", "test_y.npy")]
        report(attempt(lambda: _open(HOST["labels_dir"] + "/test_y.npy", "rb").read()), f"found={found}")
    """,
        "module",
        ("failed",),
        HIDDEN + r".*found=\[\]",
        "mount namespace: only inputs/ is mounted, labels/ never",
    ),
    C(
        "etc-shadow",
        """
        report(attempt(lambda: _open("/etc/shadow").read()))
    """,
        "forward",
        ("failed",),
        HIDDEN,
        "mount namespace: only a few /etc files are mounted",
    ),
    C(
        "host-proc",
        """
        pid = HOST["host_pid"]
        report(attempt(lambda: _open(f"/proc/{pid}/cmdline", "rb").read()),
               attempt(lambda: _open(f"/proc/{pid}/environ", "rb").read()),
               attempt(lambda: _open(f"/proc/{os.getppid()}/mem", "rb").read(16)))
    """,
        "init",
        ("failed",),
        HIDDEN + ".*" + HIDDEN + r".*(PermissionError|OSError)",
        "pid namespace; no ptrace rights",
    ),
    C(
        "write-outside-scratch",
        """
        report(*[f"{t}: {attempt(lambda: _open(t, 'w').write('escaped'))}" for t in HOST["targets"]])
    """,
        "module",
        ("failed",),
        r"(Read-only file system|No such file).*" * 6,
        "mount namespace: read-only binds, read-only root",
    ),
    C(
        "write-tmp-marker",
        """
        with _open(HOST["tmp_marker"], "w") as fh:  # works, in the sandbox's own /tmp
            fh.write("escaped")
    """,
        "forward",
        ("trained",),
        None,
        "private tmpfs /tmp (the write lands in the sandbox, not on the host)",
    ),
    C(
        "setuid-file",
        """
        path = "/scratch/suid-" + HOST["token"]
        with _open(path, "w") as fh:
            fh.write("#!/bin/sh\\nid\\n")
        os.chmod(path, 0o4755)
        nosuid = any(" /scratch " in line and "nosuid" in line for line in _open("/proc/self/mountinfo"))
        report(f"mode={oct(os.stat(path).st_mode)} nosuid={nosuid}", attempt(lambda: os.chmod("/usr/bin/env", 0o4755)))
    """,
        "module",
        ("failed",),
        r"PermissionError: \[Errno 1\] Operation not permitted",
        "seccomp refuses chmod; scratch is a nosuid tmpfs; no_new_privs",
    ),
    C(
        "userns-remount",
        """
        ctypes = _imp("ctypes")
        libc = ctypes.CDLL(None, use_errno=True)
        unshared = libc.unshare(0x10000000 | 0x00020000)  # CLONE_NEWUSER | CLONE_NEWNS: caps again, in a new ns
        remount = libc.mount(None, b"/usr", None, 32 | 4096, None)  # MS_REMOUNT | MS_BIND, without MS_RDONLY
        report(f"unshare={unshared} remount={remount} errno={ctypes.get_errno()}",
               attempt(lambda: _open("/usr/escape-" + HOST["token"], "w")))
    """,
        "init",
        ("failed",),
        r"unshare=-1 remount=-1 .*Read-only file system",
        "seccomp refuses unshare; behind it, locked read-only mounts",
    ),
    # -- resources -------------------------------------------------------------------------------
    C(
        "fork-storm",
        """
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    _imp("time").sleep(600)
                    os._exit(0)
                children += 1
        except OSError as err:
            report(f"forks={children}", f"{type(err).__name__}: {err}")
    """,
        "module",
        ("failed",),
        r"BlockingIOError: \[Errno 11\]",
        "pids cgroup; the cgroup is killed at the end",
        {"max_pids": 16},
    ),
    C(
        "thread-storm",
        """
        threading = _imp("threading")
        time = _imp("time")
        count = 0
        try:
            while True:
                threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
                count += 1
        except RuntimeError as err:
            report(f"threads={count}", err)
    """,
        "init",
        ("failed",),
        r"can't start new thread",
        "pids cgroup",
        {"max_pids": 16},
    ),
    C(
        "memory-bomb-10GB",
        """
        hog = bytearray(10 * 2**30)
        report("allocated", len(hog))
    """,
        "module",
        ("failed",),
        r"MemoryError",
        "RLIMIT_AS",
    ),
    C(
        "tmpfs-fill",
        """
        written = 0
        try:
            for i in range(10_000):
                with _open(f"/tmp/fill-{i}", "wb") as fh:
                    for _ in range(4):
                        fh.write(b"x" * 2**20)
                        written += 1
        except OSError as err:
            report(f"written={written}MiB", err)
    """,
        "forward",
        ("failed",),
        r"No space left on device",
        "sized /tmp tmpfs (--size)",
    ),
    C(
        "memfd-fill",
        """
        total = 0
        fds = []
        try:
            while total < 3500 * 2**20:
                fd = os.memfd_create("fill")
                fds.append(fd)
                for _ in range(16):
                    total += os.write(fd, b"x" * 2**20)
        except OSError as err:
            report(f"memfd={total >> 20}MiB", err)
        report(f"memfd={total >> 20}MiB", "held")
    """,
        "module",
        ("failed",),
        r"SIGKILL|Too many open files|File too large",
        "memory cgroup (memfd pages escape RLIMIT_AS)",
        {"memory_mb": 2048},
    ),
    C(
        "cpu-spin",
        """
        while True:
            pass
    """,
        "forward",
        ("timeout",),
        r"wall-clock limit",
        "wall clock (then RLIMIT_CPU as a backstop)",
        {"smoke_timeout_s": 5},
    ),
    C(
        "sleep-forever",
        """
        _imp("time").sleep(10**6)
    """,
        "init",
        ("timeout",),
        r"wall-clock limit",
        "wall clock",
        {"smoke_timeout_s": 5},
    ),
    C(
        "ignore-sigterm",
        """
        signal = _imp("signal")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        _imp("time").sleep(10**6)
    """,
        "module",
        ("timeout",),
        r"wall-clock limit.*killed",
        "wall clock; the host sends SIGKILL",
        {"smoke_timeout_s": 5},
    ),
    C(
        "stdout-flood",
        """
        chunk = b"y" * 2**20
        for _ in range(10 * 1024):  # 10 GiB to fd 1 (the log file)
            os.write(1, chunk)
    """,
        "module",
        ("failed",),
        r"File too large",
        "RLIMIT_FSIZE on the log",
        {"max_file_mb": 8},
    ),
    C(
        "file-flood",
        """
        with _open("/scratch/big.bin", "wb") as fh:
            for _ in range(10 * 1024):
                fh.write(b"z" * 2**20)
    """,
        "init",
        ("failed",),
        r"File too large",
        "RLIMIT_FSIZE",
        {"max_file_mb": 8},
    ),
    C(
        "open-files",
        """
        fds = []
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as err:
            report(f"fds={len(fds)}", err)
    """,
        "forward",
        ("failed",),
        r"Too many open files",
        "RLIMIT_NOFILE",
    ),
    C(
        "popen-sh",
        """
        sub = _imp("subprocess")
        script = "id; cat /etc/shadow; echo x > " + HOST["targets"][1] + "; ls /root"
        done = sub.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=20)
        report("SHELL", done.stdout, done.stderr)
    """,
        "module",
        ("failed",),
        r"REPORT SHELL.*shadow: No such file.*(Read-only file system|nonexistent)",
        "children inherit every layer (namespaces, seccomp, rlimits, cgroup)",
    ),
    C(
        "setsid-double-fork-daemon",
        """
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time = _imp("time")
                for _ in range(600):  # outlive the job, then try to leave a mark
                    for target in HOST["targets"]:
                        try:
                            _open(target, "w").write("daemon")
                        except OSError:
                            pass
                    time.sleep(0.5)
            os._exit(0)
    """,
        "module",
        ("trained",),
        None,
        "pid namespace dies with its init; the cgroup is killed",
    ),
    # -- tricks ----------------------------------------------------------------------------------
    C(
        "ptrace-parent",
        """
        ctypes = _imp("ctypes")
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.ptrace(16, os.getppid(), None, None)  # PTRACE_ATTACH
        init = [l for l in _open("/proc/1/status") if l.split(":")[0] in ("Name", "CapEff", "NoNewPrivs", "Seccomp")]
        report(f"ptrace={rc} errno={ctypes.get_errno()}", *init)
    """,
        "forward",
        ("failed",),
        r"ptrace=-1 errno=1\b.*bwrap.*CapEff:\s+0+\b.*NoNewPrivs:\s+1.*Seccomp:\s+2",
        "seccomp (ptrace); the parent is bwrap's init, as confined as the runner",
    ),
    C(
        "kill-parent",
        """
        signal = _imp("signal")
        try:
            os.kill(os.getppid(), signal.SIGKILL)
            sent = "sent"
        except OSError as err:
            sent = type(err).__name__
        _imp("time").sleep(0.5)
        report(f"kill(ppid)={sent}", "alive", f"ppid={os.getppid()}")
    """,
        "module",
        ("failed",),
        r"alive \| ppid=1",
        "pid namespace: the parent is the namespace's init",
    ),
    C(
        "kill-minus-one",
        """
        try:
            os.kill(-1, 9)  # every process this one may signal
            sent = "sent"
        except OSError as err:
            sent = type(err).__name__
        report(f"kill(-1)={sent}", "alive")
    """,
        "init",
        ("failed",),
        r"alive",
        "pid namespace: -1 reaches only the sandbox's own processes",
    ),
    C(
        "prctl-games",
        """
        ctypes = _imp("ctypes")
        s = _imp("socket")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG 0: forget the death signal
        libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE 1
        report(f"no_new_privs={libc.prctl(39, 0, 0, 0, 0)} seccomp={libc.prctl(21, 0, 0, 0, 0)}",
               f"seccomp-off={libc.prctl(22, 0, 0, 0, 0)}", attempt(lambda: s.socket(s.AF_INET)))
    """,
        "module",
        ("failed",),
        r"no_new_privs=1 seccomp=2 \| seccomp-off=-1 \| " + SECCOMP,
        "seccomp filters cannot be removed; the pid ns dies with bwrap",
    ),
    # -- forging the score -----------------------------------------------------------------------
    C(
        "patch-cross-entropy",
        """
        F = _imp("torch.nn.functional", fromlist=["x"])
        F.cross_entropy = lambda logits, *a, **k: (logits * 0.0).sum()
        torch.nn.CrossEntropyLoss.forward = lambda self, logits, *a: (logits * 0.0).sum()
    """,
        "module",
        ("trained",),
        None,
        "host-side scoring against labels the sandbox never sees",
    ),
    C(
        "patch-argmax",
        """
        perfect = lambda self, *a, **k: torch.zeros(self.shape[0], dtype=torch.long)
        torch.Tensor.argmax = perfect
        torch.argmax = lambda t, *a, **k: perfect(t)
    """,
        "init",
        ("trained",),
        None,
        "host-side scoring (numpy argmax on the host)",
    ),
    C(
        "patch-numpy-save",
        """
        np = _imp("numpy")
        real_save = np.save
        def forged(path, array, *a, **k):  # "perfect" one-hot logits, guessed without labels
            guess = np.eye(array.shape[-1], dtype=np.float32)[np.arange(len(array)) % array.shape[-1]] * 100
            real_save(path, guess)
        np.save = forged
    """,
        "module",
        ("trained",),
        None,
        "host-side scoring: a guess scores as a guess",
    ),
    C(
        "forged-events-on-event-pipe",
        """
        json, sys = _imp("json"), _imp("sys")
        np = _imp("numpy")
        events = event_pipes()[0]
        os.write(events, (json.dumps({"event": "smoke", "params": 1, "flops": 1, "functional_hash": "f" * 64, "seconds": 0.0,
                                      "val_accuracy": 1.0}) + "\\n").encode())
        word = sys.stdin.readline().strip()
        for split in ("val", "test"):
            x = np.load(f"/data/{split}_x.npy")
            np.save(f"/scratch/{split}_outputs.npy", np.eye(10, dtype=np.float32)[np.zeros(len(x), dtype=int)] * 100)
        os.write(events, (json.dumps({"event": "trained", "curve": [], "train_seconds": 0.0, "steps": 1, "epochs_done": 1,
                                      "stopped_early": False, "peak_memory_mb": None, "device": "cpu", "word": word,
                                      "val_accuracy": 1.0, "test_accuracy": 1.0}) + "\\n").encode())
        os._exit(0)
    """,
        "module",
        ("trained",),
        None,
        "host-side scoring; events carry no scores the host would use",
    ),
    C(
        "malformed-event",
        """
        json = _imp("json")
        events = event_pipes()[0]
        os.write(events, b'{"event": "smoke", "params": 99999999999999999999999}\\n')
        _imp("time").sleep(60)
    """,
        "init",
        ("failed",),
        r"malformed 'smoke' event",
        "host validates every event (was: KeyError in the orchestrator)",
    ),
    C(
        "endless-event-line",
        """
        events = event_pipes()[0]
        for _ in range(64):
            os.write(events, b"{" + b" " * 2**20)  # 64 MiB, never a newline
        _imp("time").sleep(60)
    """,
        "forward",
        ("failed",),
        r"event line over \d+ MiB",
        "host caps an event line (was: unbounded host buffer)",
    ),
    C(
        "fake-event-print",
        """
        print('{"event": "trained", "val_accuracy": 1.0, "test_accuracy": 1.0, "curve": []}', flush=True)
        _imp("sys").stderr.write('{"event": "smoke", "params": 1}\\n')
    """,
        "module",
        ("trained",),
        None,
        "fd 1 and 2 go to the log, not the event pipe",
    ),
    C(
        "outputs-symlink-race",
        """
        threading, time = _imp("threading"), _imp("time")
        os._exit = lambda code: time.sleep(30)  # keep the runner alive after it reports
        def flip():
            while not os.path.exists("/scratch/test_outputs.npy"):
                time.sleep(0.001)
            time.sleep(0.05)
            for _ in range(200000):
                for split in ("val", "test"):
                    real = f"/scratch/{split}_outputs.npy"
                    try:
                        os.replace(real, real + ".real")
                        os.symlink(HOST["stolen"], real)
                        os.unlink(real)
                        os.replace(real + ".real", real)
                    except OSError:
                        pass
        threading.Thread(target=flip, daemon=True).start()
    """,
        "module",
        ("trained", "failed"),
        r"(did not write|^$)",
        "host opens outputs with O_NOFOLLOW (was: check-then-open race)",
    ),
    C(
        "log-symlink-to-host-secret",
        """
        os.unlink("/scratch/candidate.log")
        os.symlink(HOST["home_secret"], "/scratch/candidate.log")
        report("log replaced")
    """,
        "init",
        ("failed",),
        r"log replaced",
        "host refuses a symlinked log (O_NOFOLLOW)",
    ),
    C(
        "wrong-shape-at-predict",
        """
        # Right shape in the smoke checks and training, 11 classes when predicting (no grad, full batches).
        Net.forward = lambda self, x: (torch.zeros(x.shape[0], 11) if not torch.is_grad_enabled() and x.shape[0] > 8
                                       else self.fc(x.flatten(1) * 0.0))
    """,
        "forward",
        ("failed",),
        r"\[score\].*unusable outputs.*shape",
        "host checks the shape before scoring",
    ),
    C(
        "nan-outputs",
        """
        Net.forward = lambda self, x: self.fc(x.flatten(1) * 0.0) + (float("nan") if not torch.is_grad_enabled() and x.shape[0] > 8 else 0.0)
    """,
        "forward",
        ("trained",),
        None,
        "host counts a NaN prediction as wrong",
    ),
    C(
        "object-dtype-outputs",
        """
        np = _imp("numpy")
        real_save = np.save
        np.save = lambda path, array, *a, **k: real_save(path, np.array([{"val_accuracy": 1.0}] * len(array), dtype=object), allow_pickle=True)
    """,
        "module",
        ("failed",),
        r"unusable outputs.*dtype object",
        "host reads the .npy header itself: float dtypes only, never pickle",
    ),
    C(
        "string-dtype-outputs",
        """
        np = _imp("numpy")
        real_save = np.save
        np.save = lambda path, array, *a, **k: real_save(path, np.full(array.shape, "1.0"))
    """,
        "init",
        ("failed",),
        r"unusable outputs.*dtype <U3",
        "host checks the dtype",
    ),
    # -- the weaker process fallback (no namespaces): what it still contains ---------------------
    C(
        "fallback-tcp-127.0.0.1",
        """
        s = _imp("socket")
        report(attempt(lambda: s.create_connection(("127.0.0.1", HOST["tcp4"]), timeout=3)))
    """,
        "module",
        ("failed",),
        SECCOMP,
        "seccomp, installed by the runner",
        isolation="process",
    ),
    C(
        "fallback-unix-socket",
        """
        s = _imp("socket")
        report(attempt(lambda: s.socket(s.AF_UNIX).connect(HOST["unix_hidden"])))
    """,
        "init",
        ("failed",),
        SECCOMP,
        "seccomp (unix): the fallback sees every path socket",
        isolation="process",
    ),
    C(
        "fallback-env-secrets",
        """
        report("ENV", sorted(os.environ.items()), _open("/proc/self/environ", "rb").read())
    """,
        "module",
        ("failed",),
        r"REPORT ENV",
        "scrubbed environment",
        isolation="process",
    ),
    C(
        "fallback-fork-storm",
        """
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    _imp("time").sleep(600)
                    os._exit(0)
                children += 1
        except OSError as err:
            report(f"forks={children}", f"{type(err).__name__}: {err}")
    """,
        "module",
        ("failed",),
        r"forks=0 \| PermissionError",
        "seccomp: no new processes in the process mode (pids cgroup behind it)",
        {"max_pids": 16},
        isolation="process",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_escape_is_contained(case: Case, host, listeners, tmp_path, cache_dir, monkeypatch):
    values = dict(host["values"])
    # The sandbox sees the inputs at /data; the process fallback at their host path.
    values["unix_visible"] = (
        "/data/" if case.isolation == "bubblewrap" else str(host["visible_sock"].parent) + "/"
    ) + host["visible_sock"].name
    code = candidate_code(case, values)
    run = run_case(code, tmp_path, cache_dir, monkeypatch, isolation=case.isolation, **case.limits)

    check_contained(case, run, host, listeners)


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 30
    assert {c.where for c in CASES} == {"module", "init", "forward"}
