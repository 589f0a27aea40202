"""`agentarch predict`: how well the archive's performance predictor ranks a task's candidates before training.

Its own module because it reports on the search's predictor, which no other command shows.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from agentarch import formats
from agentarch.cli.common import ArchiveOpt, archive_path, open_archive, out


def predict_command(
    predicted_task: Annotated[str, typer.Option("--task", "-t", help="the task whose predictor to assess")],
    archive: ArchiveOpt = None,
    folds: Annotated[int, typer.Option(min=2, help="cross-validation folds")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object instead of tables")] = False,
) -> None:
    """How well the archive's predictor ranks a task's candidates before they train: the Spearman and Kendall rank
    correlations of its held-out predictions (k-fold) with the true validation scores, how many trained candidates
    it learns from (and other tasks' it pools, in how many folds a cross-validation on the task's own said that
    helps), and its features (the graph's, from each candidate's kept ONNX file, as one row; --json lists
    each); or why it cannot be fitted yet. Example:

        agentarch predict --task digits
    """
    from agentarch.search import predictor as predictor_lib

    with open_archive(archive_path(archive)) as db:
        found = predictor_lib.examples(db, predicted_task)
        reason = predictor_lib.shortfall(found, predicted_task)
        pool = [] if reason else predictor_lib.pooled_examples(db, predicted_task)
        scores = (
            None
            if reason
            else predictor_lib.cross_validate(found, predicted_task, db.direction(predicted_task), folds, pool)
        )
    if as_json:
        print(
            json.dumps(
                {"fitted": False, "task": predicted_task, "n": len(found), "reason": reason}
                if scores is None
                else {"fitted": True, **scores}
            )
        )
        return
    if scores is None:
        out.print(formats.line(f"no predictor for {predicted_task} yet: {reason}"))
        return
    held_out = Table(
        title=formats.untrusted(f"predictor for {predicted_task}: held-out rank correlation ({scores['folds']}-fold)")
    )
    for header in ("trained candidates", "other tasks' pooled", "Spearman", "Kendall"):
        held_out.add_column(header, justify="right")
    held_out.add_row(
        str(scores["n"]),
        f"{scores['pool']} (in {scores['pooled_folds']} of {scores['folds']} folds)",
        *(formats.text(None if v is None else f"{v:.3f}") for v in (scores["spearman"], scores["kendall"])),
    )
    out.print(held_out)
    features = Table(title="features (missing where a candidate lacks one)")
    features.add_column("feature")
    features.add_column("candidates with it", justify="right")
    graph = [name for name in scores["features"] if name.startswith(predictor_lib.GRAPH_PREFIX)]
    for name in scores["features"]:
        if name not in graph:
            features.add_row(formats.untrusted(name), f"{sum(name in e.features for e in found)}/{len(found)}")
    if graph:  # a hundred-odd columns of one source: one row, with how many candidates had a graph to read
        with_graph = sum(any(name in e.features for name in graph) for e in found)
        features.add_row(f"graph.* ({len(graph)} from the ONNX graph)", f"{with_graph}/{len(found)}")
    out.print(features)
