"""Successive halving against full-budget training on a fixed pool of 16 candidates on digits.

Run from the repository root:  .venv/bin/python benchmarks/successive_halving.py > benchmarks/successive_halving.md

The pool: 16 distinct architectures of the macro CNN space drawn with seed 0, rendered for digits.
Full budget: all 16 trained for 27 epochs. Successive halving: 3 epochs for all, the best third
promoted to 9, the best third of those to 27 (eta = 3). Same sandbox, same seeds, one run.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentarch.config import load_settings  # noqa: E402
from agentarch.evaluation.evaluator import Evaluator  # noqa: E402
from agentarch.evaluation.fidelity import successive_halving  # noqa: E402
from agentarch.search.proposers.baselines import RandomSearch  # noqa: E402
from agentarch.search.spaces import get_space  # noqa: E402
from agentarch.store.archive import Archive  # noqa: E402
from agentarch.tasks.registry import get_task  # noqa: E402

POOL, MIN_EPOCHS, MAX_EPOCHS, ETA = 16, 3, 27, 3


def main() -> None:
    space, task = get_space("macro"), get_task("digits")
    archs = [p.arch for p in RandomSearch(space, seed=0, distinct=True).propose(POOL)]
    pool = [(arch, space.render(arch, task)) for arch in archs]
    with tempfile.TemporaryDirectory() as tmp:
        full_settings = load_settings(task="digits", epochs=MAX_EPOCHS, archive=Path(tmp) / "full.db")
        started = time.perf_counter()
        with Archive(full_settings.archive) as db:
            full = [Evaluator(db, full_settings).evaluate(code, name) for name, code in pool]
        full_wall = time.perf_counter() - started
        trained = [r for r in full if r.status == "trained"]
        full_best = max(trained, key=lambda r: r.metrics["val_accuracy"])
        full_seconds = sum(r.metrics["train_seconds"] for r in trained)

        halving_settings = load_settings(task="digits", epochs=MAX_EPOCHS, archive=Path(tmp) / "sh.db")
        started = time.perf_counter()
        with Archive(halving_settings.archive) as db:
            sh = successive_halving(Evaluator(db, halving_settings), pool, MIN_EPOCHS, MAX_EPOCHS, ETA)
        sh_wall = time.perf_counter() - started

    print("# Successive halving vs full budget\n")
    print(
        f"`.venv/bin/python benchmarks/successive_halving.py` on {platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPU cores, {time.strftime('%Y-%m-%d')}. Pool: {POOL} macro-space CNNs "
        f"(seed 0) on digits; full budget {MAX_EPOCHS} epochs each; halving {MIN_EPOCHS} → {MAX_EPOCHS} epochs, "
        f"eta {ETA}.\n"
    )
    print("| method | trainings | epochs trained | train seconds | wall seconds | best (by val) | its val | its test |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| full budget | {len(trained)} | {len(trained) * MAX_EPOCHS} | {full_seconds:.1f} | {full_wall:.1f} | "
        f"{full_best.name} | {full_best.metrics['val_accuracy']:.4f} | {full_best.metrics['test_accuracy']:.4f} |"
    )
    best = sh.best
    print(
        f"| successive halving | {sum(len(r.results) for r in sh.rungs)} | {sh.epochs_spent} | {sh.seconds_spent:.1f} | "
        f"{sh_wall:.1f} | {best.name if best else '-'} | {best.metrics['val_accuracy']:.4f} | {best.metrics['test_accuracy']:.4f} |"
    )
    print()
    print("Rungs: " + ", ".join(f"{r.epochs} epochs × {len(r.results)}" for r in sh.rungs) + ".")
    top_val = full_best.metrics["val_accuracy"]
    tied = [r.name for r in trained if r.metrics["val_accuracy"] == top_val]
    print(
        f"Compute ratio (halving / full): {sh.epochs_spent / (len(trained) * MAX_EPOCHS):.2f} in epochs, "
        f"{sh.seconds_spent / full_seconds:.2f} in training seconds."
    )
    print(
        f"Best at full budget (validation {top_val:.4f}): {', '.join(tied)}. Halving's pick "
        f"{'is' if best and best.name in tied else 'is NOT'} among them."
    )
    ranked = sorted(trained, key=lambda r: -r.metrics["val_accuracy"])
    print(
        "\nFull-budget ranking by validation accuracy (top 5): "
        + ", ".join(f"{r.name} {r.metrics['val_accuracy']:.4f}" for r in ranked[:5])
        + "."
    )


if __name__ == "__main__":
    main()
