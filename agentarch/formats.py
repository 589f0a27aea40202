"""How values are written for people and files: one rule per kind of number, one encoding of a cell.

The terminal, the web pages and the prompts show the same quantities, so each kind is formatted
here once (accuracy to four decimals of a fraction, counts with thousands separators, measured
quantities to a tenth, money to a hundredth of a cent); only the mark for a missing value differs
by medium (`missing`: "-" on a terminal, "–" on a page, words in a prompt). A structured value (a
list of parents, a dict of hparams) is one JSON text wherever it has to fit a single cell: a CSV
export or an SQLite column.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def cell(value: Any) -> Any:
    """`value` as one cell holds it: lists and dicts as JSON text, anything else unchanged."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def write_csv(stream: TextIO, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    """A header of `columns`, then one line per row with every value as `cell` encodes it."""
    writer = csv.DictWriter(stream, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: cell(value) for key, value in row.items()})


def text(value: Any, missing: str = "-") -> str:
    """A value with no unit of its own (an id, a name, a fidelity) as text."""
    return missing if value is None else str(value)


def accuracy(value: float | None, missing: str = "-", *, in_percent: bool = False) -> str:
    """An accuracy to a hundredth of a percentage point: 0.9123 as a fraction, 91.23 in the benchmark's percent.

    Scores are fractions everywhere except NAS-Bench-201 table answers, which keep the paper's percent
    so they can be checked against it; the precision is the same either way.
    """
    if value is None:
        return missing
    return f"{value:.2f}" if in_percent else f"{value:.4f}"


def score(value: float | None, metric: str = "accuracy", missing: str = "-") -> str:
    """A task's score as its metric reads: fractions (accuracy, F1, R²) to four places, errors (MSE, MAE) to four
    significant digits (their scale is the target's), bits per byte to three places."""
    if value is None:
        return missing
    if metric in ("mse", "mae"):
        return f"{value:.4g}"
    return f"{value:.3f}" if metric == "bits_per_byte" else f"{value:.4f}"


def scored(split: str, value: float | None, metric: str = "accuracy") -> str:
    """'val 0.9917' for an accuracy, 'val mse 0.0123' for any other metric: a reader never takes one for the other."""
    label = split if metric == "accuracy" else f"{split} {metric}"
    return f"{label} {score(value, metric)}"


def percent(value: float | None, missing: str = "-") -> str:
    """A fraction shown as a percentage (0.9123 as 91.23%), for prose such as a prompt."""
    return missing if value is None else f"{100 * value:.2f}%"


def count(value: int | None, missing: str = "-") -> str:
    """A count (parameters, FLOPs, tokens, rows) with thousands separators: 1,234,567."""
    return missing if value is None else f"{value:,}"


def tenths(value: float | None, missing: str = "-") -> str:
    """A measured quantity (seconds, megabytes) to a tenth, where the column or label names the unit."""
    return missing if value is None else f"{value:.1f}"


def seconds(value: float | None, missing: str = "-") -> str:
    """A duration in seconds, to a tenth, with its unit: 12.3 s."""
    return missing if value is None else f"{tenths(value)} s"


def usd(value: float | None, missing: str = "-") -> str:
    """Money in US dollars to a hundredth of a cent, as LLM calls are priced: $0.0123."""
    return missing if value is None else f"${value:.4f}"
