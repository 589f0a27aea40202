"""Take the model home: one trained candidate as the files a person keeps, its code, its ONNX graph and a model card.

`bundle` gathers them from the archive: `model.py` (the code, as recorded), `model.onnx` (the graph its scoring
evaluation kept, when the retention policy still has it: agentarch/store/graphs.py) and `MODEL_CARD.md` (what it is
and how good it is: task, metric and scores, whether the scores were verified or trusted, parameters, FLOPs,
latency, lineage, the run, the command that trains it again, and each file's sha256). `agentarch export` writes the
bundle to a folder (`write_bundle`, which also pins the graph so the policy never drops it); the web's candidate
page offers the graph and the bundle as a zip built on the fly (`bundle_zip`).

Every string a model, a candidate or a task file wrote (names, the task, the model, the run) is data in the card:
control characters shown as codes, line breaks flattened, Markdown's punctuation escaped and each capped at
`TEXT_CAP` characters, so a name cannot add a heading, a link, a table cell or raw HTML to the card.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentarch import formats
from agentarch.store.archive import Archive
from agentarch.store.graphs import NOT_KEPT, GraphNotKept
from agentarch.store.handle import ArchiveError, _decode
from agentarch.store.scoring import SCORING_EVALUATION, is_verified, scoring_kind
from agentarch.tasks.builtin import TASKS

CODE_FILE = "model.py"
GRAPH_FILE = "model.onnx"
CARD_FILE = "MODEL_CARD.md"
TEXT_CAP = 200
"""The most characters of any one string from a model, a candidate or a task file that the card shows."""
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#!|~&])")
"""What `md` escapes: what makes emphasis, code, links, images, HTML, headings, table cells and strike-through. A
value never starts a line in the card (a label comes first), so what only acts there (`-`, `+`, `1.`) stays."""
_SCORING_SAID = {
    "graph": "graph (verified)",
    "table": "the NAS-Bench-201 table's answer",
    "trusted": "**trusted (unverified)**",
}
_ZIP_TIME = (2000, 1, 1, 0, 0, 0)  # a fixed time in the zip's entries: the same bundle zips to the same bytes


class ExportError(ArchiveError):
    """The candidate cannot be exported as asked; the message says why and what to do."""


@dataclass
class Bundle:
    """The files of one exported candidate, by name, and what the card says of its graph."""

    candidate_id: int
    files: dict[str, bytes]
    verified: bool  # scored from its graph by the clean evaluator; False: trusted, scored in the candidate's process
    graph_sha256: str | None  # None: its scoring evaluation kept no graph (trusted scoring)
    graph_note: str  # what became of the graph, in words

    @property
    def graph_kept(self) -> bool:
        return GRAPH_FILE in self.files


def scoring_evaluation(archive: Archive, candidate_id: int) -> dict[str, Any] | None:
    """The evaluation a candidate's scores come from (the same rule as every listing: `SCORING_EVALUATION`), decoded;
    None when it has no trained evaluation."""
    found = archive.db.execute(
        f"SELECT * FROM evaluations WHERE id = (SELECT {SCORING_EVALUATION.format(column='id')} FROM candidates c "
        "WHERE c.id = ?)",
        [candidate_id],
    )
    columns = [d[0] for d in found.description]
    row = found.fetchone()
    return None if row is None else _decode(dict(zip(columns, row)))


def graph_state(archive: Archive, evaluation: dict[str, Any] | None) -> tuple[str | None, bool, str]:
    """(sha256, kept, what became of it in words) of an evaluation's graph."""
    digest = (evaluation or {}).get("graph_sha256")
    if digest is None:
        return None, False, "no graph: scored in the candidate's own process (trusted scoring)"
    if archive.graph_kept(digest):
        return digest, True, "kept"
    return digest, False, NOT_KEPT


def bundle(archive: Archive, candidate_id: int) -> Bundle:
    """The export of a trained candidate: its code, its graph when kept, its model card. ArchiveError for an unknown
    id; ExportError for a candidate without a trained evaluation."""
    candidate = archive.candidate(candidate_id)
    evaluation = scoring_evaluation(archive, candidate_id)
    if evaluation is None:
        raise ExportError(
            f"candidate {candidate_id} has no trained evaluation (it is {candidate['status']}), so there is no model to "
            "take home; `agentarch archive top --task TASK` lists trained ones"
        )
    digest, kept, note = graph_state(archive, evaluation)
    files = {CODE_FILE: (candidate.get("code") or "").encode()}
    if kept and digest is not None:
        try:
            files[GRAPH_FILE] = archive.graph_bytes(digest)
        except GraphNotKept:  # dropped between the look and the read
            note = NOT_KEPT
    made = Bundle(candidate_id, files, is_verified(evaluation), digest, note)
    files[CARD_FILE] = model_card(archive, candidate, evaluation, made).encode()
    return made


def write_bundle(archive: Archive, candidate_id: int, out: Path, force: bool = False) -> Bundle:
    """Write the bundle into the folder `out` (made if missing) and pin its graph, so the retention policy keeps it.

    An `out` that exists and holds anything is refused unless `force`, which replaces the bundle's files there (and
    removes a `model.onnx` the new bundle has no graph for). Each file is written to a temporary name and renamed.
    """
    made = bundle(archive, candidate_id)
    if out.is_symlink() and not out.exists():
        raise ExportError(f"{out} is a link to {os.readlink(out)}, which does not exist; give --out a folder")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder; give --out a folder to write the bundle into")
    graphs = archive.graphs_dir.resolve()
    if out.resolve() == graphs or out.resolve().is_relative_to(graphs):
        raise ExportError(
            f"{out} is inside the archive's graphs folder ({graphs}), which its retention policy manages; give "
            "--out another folder"
        )
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty; give an empty or new folder, or --force to overwrite")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in made.files.items():
            _write_atomically(out / name, data)
    except OSError as err:  # a path through a file, no room, no permission: said, not a traceback
        raise ExportError(
            f"cannot write the bundle into {out}: {err.strerror or err}; give --out a folder you can write to"
        ) from None
    if not made.graph_kept:
        (out / GRAPH_FILE).unlink(missing_ok=True)
    if made.graph_kept and made.graph_sha256 is not None:
        archive.pin_graph(made.graph_sha256, candidate_id, "exported")
    return made


def bundle_zip(made: Bundle) -> bytes:
    """The bundle as a zip, its files in a folder `candidate-ID/` (the web's download)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in made.files.items():
            entry = zipfile.ZipInfo(f"candidate-{made.candidate_id}/{name}", _ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data)
    return buffer.getvalue()


def md(value: Any, cap: int = TEXT_CAP) -> str:
    """A string from a model, a candidate or a task file as inert Markdown text on one line: control characters as
    codes, line breaks as spaces, at most `cap` characters (then an ellipsis), Markdown's punctuation escaped."""
    text = formats.printable("" if value is None else value).replace("\n", " ").replace("\t", " ")
    if len(text) > cap:
        text = text[:cap] + "…"
    return _MARKDOWN.sub(r"\\\1", text)


def model_card(archive: Archive, candidate: dict[str, Any], evaluation: dict[str, Any], made: Bundle) -> str:
    """MODEL_CARD.md of a bundle: every fact from the archive, every string from a candidate escaped (`md`)."""
    task = archive.task_info(candidate["task"])
    known = TASKS.get(candidate["task"])
    metric, direction = task.get("metric") or "accuracy", task.get("direction") or "max"
    timings = evaluation.get("timings") or {}
    graph = timings.get("graph") or {}
    run = archive.find_run(candidate["run_id"]) if candidate.get("run_id") else None
    lines = [f"# Candidate {candidate['id']}: {md(candidate.get('name'))}", ""]
    kind = scoring_kind(evaluation)
    if kind == "graph":
        lines.append(
            "> **Verified.** Trained with graph scoring: the sandbox saw the training split alone, and the scores "
            "below are the exported graph (`model.onnx`) run by agentarch's clean evaluator, where no candidate "
            "code runs, against labels that never left the host."
        )
    elif kind == "table":
        lines.append(
            "> **A benchmark table's answer.** The scores below are NAS-Bench-201's recorded results for this cell; "
            "nothing was trained here, so there is no graph. Train the code (the command below) for a model."
        )
    else:
        lines.append(
            "> **⚠ UNVERIFIED: trusted scoring.** The scores below are the outputs the candidate's own process "
            "computed; nothing outside it checked them, and a network can forge them (docs/sandbox.md). Train it "
            "again with graph scoring (the command below) before relying on them."
        )
    lines += ["", "## Task and scores", "", "| | |", "| --- | --- |"]
    lines += [
        f"| task | {md(candidate['task'])} ({md(task.get('kind') or (known.kind if known else 'kind not recorded'))}) |",
        f"| metric | {md(metric)} ({'higher' if direction == 'max' else 'lower'} is better) |",
        f"| validation {md(metric)} | {formats.score(evaluation.get('val_accuracy'), metric)} |",
        f"| test {md(metric)} | {formats.score(evaluation.get('test_accuracy'), metric)} |",
        f"| scoring | {_SCORING_SAID[kind or 'trusted']} |",
        f"| training | {formats.text(evaluation.get('fidelity'))} epochs, seed {formats.text(evaluation.get('seed'))}, "
        f"{md(evaluation.get('stage') or 'explore')} stage, {formats.seconds(evaluation.get('train_seconds'))} on "
        f"{md(evaluation.get('device') or 'an unrecorded device')} ({md(evaluation.get('isolation') or '-')} "
        "sandbox) |",
    ]
    lines += ["", "## Size and speed", "", "| | |", "| --- | --- |"]
    lines += _measures(candidate, evaluation, graph)
    lines += ["", "## Lineage", ""]
    lines += _lineage(archive, candidate, run)
    lines += ["", "## Reproduce", ""]
    if kind == "table":
        lines.append(
            "Nothing was trained: the scores are NAS-Bench-201's for this cell. `model.py` is the cell as a network; "
            "`AGENTARCH_SCORING=graph agentarch eval model.py --task TASK --archive reproduce.db` trains it on an image "
            "task (cifar10, cifar100, ...)."
        )
    else:
        lines += _reproduce(candidate, evaluation, run, made.verified)
    lines += ["", "## Files", ""]
    lines += _files(made)
    if known is not None and made.graph_kept:
        lines += ["", "## Using model.onnx", ""]
        lines += _usage(known.kind, list(known.in_shape), known.num_classes)
    return "\n".join(lines) + "\n"


def _measures(candidate: dict[str, Any], evaluation: dict[str, Any], graph: dict[str, Any]) -> list[str]:
    params = graph.get("params", candidate.get("params") or evaluation.get("params"))
    flops = graph.get("flops", candidate.get("flops") or evaluation.get("flops"))
    source = "from the graph" if "params" in graph else "smoke stage, measured in the candidate's process"
    rows = [
        f"| parameters | {formats.count(params)} ({source}) |",
        f"| FLOPs | {formats.count(flops)} per example ({'from the graph' if 'flops' in graph else source}) |",
    ]
    if graph.get("latency_ms") is not None:
        rows.append(f"| latency | {graph['latency_ms']:.3f} ms for one example, ONNX Runtime on the evaluator's CPU |")
    if evaluation.get("latency_ms") is not None:
        rows.append(
            f"| latency (smoke) | {evaluation['latency_ms']:.3f} ms per batch on the training device, measured in "
            "the candidate's process |"
        )
    if evaluation.get("peak_memory_mb") is not None:
        rows.append(f"| peak memory | {formats.tenths(evaluation['peak_memory_mb'])} MB while training |")
    if graph.get("graph_bytes") is not None:
        rows.append(f"| graph | {formats.count(graph['graph_bytes'])} bytes, exported in "
                    f"{formats.seconds(graph.get('export_seconds'))} |")  # fmt: skip
    return rows


def _lineage(archive: Archive, candidate: dict[str, Any], run: dict[str, Any] | None) -> list[str]:
    parents = [int(p) for p in candidate.get("parents") or [] if isinstance(p, int)]
    named = dict(archive.db.execute(
        f"SELECT id, name FROM candidates WHERE id IN ({', '.join('?' for _ in parents) or 'NULL'})", parents
    ).fetchall())  # fmt: skip
    shown = ", ".join(f"{p} ({md(named[p])})" if p in named else f"{p} (not in this archive)" for p in parents)
    proposer = md(candidate.get("proposer") or "-") + (f" ({md(candidate['model'])})" if candidate.get("model") else "")
    lines = [
        f"- parents: {shown or 'none (a seed, a file a person wrote, or a fresh proposal)'}",
        f"- proposed by: {proposer}",
        f"- recorded: {md(candidate.get('created_at'))}",
    ]
    if candidate.get("space"):
        lines.append(f"- search space: {md(candidate['space'])}, architecture {md(candidate.get('arch'))}")
    if run is not None:
        lines.append(f"- run: {md(run['id'])} ({md(run.get('kind'))}, {md(run.get('status'))}, started "
                     f"{md(run.get('started_at'))}); its settings: `agentarch archive runs`")  # fmt: skip
    else:
        lines.append("- run: none recorded")
    return lines


def _reproduce(
    candidate: dict[str, Any], evaluation: dict[str, Any], run: dict[str, Any] | None, verified: bool
) -> list[str]:
    split_seed = ((run or {}).get("config") or {}).get("split_seed")
    env = ["AGENTARCH_SCORING=graph"]
    if isinstance(split_seed, int) and split_seed != 0:
        env.append(f"AGENTARCH_SPLIT_SEED={split_seed}")
    task = formats.printable(candidate["task"]).replace("\n", "\\n")
    words = ["agentarch", "eval", CODE_FILE, "--task", task, "--seed", str(evaluation.get("seed") or 0)]
    if evaluation.get("fidelity") is not None:
        words += ["--epochs", str(evaluation["fidelity"])]
    command = " ".join([*env, *map(shlex.quote, words), "--archive", "reproduce.db"])
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", command)), default=0))
    said = "" if verified else " (with graph scoring, so the new scores are verified)"
    return [
        f"Train the code again the way this evaluation was trained{said}, into an archive of its own (in this "
        "archive the code is a duplicate of itself and would not train):",
        "",
        f"{fence}sh",
        command,
        fence,
        "",
        "A task from a task file takes the file's path after `--task`. The seed fixes the training on the same kind "
        "of device; another device may differ in the last digits.",
    ]


def _files(made: Bundle) -> list[str]:
    lines = ["The sha256 of each file of this bundle (check with `sha256sum -c`, this block saved as a file):", ""]
    lines += ["```"]
    lines += [f"{hashlib.sha256(data).hexdigest()}  {name}" for name, data in made.files.items() if name != CARD_FILE]
    lines += ["```", ""]
    if made.graph_kept:
        lines.append(f"`{GRAPH_FILE}` is the archive's graph {made.graph_sha256} (`evaluations.graph_sha256`).")
    elif made.graph_sha256 is not None:
        lines.append(f"No `{GRAPH_FILE}`: {made.graph_note}. The archive recorded its sha256, {made.graph_sha256}.")
    else:
        lines.append(f"No `{GRAPH_FILE}`: {made.graph_note}.")
    return lines


def _usage(kind: str, in_shape: list[int], num_classes: int) -> list[str]:
    shape = ", ".join(["B", *map(str, in_shape)])
    feed, dynamic = '{"x": x}', "the batch axis is dynamic"
    if kind == "graph":  # node classification: one whole graph in, a row per node out (graphs/interface.py)
        given = (f"float32 `x` of shape (N, {in_shape[0]}), every node's features normalised per feature with the "
                 "training split's mean and std, and int64 `edge_index` of shape (2, E), edge k from node "
                 "edge_index[0, k] to node edge_index[1, k]")  # fmt: skip
        back = f"logits `y` of shape (N, {num_classes}), a row per node"
        feed, dynamic = '{"x": x, "edge_index": edge_index}', "the node and edge counts are dynamic"
    elif kind == "graphs":  # graph classification: a batch of graphs in, a row per graph out (graphs/interface.py)
        given = (f"float32 `x` of shape (N, {in_shape[0]}), the graphs' nodes graph after graph, normalised per "
                 "feature with the training split's mean and std, int64 `edge_index` of shape (2, E) over those nodes, "
                 "and int64 `batch` of shape (N,), each node's graph 0..G-1; agentarch scores each graph run alone "
                 "(`batch` all zeros)")  # fmt: skip
        back = f"logits `y` of shape (G, {num_classes}), a row per graph"
        feed = '{"x": x, "edge_index": edge_index, "batch": batch}'
        dynamic = "the node, edge and graph counts are dynamic"
    elif kind == "image":
        given = (f"float32 `x` of shape ({shape}): pixels divided by the task's scale, then normalised per channel "
                 "with the training split's mean and std")  # fmt: skip
        back = f"logits `y` of shape (B, {num_classes})"
    elif kind in ("token", "lm"):
        given, back = f"int64 ids `x` of shape ({shape})", f"logits `y` of shape (B, {in_shape[0]}, {num_classes})"
    else:
        given = (f"`x` of shape ({shape}), floats normalised per feature with the training split's mean and std "
                 "(ids stay int64)")  # fmt: skip
        back = f"`y` of shape (B, {num_classes})"
    return [
        f"The graph takes {given}, and returns {back}; {dynamic}. The statistics are those of the "
        "prepared task's `inputs/meta.json` (agentarch's cache), as the trainer applies them (docs/architecture.md, "
        "Data contracts). With onnxruntime:",
        "",
        "```python",
        "import onnxruntime as ort",
        f'session = ort.InferenceSession("{GRAPH_FILE}", providers=["CPUExecutionProvider"])',
        f"y = session.run(None, {feed})[0]",
        "```",
    ]


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
