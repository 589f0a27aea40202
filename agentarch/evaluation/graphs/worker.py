"""The clean evaluator: runs a trained candidate's ONNX graph on held-out and probe inputs, and nothing else.

It runs sandboxed (agentarch/isolation: bubblewrap, or the process mode's Landlock and seccomp) like a training
job, as its own program: its runtime view holds ONNX Runtime and numpy and not torch, and it never imports or
runs candidate code, so a graph can only be the operators it holds. A graph is still hostile input (ONNX Runtime
parses it), so the worker confines itself before it imports ONNX Runtime, and the host reads what it sends back
as it reads the runner's (agentarch/isolation/protocol.py).

This file is started on its own (the host's boot line imports it as `worker`), never through the agentarch
package: it imports the standard library, numpy and onnxruntime only, the last two once it is confined.

Protocol (docs/sandbox.md, "Graph scoring"): the spec names the task's inputs folder (`/data`: the stored held-out
inputs and meta.json, no labels) and scratch, where the host put the graph and the probe inputs. The worker says
`ready`, then answers one JSON request per stdin line with one event on its stdout:

- `{"op": "run", "graph": NAME, "splits": ["val", "test"], "probe": NAME|null, "batch": B, "nll": bool,
  "latency_runs": N, "latency_budget_s": S, "causal_seed": int|null, "causal_sequences": C, "feeds": F|null}`: writes
  `<split>_outputs.npy` (float32
  outputs, or with `nll` an lm task's summed negative log-likelihood per sequence in float64) and
  `probe_outputs.npy` into scratch, and says `ran` with its timings and the median latency of a batch of one. With
  `causal_seed` (an lm task) it first checks, on every sequence of each split (a random share of C of them, where a
  split holds more), that the logits before a random cut do not move when every id from the cut on changes
  (`Worker.check_causal`; the bound is scoring.py's CAUSAL_CHECK), and refuses the graph (an `error` event of stage
  `causal`) if they do. A graph of named inputs (a graph task's `x` and `edge_index`) is run whole: `feeds` names,
  per split, the stored file of each input and the file of the rows to score (`{"val": {"inputs": {"x": "train_x",
  "edge_index": "edge_index"}, "rows": "val_x"}}`; agentarch/evaluation/graphs/interface.py), the graph runs once on
  those inputs and the split's output is those rows of its output; `probe` is then a map of input names to files in
  scratch, run whole too. A graphs task's feed names the split's node offsets instead of rows (`{"val": {"inputs":
  {"x": "val_x", "edge_index": "val_edges"}, "ptr": "val_ptr"}}`): each graph is run alone (its nodes, its edges
  renumbered from 0, `batch` all zeros) and gives one row (`Worker.graph_by_graph`); a `probe` map with `ptr` is run
  so too, and latency is its first graph's;
- `{"op": "modules"}`: says `modules`, the names of the modules it has imported (a test's debug request);
- `{"op": "exit"}`, or the end of stdin: it exits.

A request it cannot carry out (a graph ONNX Runtime refuses, an input it does not accept) is an `error` event, and
the worker waits for the next request.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any, TextIO

LATENCY_WARMUP = 3


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _load_seccomp(bpf_path: Path) -> None:
    """Install the host's compiled seccomp allowlist (the process mode; bubblewrap installs it itself), as the runner
    does (sandbox/runner.py, `_load_seccomp`): this file cannot import the runner, which imports torch."""
    program = bpf_path.read_bytes()
    bpf_path.unlink()

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    one, zero = ctypes.c_ulong(1), ctypes.c_ulong(0)
    if (
        libc.prctl(38, one, zero, zero, zero) != 0  # PR_SET_NO_NEW_PRIVS
        or libc.prctl(22, ctypes.c_ulong(2), ctypes.byref(fprog), zero, zero) != 0  # PR_SET_SECCOMP, FILTER
    ):
        raise OSError(ctypes.get_errno(), "could not install the seccomp filter")


def _confine(spec: dict[str, Any]) -> None:
    """The process mode's confinement, before anything reads a graph: the runner's Landlock rules, then seccomp."""
    if spec.get("landlock"):
        found = importlib.util.spec_from_file_location("landlock", spec["landlock_module"])
        landlock = importlib.util.module_from_spec(found)
        found.loader.exec_module(landlock)
        rules = spec["landlock"]
        landlock.restrict(rules["read"], rules["write"], rules["devices"])
    if spec.get("seccomp_bpf"):
        _load_seccomp(Path(spec["seccomp_bpf"]))


def _redirect_output(log_path: Path) -> TextIO:
    """Keep the real stdout for events; ONNX Runtime's own messages go to the log."""
    events = os.fdopen(os.dup(1), "w", buffering=1)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    return events


class RequestError(Exception):
    """A request the worker could not carry out; `stage` says where (load, run), the message what to change."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class Worker:
    """One worker's state: the task's held-out inputs, normalised once, and the ONNX Runtime settings."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import numpy as np
        import onnxruntime as ort

        self.np, self.ort = np, ort
        ort.set_default_logger_severity(3)
        self.threads = int(spec["threads"])
        self.inputs_dir = Path(spec["inputs_dir"])
        self.scratch = Path(spec["output_dir"])
        self.meta = json.loads((self.inputs_dir / "meta.json").read_text())
        self._held_out: dict[str, Any] = {}

    def held_out(self, split: str) -> Any:
        """A split's network inputs: its stored examples, `<split>_x` (`stored`)."""
        return self.stored(f"{split}_x")

    def stored(self, stem: str) -> Any:
        """A stored input file of the task (`<stem>.npy`: a split's examples, a graph's features, edges or scored
        node indices), normalised exactly as the runner normalises training inputs (sandbox/trainer.py,
        `load_inputs`): floats in float32, images divided by their scale, then each channel or feature less its
        training mean and over its training std; ids and indices stay int64."""
        if stem not in self._held_out:
            np, meta = self.np, self.meta
            x = np.load(self.inputs_dir / f"{Path(stem).name}.npy", allow_pickle=False)
            kind = meta["kind"]
            if not np.issubdtype(x.dtype, np.floating) and kind != "image":
                x = x.astype(np.int64)
            else:
                x = x.astype(np.float32)
                if kind == "image":
                    x /= np.float32(meta["scale"])
                shape = (1, -1) + (1,) * (x.ndim - 2) if kind == "image" else (-1,)
                x -= np.asarray(meta["mean"], dtype=np.float32).reshape(shape)
                x /= np.asarray(meta["std"], dtype=np.float32).reshape(shape)
            self._held_out[stem] = x
        return self._held_out[stem]

    def session(self, name: str) -> Any:
        """An ONNX Runtime session of the graph file `name` in scratch, on the CPU, with the host's thread count.

        The graph is handed over as bytes, so no path it names (external data) can be resolved."""
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        data = (self.scratch / Path(name).name).read_bytes()
        try:
            return self.ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise RequestError("load", f"ONNX Runtime cannot load the graph: {_said(err)}") from err

    def outputs(self, session: Any, x: Any, batch: int, nll: bool, causal: Any = None) -> Any:
        """The graph's first output for `x`, batch by batch, as float32; with `nll` (an lm task, whose inputs are its
        labels) each sequence's summed negative log-likelihood of ids 1..L-1 under the logits at 0..L-2, in float64
        (what the runner computes in trusted scoring: sandbox/trainer.py, `predict`). With `causal` (a numpy random
        generator and the share of sequences to check) each batch's logits are checked for causality first
        (`check_causal`)."""
        np = self.np
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise RequestError(
                "load",
                f"the graph takes {len(inputs)} inputs and gives {len(outputs)} outputs; "
                "forward must take one tensor and return one",
            )
        name = inputs[0].name
        parts = []
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            try:
                out = session.run([outputs[0].name], {name: chunk})[0]
            except Exception as err:
                raise RequestError(
                    "run",
                    f"the graph failed on a batch of {len(chunk)}: {_said(err)}; the network must accept any batch "
                    "size (do not loop over, index or fix the batch axis)",
                ) from err
            if not isinstance(out, np.ndarray) or not np.issubdtype(out.dtype, np.floating):
                raise RequestError("run", f"the graph returned {getattr(out, 'dtype', type(out).__name__)}, not floats")
            if out.ndim == 0 or out.shape[0] != len(chunk):
                raise RequestError(
                    "run", f"the graph returned shape {out.shape} for a batch of {len(chunk)}: one row per example"
                )
            if causal is not None:
                rng, share = causal
                picked = slice(None) if share >= 1 else rng.random(len(chunk)) < share
                self.check_causal(session, chunk[picked], out[picked], rng)
            parts.append(self._nll(out, chunk) if nll else out.astype(np.float32, copy=False))
        return np.concatenate(parts)

    def whole(self, session: Any, feed: dict[str, Any], rows: int | None = None) -> Any:
        """The graph's first output for one run on the named inputs `feed` (a whole graph; an input the graph does not
        take, one its network never read, is left out), as float32, `rows` rows (None: one per row of feed's first
        input, a node's; 1 for a graph run alone)."""
        np = self.np
        names = [i.name for i in session.get_inputs()]
        if not names or not set(names) <= set(feed) or not session.get_outputs():
            raise RequestError("load", f"the graph takes the inputs {names[:5]}; expected some of {list(feed)}")
        try:
            out = session.run([session.get_outputs()[0].name], {name: feed[name] for name in names})[0]
        except Exception as err:
            sizes = ", ".join(f"{name} {tuple(value.shape)}" for name, value in feed.items())
            raise RequestError(
                "run",
                f"the graph failed on a graph of {sizes}: {_said(err)}; the network must accept any number of nodes "
                "and edges (do not fix them, or index past them)",
            ) from err
        per = "node" if rows is None else "graph"
        rows = len(next(iter(feed.values()))) if rows is None else rows
        if not isinstance(out, np.ndarray) or not np.issubdtype(out.dtype, np.floating):
            raise RequestError("run", f"the graph returned {getattr(out, 'dtype', type(out).__name__)}, not floats")
        if out.ndim == 0 or out.shape[0] != rows:
            raise RequestError("run", f"the graph returned shape {out.shape} for {rows} {per}(s): one row per {per}")
        return out.astype(np.float32, copy=False)

    def graphs(self, x: Any, edges: Any, ptr: Any) -> list[dict[str, Any]]:
        """A stored graph set cut into one feed per graph (graphsets.py's format: nodes graph after graph, edges over
        them, node offsets `ptr`): graph g's nodes, its edges renumbered from 0, and `batch` all zeros."""
        np = self.np
        count = len(x)
        if ptr.ndim != 1 or len(ptr) < 2 or ptr[0] != 0 or ptr[-1] != count or (np.diff(ptr) <= 0).any():
            raise RequestError("run", f"the stored node offsets do not cut {count} nodes into graphs")
        owner = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
        if edges.ndim != 2 or edges.shape[0] != 2 or (edges.size and (edges.min() < 0 or edges.max() >= count)):
            raise RequestError("run", f"the stored edges {edges.shape} do not join the {count} nodes")
        if (owner[edges[0]] != owner[edges[1]]).any():
            raise RequestError("run", "a stored edge joins two graphs")
        order = np.argsort(owner[edges[0]], kind="stable")
        edges = edges[:, order]
        cuts = np.searchsorted(owner[edges[0]], np.arange(len(ptr)), side="left")
        return [
            {
                "x": x[ptr[g] : ptr[g + 1]],
                "edge_index": np.ascontiguousarray(edges[:, cuts[g] : cuts[g + 1]] - ptr[g]),
                "batch": np.zeros(int(ptr[g + 1] - ptr[g]), dtype=np.int64),
            }
            for g in range(len(ptr) - 1)
        ]

    def graph_by_graph(self, session: Any, feeds: list[dict[str, Any]]) -> Any:
        """The graph's output for each graph run alone (`graphs`), one row each, as float32: whatever the network
        does with the other graphs of a batch, no other graph is in its input."""
        return self.np.concatenate([self.whole(session, feed, rows=1) for feed in feeds])

    def check_causal(self, session: Any, ids: Any, logits: Any, rng: Any) -> None:
        """Refuse a language model whose logits at a position depend on later ids, on these very held-out sequences:
        each sequence gets one cut drawn uniformly from positions 1 to L-1, every id from the cut on is replaced by
        another id (never the same one), and the logits before the cut must stay within 1e-4 + 1e-4 x |logit|.
        `ids` (B, L) and the graph's `logits` (B, L, V) for them."""
        np = self.np
        if logits.ndim != 3 or logits.shape[:2] != ids.shape or ids.shape[1] < 2:
            raise RequestError("run", f"the graph returned shape {logits.shape}; expected (B, L, vocabulary)")
        rows, length, vocab = logits.shape
        if rows == 0:
            return
        cuts = rng.integers(1, length, size=rows)
        after = np.arange(length)[None, :] >= cuts[:, None]
        shifted = (ids + rng.integers(1, vocab, size=ids.shape)) % vocab  # every id moved, none to itself
        changed = np.where(after, shifted, ids).astype(ids.dtype)
        try:
            again = session.run([session.get_outputs()[0].name], {session.get_inputs()[0].name: changed})[0]
        except Exception as err:
            raise RequestError("run", f"the graph failed on a batch of {rows}: {_said(err)}") from err
        if getattr(again, "shape", None) != logits.shape:
            raise RequestError("causal", f"the graph returned shape {getattr(again, 'shape', None)} for changed ids")
        logits = logits.astype(np.float32, copy=False)
        moved = np.abs(again.astype(np.float32, copy=False) - logits) > 1e-4 + 1e-4 * np.abs(logits)
        moved &= ~after[..., None]
        if moved.any():
            row, position, _ = (int(i) for i in np.argwhere(moved)[0])
            raise RequestError(
                "causal",
                f"changing a held-out sequence's ids from position {int(cuts[row])} on changed the logits at "
                f"position {position}, before it: the network looks ahead. A language model's output at a position "
                "may depend only on the ids up to that position (mask attention to later positions, pad "
                "convolutions on the left only, never read x shifted back)",
            )

    def _nll(self, logits: Any, ids: Any) -> Any:
        np = self.np
        if logits.ndim != 3 or logits.shape[:2] != ids.shape or ids.shape[1] < 2:
            raise RequestError("run", f"the graph returned shape {logits.shape}; expected (B, L, vocabulary)")
        z = logits.astype(np.float64)
        top = z.max(axis=-1, keepdims=True)
        log_total = np.log(np.exp(z - top).sum(axis=-1)) + top[..., 0]
        picked = np.take_along_axis(z[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]
        return (log_total[:, :-1] - picked).sum(axis=1)

    def latency_ms(self, session: Any, feed: dict[str, Any], runs: int, budget_s: float) -> float:
        """ONNX Runtime's median milliseconds for the named inputs `feed` (a batch of one, or a whole graph), over up
        to `runs` runs after LATENCY_WARMUP; once `budget_s` is spent no run starts, but at least one is timed. An
        input the graph does not take is left out of the feed (as `whole` does)."""
        feed = {value.name: feed[value.name] for value in session.get_inputs()}
        wanted = [session.get_outputs()[0].name]
        times: list[float] = []
        started = time.perf_counter()
        for call in range(LATENCY_WARMUP + max(1, runs)):
            began = time.perf_counter()
            session.run(wanted, feed)
            if call >= LATENCY_WARMUP or time.perf_counter() - started >= budget_s:
                times.append(time.perf_counter() - began)
            if times and (len(times) >= runs or time.perf_counter() - started >= budget_s):
                break
        return statistics.median(times) * 1000

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        np = self.np
        began = time.perf_counter()
        session = self.session(request["graph"])
        loaded = time.perf_counter()
        batch = max(1, int(request.get("batch", 256)))
        seed, cap = request.get("causal_seed"), int(request.get("causal_sequences") or 2**62)
        rng = None if seed is None else np.random.default_rng(int(seed))
        feeds = request.get("feeds") or {}
        for split in request.get("splits", []):
            if split in feeds and "ptr" in feeds[split]:  # a graph set: each graph alone, a row each
                named = feeds[split]
                stored = {name: self.stored(stem) for name, stem in named["inputs"].items()}
                cut = self.graphs(stored["x"], stored["edge_index"], self.stored(named["ptr"]))
                np.save(self.scratch / f"{split}_outputs.npy", self.graph_by_graph(session, cut))
                continue
            if split in feeds:  # a whole graph: one run, the split's rows of its output
                named = feeds[split]
                out = self.whole(session, {name: self.stored(stem) for name, stem in named["inputs"].items()})
                np.save(self.scratch / f"{split}_outputs.npy", out[self.rows(named["rows"], len(out))])
                continue
            x = self.held_out(split)
            causal = None if rng is None else (rng, min(1.0, cap / max(1, len(x))))
            out = self.outputs(session, x, batch, bool(request.get("nll")), causal)
            np.save(self.scratch / f"{split}_outputs.npy", out)
        latency_feed = None
        probe = request.get("probe")
        if isinstance(probe, dict) and "ptr" in probe:  # probe graphs, each alone; latency on the first
            arrays = {name: self.scratch_array(file) for name, file in probe.items()}
            cut = self.graphs(arrays["x"], arrays["edge_index"], arrays["ptr"])
            np.save(self.scratch / "probe_outputs.npy", self.graph_by_graph(session, cut))
            latency_feed = cut[0]
        elif isinstance(probe, dict):
            latency_feed = {name: self.scratch_array(file) for name, file in probe.items()}
            np.save(self.scratch / "probe_outputs.npy", self.whole(session, latency_feed))
        elif probe:
            x = self.scratch_array(probe)
            np.save(self.scratch / "probe_outputs.npy", self.outputs(session, x, batch, False))
            latency_feed = {session.get_inputs()[0].name: x[:1]}
        event: dict[str, Any] = {"event": "ran", "load_seconds": loaded - began}
        if request.get("latency_runs"):
            if latency_feed is None:
                latency_feed = {session.get_inputs()[0].name: self.held_out(request["splits"][0])[:1]}
            try:
                event["latency_ms"] = self.latency_ms(
                    session, latency_feed, int(request["latency_runs"]), float(request.get("latency_budget_s", 2.0))
                )
            except Exception as err:
                raise RequestError("run", f"the graph failed on a batch of 1: {_said(err)}") from err
        event["run_seconds"] = time.perf_counter() - loaded
        return event

    def scratch_array(self, name: str) -> Any:
        """An input file the host wrote into scratch (the probe inputs)."""
        return self.np.load(self.scratch / Path(name).name, allow_pickle=False)

    def rows(self, stem: str | None, count: int) -> Any:
        """The stored row indices of `stem` (a split's nodes), checked to lie in [0, count); every row for None."""
        np = self.np
        if stem is None:
            return slice(None)
        index = self.stored(stem)
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer) or index.min() < 0 or index.max() >= count:
            raise RequestError("run", f"the stored rows {stem!r} do not index the graph's {count} output rows")
        return index


def _said(err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:1000]}"


def serve(spec: dict[str, Any], events: TextIO, started: float) -> None:
    """Answer requests from stdin until `exit` or its end (see the module's docstring)."""

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event) + "\n")

    try:
        worker = Worker(spec)
    except Exception as err:
        emit({"event": "error", "stage": "start", "kind": "worker", "message": _said(err)})
        return
    emit({"event": "ready", "seconds": time.perf_counter() - started})
    for line in sys.stdin:
        try:
            request = json.loads(line)
            op = request.get("op") if isinstance(request, dict) else None
        except ValueError:
            op = None
        if op == "exit":
            return
        if op == "modules":
            emit({"event": "modules", "names": sorted(sys.modules)})
            continue
        if op != "run":
            emit({"event": "error", "stage": "request", "kind": "worker", "message": f"unknown request {line[:200]!r}"})
            continue
        try:
            emit(worker.run(request))
        except RequestError as err:
            emit({"event": "error", "stage": err.stage, "kind": "graph", "message": str(err)})
        except Exception as err:  # a bug here, or a graph that broke the worker: the host says which request
            emit({"event": "error", "stage": "run", "kind": "worker", "message": _said(err)})


def main() -> None:
    started = time.perf_counter()
    _die_with_parent()
    spec = json.loads(Path(sys.argv[1]).read_text())
    os.chdir(spec["output_dir"])
    _confine(spec)
    events = _redirect_output(Path(spec["output_dir"]) / "worker.log")
    serve(spec, events, started)
    events.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
