"""`agentarch export ID --out DIR`: take a trained candidate home as its code, its ONNX graph and a model card.

Its own module because it is the one command that writes a candidate out of the archive as files to use elsewhere;
the work is `agentarch.store.bundle.write_bundle`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from agentarch import formats
from agentarch.cli.common import ArchiveOpt, archive_path, fail, open_archive, out


def export_command(
    candidate_id: Annotated[int, typer.Argument(metavar="ID", help="the candidate's id (`agentarch archive ls`)")],
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="the folder to write into: new or empty, unless --force")
    ],
    archive: ArchiveOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="write into a folder that holds files, replacing the bundle's own")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print what was written as one JSON object")] = False,
) -> None:
    """Write a trained candidate's model to a folder: model.py (its code), model.onnx (its trained network, when
    the archive kept it) and MODEL_CARD.md (task, metric, validation and test scores, whether they were verified
    or trusted, parameters, FLOPs, latency, lineage, the run, the command that trains it again, and each file's
    sha256).

    model.onnx exists for candidates trained with graph scoring (`scoring = "graph"`): the same file agentarch's
    clean evaluator scored, so onnxruntime gives the recorded test score on the task's test inputs. The archive keeps
    the graphs of each task's best candidates and of those a person exported or flagged; others may have been
    dropped to stay under the size cap (the card then says "graph not kept (retention policy)"). Exporting a graph
    keeps it from then on. A candidate scored in its own process (trusted scoring) has no graph, and its card marks
    the scores UNVERIFIED.

    Examples:

        agentarch archive top --task digits
        agentarch export 12 --out models/digits-best
    """
    from agentarch.store.bundle import CARD_FILE, CODE_FILE, GRAPH_FILE, write_bundle

    started = time.perf_counter()
    path = archive_path(archive)
    if not path.is_file():
        raise fail(f"no archive at {path}; pass --archive with the archive the candidate is in")
    with open_archive(path) as db:
        made = write_bundle(db, candidate_id, out_dir, force)
    seconds = time.perf_counter() - started
    written = [name for name in (CODE_FILE, GRAPH_FILE, CARD_FILE) if name in made.files]
    if as_json:
        print(
            json.dumps(
                {
                    "id": candidate_id,
                    "out": str(out_dir),
                    "files": {name: len(made.files[name]) for name in written},
                    "verified": made.verified,
                    "graph_sha256": made.graph_sha256,
                    "graph": made.graph_note,
                    "seconds": round(seconds, 3),
                }
            )
        )
        return
    out.print(formats.line(f"candidate {candidate_id} written to {out_dir}: {', '.join(written)}"), soft_wrap=True)
    if not made.graph_kept:
        out.print(formats.line((f"no {GRAPH_FILE}: {made.graph_note}", "yellow")))
    if not made.verified:
        out.print(
            formats.line(("UNVERIFIED", "bold red"), ": its scores come from the candidate's own process; see the card")
        )
