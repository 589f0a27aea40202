"""`agentarch doctor`: how candidate code will be isolated on this machine, and what to install for more.

Its own module because it inspects the host, not the archive or a task.
"""

from __future__ import annotations

import os

from agentarch import formats
from agentarch.cli.common import out


def doctor_command() -> None:
    """Say how candidate code will be isolated here, and what to install for more."""
    from agentarch.isolation.bubblewrap import bubblewrap_problem
    from agentarch.isolation.policy import FALLBACK_WARNING
    from agentarch.isolation.privileges import CANDIDATE_UID
    from agentarch.isolation.process_mode import process_mode_gaps

    problem = bubblewrap_problem()
    if problem is None:
        out.print(
            "[green]bubblewrap works[/]: candidates run with no network, a read-only view of the runtime "
            "(torch, numpy, einops and the standard library), a scratch dir and a seccomp allowlist"
            + (f", as uid {CANDIDATE_UID}" if os.geteuid() == 0 else "")
            + "."
        )
    else:
        out.print(formats.untrusted(FALLBACK_WARNING.format(why=problem), style="yellow"))
        gaps = process_mode_gaps()
        out.print(
            "[green]The process mode holds on this kernel[/] (Landlock ABI 6 or later)."
            if not gaps
            else "[red]The process mode has gaps here[/]: " + "; ".join(gaps) + ". LLM answers and your own files "
            "are refused unless weak_sandbox_ok is set; search-space baselines still run."
        )
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:
        gpus = 0
    out.print(f"GPUs visible: {gpus}" + ("" if gpus else " (training runs on the CPU)"))
