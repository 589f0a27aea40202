"""The local Ray that `agentarch run --executor ray` starts listens on loopback only (issue 23, item 5).

Ray is started the way a run starts it (`make_executor("ray", ...)` with no --ray-address), one evaluation is
sent through it so that a worker is up, and then every listening TCP socket that belongs to a process this
test started is read from /proc: the pytest process's own new sockets (the driver's gRPC server) and those
of its new descendants (GCS, raylet, agents, workers). Other Ray instances on the machine, or other
listeners of this process from before, are not counted.
"""

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from agentarch.evaluation.executors import make_executor
from agentarch.evaluation.ray_executor import is_loopback
from agentarch.evaluation.stages import RunRequest
from agentarch.isolation.policy import Limits

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="reads listeners from Linux /proc")


def parents() -> dict[int, int]:
    """pid -> parent pid of every process visible now."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            found[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return found


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if match:
            inodes.add(int(match.group(1)))
    return inodes


def decode(hex_address: str, family: int) -> tuple[str, int]:
    """An address as /proc/net/tcp{,6} writes it (host byte order per 32-bit word) as (ip, port)."""
    ip, port = hex_address.split(":")
    raw = bytes.fromhex(ip)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw), int(port, 16)


def listening(pid: int) -> set[tuple[int, str, int]]:
    """(socket inode, ip, port) of each TCP socket in LISTEN state that `pid` holds open."""
    own = socket_inodes(pid)
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[9]) in own:  # 0A: TCP_LISTEN
                found.add((int(fields[9]), *decode(fields[1], family)))
    return found


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def program(pid: int) -> str:
    """What a process runs, named by its program's file name rather than its path, so the name survives the cut to
    80 characters wherever the checkout lives (a long virtual-environment path once hid 'gcs_server')."""
    argv = command(pid).split(" ", 1)
    return " ".join([Path(argv[0]).name, *argv[1:]])[:80]


def test_is_loopback_reads_every_form_of_an_address():
    assert all(is_loopback(a) for a in ("127.0.0.1", "127.5.0.1", "::1", "::ffff:127.0.0.1", "[::1]", "localhost"))
    assert not any(is_loopback(a) for a in ("0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2", "10.0.0.1", "fe80::1"))


def test_a_local_ray_started_for_a_run_listens_on_loopback_only(tmp_path):
    if ray.is_initialized():
        ray.shutdown()  # a Ray left up by an earlier test would be reused, not started
    me = os.getpid()
    before_pids = descendants(me)
    before_sockets = {inode for inode, *_ in listening(me)}
    started: set[int] = set()
    executor = None
    try:
        executor = make_executor("ray", slots=1, ray_address=None, per_gpu=1)  # as the run does: no --ray-address
        assert is_loopback(ray.util.get_node_ip_address())
        result = executor.run(  # one evaluation through the executor's own task, so a worker is up and listening
            RunRequest(
                code="",
                task="no-such-task",
                train={},
                limits=Limits(),
                isolation="process",
                cache_dir=tmp_path,
                data_dir=None,
                split_seed=0,
            )
        )
        assert result.status == "failed" and "[prepare]" in result.reason
        seen: dict[tuple[int, str, int], str] = {}
        for _ in range(3):  # agents and workers open their ports as they come up: look a few times
            started = descendants(me) - before_pids
            for pid in started | {me}:
                for inode, ip, port in listening(pid):
                    if pid == me and inode in before_sockets:
                        continue
                    seen[(pid, ip, port)] = "pytest (Ray driver)" if pid == me else program(pid)
            time.sleep(1)
        listeners = sorted(f"{ip}:{port} {what} [{pid}]" for (pid, ip, port), what in seen.items())
        print("\n".join(["Ray's listeners:", *listeners]))
        assert any("gcs_server" in what for what in seen.values()), listeners
        assert any("raylet" in what for what in seen.values()), listeners
        assert any(what.startswith("ray::") for what in seen.values()), listeners  # a worker's own gRPC server
        exposed = [f"{ip}:{port} {what}" for (pid, ip, port), what in seen.items() if not is_loopback(ip)]
        assert exposed == [], f"Ray listens beyond loopback: {exposed}"
    finally:
        if executor is not None:
            executor.close()
        elif ray.is_initialized():
            ray.shutdown()
        ours = {pid: command(pid) for pid in started}
        deadline = time.monotonic() + 20
        while ours and time.monotonic() < deadline:
            ours = {pid: what for pid, what in ours.items() if alive(pid) and command(pid) == what}
            time.sleep(0.2)
        for pid in ours:  # what ray.shutdown left behind; ours alone, by pid, still running what it ran
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not ray.is_initialized()


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
