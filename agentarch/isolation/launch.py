"""How the runner starts, whichever mode holds it: the interpreter's command line, its environment, its GPUs.

Bubblewrap and the process mode wrap the same start differently (mounts, or Landlock rules on the
host's paths); what they share, the boot line, the scrubbed environment and a slot's device nodes,
lives here so neither mode reaches into the other.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from agentarch.isolation.runtime_view import RUNTIME_PACKAGES, runtime_view

BOOT = (
    "import importlib, sys; root, module, spec, *paths = sys.argv[1:]; sys.path[:0] = [root]; sys.path += paths; "
    "sys.argv = [module, spec]; importlib.import_module(module).main()"
)
"""A program's start: its module from `root` (the runner as `<its folder's name>.runner`), the runtime's import
paths, the spec."""


@dataclass(frozen=True)
class Program:
    """What a sandbox starts: the runner (`module` None), which runs candidate code over torch's runtime view, or
    one module file of the host's own (the graph worker, agentarch/evaluation/graphs/worker.py) whose `main()` runs
    over the runtime view of `packages` alone: the worker's has ONNX Runtime and numpy, and no torch."""

    module: Path | None = None
    packages: tuple[str, ...] = RUNTIME_PACKAGES
    log: str = "candidate.log"  # the file in scratch its prints go to, whose tail a failure shows

    @property
    def name(self) -> str:
        """The module the boot line imports."""
        return f"{runner_dir().name}.runner" if self.module is None else self.module.stem


RUNNER = Program()


def runner_dir() -> Path:
    """The runner package's folder: `sandbox/` in a checkout or editable install, `agentarch/runner/` in a wheel."""
    import agentarch.runner

    return Path(agentarch.runner.__file__).resolve().parent


def boot(root: str, spec: str, program: Program = RUNNER) -> list[str]:
    """The interpreter's command line that starts `program` (see BOOT), its module found under `root`."""
    paths = [str(p) for p in runtime_view(program.packages).import_paths]
    return [sys.executable, "-E", "-s", "-c", BOOT, root, program.name, spec, *paths]


GPU_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


def gpu_devices(gpu: str | None, dev: Path = Path("/dev")) -> list[str]:
    """The device nodes a slot's sandbox gets: its own GPU(s) and the control nodes CUDA needs, no other GPU.

    `gpu` is the slot's CUDA_VISIBLE_DEVICES (indices in PCI bus order, matching /dev/nvidiaN).
    """
    if gpu is None:
        return []
    nodes = [dev / f"nvidia{index.strip()}" for index in gpu.split(",") if index.strip().isdigit()]
    nodes += [dev / name for name in GPU_CONTROL_NODES]
    nodes += sorted((dev / "nvidia-caps").glob("*"))
    return [str(node) for node in nodes if node.exists()]


def sandbox_env(threads: int, home: str, tmp: str, gpu: str | None) -> dict[str, str]:
    """The whole environment a candidate sees: no key, no proxy, nothing of the orchestrator's."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmp,
        "USER": "candidate",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        # idle OpenMP workers sleep rather than spin: a job's CPU time is then its work, which the training budget
        # holds it to (agentarch/evaluation/budget.py); spinning workers on a busy host cost an honest job far more
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    if gpu is not None:
        env |= {"CUDA_VISIBLE_DEVICES": gpu, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    return env
