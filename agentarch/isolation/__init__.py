"""The host side of the boundary: how a sandbox job runs candidate code it never trusts.

The job (job.py) puts the layers together: the mode and limits settled before it starts (policy.py),
bubblewrap's namespaces and mounts or the process mode's Landlock rules (bubblewrap.py,
process_mode.py) around the runner's start (launch.py) as an unprivileged uid (privileges.py), its
cgroups (cgroups.py) and scratch tmpfs (scratch.py), the seccomp policy (seccomp.py), the runtime
view (what a candidate may read, runtime_view.py) and the protocol that reads everything the runner
sends back as hostile input (protocol.py). The runner itself lives in `sandbox/` (installed as
`agentarch.runner`) and runs inside. The same job starts the host's own programs that read hostile input, such
as the graph worker (agentarch/evaluation/graphs/worker.py), each over its own runtime view (launch.Program).

May import: the shared modules (errors) and the runner package's paths. Nothing above it.
"""
