"""The real sandbox, attacked: network, secrets, file writes, fork storms, memory, endless loops.

Each hostile candidate acts at import time and reports what it saw by raising; the runner turns
that into an `error` event. Nothing here is mocked: these are real processes under the isolation
this machine offers (bubblewrap where it works; the file-system test needs it).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from agentarch.isolation import owners
from agentarch.isolation import scratch as scratch_module
from agentarch.isolation.cgroups import Cgroup
from agentarch.isolation.job import Outcome, SandboxJob
from agentarch.isolation.owners import owner_tag
from agentarch.isolation.policy import Limits, resolve_isolation
from agentarch.isolation.scratch import make_scratch, sweep_stale_scratch
from tests.conftest import NET, SPEC, cgroups_work, job_processes, requires_bubblewrap


def run_hostile(prelude: str, inputs_dir: Path, isolation: str = "auto", **limits) -> dict | Outcome:
    """Start a job whose module runs `prelude` before defining Net; return its first event."""
    job_limits = Limits(**{"timeout_s": 60, "smoke_timeout_s": 60, "threads": 1, **limits})
    with SandboxJob(prelude + NET, SPEC, inputs_dir, job_limits, resolve_isolation(isolation)) as job:
        event = job.read_event(job_limits.smoke_timeout_s)
        if isinstance(event, dict) and event.get("event") == "smoke":
            job.send("stop")
    assert job_processes([job.scratch.name]) == [], "a sandboxed process outlived its job"
    return event


def message(event) -> str:
    return event.reason if isinstance(event, Outcome) else str(event.get("message"))


def test_a_clean_candidate_passes_smoke(digits):
    event = run_hostile("", digits.inputs_dir)
    assert event["event"] == "smoke" and event["params"] == 650
    assert len(event["functional_hash"]) == 64


def test_no_connection_to_a_host_listener(digits):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept_loop():
        deadline = time.time() + 20
        while time.time() < deadline and not accepted:
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept_loop)
    thread.start()
    prelude = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3)
    raise SystemError("CONNECTED")
except OSError as err:
    raise RuntimeError(f"BLOCKED {{err!r}}")
"""
    try:
        event = run_hostile(prelude, digits.inputs_dir)
    finally:
        accepted.append(None)
        thread.join()
        server.close()
    assert "BLOCKED" in message(event), message(event)
    assert accepted == [None], "the host listener accepted a connection from the sandbox"


def test_dns_and_inet6_are_refused(digits):
    prelude = """
import socket
results = []
for family in (socket.AF_INET, socket.AF_INET6):
    try:
        socket.socket(family, socket.SOCK_DGRAM)
        results.append("open")
    except OSError:
        results.append("refused")
try:
    socket.getaddrinfo("example.com", 80)
    results.append("resolved")
except OSError:
    results.append("unresolved")
raise RuntimeError("RESULTS " + " ".join(results))
"""
    assert "RESULTS refused refused unresolved" in message(run_hostile(prelude, digits.inputs_dir))


def test_the_process_fallback_still_refuses_sockets_and_hides_secrets(digits, monkeypatch):
    """Without bubblewrap the runner installs the host's compiled seccomp filter itself."""
    monkeypatch.setenv("AGENTARCH_TEST_SECRET", "sk-fallback")
    prelude = """
import os, socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    state = "open"
except OSError:
    state = "refused"
raise RuntimeError(f"RESULTS {state} {os.environ.get('AGENTARCH_TEST_SECRET', 'absent')}")
"""
    assert "RESULTS refused absent" in message(run_hostile(prelude, digits.inputs_dir, isolation="process"))


def test_environment_secrets_are_not_visible(digits, monkeypatch):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    prelude = """
import os
seen = " ".join(f"{k}={v}" for k, v in os.environ.items())
for path in ("/proc/self/environ", "/proc/1/environ"):
    try:
        seen += open(path, "rb").read().decode(errors="replace")
    except OSError:
        pass
raise RuntimeError("ENV " + seen)
"""
    text = message(run_hostile(prelude, digits.inputs_dir))
    assert text.startswith("executing the module failed: RuntimeError: ENV")
    assert secret not in text and "OPENAI_API_KEY" not in text


@requires_bubblewrap
def test_writes_outside_scratch_fail_and_reads_of_home_see_nothing(digits, tmp_path):
    host_dir = Path(__file__).resolve().parent  # exists on the host, not mounted in the sandbox
    targets = [str(host_dir / "escape.txt"), "/usr/escape.txt", str(digits.inputs_dir / "escape.txt")]
    prelude = f"""
import os
outcomes = []
for target in {targets!r}:
    try:
        with open(target, "w") as fh:
            fh.write("escaped")
        outcomes.append("wrote")
    except OSError:
        outcomes.append("denied")
with open("/scratch/inside.txt", "w") as fh:
    fh.write("fine")
outcomes.append("scratch-ok")
outcomes.append("labels-visible" if os.path.exists({str(digits.labels_dir)!r}) else "labels-hidden")
outcomes.append("home-visible" if os.path.exists({str(Path.home())!r} + "/.bashrc") else "home-hidden")
raise RuntimeError("WRITES " + " ".join(outcomes))
"""
    text = message(run_hostile(prelude, digits.inputs_dir))
    assert "WRITES denied denied denied scratch-ok labels-hidden home-hidden" in text, text
    for target in targets:
        assert not Path(target).exists()


def test_fork_storm_is_capped_and_cleaned_up(digits):
    prelude = """
import os, time
children = 0
try:
    for _ in range(10_000):
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        children += 1
except OSError as err:
    raise RuntimeError(f"FORK-CAPPED after {children}: {err}")
raise RuntimeError(f"FORKED {children}")
"""
    started = time.monotonic()
    event = run_hostile(prelude, digits.inputs_dir, max_pids=32)
    text = message(event)
    if cgroups_work():
        assert "FORK-CAPPED" in text, text
    assert time.monotonic() - started < 60


def test_memory_hog_is_stopped(digits):
    prelude = """
hog = []
while True:
    hog.append(bytearray(256 * 2**20))
"""
    event = run_hostile(prelude, digits.inputs_dir, memory_mb=3072)
    text = message(event)
    assert "MemoryError" in text or "SIGKILL" in text, text


def test_endless_loop_times_out_and_is_killed(digits):
    started = time.monotonic()
    event = run_hostile("while True:\n    pass\n", digits.inputs_dir, smoke_timeout_s=4)
    assert isinstance(event, Outcome) and event.status == "timeout"
    assert time.monotonic() - started < 30


def test_sleeping_children_in_new_sessions_are_killed(digits):
    prelude = """
import os, time
if os.fork() == 0:
    os.setsid()
    time.sleep(600)
    os._exit(0)
while True:
    time.sleep(1)
"""
    event = run_hostile(prelude, digits.inputs_dir, smoke_timeout_s=4)
    assert isinstance(event, Outcome) and event.status == "timeout"


def test_a_job_whose_orchestrator_died_is_reaped_at_the_next_start(tmp_path):
    """A job left running by a dead orchestrator (killed before the parent-death signal was armed) is
    killed, and its cgroup and scratch directory removed, by the sweep the next job's cgroup runs."""
    if not cgroups_work():
        pytest.skip("no writable pids cgroup here")
    gone = subprocess.Popen(["true"])
    gone.wait()
    scratch = Path(tempfile.mkdtemp(prefix="agentarch-job-"))
    name = f"{scratch.name}.{gone.pid}-1"  # a pid that no longer runs (or runs with another start time)
    orphan = subprocess.Popen(["sleep", "300"])
    cgroup = Cgroup(name, 8, None)
    (cgroup.dirs[0] / "cgroup.procs").write_text(str(orphan.pid))
    live = Cgroup(f"agentarch-job-live.{owner_tag()}", 8, None)  # this orchestrator's own job: left alone
    try:
        Cgroup("probe-next-job", 8, None).remove()  # making a job's cgroup sweeps its parent
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert not cgroup.dirs[0].exists() and not scratch.exists()
        assert live.dirs[0].exists()
    finally:
        orphan.kill()
        cgroup.remove()
        live.remove()
        shutil.rmtree(scratch, ignore_errors=True)


ORPHANING = """
import time
from agentarch.isolation.scratch import make_scratch, mount_scratch
scratch = make_scratch()
mount_scratch(scratch, 4)
(scratch / "left.bin").write_bytes(b"x" * 4096)
print(scratch, flush=True)
time.sleep(300)
"""


def test_a_scratch_folder_a_killed_orchestrator_left_is_removed_at_the_next_start(digits, monkeypatch):
    """An orchestrator SIGKILLed after making a job's scratch (mounted where the host can mount) but before the
    job's cgroup, which the cgroup sweep would have found, leaves the folder; the next job start's sweep, on a
    thread of its own, unmounts and removes it, and leaves a live orchestrator's (this one's) alone."""
    orchestrator = subprocess.Popen([sys.executable, "-c", ORPHANING], stdout=subprocess.PIPE, text=True)
    mine = make_scratch()
    swept_on = []
    real_sweep = scratch_module.sweep_stale_scratch

    def sweep(*args, **kwargs):
        swept_on.append(threading.current_thread())
        return real_sweep(*args, **kwargs)

    try:
        left = Path(orchestrator.stdout.readline().strip())
        assert left.name.startswith("agentarch-job-") and (left / "left.bin").exists()
        orchestrator.kill()
        orchestrator.wait()
        assert left.exists()
        monkeypatch.setattr(scratch_module, "_swept", {"at": float("-inf")})  # no sweep ran within the minute
        monkeypatch.setattr(scratch_module, "sweep_stale_scratch", sweep)
        run_hostile("", digits.inputs_dir)  # the next job start
        deadline = time.monotonic() + 30
        while left.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left.exists() and not os.path.ismount(left)
        assert swept_on and swept_on[0] is not threading.main_thread(), "the job start waited on the sweep"
        assert mine.is_dir(), "a live orchestrator's scratch was swept"
    finally:
        orchestrator.kill()
        orchestrator.wait()
        shutil.rmtree(mine, ignore_errors=True)


def test_the_scratch_sweep_touches_only_real_folders_of_a_dead_owner(tmp_path):
    """What the sweep may remove is named by a dead orchestrator's tag, is a directory (never a symlink it would
    follow) and belongs to the host's user or the candidate user; an untagged, older-style name is nobody's."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"agentarch-job-{gone.pid}-1-"
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("not the sweep's")
    stale = tmp_path / f"{dead}abc"
    (stale / "deep" / "deeper").mkdir(parents=True)
    (stale / "deep" / "deeper" / "f").write_text("x")
    (tmp_path / f"{dead}link").symlink_to(target)
    (tmp_path / "agentarch-job-untagged").mkdir()
    (tmp_path / f"agentarch-job-{owner_tag()}-live").mkdir()
    foreign = tmp_path / f"{dead}foreign"
    foreign.mkdir()
    if os.geteuid() == 0:
        os.chown(foreign, 12345, 12345)
    # the same dead pid with this pid namespace's number, and with another's (a container beside this one that
    # shares /tmp: its pid names no process here, so only its own orchestrators may judge it)
    here = tmp_path / f"agentarch-job-{gone.pid}-1-{owners.pid_namespace()}-abc"
    beside = tmp_path / f"agentarch-job-{gone.pid}-1-{int(owners.pid_namespace()) + 1}-abc"
    here.mkdir()
    beside.mkdir()
    removed = sweep_stale_scratch(tmp_path, force=True)
    assert sorted(removed) == sorted([stale, here]) and not stale.exists() and beside.is_dir()
    assert (target / "keep.txt").exists() and (tmp_path / f"{dead}link").is_symlink()
    assert (tmp_path / "agentarch-job-untagged").is_dir() and (tmp_path / f"agentarch-job-{owner_tag()}-live").is_dir()
    assert foreign.is_dir() == (os.geteuid() == 0)
    assert sweep_stale_scratch(tmp_path) == [], "a second sweep within SWEEP_EVERY_S does not list the folder again"


def test_an_ordinary_user_gets_a_user_namespace_and_root_never_does(monkeypatch):
    """As root, bubblewrap must not make a user namespace (its uid 0 would be host uid 0) and setpriv drops
    to the candidate uid before Python; as an ordinary user the user namespace is the isolation."""
    from agentarch.isolation import bubblewrap, privileges

    for module in (bubblewrap, privileges):
        monkeypatch.setattr(module, "host_is_root", lambda: True)
    assert "--unshare-all" not in bubblewrap._namespace_args() and "--unshare-user" not in bubblewrap._namespace_args()
    drop = privileges.drop_privileges(True)
    assert f"--reuid={privileges.CANDIDATE_UID}" in drop and "--bounding-set=-all" in drop and drop[-1] == "--"
    capless = " ".join(privileges.drop_privileges(False))
    assert "--reuid" not in capless and "+noroot" in capless
    for module in (bubblewrap, privileges):
        monkeypatch.setattr(module, "host_is_root", lambda: False)
    assert "--unshare-all" in bubblewrap._namespace_args() and privileges.drop_privileges(True) == []
