"""Who candidate code runs as: on a root host, setpriv takes the runner down to CANDIDATE_UID (or capless root).

Both modes end their command line with the same drop, the bubblewrap probe runs it, and scratch is
handed to the uid it names, so the uid and the drop are one module of their own.
"""

from __future__ import annotations

import os
import shutil

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


def host_is_root() -> bool:
    return os.geteuid() == 0


def drop_privileges(to_candidate_uid: bool) -> list[str]:
    """The `setpriv` prefix that takes a root host's process down before candidate code exists.

    `to_candidate_uid=False` is the process mode on a root host whose Python installation the
    candidate uid cannot read (a venv under /root): then uid 0 stays, but with no capability at all
    and securebits that keep exec from giving any back; Landlock does the rest.
    """
    if not host_is_root():
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
