"""How the web UI turns values into HTML: the Jinja2 environment and its filters, highlighted code, unified diffs.

Autoescape is on: candidate code, prompts and analyses are untrusted text. So is their size: a model's 50 MB answer
once made a 105 MB candidate page, so every long text a page shows is clipped here (`CODE_SHOWN`, `TEXT_SHOWN`)
with a note saying how much is left out, and the full code is a download of its own. Its own module because the
pages and the static report (`agentarch.web.report`) render with the same environment, and the candidate, compare
and review pages all highlight or diff code.
"""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer, TextLexer

from agentarch import formats
from agentarch.evaluation.checks import MAX_CODE_BYTES
from agentarch.store.scoring import UNVERIFIED_WHY

HERE = Path(__file__).resolve().parent
NONE = "–"
"""What a page shows for a value that is not there (no score yet, no cost)."""

CODE_SHOWN = MAX_CODE_BYTES
"""Characters of code a page highlights (and offers to edit): the static check's limit, so only code it refused is ever
cut, and at most ~600 kB of highlighted HTML. Past it the page shows the start and links the full code."""
TEXT_SHOWN = 20_000
"""Characters of an analysis, a prompt message, a response or a reason a page shows."""
SHORT_SHOWN = 2_000
"""Characters of a table cell's text (an error, a reason in a list)."""
NAME_SHOWN = 200
"""Characters of a name in a heading or a listing."""

_FORMATTER = HtmlFormatter(cssclass="highlight", linenos="table")
_LEXER = PythonLexer()


def clipped_note(shown: int, total: int, download: str | None = None) -> Markup:
    """What a page says where it cut a text short: how much it shows, and where the whole is when it can be had."""
    link = Markup(' <a href="{}">Download the full code</a>.').format(download) if download else ""
    return Markup('<span class="clipped">[… showing the first {:,} of {:,} characters.{}]</span>').format(
        shown, total, link
    )


def clip(value: object, limit: int = TEXT_SHOWN) -> Markup:
    """Text as escaped HTML, cut to `limit` characters with a note of how much is left out (the `clip` filter)."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return escape(text)
    return escape(text[:limit]) + Markup(" ") + clipped_note(limit, len(text))


def highlight_code(code: str | None, download: str | None = None) -> Markup:
    """Candidate code as highlighted HTML; pygments escapes the text, so the result is safe to embed.

    Past `CODE_SHOWN` characters only the start is highlighted (cut at a line end), followed by a note that links
    `download`, the address of the full code.
    """
    code = code or ""
    if len(code) <= CODE_SHOWN:
        return _highlighted(code)
    cut = code.rfind("\n", 0, CODE_SHOWN) + 1 or CODE_SHOWN
    note = Markup('<p class="notice">') + clipped_note(cut, len(code), download) + Markup("</p>")
    return _highlighted(code[:cut]) + note


@functools.lru_cache(maxsize=256)
def _highlighted(code: str) -> Markup:
    """Cached by the code text, at most `CODE_SHOWN` characters of it (so the cache holds no 50 MB key): lexing takes
    ~5-10 ms per candidate, and the review queue, reloaded after every decision, shows one per pending candidate."""
    return Markup(highlight(code, _LEXER if formats.lexable(code) else TextLexer(), _FORMATTER))


highlight_code.cache_clear = _highlighted.cache_clear  # type: ignore[attr-defined]  # a benchmark times a first visit


def highlight_css() -> str:
    """The stylesheet of `highlight_code`'s HTML (served as /highlight.css)."""
    return _FORMATTER.get_style_defs(".highlight")


def code_diff(a: str | None, b: str | None, a_label: str, b_label: str) -> Markup:
    """A unified diff (3 lines of context) as HTML, one escaped line per span classed add, del, hunk or head.

    Unified rather than difflib.HtmlDiff's side-by-side table: HtmlDiff compares changed lines
    character by character and takes ~0.2 s for two different 70-line candidates, too slow for a
    review queue that shows one diff per pending candidate. Code `formats.too_long_to_diff` refuses is not diffed.
    """
    refused = formats.too_long_to_diff(a, b)
    if refused:
        return Markup("<p>{}.</p>").format(refused[0].upper() + refused[1:])
    a_lines, b_lines = (a or "").splitlines(), (b or "").splitlines()  # what difflib compares: \f and \u2028 split too
    a_label, b_label = a_label[:NAME_SHOWN], b_label[:NAME_SHOWN]  # labels carry names, which a model wrote
    lines = difflib.unified_diff(a_lines, b_lines, a_label, b_label, lineterm="")
    spans = []
    for i, line in enumerate(lines):
        kind = (
            "head"
            if i < 2
            else "hunk"
            if line.startswith("@@")
            else "add"
            if line.startswith("+")
            else "del"
            if line.startswith("-")
            else "ctx"
        )
        spans.append(f'<span class="{kind}">{escape(line)}</span>')
    if not spans:
        return Markup("<p>The code is identical.</p>")
    return Markup(f'<pre class="udiff">{"".join(spans)}</pre>')


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    env.filters.update(
        acc=functools.partial(formats.accuracy, missing=NONE),
        num=functools.partial(formats.count, missing=NONE),
        num1=functools.partial(formats.tenths, missing=NONE),
        usd=functools.partial(formats.usd, missing=NONE),
        pretty=_pretty_json,
        clip=clip,
    )
    env.globals["unverified_why"] = UNVERIFIED_WHY  # what every mark of an unverified score says it is
    return env
