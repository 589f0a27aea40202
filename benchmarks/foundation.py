"""Foundation benchmarks: dedup cost per candidate, sandbox start-up overhead, one full sandboxed eval.

Run from the repository root:  .venv/bin/python benchmarks/foundation.py > benchmarks/foundation.md

The sandbox overhead is measured side by side in one run: the same runner and candidate started
(a) as a bare subprocess with no limits, (b) under the 'process' fallback (prlimit, cgroup, seccomp),
(c) under bubblewrap; the three are interleaved so machine noise hits them alike.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agentarch.config import load_settings  # noqa: E402
from agentarch.evaluation import dedup  # noqa: E402
from agentarch.evaluation.evaluator import Evaluator  # noqa: E402
from agentarch.isolation.bubblewrap import bubblewrap_problem  # noqa: E402
from agentarch.isolation.job import SandboxJob  # noqa: E402
from agentarch.isolation.launch import BOOT  # noqa: E402
from agentarch.isolation.policy import Limits, resolve_isolation  # noqa: E402
from agentarch.store.archive import Archive  # noqa: E402
from agentarch.tasks.preparation import prepare  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402

SEEDS = REPO / "archive" / "seeds" / "image"
SPEC = {
    "kind": "image",
    "in_shape": [1, 8, 8],
    "num_classes": 10,
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.003, "weight_decay": 0.0, "seed": 0},
}


def median_us(fn, text: str, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(text)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def bench_dedup() -> list[str]:
    """A candidate of at least 5 KB: the ResNet seed followed by commented copies of the MLP seed."""
    code = (SEEDS / "resnet.py").read_text()
    while len(code.encode()) < 5 * 1024:
        code += (
            "\n# a reviewer's note on the block above, as LLM answers often carry\n" + (SEEDS / "mlp.py").read_text()
        )
    rows = [
        f"candidate size: {len(code.encode()):,} bytes, median of 2,000 calls",
        "",
        "| hash | median per candidate |",
        "| --- | --- |",
    ]
    for name, fn in (("whitespace", dedup.whitespace_hash), ("ast", dedup.ast_hash)):
        rows.append(f"| {name} | {median_us(fn, code, 2000):.0f} µs |")
    return rows


def bare_start(code: str, inputs_dir: Path) -> float:
    """Seconds to the smoke event for the runner started as a plain subprocess, no isolation at all."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        (scratch / "candidate.py").write_text(code)
        spec = {
            **SPEC,
            "code_path": str(scratch / "candidate.py"),
            "inputs_dir": str(inputs_dir),
            "output_dir": str(scratch),
            "threads": 1,
            "seccomp_bpf": None,
        }
        (scratch / "spec.json").write_text(json.dumps(spec))
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, str(REPO), "sandbox.runner", str(scratch / "spec.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=scratch,
        )
        assert proc.stdout is not None and proc.stdin is not None
        event = json.loads(proc.stdout.readline())
        elapsed = time.perf_counter() - start
        proc.stdin.write(b"stop\n")
        proc.stdin.close()
        proc.wait()
        assert event["event"] == "smoke", event
        return elapsed


def sandboxed_start(code: str, inputs_dir: Path, isolation: str) -> float:
    limits = Limits(timeout_s=60, smoke_timeout_s=60, threads=1)
    start = time.perf_counter()
    with SandboxJob(code, SPEC, inputs_dir, limits, resolve_isolation(isolation)) as job:
        event = job.read_event(60)
        elapsed = time.perf_counter() - start
        job.send("stop")
    assert isinstance(event, dict) and event["event"] == "smoke", event
    return elapsed


def bench_sandbox_start(inputs_dir: Path, repeats: int = 10) -> list[str]:
    code = (SEEDS / "mlp.py").read_text()
    modes = ["bare subprocess", "process fallback"] + (["bubblewrap"] if bubblewrap_problem() is None else [])
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(repeats):
        times["bare subprocess"].append(bare_start(code, inputs_dir))
        times["process fallback"].append(sandboxed_start(code, inputs_dir, "process"))
        if "bubblewrap" in times:
            times["bubblewrap"].append(sandboxed_start(code, inputs_dir, "bubblewrap"))
    base = statistics.median(times["bare subprocess"])
    rows = [
        f"start to smoke event (import torch, build, forward+backward), median of {repeats}, interleaved",
        "",
        "| mode | median | ratio to bare |",
        "| --- | --- | --- |",
    ]
    for mode, samples in times.items():
        med = statistics.median(samples)
        rows.append(f"| {mode} | {med:.2f} s | {med / base:.2f} |")
    return rows


def bench_full_eval(cache: Path) -> list[str]:
    rows = ["| seed | isolation | val | test | train s | wall s |", "| --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(task="digits", cache_dir=cache, archive=Path(tmp) / "a.db")
        evaluator = Evaluator(Archive(settings.archive), settings)
        for seed in ("mlp", "cnn", "resnet"):
            start = time.perf_counter()
            result = evaluator.evaluate((SEEDS / f"{seed}.py").read_text(), f"{seed}.py")
            wall = time.perf_counter() - start
            m = result.metrics
            rows.append(
                f"| {seed} | {evaluator.isolation} | {m['val_accuracy']:.3f} | {m['test_accuracy']:.3f} "
                f"| {m['train_seconds']:.1f} | {wall:.1f} |"
            )
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        prepared = prepare(get_task("digits"), Path(cache))
        print("# Foundation benchmarks\n")
        print(
            f"`.venv/bin/python benchmarks/foundation.py` on {platform.machine()}, "
            f"{len(__import__('os').sched_getaffinity(0))} CPU cores, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}.\n"
        )
        print("## Dedup hashes (target: whitespace under 1 ms)\n")
        print("\n".join(bench_dedup()))
        print("\n## Sandbox start-up overhead\n")
        print("\n".join(bench_sandbox_start(prepared.inputs_dir)))
        print("\n## Full sandboxed evaluation on digits (check, dedup, smoke, train, score, record)\n")
        print("Target: the CNN seed reaches 0.95 test accuracy in under 30 s wall time on 2 cores.\n")
        print("\n".join(bench_full_eval(Path(cache))))


if __name__ == "__main__":
    main()
