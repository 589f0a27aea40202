"""How often a network exports to ONNX, how long the export takes, and how many exports pass the graph checks.

For issue 25: every trained candidate leaves its process as an ONNX graph, so a network that does not export, or
whose export the host refuses, cannot be scored. This measures, on this machine, for

- every seed (archive/seeds) on every task of its kind (the built-in tasks, plus a float and an id sequence task
  and a table task, as tests/test_trainer.py's example tasks);
- a seeded sample of NAS-Bench-201 cells rendered for CIFAR-10 (the benchmark's full skeleton: 5 cells per
  stage, width 16), and seeded samples of the macro (CIFAR-10), mlp (a 12-feature table) and mixer (mqar,
  stdlib-bytes, and two sequence tasks) spaces;

the TorchScript exporter's (`dynamo=False`) success and time, with the recipe the sandbox uses (eval mode, opset
17, a dynamic batch axis, no constant folding), then agentarch/evaluation/graphs: `check_graph`,
`prove_batch_independence` and `measure`, with the parameters compared to torch's and the FLOPs to the smoke
run's counter. A few networks are also exported with torch.export (`dynamo=True`, which needs the onnxscript
package) for its time and success, so the docs can choose the exporter by measurement.

Writes benchmarks/export_rate.md, and one JSON line per network to --rows as it goes (`--report ROWS` writes the
page again from such a file). Run: .venv/bin/python benchmarks/export_rate.py [--nb201 500] [--per-space 100]
[--dynamo 16] [--rows PATH]; with the onnxscript package on the path for the dynamo=True rows.

`--corpora` measures, instead, what the sandbox makes of the candidates the tests write: the scripted LLM's modules
(tests/scripted.py) and the attacks of tests/security. Those are untrusted code, so none is built here: each goes
through a real Evaluator with graph scoring (its code runs only in the sandbox job), and its outcome (trained,
failed at export, graph rejected, failed otherwise, invalid or duplicate, timeout) and reason are tabulated in the
page's own section, which `--corpora` replaces and a run of the other groups keeps, so neither reruns the other.
Run: .venv/bin/python benchmarks/export_rate.py --corpora [--rows PATH] [--only REGEX] (about 20 minutes here).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from agentarch.runner.runner import count_flops
from torch import nn

from agentarch.config import load_settings
from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.graphs import batch_flow, checks, measures
from agentarch.llm.extraction import ExtractError, extract_code
from agentarch.search.spaces import SPACES
from agentarch.store.archive import Archive
from agentarch.tasks.builtin import TASKS
from agentarch.tasks.preparation import prepare
from agentarch.tasks.registry import get_task
from agentarch.tasks.task import Task

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "export_rate.md"
MAX_BYTES = 256 * 2**20
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def example_task(name: str, kind: str, in_shape: tuple[int, ...], num_classes: int, **extra: Any) -> Task:
    return Task(name, kind, in_shape, num_classes, "accuracy", 1, 16, 1e-3, 0.0, 10**8, False, "example", **extra)


EXTRA_TASKS = [
    example_task("ids-sequence", "sequence", (40,), 3, vocab_size=50),
    example_task("float-series", "sequence", (30, 4), 5),
    example_task("table-classes", "table", (12,), 4),
]


def tasks_of(kind: str) -> list[Task]:
    return [t for t in [*TASKS.values(), *EXTRA_TASKS] if t.kind == kind]


def build(source: str, task: Task) -> nn.Module:
    namespace: dict[str, Any] = {"__name__": "candidate"}
    exec(compile(source, "<candidate>", "exec"), namespace)
    torch.manual_seed(0)
    extra = {"vocab_size": task.vocab_size} if task.vocab_size else {}
    return namespace["Net"](task.in_shape, task.num_classes, **extra).eval()


def example_input(task: Task, batch: int) -> torch.Tensor:
    if task.kind in ("token", "lm") or task.vocab_size:
        return torch.randint(0, task.vocab_size or task.num_classes, (batch, *task.in_shape))
    return torch.randn(batch, *task.in_shape)


def export(model: nn.Module, x: torch.Tensor, dynamo: bool = False) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                model, (x,), dynamo=True, opset_version=18, input_names=["x"], output_names=["y"],
                dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False,
            )  # fmt: skip
            program.save(buffer)
        else:
            torch.onnx.export(
                model, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, do_constant_folding=False,
            )  # fmt: skip
    return buffer.getvalue()


def evaluate(group: str, name: str, source: str, task: Task, dynamo: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {"group": group, "name": name, "task": task.name, "dynamo": dynamo}
    model = build(source, task)
    x = example_input(task, 2)
    row["torch_params"] = sum(p.numel() for p in model.parameters())
    row["torch_buffers"] = sum(b.numel() for n, b in model.named_buffers() if not n.endswith(STATISTICS))
    started = time.perf_counter()
    try:
        data = export(model, x, dynamo)
    except Exception as err:  # noqa: BLE001 - any failure to export is what is counted
        row.update(exported=False, reason=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
        return row
    row.update(exported=True, export_s=time.perf_counter() - started, bytes=len(data))
    started = time.perf_counter()
    try:
        ids = task.kind in ("token", "lm") or task.vocab_size is not None
        graph = checks.check_graph(data, max_bytes=MAX_BYTES, in_shape=task.in_shape, ids=ids)
        row["checked"] = True
        batch_flow.prove_batch_independence(graph)
        row["independent"] = True
        found = measures.measure(graph)
    except checks.GraphRejected as err:
        row.setdefault("checked", False)
        row.setdefault("independent", False)
        row["reason"] = str(err)[:300]
        return row
    row["analysis_s"] = time.perf_counter() - started
    row.update(params=found.params, flops=found.flops, matmul_flops=found.matmul_flops)
    with torch.no_grad():
        row["torch_flops"] = count_flops(model, x)
    return row


def cases(args: argparse.Namespace) -> list[tuple[str, str, str, Task]]:
    found = []
    for path in sorted((REPO / "archive" / "seeds").glob("*/*.py")):
        for task in tasks_of(path.parent.name):
            found.append(("seeds", f"{path.parent.name}/{path.stem}", path.read_text(), task))
    rng = random.Random(25)
    samples = [
        ("nb201", [TASKS["cifar10"]], args.nb201),
        ("macro", [TASKS["cifar10"]], args.per_space),
        ("mlp", [EXTRA_TASKS[2]], args.per_space),
        ("mixer", [TASKS["mqar"], TASKS["stdlib-bytes"], *EXTRA_TASKS[:2]], args.per_space),
    ]
    for space, tasks, count in samples:
        for i in range(count):
            task = tasks[i % len(tasks)]
            arch = SPACES[space].sample(rng)
            found.append((space, arch, SPACES[space].render(arch, task), task))
    return found


def summary(rows: list[dict[str, Any]], group: str) -> str:
    mine = [r for r in rows if r["group"] == group]
    exported = [r for r in mine if r["exported"]]
    checked = [r for r in exported if r.get("checked")]
    independent = [r for r in checked if r.get("independent")]
    measured = [r for r in independent if "params" in r]
    exact = sum(r["params"] == r["torch_params"] for r in measured)
    within = sum(r["torch_params"] <= r["params"] <= r["torch_params"] + r["torch_buffers"] for r in measured)
    times = sorted(r["export_s"] for r in exported)
    ratios = sorted(r["matmul_flops"] / r["torch_flops"] for r in measured if r["torch_flops"])
    totals = sorted(r["flops"] / r["torch_flops"] for r in measured if r["torch_flops"])
    analysis = sorted(r["analysis_s"] for r in measured)

    def spread(values: list[float], digits: int = 2) -> str:
        if not values:
            return "-"
        return f"{statistics.median(values):.{digits}f} / {values[int(0.9 * (len(values) - 1))]:.{digits}f} / {values[-1]:.{digits}f}"

    return (
        f"| {group} | {len(mine)} | {len(exported)} | {len(checked)} | {len(independent)} | {exact} ({within}) | "
        f"{spread(times)} | {spread(analysis, 3)} | {spread(ratios, 3)} | {spread(totals, 3)} |"
    )


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnx
    import onnxruntime

    return (
        f"{platform.node()} ({cpu}, {os.cpu_count()} CPU cores shared with other work, no GPU; torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads, onnx {onnx.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, Python {platform.python_version()})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nb201", type=int, default=500)
    parser.add_argument("--per-space", type=int, default=100)
    parser.add_argument("--dynamo", type=int, default=16, help="networks also exported with dynamo=True")
    parser.add_argument("--rows", type=Path, help="where each row goes as it is measured [default: in the temp dir]")
    parser.add_argument("--report", type=Path, help="only write the page from the rows of an earlier run")
    parser.add_argument(
        "--corpora",
        action="store_true",
        help="run only the scripted and security corpora through the sandbox, and write only their section",
    )
    parser.add_argument("--only", help="with --corpora: only the candidates whose SOURCE/NAME matches this regex")
    args = parser.parse_args()
    if args.corpora:
        if args.report:
            report_corpora(args.report)
        else:
            run_corpora(args.rows or Path(tempfile.gettempdir()) / "export_rate_corpora.jsonl", args.only)
        return
    if args.report:
        report(args.report)
        return
    args.rows = args.rows or Path(tempfile.gettempdir()) / "export_rate.jsonl"
    logging.disable(logging.WARNING)  # torch.export's exporter logs every step
    todo = cases(args)
    warm = todo[0]
    evaluate("warm-up", warm[1], warm[2], warm[3])  # the first export pays for imports and the tracer's start
    rows = []
    began = time.perf_counter()
    with args.rows.open("w") as log:
        for group, name, source, task in todo:
            rows.append(evaluate(group, name, source, task))
            log.write(json.dumps(rows[-1]) + "\n")
            log.flush()
            if len(rows) % 25 == 0:
                print(f"{len(rows)}/{len(todo)} in {time.perf_counter() - began:.0f} s", flush=True)
        dynamo_rows = []
        try:
            import onnxscript  # noqa: F401 - torch.export's ONNX exporter needs it

            firsts = {c[1]: c for c in reversed(todo) if c[0] == "seeds"}  # each seed on the first task of its kind
            others = [c for c in todo if c[0] != "seeds"]
            picks = sorted(firsts.values(), key=lambda c: c[1]) + others[:: max(1, len(others) // 5)]
            for group, name, source, task in picks[: args.dynamo]:
                dynamo_rows.append(evaluate(group, name, source, task, dynamo=True))
                dynamo_rows[-1]["dynamo_group"] = dynamo_rows[-1]["group"]
                dynamo_rows[-1]["group"] = "dynamo=True"
                log.write(json.dumps(dynamo_rows[-1]) + "\n")
        except ImportError:
            pass
        log.write(json.dumps({"wall_s": time.perf_counter() - began, "machine": machine()}) + "\n")
    report(args.rows)


def report(path: Path) -> None:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in lines if "group" in r and not r["dynamo"]]
    dynamo_rows = [r for r in lines if "group" in r and r["dynamo"]]
    tail = next((r for r in reversed(lines) if "wall_s" in r), {"wall_s": 0.0, "machine": machine()})
    write(rows, dynamo_rows, tail["wall_s"], tail["machine"])


def notes(rows: list[dict[str, Any]], pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    exported = [r for r in rows if r.get("exported")]
    passed = [r for r in exported if r.get("independent")]
    said = [
        f"- {len(exported)} of {len(rows)} networks exported with dynamo=False and {len(passed)} passed both the "
        "checks and the batch-flow proof. Every refusal would be a candidate recorded `failed` with the reason "
        "shown to the LLM; none of these networks mixes its batch, so any refusal here is a false one.",
        "- Parameters equal torch's `sum(p.numel())` exactly, except where the forward pass reads a float buffer "
        "(the token transformer's RoPE tables): the graph stores it and the count includes it. Without "
        "`do_constant_folding=False` the exporter fuses BatchNorm into the convolution before it, and its scale "
        "leaves the count.",
        "- Matmul FLOPs equal the smoke run's count except for networks with attention: torch's FLOP counter "
        "misses the products inside `scaled_dot_product_attention` on the CPU, which the graph's MatMuls show (up "
        "to 1.3x on the transformers). The total adds the cheap operators (activations, norms, pooling, bias adds).",
    ]
    if pairs:
        ratio = statistics.median(d["export_s"] / r["export_s"] for d, r in pairs)
        exact = sum(d.get("params") == d["torch_params"] for d, _ in pairs)
        said.append(
            f"- torch.export took a median {ratio:.0f}x the TorchScript exporter's time on the same networks; its "
            f"graphs passed the same checks, but its parameter count matched torch's on {exact} of {len(pairs)}: "
            "its optimiser folds BatchNorm into convolutions, stores equal-valued weights once without an alias "
            "(every LayerNorm's ones and zeros at initialisation) and Python literals as initializers. It also "
            "needs the onnxscript package, which agentarch does not depend on. So the sandbox exports with "
            "dynamo=False."
        )
    return said


def write(rows: list[dict[str, Any]], dynamo_rows: list[dict[str, Any]], wall: float, host: str) -> None:
    groups = ["seeds", "nb201", "macro", "mlp", "mixer"]
    lines = [
        "# Exporting networks to ONNX, and checking the graphs",
        "",
        f"Recorded by `benchmarks/export_rate.py` on {host}, in {wall / 60:.0f} minutes.",
        "",
        "The export is the sandbox's recipe: `torch.onnx.export(model.eval(), (x,), f, dynamo=False, "
        "opset_version=17, dynamic_axes={'x': {0: 'batch'}, 'y': {0: 'batch'}}, do_constant_folding=False)` "
        "on a batch of 2, timed after one warm-up export. Then `check_graph`, `prove_batch_independence` and "
        "`measure` (agentarch/evaluation/graphs). Parameters: how many equal torch's count exactly (in brackets: "
        "within torch's count plus the buffers the forward pass reads). FLOPs: the graph's matmul FLOPs and its "
        "total over the smoke run's counter (sandbox/runner.py `count_flops`). Times: median / 90th percentile / "
        "max, in seconds.",
        "",
        "| group | networks | exported | pass check_graph | pass batch_flow | params = torch | export s | "
        "analysis s | matmul FLOPs / torch | total FLOPs / torch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[summary(rows, g) for g in groups],
    ]
    pairs = [
        (d, r)
        for d in dynamo_rows
        for r in rows
        if r["name"] == d["name"] and r["task"] == d["task"] and r.get("exported") and d.get("exported")
    ]
    if dynamo_rows:
        lines += [
            "",
            "torch.export (`dynamo=True`, opset 18, with onnxscript on the path) on a few of the same networks "
            "(each seed on the first task of its kind, and some space samples):",
            "",
            "| exporter | networks | exported | pass check_graph | pass batch_flow | params = torch | export s | "
            "analysis s | matmul FLOPs / torch | total FLOPs / torch |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            summary(dynamo_rows, "dynamo=True"),
            "",
            "| network | task | dynamo=False s | dynamo=True s | params (dynamo=False) | params (dynamo=True) | torch |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
            *[
                f"| {r['name'][:60].replace('|', chr(92) + '|')} | {r['task']} | {r['export_s']:.2f} | {d['export_s']:.2f} | "
                f"{r.get('params', '-')} | {d.get('params', '-')} | {r['torch_params']} |"
                for d, r in pairs
            ],
        ]
    else:
        lines += ["", "torch.export (`dynamo=True`) was not tried: the onnxscript package is not installed."]
    lines += ["", "## What it says", "", *notes(rows, pairs)]
    failures = [r for r in [*rows, *dynamo_rows] if not r.get("exported") or "reason" in r]
    lines += ["", f"Failures ({len(failures)}):", ""]
    lines += [f"- {r['group']} {r['name']} on {r['task']}: {r['reason']}" for r in failures[:40]] or ["- none"]
    page = OUT.read_text() if OUT.exists() else ""
    kept = page[page.find(CORPORA) :] if CORPORA in page else ""  # the corpora's section (last), from its own run
    OUT.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""))
    print("\n".join(lines))


# -- the scripted and security corpora: candidates run through the real sandbox, never in this process ------------

CORPORA = "## The scripted and security corpora"
"""The heading of the page's section that `--corpora` writes (and `write` keeps when it rewrites the rest)."""
OUTCOMES = {
    "trained": "trained (exported, scored)",
    "export": "failed at export",
    "graph": "graph rejected",
    "failed": "failed otherwise",
    "invalid": "invalid / duplicate",
    "timeout": "timeout",
}
"""Each candidate's outcome, as the section's columns: what the sandbox and the host's graph checks made of it."""
HARNESS_LIMITS = {"timeout_s": 90, "smoke_timeout_s": 60, "memory_mb": 3072, "max_pids": 32, "max_file_mb": 16}
"""tests/security/harness.py's limits, with the time limits of the graph-scoring tests (90 s, 60 s): graph scoring
exports at the smoke stage too, and this machine's cores are shared; a case's own limits come on top."""
GRAPH_LIMITS = {"timeout_s": 90, "smoke_timeout_s": 60, "memory_mb": 4096, "max_pids": 32, "max_file_mb": 64}
"""The limits of tests/security/test_graph_forgery.py and the lm attacks of test_redteam_round2.py."""
BUDGET_LIMITS = {**GRAPH_LIMITS, "timeout_s": 120, "smoke_timeout_s": 90}
"""The limits of tests/security/test_training_budget.py."""


@dataclass(frozen=True)
class Entry:
    """One candidate of a corpus: its text (a module, or with `answer` an LLM's whole answer, whose module is read
    out as the loop reads it), the task it runs on, and where it comes from (`source`: the test module; `layer`:
    what that test says contains it)."""

    corpus: str
    source: str
    name: str
    text: str
    task: str = "digits"
    isolation: str = "bubblewrap"
    limits: dict[str, Any] = field(default_factory=lambda: dict(HARNESS_LIMITS))
    answer: bool = False
    layer: str | None = None


def scripted_corpus() -> list[Entry]:
    """What the loop tests' scripted LLM answers (tests/scripted.py's modules, in the answers of tests/test_loop.py
    and tests/test_containment.py): good code, code in prose, a crash, its repair, a repeat, no code, a forbidden
    import and a forward pass that never ends. One archive, as in a run, so the repeat is a duplicate."""
    from tests.scripted import fenced, mlp
    from tests.test_containment import hangs

    answers = [
        ("good code", fenced(mlp(16))),
        ("code wrapped in prose", "Sure! Here is my design.\n" + fenced(mlp(24)) + "\nHope this helps."),
        ("crashes in forward", fenced(mlp(32, crash=True))),
        ("the crash repaired", fenced(mlp(32), "Intent: fixed the forward pass.")),
        ("a repeat of the first", fenced(mlp(16))),
        ("width 40", fenced(mlp(40))),
        ("no code", "Still no code, sorry."),
        ("imports os", fenced("import os\n" + mlp(28))),
        ("an unpaired surrogate in the intent", fenced(mlp(36), "Intent: an unpaired surrogate \ud800.")),
        ("forward never ends", fenced(hangs())),
    ]
    limits = {**HARNESS_LIMITS, "smoke_timeout_s": 20}  # the endless forward pass waits this long
    return [Entry("scripted", "tests/scripted.py", n, t, limits=limits, answer=True) for n, t in answers]


def security_corpus(host: dict[str, Any], cache_dir: Path) -> list[Entry]:
    """The attack candidates of tests/security: the escape, construction and hostile-output corpora (each case in its
    own isolation: bubblewrap unless the case names the process mode), and the graph-forgery, red-team and
    training-budget attacks. Their texts are the tests' own strings; importing the modules runs none of them."""
    from tests.security import (
        test_construction,
        test_escapes,
        test_graph_forgery,
        test_hostile_output,
        test_redteam_round2,
        test_training_budget,
    )
    from tests.security.harness import candidate_code

    found = []
    for module, cases, values in (
        (test_escapes, test_escapes.CASES, host),
        (test_construction, test_construction.CASES, host),
        (test_hostile_output, test_hostile_output.E2E, {}),
    ):
        source = module.__name__.rsplit(".", 1)[1]
        for case in cases:
            seen = dict(values)
            if case.isolation == "bubblewrap" and "unix_visible" in seen:  # the inputs are at /data in the sandbox
                seen["unix_visible"] = "/data/" + Path(seen["unix_visible"]).name
            code = candidate_code(case, seen)
            limits = {**HARNESS_LIMITS, **case.limits}
            found.append(Entry("security", source, case.name, code, "digits", case.isolation, limits, layer=case.layer))
    forgery, redteam, budget = test_graph_forgery, test_redteam_round2, test_training_budget
    spy = forgery.HELD_OUT_SPY % {"cache": str(cache_dir)}
    lm = "stdlib-bytes"
    for source, name, code, task, limits, layer in (
        ("test_graph_forgery", "forged-report-small", forgery.FORGE_REPORT + forgery.SMALL, "digits", GRAPH_LIMITS,
         "the host measures the graphs; the runner's report is dropped"),
        ("test_graph_forgery", "forged-report-wide", forgery.FORGE_REPORT + forgery.WIDE, "digits", GRAPH_LIMITS,
         "the smoke graph's parameter count against max_params"),
        ("test_graph_forgery", "forged-report-constant", forgery.FORGE_REPORT + forgery.CONSTANT, "digits",
         GRAPH_LIMITS, "the host measures the graphs; the runner's report is dropped"),
        ("test_graph_forgery", "batch-mean", forgery.BATCH_STATISTICS, "digits", GRAPH_LIMITS,
         "the batch-flow proof on the smoke graph"),
        ("test_graph_forgery", "batchnorm-by-hand", forgery.BATCHNORM_BY_HAND, "digits", GRAPH_LIMITS,
         "the batch-flow proof on the smoke graph"),
        ("test_graph_forgery", "batchnorm-module-training", forgery.BATCHNORM_TRAINING, "digits", GRAPH_LIMITS,
         "the exporter (BatchNorm in training mode with a dynamic batch)"),
        ("test_graph_forgery", "swapped-graph", forgery.SWAPPED_GRAPH, "digits", GRAPH_LIMITS,
         "the trained graph's digest against the smoke graph's"),
        ("test_graph_forgery", "held-out-spy", spy, "digits", GRAPH_LIMITS,
         "no held-out input in the training job"),
        ("test_redteam_round2", "trained-event-first", redteam.TRAINED_FIRST, "digits", HARNESS_LIMITS,
         "protocol: events only in turn"),
        ("test_redteam_round2", "second-smoke-event", redteam.SECOND_SMOKE, "digits", HARNESS_LIMITS,
         "protocol: events only in turn"),
        ("test_redteam_round2", "lm-patch-cross-entropy", redteam.LM_PATCH_CROSS_ENTROPY, lm, GRAPH_LIMITS,
         "the clean evaluator computes the likelihood"),
        ("test_redteam_round2", "lm-lookahead", redteam.LM_LOOKAHEAD, lm, GRAPH_LIMITS,
         "the exporter (control flow on the batch size)"),
        ("test_redteam_round2", "lm-graph-lookahead", redteam.LM_GRAPH_LOOKAHEAD, lm, GRAPH_LIMITS,
         "the clean evaluator's causality check on held-out sequences"),
        ("test_training_budget", "overtrain-in-eval-forward", budget.IN_EVAL_FORWARD, "digits", BUDGET_LIMITS,
         "the host's CPU-time budget"),
        ("test_training_budget", "overtrain-on-eval-switch", budget.ON_EVAL_SWITCH, "digits", BUDGET_LIMITS,
         "the host's CPU-time budget"),
    ):  # fmt: skip
        found.append(Entry("security", source, name, code, task, "bubblewrap", dict(limits), layer=layer))
    return found


def outcome(status: str, reason: str | None) -> str:
    """Which column of OUTCOMES a recorded status and reason belong to."""
    if status in ("trained", "timeout"):
        return status
    if status != "failed":
        return "invalid"  # invalid, duplicate (and a rejected one, which no corpus here has)
    said = reason or ""
    if re.match(r"\[\w+:export\]", said):
        return "export"
    if "[graph:" in said or "exported graph was rejected" in said or "graph is not the network" in said:
        return "graph"
    return "failed"


class Host:
    """What a hostile candidate must not reach, as tests/security/conftest.py's `host` fixture holds it: listeners on
    the host, a secret in the environment, the API key and a home file, another candidate's perfect outputs, and
    files the sandbox must not create. `breaches` says what changed after a case (none, when it was contained)."""

    def __init__(self, root: Path, inputs_dir: Path, labels_dir: Path) -> None:
        import sklearn.datasets

        from tests.security.harness import SECRET_ENV, SECRET_FILE, SECRET_KEY, Listeners

        self.secrets = (SECRET_ENV, SECRET_KEY, SECRET_FILE)
        self.listeners = Listeners(root)
        token = os.urandom(6).hex()
        home = root / "home"
        home.mkdir()
        (home / ".agentarch-secret").write_text(SECRET_FILE)
        self.environ = {"AGENTARCH_TEST_SECRET": SECRET_ENV, "OPENAI_API_KEY": SECRET_KEY, "HOME": str(home)}
        stolen = root / "stolen.npy"
        labels = np.load(labels_dir / "test_y.npy")
        np.save(stolen, np.eye(10, dtype=np.float32)[labels] * 100)
        self.visible_sock = inputs_dir / f"listener-{token}.sock"
        self.listeners.add_unix("unix_visible", self.visible_sock)
        site_packages = next(p for p in sys.path if p.endswith("site-packages"))
        self.targets = [
            f"/tmp/escape-marker-{token}",
            str(Path(sys.prefix) / f"escape-{token}"),
            str(home / f"escape-{token}"),
            f"/root/escape-{token}",
            str(inputs_dir / f"escape-{token}"),
            f"{site_packages}/escape-{token}.pth",
            str(labels_dir / f"escape-{token}"),
        ]
        self.values = {
            "token": token,
            **{
                name: self.listeners.addresses[name]
                for name in ("tcp4", "tcp6", "udp4", "unix_hidden", "unix_abstract")
            },
            "unix_visible": str(self.visible_sock),
            "home_secret": str(home / ".agentarch-secret"),
            "real_home": "/root",
            "archive": str(root / "a.db"),
            "labels_dir": str(labels_dir),
            "host_pid": os.getpid(),
            "stolen": str(stolen),
            "targets": self.targets[1:],
            "tmp_marker": self.targets[0],
            "cache_dir": str(labels_dir.parent.parent),
            "sklearn_digits": str(Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"),
        }

    def breaches(self, archive_text: str) -> list[str]:
        found = [f"listener {hit} reached" for hit in self.listeners.hits]
        found += [f"wrote {target}" for target in self.targets if Path(target).exists()]
        found += ["a secret reached the archive" for secret in self.secrets if secret in archive_text]
        self.listeners.hits.clear()
        for target in self.targets:
            Path(target).unlink(missing_ok=True)
        return found

    def close(self) -> None:
        self.listeners.close()
        self.visible_sock.unlink(missing_ok=True)
        for target in self.targets:
            Path(target).unlink(missing_ok=True)


def run_entry(entry: Entry, archive: Archive, cache_dir: Path) -> dict[str, Any]:
    """Evaluate one candidate with graph scoring through a real Evaluator (its code runs only in the sandbox job),
    and say what became of it."""

    settings = load_settings(
        task=entry.task,
        epochs=1,
        scoring="graph",
        threads=1,
        archive=archive.path,
        cache_dir=cache_dir,
        isolation=entry.isolation,
        **entry.limits,
    )
    evaluator = Evaluator(archive, settings)
    started = time.perf_counter()
    code = entry.text
    result = None
    if entry.answer:
        try:
            code = extract_code(entry.text).code
        except ExtractError as err:
            result = evaluator.record(evaluator.without_running(entry.text, entry.name, "invalid", f"[extract] {err}"))
    if result is None:
        result = evaluator.evaluate(code, entry.name)
    reason = " ".join((result.reason or "").split())
    return {
        "corpus": entry.corpus,
        "source": entry.source,
        "name": entry.name,
        "task": entry.task,
        "isolation": entry.isolation,
        "layer": entry.layer,
        "status": result.status,
        "outcome": outcome(result.status, result.reason),
        "reason": reason[:400],
        "val": result.metrics.get("val_accuracy"),
        "seconds": time.perf_counter() - started,
    }


def run_corpora(rows_path: Path, only: str | None) -> None:
    """Run both corpora, one candidate at a time, logging each row to `rows_path`, then write the page's section."""

    sys.path.insert(0, str(REPO))  # the corpora's texts are the tests' own
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="export-corpora-") as folder:
        root = Path(folder)
        cache_dir = root / "cache"
        digits = prepare(get_task("digits"), cache_dir)
        host = Host(root, digits.inputs_dir, digits.labels_dir)
        saved = {name: os.environ.get(name) for name in host.environ}
        os.environ.update(host.environ)
        try:
            entries = scripted_corpus() + security_corpus(host.values, cache_dir)
            if only:
                entries = [e for e in entries if re.search(only, f"{e.source}/{e.name}")]
            with rows_path.open("w") as log, Archive(root / "scripted.db") as shared:
                for i, entry in enumerate(entries):
                    if entry.corpus == "scripted":
                        row = run_entry(entry, shared, cache_dir)
                    else:  # a fresh archive each, at the path the attacks know: most compute the same function
                        for stale in root.glob("a.db*"):  # the archive, its journal files and its graphs
                            if stale.is_dir():
                                shutil.rmtree(stale)
                            else:
                                stale.unlink()
                        with Archive(root / "a.db") as archive:
                            row = run_entry(entry, archive, cache_dir)
                            text = "\n".join(archive.db.conn.iterdump())
                        row["breaches"] = host.breaches(text)
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    print(f"{i + 1}/{len(entries)} {row['source']}/{row['name']}: {row['outcome']} "
                          f"({row['seconds']:.1f} s) {row['reason'][:100]}", flush=True)  # fmt: skip
                log.write(json.dumps({"wall_s": time.perf_counter() - began, "machine": machine()}) + "\n")
        finally:
            host.close()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    report_corpora(rows_path)


def report_corpora(path: Path) -> None:
    """Write the corpora's section of the page from the rows of a `--corpora` run."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in lines if "corpus" in r]
    tail = next((r for r in reversed(lines) if "wall_s" in r), {"wall_s": 0.0, "machine": machine()})
    section = corpora_section(rows, tail["wall_s"], tail["machine"])
    OUT.write_text(with_section(OUT.read_text() if OUT.exists() else "", section))
    print(section)


def count_row(label: str, rows: list[dict[str, Any]]) -> str:
    counts = [sum(r["outcome"] == key for r in rows) for key in OUTCOMES]
    return f"| {label} | {len(rows)} | " + " | ".join(map(str, counts)) + " |"


def cell(text: str, limit: int) -> str:
    """A reason as one line of Markdown: cut to `limit` characters, its pipes and backticks made harmless."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|").replace("`", "'")


def said(row: dict[str, Any], limit: int) -> str:
    """What a row's line says after its outcome: its reason, or for a trained one its validation score."""
    return cell(row["reason"], limit) if row["reason"] else f"val {row['val']:.3f}"


def export_line(label: str, rows: list[dict[str, Any]]) -> str:
    """The export rate of a corpus, among its candidates whose outcome the export decided or followed (trained, graph
    rejected, failed at export), and which failed at export."""
    reached = [r for r in rows if r["outcome"] in ("trained", "graph", "export")]
    refused = [r["name"] for r in reached if r["outcome"] == "export"]
    rate = f"{len(reached) - len(refused)} of {len(reached)} exported" if reached else "none reached the exporter"
    return f"- {label}: {rate}" + (f"; failed at export: {', '.join(refused)}" if refused else "") + "."


def corpora_section(rows: list[dict[str, Any]], wall: float, host: str) -> str:
    scripted = [r for r in rows if r["corpus"] == "scripted"]
    security = [r for r in rows if r["corpus"] == "security"]
    sources = sorted({r["source"] for r in security}, key=lambda s: [r["source"] for r in security].index(s))
    breached = [r for r in security if r.get("breaches")]
    header = "| corpus | candidates | " + " | ".join(OUTCOMES.values()) + " |"
    lines = [
        CORPORA,
        "",
        f"Recorded by `benchmarks/export_rate.py --corpora` on {host}, in {wall / 60:.0f} minutes.",
        "",
        "Each candidate the loop tests' scripted LLM writes (tests/scripted.py's modules in the answers of "
        "tests/test_loop.py and tests/test_containment.py, read out of the answer as the loop does) and each attack "
        "of tests/security (the escape, construction and hostile-output cases built by tests/security/harness.py, "
        "and the graph-forgery, red-team and training-budget attacks) went through a real `Evaluator` with "
        "`scoring=graph`: 1 epoch, 1 training thread, digits (stdlib-bytes for the lm attacks), bubblewrap unless "
        "the case names the process mode, the tests' limits with 90 s / 60 s to run and to smoke unless the case "
        "sets its own. No candidate ran in the benchmark's process. Each attack had a fresh archive and the "
        "security fixture's host (listeners, secrets, target files); the scripted corpus shared one archive, as a "
        "run does, so its repeat is a duplicate. Columns: trained = exported, checked and scored by the clean "
        "evaluator; failed at export = a `[...:export]` reason (the exporter refused the network); graph rejected "
        "= the host's checks of the graph (`the exported graph was rejected`, `[graph:...]` from the clean "
        "evaluator, or a trained graph that is not the smoke stage's architecture); failed otherwise = stopped "
        "elsewhere (the sandbox, the protocol, no graph file where one was due, the training budget). The "
        "machine line's threads are this process's; each sandbox job trained with 1.",
        "",
        header,
        "| --- | ---: | " + " | ".join("---:" for _ in OUTCOMES) + " |",
        count_row("scripted", scripted),
        count_row("security", security),
        *[count_row(f"security: {s}", [r for r in security if r["source"] == s]) for s in sources],
        "",
        *[export_line(label, group) for label, group in (("scripted", scripted), ("security", security))],
        "",
        f"Contained (no host listener reached, no host file written, no secret in the archive): "
        f"{len(security) - len(breached)} of {len(security)} attacks"
        + "".join(f"; {r['name']}: {', '.join(r['breaches'])}" for r in breached)
        + ".",
        "",
        "### The scripted corpus",
        "",
        *[f"- {r['name']}: {r['status']} — {said(r, 160)}" for r in scripted],
        "",
        "### What stopped each attack",
        "",
        "Its outcome and the start of its recorded reason (for a trained attack, its validation score, the host's "
        "number on the graph's outputs: accuracy, or bits per byte on stdlib-bytes); after the name, the isolation where not bubblewrap; in square brackets, "
        "what its test says contains it.",
        "",
    ]
    for r in security:
        where = "" if r["isolation"] == "bubblewrap" else f" ({r['isolation']})"
        layer = f" [{cell(r['layer'], 80)}]" if r.get("layer") else ""
        lines.append(f"- {r['source']}/{r['name']}{where}: {OUTCOMES[r['outcome']]} — {said(r, 150)}{layer}")
    return "\n".join(lines) + "\n"


def with_section(page: str, section: str) -> str:
    """`page` with its corpora section (from CORPORA to the next `## ` heading, or the end) replaced by `section`,
    or `section` added at its end."""
    start = page.find(CORPORA)
    if start < 0:
        return page.rstrip("\n") + "\n\n" + section if page.strip() else section
    end = page.find("\n## ", start + len(CORPORA))
    rest = page[end + 1 :] if end >= 0 else ""
    return page[:start] + section + ("\n" + rest if rest else "")


if __name__ == "__main__":
    main()
