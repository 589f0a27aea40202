"""The sandbox's seccomp policy: an allowlist of what Python and PyTorch training need, default deny.

A denylist can only name the attacks someone thought of; this filter names what a training run
does (memory, files, threads, time, signals within the sandbox) and refuses everything else with
EPERM, so io_uring, bpf, perf_event_open, ptrace, keyctl, userfaultfd, mount, unshare/setns,
kexec, module loading, SysV IPC and every socket family stay closed, including calls a later
kernel adds. The list was taken from strace of real smoke and training runs on image and token
tasks, widened by calls glibc and the CUDA driver make on other paths (memory locking, NUMA).

Argument checks compare only the low 32 bits where the kernel reads an `int` (socket families,
clone flags): libseccomp compares all 64 bits of a register, so an unmasked `EQ AF_UNIX` would let
`(1 << 32) | AF_INET` through on a kernel that truncates it to AF_INET.

The host compiles the filter once per mode; bubblewrap installs it (`--seccomp FD`) in the bubblewrap
mode, and the runner installs it itself in the process mode (sandbox/runner.py), where it is
stricter: threads but no new processes or programs.
"""

from __future__ import annotations

import errno
import socket
import tempfile
from functools import cache

ALLOWED = """
read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 lseek _llseek
open openat close close_range creat dup dup2 dup3 fcntl fcntl64 flock ioctl
stat fstat lstat newfstatat fstatat64 stat64 fstat64 lstat64 statx statfs fstatfs statfs64 fstatfs64
access faccessat faccessat2 readlink readlinkat getdents getdents64 getcwd chdir fchdir
mkdir mkdirat rmdir unlink unlinkat rename renameat renameat2 link linkat symlink symlinkat
umask truncate ftruncate fallocate
fsync fdatasync sync_file_range fadvise64 fadvise64_64 readahead
getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr
pipe pipe2 select _newselect pselect6 poll ppoll epoll_create epoll_create1 epoll_ctl epoll_wait
epoll_pwait epoll_pwait2 eventfd eventfd2 signalfd signalfd4 timerfd_create timerfd_settime
timerfd_gettime sendfile sendfile64 copy_file_range splice tee memfd_create
brk mmap mmap2 munmap mremap mprotect madvise msync mincore mlock mlock2 munlock mlockall munlockall
membarrier mbind get_mempolicy set_mempolicy pkey_alloc pkey_free pkey_mprotect
exit exit_group wait4 waitid kill tkill tgkill
rt_sigqueueinfo rt_tgsigqueueinfo getpid gettid getppid getpgid getpgrp setpgid getsid setsid
getuid geteuid getgid getegid getresuid getresgid getgroups
setuid setgid setreuid setregid setresuid setresgid setgroups setfsuid setfsgid capget capset
arch_prctl set_tid_address set_robust_list get_robust_list rseq
futex futex_waitv futex_time64 sched_yield sched_getaffinity sched_getparam
sched_getscheduler sched_get_priority_max sched_get_priority_min sched_getattr sched_rr_get_interval
getpriority nanosleep clock_nanosleep clock_gettime clock_getres gettimeofday time times
getrusage getrlimit ugetrlimit sysinfo uname getrandom getcpu restart_syscall
rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigsuspend rt_sigtimedwait sigaltstack
alarm pause getitimer setitimer timer_create timer_settime timer_gettime timer_getoverrun timer_delete
ioprio_get sendmsg recvmsg sendmmsg recvmmsg sendto recvfrom shutdown getsockopt setsockopt
getsockname getpeername cacheflush set_thread_area get_thread_area
""".split()
"""Calls allowed without conditions (names a platform lacks are skipped when compiling)."""

NAMESPACE_FLAGS = 0x7E020000
"""CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: a new namespace from
inside the sandbox (an unprivileged user namespace above all) would give the candidate
capabilities over fresh kernel objects, which is kernel attack surface training never needs."""

CLONE_PARENT = 0x8000
"""A child handed to the caller's parent: in the process mode that is the orchestrator, which would
be left with zombies it never reaps."""

CLONE_THREAD = 0x10000

LOW_32 = 0xFFFFFFFF
SOCKET_TYPE = 0xF
"""The type bits of socket()'s second argument; the rest are SOCK_CLOEXEC and SOCK_NONBLOCK."""

NO_OWNER_CALLS = (
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
)
"""Calls an owner uses on its own files, left out of the allowlist: a candidate never needs them, and
the process mode's last resort (uid 0 without capabilities) owns every root file on the host, which
Landlock does not guard against mode, owner or time changes (a setuid shell, a touched binary)."""

FORK_CALLS = ("fork", "vfork")
"""New processes: allowed under bubblewrap where the job's cgroup counts every process's CPU time (its pid namespace
dies with the job); refused in the process mode, where a forked child would outlive a killed orchestrator
(PR_SET_PDEATHSIG is not inherited) and training needs threads only, and under bubblewrap without a cgroup CPU
counter, where a child that lives under one poll of /proc hides its CPU time from the budget (cputime.py)."""
EXEC_CALLS = ("execve", "execveat")
"""New programs in the same process: bubblewrap starts its command after the filter is in place (setpriv, then the
interpreter); the process mode's runner installs the filter itself, after its last exec."""

PRCTL_OPTIONS = {
    "PR_GET_PDEATHSIG": 2,
    "PR_GET_DUMPABLE": 3,
    "PR_SET_DUMPABLE": 4,
    "PR_GET_KEEPCAPS": 7,
    "PR_SET_KEEPCAPS": 8,
    "PR_SET_NAME": 15,
    "PR_GET_NAME": 16,
    "PR_GET_SECCOMP": 21,
    "PR_SET_SECCOMP": 22,
    "PR_CAPBSET_READ": 23,
    "PR_CAPBSET_DROP": 24,
    "PR_GET_SECUREBITS": 27,
    "PR_SET_SECUREBITS": 28,
    "PR_SET_TIMERSLACK": 29,
    "PR_GET_TIMERSLACK": 30,
    "PR_SET_NO_NEW_PRIVS": 38,
    "PR_GET_NO_NEW_PRIVS": 39,
    "PR_GET_TID_ADDRESS": 40,
    "PR_SET_THP_DISABLE": 41,
    "PR_GET_THP_DISABLE": 42,
    "PR_CAP_AMBIENT": 47,
    "PR_GET_SPECULATION_CTRL": 52,
    "PR_SET_VMA": 0x53564D41,
}
"""prctl options glibc, Python, torch and setpriv use. PR_SET_PDEATHSIG (1) above all is not among them:
the runner arms it before the filter exists, and a candidate that cleared it would outlive a killed
orchestrator in the process mode."""

DENIED_EXAMPLES = (
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "perf_event_open",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "shmget",
    "msgget",
    "semget",
    "mknod",
    "mknodat",
    "setxattr",
    "fanotify_init",
    "inotify_init1",
    "pidfd_getfd",
    "kcmp",
    "vmsplice",
    "personality",
    "landlock_create_ruleset",
    "seccomp",
    "syslog",
    "connect",
    "bind",
    "listen",
    "prctl",
    "sched_setaffinity",
    "setpriority",
    "prlimit64",
    *NO_OWNER_CALLS,
)
"""What the allowlist leaves out on purpose (a sample, for docs and tests): each is refused with EPERM
(the last few are allowed only with the arguments checked below)."""


@cache
def seccomp_program(forks: bool, programs: bool) -> bytes:
    """The compiled BPF program for the native architecture; a call of another ABI kills the process.

    `forks`: new processes (FORK_CALLS, and clone without CLONE_THREAD); else threads only. `programs`: exec
    (EXEC_CALLS). Bubblewrap needs `programs`, and gets `forks` where its job's cgroup counts CPU time; the process
    mode gets neither.
    """
    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    # x32 and i386 entry points carry other system call numbers, which this list does not name.
    rules.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    for name in [*ALLOWED, *(FORK_CALLS if forks else ()), *(EXEC_CALLS if programs else ())]:
        try:
            rules.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError, OSError):  # not a call on this architecture
            pass
    # Every socket() is refused with EACCES (what Python reports as "Permission denied"); a pair
    # of connected Unix sockets is all Python and torch use, and only that family is allowed.
    rules.add_rule(seccomp.ERRNO(errno.EACCES), "socket")
    # Stream and seqpacket pairs only: a datagram socket can still `sendto` any path on the host.
    for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
        rules.add_rule(
            seccomp.ALLOW,
            "socketpair",
            seccomp.Arg(0, seccomp.MASKED_EQ, LOW_32, socket.AF_UNIX),
            seccomp.Arg(1, seccomp.MASKED_EQ, SOCKET_TYPE, kind),
        )
    # Threads (and, under bubblewrap, processes), never namespaces; glibc falls back from clone3 to
    # clone on ENOSYS, and clone3's flags live in memory a filter cannot read.
    refused = NAMESPACE_FLAGS | CLONE_PARENT
    if forks:
        rules.add_rule(seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, refused, 0))
    else:
        rules.add_rule(seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, refused | CLONE_THREAD, CLONE_THREAD))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # Limits, priority and CPUs of this process only: pid 0 (`setpriority`: PRIO_PROCESS, who 0).
    # Another pid could be the orchestrator's or another job's (the process mode shares a uid with
    # them, or is capless root, and neither call is Landlock's to refuse).
    rules.add_rule(seccomp.ALLOW, "prlimit64", seccomp.Arg(0, seccomp.MASKED_EQ, LOW_32, 0))
    rules.add_rule(seccomp.ALLOW, "sched_setaffinity", seccomp.Arg(0, seccomp.MASKED_EQ, LOW_32, 0))
    rules.add_rule(
        seccomp.ALLOW,
        "setpriority",
        seccomp.Arg(0, seccomp.MASKED_EQ, LOW_32, 0),
        seccomp.Arg(1, seccomp.MASKED_EQ, LOW_32, 0),
    )
    for option in PRCTL_OPTIONS.values():
        rules.add_rule(seccomp.ALLOW, "prctl", seccomp.Arg(0, seccomp.MASKED_EQ, LOW_32, option))
    with tempfile.TemporaryFile() as fh:
        rules.export_bpf(fh)
        fh.seek(0)
        return fh.read()
