"""`agentarch archive ls|show|runs|top|export`: browse and export the archive from the terminal.

Its own module because it is a sub-app of read-only listings that share one table layout. Every listing shows how
each row was scored (`scoring`: graph, table, or ⚠ trusted, unverified) and says when some of its rows are
unverified, with `--verified` to leave them out (agentarch.store.scoring holds the rule).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from agentarch import formats
from agentarch.cli.common import App, ArchiveOpt, archive_path, err, fail, open_archive, out, print_table
from agentarch.store import judgments
from agentarch.store.scoring import GRAPH, TABLE, TRUSTED, UNVERIFIED_WHY, ScoringMix, scoring_kind

if TYPE_CHECKING:
    from agentarch.store.archive import Archive

archive_app = App(help="Browse and export the archive (candidates, evaluations, runs).", no_args_is_help=True)


ROW_COLUMNS = [
    ("id", "id", formats.text),
    ("task", "task", formats.text),
    ("name", "name", formats.text),
    ("proposer", "proposer", formats.text),
    ("status", "status", formats.text),
    ("val", "val_accuracy", formats.score),
    ("test", "test_accuracy", formats.score),
    ("params", "params", formats.count),
    ("epochs", "fidelity", formats.text),
    ("train", "train_seconds", formats.seconds),
    ("scoring", "scoring", formats.text),
]
"""The columns of a candidate listing: header, row key, and how the value is written (measures right-aligned)."""

SCORING_SAID = {GRAPH: "graph", TABLE: "table", TRUSTED: "⚠ trusted"}
"""How a listing's `scoring` cell reads: graph (verified), a table's answer, or trusted (unverified, marked)."""
VerifiedOpt = Annotated[
    bool,
    typer.Option(
        "--verified",
        help=f"leave out unverified rows ({UNVERIFIED_WHY}); graph-scored rows, table answers and rows without "
        "scores stay",
    ),
]


def _rows_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=formats.untrusted(title))
    for header, _, write in ROW_COLUMNS:
        # names and statuses fold rather than vanish into "…" on a narrow terminal
        table.add_column(
            header,
            justify="left" if write is formats.text else "right",
            min_width=8 if header in ("name", "status") else None,
        )
    for row in rows:
        table.add_row(*(_cell(row, key, write) for _, key, write in ROW_COLUMNS))
    return table


def _cell(row: dict[str, Any], key: str, write: Callable[..., str]) -> Text:
    """One listing cell, as text (a name or a task is what a model or a task file wrote); a score is written as its
    task's metric reads (the row says which); an unverified row's scoring in bold red."""
    if key == "scoring":
        kind = row.get("scoring")
        return Text(SCORING_SAID.get(kind, "-"), style="bold red" if kind == TRUSTED else "")
    if write is formats.score:
        return formats.untrusted(formats.score(row.get(key), row.get("metric") or "accuracy"))
    return formats.untrusted(write(row.get(key)))


@archive_app.command("ls")
def archive_ls(
    archive: ArchiveOpt = None,
    only_task: Annotated[Optional[str], typer.Option("--task", "-t", help="only this task")] = None,
    status: Annotated[
        Optional[str], typer.Option(help="only this status: trained, invalid, duplicate, failed, timeout")
    ] = None,
    verified: VerifiedOpt = False,
    limit: Annotated[int, typer.Option(help="rows per page")] = 50,
    page: Annotated[int, typer.Option(help="page number, from 1")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List candidates, newest first, with their best evaluation and how it was scored."""
    from agentarch.store import browse

    filters = browse.Filters(task=only_task, status=status, verified=verified)
    with open_archive(archive_path(archive)) as db:
        rows = browse.leaderboard(db, filters, limit, (max(page, 1) - 1) * limit, sort=browse.Sort("id"))
        mix = browse.scoring_mix(db, filters)
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(_rows_table(rows, f"candidates (page {page})"))
    _say_mix(mix, as_json)


def _say_mix(mix: ScoringMix, as_json: bool, best: Text | None = None) -> None:
    """Say what a listing holds of unverified rows (and the pick a best-of statement makes), under a table; on
    stderr beside JSON lines, which stay only rows."""
    note = mix.note()
    console = err if as_json else out
    if note:
        console.print(formats.line((note, "bold red" if mix.mixed else "red")), soft_wrap=True)
    if best is not None:
        console.print(best, soft_wrap=True)


@archive_app.command("show")
def archive_show(
    candidate_id: Annotated[int, typer.Argument(help="candidate id, as `archive ls` shows it")],
    archive: ArchiveOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="the full record as JSON")] = False,
) -> None:
    """Show one candidate: code, hashes, lineage, and every evaluation."""
    from agentarch.llm import prompts
    from agentarch.tasks import recipes

    with open_archive(archive_path(archive)) as db:
        cand = db.candidate(candidate_id)
        evals = db.evaluations(candidate_id)
        calls = db.llm_calls(candidate_id=candidate_id)
        metric = db.task_info(cand["task"])["metric"]
        judged = judgments.for_candidate(db, candidate_id)
    if as_json:
        print(json.dumps({**cand, "evaluations": evals, "llm_calls": calls, "judgment": judged}))
        return
    # everything below but the labels is what a model, a candidate or a task file wrote: text, never markup
    out.print(
        formats.line(
            (f"candidate {cand['id']}", "bold"),
            f" {cand['name'] or ''}  task={cand['task']}  proposer={cand['proposer']}  "
            f"status={cand['status']}  parents={cand['parents']}  run={cand['run_id']}",
        ),
        soft_wrap=True,
    )
    if cand["reason"]:
        out.print(formats.line("reason: ", formats.one_line(cand["reason"])), soft_wrap=True)
    if cand.get("arch"):
        out.print(formats.line(f"search space {cand['space']}: {cand['arch']}"), soft_wrap=True)
    if cand.get("recipe"):
        out.print(formats.line("recipe (its RECIPE): ", recipes.describe(cand["recipe"])))
    if cand.get("model"):
        out.print(
            formats.line(
                f"LLM: {cand['model']}  few-shot examples={cand['examples']}  repairs={cand['repairs']}  "
                f"tokens={cand['prompt_tokens']}+{cand['completion_tokens']}  "
                f"cost={formats.usd(cand['cost_usd'] or 0)}  calls={[(c['purpose'], c['status']) for c in calls]}"
            )
        )
        left_out = prompts.describe_left_out(cand.get("prompt_left_out"))
        if left_out:
            out.print(formats.line("prompt ", left_out))
        for entry in cand.get("knowledge") or []:  # the knowledge base's entries its prompt showed
            out.print(formats.line("knowledge: ", entry.get("source"), ", ", entry.get("title")), soft_wrap=True)
        if cand.get("analysis"):
            out.print(formats.line("analysis: ", cand["analysis"]))
        if cand.get("prompt"):
            out.rule("prompt (last message)")
            out.print(formats.untrusted(cand["prompt"][-1]["content"]))
            out.rule("response")
            out.print(formats.untrusted(cand["response"] or ""))
            out.rule("code")
    out.print(
        formats.line(
            f"hashes: whitespace={(cand['text_hash'] or '')[:12]} ast={(cand['ast_hash'] or '')[:12]} "
            f"functional={(cand['functional_hash'] or '')[:12]}"
        ),
        soft_wrap=True,
    )
    code = formats.printable(cand["code"] or "")
    # long lines wrap under their number: a cropped line (rich's default) would hide code from the reader
    out.print(Syntax(code, "python" if formats.lexable(code) else "text", line_numbers=True, word_wrap=True))
    for e in evals:
        out.print(
            formats.line(
                f"evaluation {e['id']}: {e['status']} fidelity={e['fidelity']} seed={e['seed']} "
                f"{formats.scored('val', e['val_accuracy'], metric)} "
                f"{formats.scored('test', e['test_accuracy'], metric)} "
                + "".join(f"{name}={value:.4f} " for name, value in _secondary(e).items())
                + f"train={formats.seconds(e['train_seconds'])} device={e['device']} isolation={e['isolation']}"
                + _resumed(e),
                *_scoring_parts(e),
                *((" recipe: ", recipes.describe(e["recipe"])) if e.get("recipe") else ()),
            ),
            soft_wrap=True,
        )
        if e["error"]:
            out.print(formats.untrusted(e["error"]))
    if judged is not None:  # beside the scores, never one of them; the justification is the judge's text
        out.print(formats.line(*_judgment_parts(judged)), soft_wrap=True)


def _judgment_parts(judged: dict[str, Any]) -> tuple[Any, ...]:
    """`judge MODEL: score 7.33 (novelty 6, soundness 8, complexity 3): JUSTIFICATION`, or why it failed."""
    if judged["status"] != "judged":
        return (
            ("judge ", "bold"),
            judged["model"],
            f": failed ({formats.usd(judged['cost_usd'] or 0)}): ",
            judged["error"],
        )
    ratings = ", ".join(f"{name} {judged[name]}" for name in ("novelty", "soundness", "complexity"))
    return (
        ("judge ", "bold"),
        judged["model"],
        f": score {judged['score']:.2f} ({ratings}; {formats.usd(judged['cost_usd'] or 0)}): ",
        judged["justification"],
    )


def _resumed(evaluation: dict[str, Any]) -> str:
    """` resumed at epoch N` for an evaluation whose training continued from a checkpoint after its job was lost."""
    epoch = (evaluation.get("timings") or {}).get("resumed_epoch")
    return f" resumed at epoch {epoch}" if isinstance(epoch, int) else ""


def _secondary(evaluation: dict[str, Any]) -> dict[str, float]:
    """A dense task's other metric per split (SSIM beside PSNR), which the host computed and kept in its timings."""
    found = (evaluation.get("timings") or {}).get("secondary")
    return (
        {str(k): float(v) for k, v in found.items() if isinstance(v, (int, float))} if isinstance(found, dict) else {}
    )


def _scoring_parts(evaluation: dict[str, Any]) -> tuple[Any, ...]:
    """How a trained evaluation was scored, as `formats.line` parts: an unverified one marked and said why."""
    kind = scoring_kind(evaluation) if evaluation.get("status") == "trained" else None
    if kind == GRAPH:
        return (" scoring=graph (verified)",)
    if kind == TABLE:
        return (" scoring=table (the benchmark table's answer)",)
    if kind == TRUSTED:
        return (" scoring=", ("⚠ trusted (unverified", "bold red"), f": {UNVERIFIED_WHY})")
    return ()


@archive_app.command("runs")
def archive_runs(
    archive: ArchiveOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List runs (eval, baseline, llm, offline), newest first, with their status and summary."""
    with open_archive(archive_path(archive)) as db:
        rows = db.runs()
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = Table(title="runs")
    for header in ("id", "kind", "task", "proposer", "status", "started", "summary"):
        table.add_column(header)
    for row in rows:
        summary = row["summary"] or {}
        brief = ", ".join(
            f"{k}={summary[k]}"
            for k in ("proposed", "trained", "unverified", "stopped_by", "mean_test")
            if k in summary
        )
        table.add_row(
            *map(
                formats.untrusted,
                (row["id"], row["kind"], row["task"], row["proposer"], row["status"], row["started_at"][:19], brief),
            )
        )
    print_table(table)


@archive_app.command("top")
def archive_top(
    ranked_task: Annotated[str, typer.Option("--task", "-t", help="the task to rank")],
    archive: ArchiveOpt = None,
    limit: Annotated[int, typer.Option(help="how many")] = 10,
    by: Annotated[str, typer.Option(help="val_accuracy (the search signal) or test_accuracy")] = "val_accuracy",
    verified: VerifiedOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """The best trained candidates of a task, each marked with how it was scored. When the best is unverified and a
    verified one exists, it says which that is."""
    from agentarch.store import browse

    with open_archive(archive_path(archive)) as db:
        ranked = db.top(ranked_task, limit=None if verified else limit, by=by)
        rows = [row for row in ranked if not row["unverified"]][:limit] if verified else ranked
        mix = browse.scoring_mix(db, browse.Filters(task=ranked_task, status="trained", verified=verified))
        best = _best_said(db, ranked_task, by, rows, mix)
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(_rows_table(rows, f"top {limit} on {ranked_task} by {by}"))
    _say_mix(mix, as_json, best)


def _best_said(db: Archive, task: str, by: str, rows: list[dict[str, Any]], mix: ScoringMix) -> Text | None:
    """The best-of-task pick said plainly when it is unverified while verified rows exist: the best verified row
    beside it, so a forged score at the top is never taken for the task's best without a word."""
    if not rows or not rows[0]["unverified"] or not mix.mixed:
        return None
    top = rows[0]
    checked = next((row for row in db.top(task, limit=None, by=by) if not row["unverified"]), None)
    if checked is None:
        return None
    column = by.removesuffix("_accuracy")
    return formats.line(
        (f"⚠ the best, #{top['id']} ({formats.scored(column, top[by], top['metric'])}), is unverified", "bold red"),
        f"; the best verified is #{checked['id']} ({formats.scored(column, checked[by], checked['metric'])}, "
        f"scored {checked['scoring']})",
    )


def _on_terminal(value: Any) -> Any:
    return formats.printable(value) if isinstance(value, str) else value


@archive_app.command("export")
def archive_export(
    archive: ArchiveOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    output: Annotated[
        Optional[Path], typer.Option("--out", "-o", help=escape("file to write [default: stdout]"))
    ] = None,
) -> None:
    """Export every candidate with its best evaluation, as CSV or a JSON array."""
    if fmt not in ("csv", "json"):
        raise fail(f"unknown format {fmt!r}; use --format csv or --format json")
    with open_archive(archive_path(archive)) as db:
        rows = list(db.export_rows())
    stream = output.open("w", newline="") if output else sys.stdout
    try:
        if fmt == "json":  # JSON writes every control character as an escape (\u001b): nothing reaches a terminal
            json.dump(rows, stream, indent=1)
            stream.write("\n")
        else:
            if output is None and sys.stdout.isatty():
                # CSV keeps text as it is, so a file or a pipe gets the data exactly; a person reading it on a
                # terminal gets each control character as its code, as every other command shows it
                rows = [{key: _on_terminal(value) for key, value in row.items()} for row in rows]
            formats.write_csv(stream, rows, list(rows[0]) if rows else ["id"])
    finally:
        if output:
            stream.close()
