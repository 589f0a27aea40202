"""The sandbox job: start the runner (sandbox/runner.py) isolated, talk to it, clean up.

Layers, outermost first (docs/sandbox.md has the threat model and what each mode guarantees):

1. a pids cgroup (and a memory cgroup where one can be made), joined as root before anything else,
   which caps process count and lets the host kill every process the evaluation started (cgroups.py);
2. rlimits set by `prlimit`: address space, CPU seconds, file size, open files, core dumps (policy.py);
3. scratch on a tmpfs capped in bytes and inodes, nosuid and nodev (where the host can mount; scratch.py);
4. bubblewrap: pid, net, ipc and uts namespaces (no network, not even the host's loopback), a
   root holding only the runtime view (agentarch.isolation.runtime_view) read-only, the task's inputs and
   scratch, `--clearenv`; as root without a user namespace, and `setpriv` drops to CANDIDATE_UID
   (bubblewrap.py, privileges.py);
5. a seccomp allowlist (agentarch.isolation.seccomp), default deny;
6. a wall-clock timeout after which the whole process group and cgroup are killed (here), and a CPU-time limit
   the caller may set while it waits for an event (the training budget; the job's CPU time is read from outside
   it, cputime.py).

Where bubblewrap is missing or cannot create namespaces, the `process` mode keeps 1, 2, 3, 5 (with
no new processes) and 6, drops privileges with `setpriv`, and the runner confines its own file
access, signals and ptrace with Landlock (sandbox/landlock.py; process_mode.py); on a kernel where
Landlock cannot do that, untrusted code is refused (refuse_untrusted, in policy.py).

This module puts the layers together for one candidate and owns the job's life: the launch, the
events read under the deadline, the host's word, the outputs and logs read as hostile input, the
kill and the cleanup. Each layer's making lives in the module named beside it.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agentarch.isolation.bubblewrap import BOX_DATA, BOX_SCRATCH, bwrap_args
from agentarch.isolation.cgroups import Cgroup
from agentarch.isolation.cputime import CpuMeter, descendants
from agentarch.isolation.launch import RUNNER, Program, runner_dir, sandbox_env
from agentarch.isolation.owners import owner_tag
from agentarch.isolation.policy import IsolationMode, Limits, SandboxError, prlimit_args
from agentarch.isolation.privileges import CANDIDATE_UID, host_is_root
from agentarch.isolation.process_mode import drops_to_candidate_uid, landlock_rules, process_args
from agentarch.isolation.protocol import (
    MAX_EVENT_BYTES,
    MAX_LOG_BYTES,
    ProtocolError,
    cap_text,
    parse_event,
    read_capped,
    read_outputs,
)
from agentarch.isolation.scratch import (
    make_scratch,
    mount_scratch,
    remove_scratch,
    sweep_stale_scratch_soon,
    unmount_scratch,
)
from agentarch.isolation.seccomp import seccomp_program

log = logging.getLogger(__name__)

CPU_POLL_S = 0.2
"""How often a job waited on under a CPU-time limit has its CPU time read: a job past its limit runs on at most
this long (times its threads) before it is killed. A reading costs about a millisecond (/proc: a scan of it)."""


@dataclass
class Outcome:
    """How the sandboxed process ended, when it ended without a clean event."""

    status: Literal["failed", "timeout"]
    reason: str
    kind: str | None = None
    """Which rule ended it, where a rule did (`budget`: past its CPU-time limit), for the reason's `[stage:kind]`."""


class SandboxJob:
    """One candidate's run in the sandbox: start, read events, send the host's word, clean up.

    Use as a context manager; leaving it kills whatever is left and removes the scratch directory.
    """

    def __init__(
        self,
        code: str | None,
        spec: dict[str, Any],
        inputs_dir: Path,
        limits: Limits,
        isolation: IsolationMode,
        gpu: str | None = None,
        program: Program = RUNNER,
        files: dict[str, bytes] | None = None,
        *,
        ahead: bool = False,
    ) -> None:
        """`code` is the candidate's (None for a program that runs none, such as the graph worker); `files` go into
        scratch for the program to read (`put`).

        The program is launched and handed its job at once (`hand`), unless `ahead`: then it starts up to "waiting for
        its job" (the runner: torch imported; the graph worker: ONNX Runtime imported) and waits for `hand` (a warm
        sandbox, `warm`; agentarch/isolation/warm.py). Either way it is the same launch, under the same isolation, so
        a warm sandbox is a cold one started early."""
        self.limits = limits
        self.isolation = isolation
        sweep_stale_scratch_soon()  # what orchestrators killed mid-job left (scratch.py)
        self.scratch = make_scratch()
        self.scratch_mounted = mount_scratch(self.scratch, 2 * limits.max_file_mb)  # the log and outputs, each capped
        self.launched = self.started = time.monotonic()
        self.deadline = self.started + limits.timeout_s
        self.handed = False
        self._buffer = b""
        self.cgroup: Cgroup | None = None  # made by _start, before the runner is launched
        self.forks = False  # whether the sandboxed program may make new processes (seccomp; set by _start)
        self.program = program
        try:
            self._start(spec if program.module is not None else {}, inputs_dir, gpu)
            if not ahead:
                self.hand(code, spec, files)
        except BaseException:  # nothing of a job that never started stays behind
            if hasattr(self, "proc"):  # launched, and the hand-off failed
                self.close()
                raise
            if self.cgroup is not None:
                self.cgroup.kill_all()
                self.cgroup.remove()
            if self.scratch_mounted:
                unmount_scratch(self.scratch)
            remove_scratch(self.scratch)
            raise

    @classmethod
    def warm(
        cls,
        inputs_dir: Path,
        limits: Limits,
        isolation: IsolationMode,
        gpu: str | None = None,
        program: Program = RUNNER,
    ) -> SandboxJob:
        """A sandbox started before its job is known: everything a job of this configuration (`inputs_dir`,
        `limits`, `isolation`, `gpu`, `program`) needs, its own fresh scratch and cgroup, the program confined and its
        imports done; `hand` gives it its one job (the runner's candidate, the graph worker's graph)."""
        return cls(None, {}, inputs_dir, limits, isolation, gpu, program, ahead=True)

    def waiting(self) -> bool:
        """Whether this sandbox was not yet handed its job and is still alive (a warm sandbox fit to use)."""
        return not self.handed and self.proc.poll() is None

    def hand(self, code: str | None, spec: dict[str, Any], files: dict[str, bytes] | None = None) -> None:
        """Give the program its one job: `files` (a checkpoint to resume from; the graph worker's graph and probe
        inputs) into scratch, and the runner its candidate's code there and the job's spec (task, training, scoring)
        on its stdin (the graph worker's requests come later, `GraphWorker.ask`). The job's wall clock (`timeout_s`)
        starts now; its CPU time counts from the launch (cputime.py), as a cold job's does. A sandbox runs one
        candidate: a second hand-off is refused."""
        if self.handed:
            raise SandboxError("this sandbox was already handed its job; a sandbox runs one candidate only")
        if self.program.module is None and code is None:
            raise SandboxError("the runner needs a candidate's code to run")
        self.handed = True
        self.put(files or {})
        self.started = time.monotonic()
        self.deadline = self.started + self.limits.timeout_s
        if code is not None:
            self.put({"candidate.py": code.encode()})
        if self.program.module is None:
            self.send(json.dumps(spec))  # a runner gone already is found by the next read (_death says how it ended)

    def put(self, files: dict[str, bytes]) -> None:
        """Write `files` into scratch for the sandboxed program, before its launch or while it waits (a warm
        sandbox). Each is a new plain file, mode 0644 whatever the host's umask: the program reads it as
        CANDIDATE_UID (bubblewrap, or the process mode where it drops to that uid) or as the host's user, and the
        scratch it lies in is the program's alone. O_EXCL and O_NOFOLLOW: a name something in the sandbox made
        first (a symlink out of scratch) is refused, never followed."""
        for name, data in files.items():
            if Path(name).name != name or name in ("", ".", ".."):
                raise SandboxError(f"a file for the sandbox must be a plain name in its scratch, not {name!r}")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self.scratch / name, flags, 0o644)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fd, 0o644)
                fh.write(data)

    def _start(self, spec: dict[str, Any], inputs_dir: Path, gpu: str | None) -> None:
        """Write the program's spec into scratch (the runner's: its sandbox part alone, the job's comes with `hand`),
        then launch it under this job's isolation."""
        limits, isolation, program = self.limits, self.isolation, self.program
        boxed = isolation == "bubblewrap"
        # The process mode drops to the candidate uid only where that uid can read what it runs;
        # bubblewrap mounts everything as root, so its candidate uid always can.
        to_candidate_uid = boxed or drops_to_candidate_uid(inputs_dir, program)
        if host_is_root() and to_candidate_uid:
            os.chown(self.scratch, CANDIDATE_UID, CANDIDATE_UID)
        spec = {
            **spec,
            "code_path": f"{BOX_SCRATCH if boxed else self.scratch}/candidate.py",
            "inputs_dir": BOX_DATA if boxed else str(inputs_dir),
            "output_dir": BOX_SCRATCH if boxed else str(self.scratch),
            "threads": limits.threads,
            "smoke_timeout_s": limits.smoke_timeout_s,
            "seccomp_bpf": None if boxed else str(self.scratch / "seccomp.bpf"),
            "landlock": None if boxed else landlock_rules(self.scratch, inputs_dir, gpu, program),
        }
        if program.module is not None:  # a module of the host's own confines itself with the runner's Landlock module
            spec["landlock_module"] = str(runner_dir() / "landlock.py")
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
        command = shim + prlimit_args(limits, cap_address_space=gpu is None)
        pass_fds: tuple[int, ...] = ()
        if boxed:
            # a fork's CPU time is the budget's only where the cgroup counts it: /proc misses short-lived children
            self.forks = cgroup.cpu_seconds() is not None
            seccomp_fd = self._seccomp_fd(self.forks)
            pass_fds = (seccomp_fd,)
            command += bwrap_args(
                self.scratch, inputs_dir, seccomp_fd, limits.threads, gpu, tmpfs_mb=limits.max_file_mb, program=program
            )
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:  # never forks (`self.forks` stays False): a child would outlive a killed orchestrator
            (self.scratch / "seccomp.bpf").write_bytes(seccomp_program(forks=False, programs=False))
            command += process_args(self.scratch, to_candidate_uid, program)
            env = sandbox_env(limits.threads, str(self.scratch), str(self.scratch), gpu)
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
        self.cpu = CpuMeter(cgroup.cpu_seconds, self._members)

    def _members(self) -> set[int]:
        """The job's processes: its pids cgroup's members where it has one (however they detached), else the tree
        under its first process."""
        return self.cgroup.pids() if self.cgroup is not None and self.cgroup.dirs else descendants(self.proc.pid)

    def _seccomp_fd(self, forks: bool) -> int:
        path = self.scratch / "seccomp.bpf"
        path.write_bytes(seccomp_program(forks=forks, programs=True))
        fd = os.open(path, os.O_RDONLY)
        path.unlink()
        return fd

    def __enter__(self) -> SandboxJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_event(self, timeout_s: float | None = None, cpu_limit_s: float | None = None) -> dict[str, Any] | Outcome:
        """The next event from the runner, checked by agentarch.isolation.protocol, or an Outcome.

        The Outcome says the runner died, ran out of time, used more than `cpu_limit_s` CPU seconds in all (the
        job's, since it started: `cpu`, read every CPU_POLL_S while waiting), or sent something the host cannot use
        (candidate code can write to the event pipe); in the last three cases the job is killed.
        """
        deadline = self.deadline if timeout_s is None else min(self.deadline, time.monotonic() + timeout_s)
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_EVENT_BYTES:
                self.kill()
                return Outcome("failed", f"the runner sent an event line over {MAX_EVENT_BYTES // 2**20} MiB; killed")
            if cpu_limit_s is not None and (used := self.cpu.seconds()) > cpu_limit_s:
                self.kill()
                return Outcome(
                    "failed", f"used {used:.1f} CPU seconds, past its limit of {cpu_limit_s:.1f}; killed", "budget"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return Outcome(
                    "timeout",
                    f"no result within {self._elapsed():.0f} s (wall-clock limit); the process group was killed",
                )
            ready, _, _ = select.select([fd], [], [], left if cpu_limit_s is None else min(left, CPU_POLL_S))
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

    def read_file(self, name: str, max_bytes: int) -> bytes:
        """The bytes of a file the sandbox wrote (the exported graph), refusing anything but a regular file of at
        most `max_bytes`; kill the job first, so nothing left in it can change the file while it is read."""
        fh = self._open_scratch_file(name)
        if fh is None:
            raise ProtocolError(f"the runner did not write {name} as a regular file")
        with fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise ProtocolError(f"{name} is {size:,} bytes, over the limit of {max_bytes:,}")
            data = fh.read(max_bytes + 1)
        if len(data) != size:
            raise ProtocolError(f"{name} changed while it was read")
        return data

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
        """The head and tail of what the candidate printed (candidate.log; another program's own log), capped."""
        fh = self._open_scratch_file(self.program.log)
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
            unmount_scratch(self.scratch)
        remove_scratch(self.scratch)
