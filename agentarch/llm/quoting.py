"""Text a model wrote, quoted into a later prompt as data: between `<quoted-data from="...">` and `</quoted-data>`,
size-capped, with control and invisible characters dropped and every spelling of a delimiter defused, so that a
notebook note, an analysis or an error cannot close the quote early and speak as the prompt (prompt injection).

Its own module because it is the one rule every template's quoted block goes through (the `quoted` filter), and
because its look-alike folding is a job of its own, tested against a red team's spellings.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

MAX_QUOTED_CHARS = 3000
"""How much of one piece of model-written prose (a note, an analysis, an edit's failure) a prompt quotes: its head,
then a count of what was cut. Code is quoted whole (an edit must see all of its parent); errors are cut to their
tail by `MAX_ERROR_CHARS` before."""

# Anything a model could read as a <quoted-data> or </quoted-data> delimiter: other brackets, an HTML entity,
# spaces, underscores or a missing hyphen. It is defused by turning its bracket into "(".
_LOOKALIKE = re.compile(
    r"(?:<|&lt;|&#0*60;|&#x0*3c;|\ufe64|\u2039|\u3008|\u2329|\u27e8|\u02c2)(\s*(?:/\s*)?quoted[\s_-]*data)", re.I
)
"""An opening or closing delimiter, however spelt, found in the folded text (`_folded`). One `\\s*` on each side of the
optional slash, so a `<` followed by many spaces costs linear time, not quadratic."""
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\ufe58\ufe63\uff0d"
_CONFUSABLES = {"о": "o", "О": "O", "е": "e", "Е": "E", "а": "a", "А": "A", "ԁ": "d", "ԛ": "q", "т": "t", "Т": "T"}
"""Cyrillic letters a delimiter can be spelt with that NFKC leaves alone (it folds full-width forms itself)."""
# Control and invisible characters (C0 but tab and newline, C1, zero-width, bidirectional overrides), which could
# hide a look-alike from the pattern above or show a person something else than the model reads.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def quoted(text: Any, limit: int | None = MAX_QUOTED_CHARS) -> str:
    """`text` fit to stand between <quoted-data> delimiters: control and invisible characters dropped, at most
    `limit` characters (None: all), and every delimiter look-alike defused, so that no text a model wrote can
    close the quote early and speak as the prompt."""
    text = _INVISIBLE.sub("", str(text))
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}\n[... {len(text) - limit} characters cut]"
    brackets = [(m.start(), m.start(1)) for m in _LOOKALIKE.finditer(_folded(text))]
    for start, end in reversed(brackets):  # the bracket (or entity) becomes "(": no longer a tag in any spelling
        text = f"{text[:start]}({text[end:]}"
    return text


def _fold_char(char: str) -> str:
    if char in _DASHES:
        return "-"
    if char in _CONFUSABLES:
        return _CONFUSABLES[char]
    folded = unicodedata.normalize("NFKC", char)
    return folded if len(folded) == 1 else char


def _folded(text: str) -> str:
    """`text` with each character replaced by the one it passes for (full-width and compatibility forms, other dashes,
    Cyrillic look-alikes), one for one, so a match in the folded text is at the same place in the original."""
    return "".join(c if c < "\x80" else _fold_char(c) for c in text)
