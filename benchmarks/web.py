"""Web UI speed on a large archive: every page timed through Starlette's TestClient (no network).

Run from the repository root:  .venv/bin/python benchmarks/web.py > benchmarks/web.md

Builds a 10,000-candidate archive in a temporary folder through `Archive.record` (realistic rows:
~3 KB of code each, prompts and analyses on the LLM candidates, two models taking turns in the LLM run, 40-point
loss curves, latencies and zero-cost proxies, lineage, some candidates retrained at a verify fidelity, an LLM-call
ledger, the LLM run's notebook, reviews and flags), then times each page and each chart's JSON: the median of 20
requests after one warm-up request. The target is under 300 ms per page.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from starlette.applications import Starlette  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from agentarch.store.archive import Archive  # noqa: E402
from agentarch.web import create_app  # noqa: E402
from agentarch.web.rendering import highlight_code  # noqa: E402

CANDIDATES = 10_000
REPEATS = 20
TARGET_MS = 300
# (kind, proposer stored on the run, proposer stored on its candidates, share of the candidates)
MODELS = ["openai/gpt-4o-mini", "ollama/qwen2.5-coder:7b"]
"""The LLM run's models, taking turns."""
NOTE_EVERY = 10
"""The LLM run's notebook gets an entry every this many of its candidates."""
RUNS = [
    ("run", MODELS[0], "llm", 0.4),
    ("baseline", "rea", "rea", 0.2),
    ("baseline", "random", "random", 0.2),
    ("baseline", "tpe", "tpe", 0.15),
]
LAYERS = [
    "nn.Conv2d(c, c, 3, padding=1)",
    "nn.BatchNorm2d(c)",
    "nn.ReLU()",
    "nn.Conv2d(c, c, 1)",
    "nn.GELU()",
    "nn.Conv2d(c, c, 3, padding=1, groups=c)",
    "nn.MaxPool2d(2)",
    "nn.Dropout(0.1)",
]
WORDS = [
    "depthwise",
    "residual",
    "attention",
    "bottleneck",
    "squeeze",
    "excitation",
    "wider",
    "deeper",
    "pooling",
    "normalization",
    "skip",
    "dilated",
    "kernel",
    "stem",
    "head",
    "mixer",
]


def code(rng: random.Random, i: int) -> str:
    body = "\n".join(f"            {rng.choice(LAYERS)},  # {' '.join(rng.choices(WORDS, k=4))}" for _ in range(60))
    return (
        f'import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    """Candidate {i}."""\n\n'
        f"    def __init__(self, in_shape, num_classes):\n        super().__init__()\n        c = 16\n"
        f"        self.body = nn.Sequential(\n{body}\n        )\n        self.head = nn.LazyLinear(num_classes)\n\n"
        f"    def forward(self, x):\n        return self.head(self.body(x).flatten(1))\n"
    )


def evaluation(rng: random.Random, epochs: int, val: float) -> dict:
    steps = 40
    return {
        "status": "trained",
        "fidelity": epochs,
        "seed": 0,
        "val_accuracy": val,
        "test_accuracy": val - 0.01,
        "params": rng.randint(10_000, 5_000_000),
        "train_seconds": rng.uniform(5, 120),
        "latency_ms": rng.uniform(0.5, 50),
        "peak_memory_mb": rng.uniform(20, 400),
        "proxies": {"synflow": rng.uniform(0, 80), "grad_norm": rng.uniform(0.01, 5), "naswot": rng.uniform(100, 300)},
        "timings": {"proxy_seconds": rng.uniform(0.01, 0.2)},
        "device": "cpu",
        "curve": [
            {"step": s * 25, "epoch": s * epochs / steps, "loss": 2.3 / (1 + s / 5) + rng.random() * 0.05}
            for s in range(1, steps + 1)
        ],
    }


def build(path: Path) -> dict:
    """Fill the archive; returns ids worth visiting."""
    rng = random.Random(0)
    with Archive(path) as db:
        db.db.execute("PRAGMA synchronous = OFF")  # building only: 10,000 fsyncs would dominate the set-up
        run_ids = [
            db.start_run(
                kind,
                "digits",
                proposer,
                {"budget": int(share * CANDIDATES), **({"models": MODELS} if kind == "run" else {})},
            )
            for kind, proposer, _, share in RUNS
        ]
        by_run: dict[str, list[int]] = {r: [] for r in run_ids}
        seeds_share = 1 - sum(share for *_, share in RUNS)  # the rest: user candidates outside any run
        llm_candidate = None
        for i in range(CANDIDATES):
            slot = rng.choices([*range(len(RUNS)), None], [*(share for *_, share in RUNS), seeds_share])[0]
            run_id = run_ids[slot] if slot is not None else None
            proposer = RUNS[slot][2] if slot is not None else "user"
            earlier = by_run.get(run_id, []) if run_id else []
            parents = [rng.choice(earlier)] if len(earlier) > 5 else []
            status = rng.choices(["trained", "failed", "invalid", "duplicate"], [80, 10, 5, 5])[0]
            row = {
                "task": "digits",
                "name": f"cand-{i}.py",
                "proposer": proposer,
                "run_id": run_id,
                "code": code(rng, i),
                "status": status,
                "text_hash": f"t{i}",
                "ast_hash": f"a{i}",
                "functional_hash": f"f{i}",
                "parents": parents,
                "params": rng.randint(10_000, 5_000_000),
            }
            calls = []
            if proposer == "llm":
                model = MODELS[len(earlier) % len(MODELS)]
                call = db.record_llm_call(
                    {
                        "run_id": run_id,
                        "purpose": "propose",
                        "model": model,
                        "status": "ok",
                        "prompt_tokens": 3000,
                        "completion_tokens": 800,
                        "cost_usd": 0.002 if model == MODELS[0] else 0.0,
                        "latency_s": rng.uniform(2, 30),
                    }
                )
                calls = [call]
                row.update(
                    model=model,
                    examples=earlier[-3:],
                    proposal_key=f"{run_id}/{i}",
                    prompt=[
                        {"role": "system", "content": "You design networks. " * 50},
                        {"role": "user", "content": "\n".join(code(rng, j) for j in range(2))},
                    ],
                    response="```python\n" + row["code"] + "\n```",
                    analysis=" ".join(rng.choices(WORDS, k=80)),
                )
            evaluation_row = None
            if status == "trained":
                evaluation_row = evaluation(rng, 5, rng.uniform(0.5, 0.99))
            elif status == "failed":
                evaluation_row = {"status": "failed", "fidelity": 5, "error": "RuntimeError: shape mismatch"}
            cid = db.record(row, evaluation_row, llm_calls=calls)
            if status == "trained" and rng.random() < 0.1:  # a verify retraining: a higher fidelity
                db.add_evaluation(cid, "digits", {**evaluation(rng, 20, rng.uniform(0.5, 0.99)), "stage": "verify"})
            if rng.random() < 0.01:
                db.flag(cid, by="bench", reason="suspicious")
            if run_id:
                by_run[run_id].append(cid)
            if proposer == "llm" and len(by_run[run_id]) % NOTE_EVERY == 0:
                cited = rng.sample(by_run[run_id], 3)
                text = " ".join(f"#{c} {' '.join(rng.choices(WORDS, k=12))}." for c in cited)
                db.add_note(run_id, "digits", len(by_run[run_id]), text, cited)
            if proposer == "llm" and parents and llm_candidate is None and i > CANDIDATES // 2:
                llm_candidate = cid
        for k in range(220):
            review = db.request_review(
                {
                    "run_id": run_ids[0],
                    "proposal_key": f"review-{k}",
                    "code": code(rng, k),
                    "intent": "try a wider stem",
                    "parent_id": llm_candidate,
                }
            )
            if k >= 20:
                db.decide(review, "approved", by="bench")
        parent = db.candidate(llm_candidate)["parents"][0]
        trained = [row["id"] for row in db.top("digits", limit=3)]
    return {"run": run_ids[0], "candidate": llm_candidate, "parent": parent, "compare": ",".join(map(str, trained))}


@dataclass(frozen=True)
class Probe:
    name: str
    url: str
    cold: bool = False  # empty the server's caches (highlighted code, predictor quality) before each request
    page: bool = True  # held to the per-page target
    repeats: int = REPEATS


def median_ms(client: TestClient, app: Starlette, probe: Probe) -> tuple[float, float, int]:
    """Median and worst of the probe's requests after a warm-up; a `cold` probe empties the server's caches (the
    highlighted code, the predictor's quality) before each."""
    response = client.get(probe.url)  # warm-up
    assert response.status_code == 200, (probe.url, response.status_code, response.text[:500])
    samples = []
    for _ in range(probe.repeats):
        if probe.cold:
            highlight_code.cache_clear()
            app.state.qualities.clear()
        start = time.perf_counter()
        client.get(probe.url)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000, max(samples) * 1000, len(response.content)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "archive.db"
        start = time.perf_counter()
        ids = build(path)
        built = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        probes = [
            Probe("leaderboard, page 1", "/?task=digits"),
            Probe("leaderboard, late page (160 of 160)", "/?task=digits&page=160"),
            Probe("leaderboard, filtered (proposer + status)", "/?task=digits&proposer=rea&status=trained"),
            Probe("leaderboard, sorted by parameters", "/?task=digits&sort=params"),
            Probe("leaderboard, sorted by latency, late page", "/?task=digits&sort=latency_ms&order=asc&page=150"),
            Probe(
                "leaderboard, ranges (params <= 1M, val >= 0.8) + 200 rows",
                "/?task=digits&params_max=1M&val_min=0.8&size=200",
            ),
            Probe("leaderboard, flagged", "/?task=digits&flagged=1"),
            Probe("leaderboard, verified stage", "/?task=digits&stage=verify"),
            Probe("leaderboard, sorted by Pareto front (val, params; 10,000 rows)", "/?task=digits&sort=front"),
            Probe(
                "leaderboard, the LLM run by Pareto front, late page",
                f"/?task=digits&run={ids['run']}&sort=front&order=asc&page=50",
            ),
            Probe("candidate page (LLM, with lineage), highlighting cached", f"/candidate/{ids['candidate']}"),
            Probe("candidate page, first visit (highlighting not cached)", f"/candidate/{ids['candidate']}", cold=True),
            Probe("candidate loss curve (PNG)", f"/candidate/{ids['candidate']}/curve.png"),
            Probe("diff with the parent", f"/diff?a={ids['parent']}&b={ids['candidate']}"),
            Probe("compare 3 candidates", f"/compare?ids={ids['compare']}"),
            Probe("compare: loss curves (JSON)", f"/api/curves.json?ids={ids['compare']}"),
            Probe("lineage tree (its run's descendants, up to 300 a side)", f"/candidate/{ids['parent']}/lineage"),
            Probe("runs list", "/runs"),
            Probe("run page (HTML: two models' table, newest 10 of ~400 notebook entries)", f"/run/{ids['run']}"),
            Probe("run best-so-far plot (PNG)", f"/run/{ids['run']}/best.png"),
            Probe("run Pareto plot (PNG, ~3,200 points)", f"/run/{ids['run']}/pareto.png"),
            Probe("run best-so-far (JSON)", f"/api/run/{ids['run']}/best.json"),
            Probe("run Pareto front (JSON, ~3,200 points)", f"/api/pareto.json?run={ids['run']}"),
            Probe("task Pareto page (HTML)", "/pareto?task=digits"),
            Probe("predictor page, kept (quality worked out already)", "/predictor?task=digits"),
            Probe(
                "predictor page, first visit (5-fold fit on ~8,000 trained, 3 requests; a computation, not a page)",
                "/predictor?task=digits",
                cold=True,
                page=False,
                repeats=3,
            ),
            Probe("task Pareto front (JSON, ~8,000 points)", "/api/pareto.json?task=digits"),
            Probe("task Pareto front, latency x val (JSON)", "/api/pareto.json?task=digits&x=latency_ms&y=val"),
            Probe("reviews (20 pending, 10 shown; 200 decided), highlighting cached", "/reviews"),
            Probe("reviews, first visit (highlighting not cached)", "/reviews", cold=True),
            Probe("search", "/search?q=depthwise%20residual"),
            Probe("search, a pasted name", "/search?q=nn.Conv2d(c,%20c,%203,%20padding=1)"),
            Probe("export CSV, one page", "/?task=digits&format=csv"),
            Probe("export CSV, all 10,000 rows (a download, not a page)", "/?task=digits&format=csv&all=1", page=False),
        ]
        app = create_app(path)
        with TestClient(app, base_url="http://localhost") as client:  # a Host the app answers to
            rows = [(probe, *median_ms(client, app, probe)) for probe in probes]
    print("# Web UI benchmark\n")
    print(
        f"`.venv/bin/python benchmarks/web.py` on {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}, {date.today()}; load average {os.getloadavg()[0]:.1f} at the end "
        f"(other jobs share the machine, so absolute times carry their noise).\n"
    )
    print(
        f"{CANDIDATES:,} candidates ({size_mb:.0f} MB archive, built through Archive.record in {built:.0f} s), "
        f"median and worst of {REPEATS} requests (fewer where the page's name says) after a warm-up, Starlette "
        "TestClient in-process (no network). "
        f"Target: under {TARGET_MS} ms per page. A first visit empties the server's caches (the highlighted code, "
        "the predictor's quality) before every request.\n"
    )
    print("| page | median ms | max ms | bytes | under target |")
    print("| --- | ---: | ---: | ---: | :---: |")
    for probe, median, worst, size in rows:
        verdict = ("yes" if median < TARGET_MS else "NO") if probe.page else "–"
        print(f"| {probe.name} | {median:.1f} | {worst:.1f} | {size:,} | {verdict} |")


if __name__ == "__main__":
    main()
