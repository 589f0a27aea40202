"""The host side of the boundary: how a sandbox job runs candidate code it never trusts.

The job (bubblewrap or the process mode), its cgroups and rlimits, the seccomp policy, the runtime view
(what a candidate may read) and the protocol that reads everything the runner sends back as hostile
input. The runner itself lives in `sandbox/` (installed as `agentarch.runner`) and runs inside.

May import: the shared modules (errors) and the runner package's paths. Nothing above it.
"""
