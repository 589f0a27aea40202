"""What the agent-loop tests share: small candidate modules, the scripted LLM's answers, a real `agentarch run`.

The LLM in these tests is the real HTTP server of tests/llm_server.py answering from a script; the
run is the real CLI in its own process (so it can be killed), on digits, one CPU thread per sandbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

MODEL = "openai/scripted-model"


def mlp(width: int, crash: bool = False) -> str:
    """A small, fast MLP; the width makes each one a different function."""
    forward = (
        "raise RuntimeError('shape mismatch in forward')"
        if crash
        else "return self.out(torch.relu(self.hidden(x.flatten(1))))"
    )
    return f"""import math
import torch
from torch import nn

HPARAMS = {{"epochs": 2}}


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.hidden = nn.Linear(math.prod(in_shape), {width})
        self.out = nn.Linear({width}, num_classes)

    def forward(self, x):
        {forward}
"""


def fenced(code: str, intent: str = "Intent: try a wider hidden layer.") -> str:
    """An LLM answer: the intent line, then the module in a fenced block."""
    return f"{intent}\n\n```python\n{code}```\n"


def kind(request: dict) -> str:
    """Which of the loop's prompts a request to the scripted server is: propose, repair, analyze or notebook."""
    last = request["messages"][-1]["content"]
    if "Write a short analysis" in last:
        return "analyze"
    if "Write the notebook's new entry" in last:
        return "notebook"
    return "repair" if "The module that failed" in last else "propose"


def start_run(archive: Path, *args: str, cache_dir: Path | None = None, **env: str) -> subprocess.Popen:
    """`agentarch run --task digits --archive ARCHIVE --json ARGS` in its own process, with one CPU thread per
    sandbox and `env` added to the environment (e.g. AGENTARCH_SMOKE_TIMEOUT_S="300")."""
    extra_env = {"AGENTARCH_THREADS": "1", **env}
    if cache_dir is not None:
        extra_env["AGENTARCH_CACHE_DIR"] = str(cache_dir)
    command = [sys.executable, "-m", "agentarch.cli", "run", "--task", "digits", "--archive", str(archive), "--json"]
    return subprocess.Popen(
        [*command, *args],
        cwd=REPO,
        env={**os.environ, **extra_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
