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
import re
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from rich.text import Text


def cell(value: Any) -> Any:
    """`value` as one cell holds it: lists and dicts as JSON text, anything else unchanged."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula (OWASP's CSV injection list): `=HYPERLINK(...)` in an
LLM-written name would run when a person opens the export."""


def csv_cell(value: Any) -> Any:
    """`value` as a CSV export writes it: `cell`'s encoding, and text a spreadsheet would run as a formula
    prefixed with `'`, so it opens as the text it is. Numbers stay numbers (a negative score is not text)."""
    value = cell(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(stream: TextIO, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    """A header of `columns`, then one line per row with every value as `csv_cell` encodes it."""
    writer = csv.DictWriter(stream, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: csv_cell(value) for key, value in row.items()})


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
    """A task's score as its metric reads: fractions (accuracy, F1, R², SSIM) to four places, errors (MSE, MAE) to
    four significant digits (their scale is the target's), bits per byte to three places, PSNR in dB to two."""
    if value is None:
        return missing
    if metric in ("mse", "mae"):
        return f"{value:.4g}"
    if metric == "psnr":
        return f"{value:.2f}"
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


LEXED_LINE_CHARS = 1_000
"""The longest line that code may have to be highlighted (by Pygments, on a page or through rich's `Syntax`). Some of
Pygments' Python rules scan to the end of the line from each place they could start (`\\N{` in a string), so a
model's 64 kB line of `'\\N{\\N{...` took 9 s to highlight, on the web server and in `archive show`; past this length
code is shown as plain text. Real code lines are under 200 characters."""


def lexable(code: str | None) -> bool:
    """Whether `code` may be highlighted as Python: no line of it is longer than `LEXED_LINE_CHARS`."""
    return all(len(line) <= LEXED_LINE_CHARS for line in (code or "").split("\n"))


DIFF_LINES = 1_000
DIFF_CHARS = 64 * 1024
"""The most lines (per side, as `str.splitlines` counts them: form feeds and U+2028 split too) and characters a
diff is computed for, on a page or in a terminal: difflib's time grows with the product of the two lengths, or
worse (two 20,000-line codes of near-repeated lines took 134 s)."""


def too_long_to_diff(a: str | None, b: str | None) -> str | None:
    """Why `a` and `b` are not diffed here (None: they may be), said so a person knows to diff them locally."""
    if max(len(a or ""), len(b or "")) > DIFF_CHARS:
        return f"too long to diff here (over {DIFF_CHARS:,} characters); diff the code locally"
    if max(len((a or "").splitlines()), len((b or "").splitlines())) > DIFF_LINES:
        return f"too long to diff here (over {DIFF_LINES:,} lines); diff the code locally"
    return None


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""Characters a terminal acts on rather than shows: C0 but newline and tab (ESC starts every escape
sequence: colours, window titles, OSC 8 links, OSC 52 clipboard writes; CR rewrites the line), DEL, C1 (0x9b
is a one-byte CSI, 0x9d a one-byte OSC), and the Unicode line separators and bidirectional marks, overrides and
isolates that make shown text differ from what it is."""


def _code(match: re.Match[str]) -> str:
    point = ord(match.group())
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


def printable(value: Any) -> str:
    """`value` as text that shows what it is on a terminal: each control character written as its code
    (`\\x1b`, `\\u202e`), newline and tab kept, and a Windows line end (CR LF) shown as the line end it is; a CR
    anywhere else (which would let a line overwrite itself) is `\\x0d`."""
    return _CONTROL.sub(_code, str(value).replace("\r\n", "\n"))


def one_line(value: Any) -> str:
    """`printable`, with each line break written as `\\n` too: a field of a line that is read as one record (a run's
    outcome line in its log), where a hostile value's newline would begin a line of its own, a forged outcome say."""
    return printable(value).replace("\n", "\\n")


def untrusted(value: Any, style: str = "") -> Text:
    """A string a model, a candidate or a task file wrote, ready for a rich console or table: plain text,
    never markup (`[link=...]` stays brackets), and no control characters (`printable`). Every command that
    prints such a string passes it through here."""
    return Text(printable(value), style=style)


def line(*parts: Any) -> Text:
    """One terminal line put together from parts, none of them read as markup: a part is a value (shown as
    `untrusted` shows it) or a `(value, style)` pair for the parts a command styles itself (a bold label, a
    coloured status). What a command prints around untrusted text is built with this, never with an f-string
    of markup, so a `[/]` or an escape sequence in a name cannot close, open or reach anything."""
    shown = Text()
    for part in parts:
        if isinstance(part, Text):
            shown.append_text(Text(printable(part.plain), style=part.style, spans=part.spans))
        elif isinstance(part, tuple):
            value, style = part
            shown.append(printable(value), style=style)
        else:
            shown.append(printable(part))
    return shown
