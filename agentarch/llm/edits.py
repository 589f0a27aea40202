"""Edit mode: an LLM answers with SEARCH/REPLACE blocks against the parent, applied strictly or not at all.

The format is Aider's and OpenEvolve's, one block per change::

    <<<<<<< SEARCH
    lines copied exactly from the parent
    =======
    the lines that replace them
    >>>>>>> REPLACE

Lenient about the wrapping, strict about the content, because a wrong edit that applies is worse than one
that is refused and shown back (OpenEvolve #241 and #346: diffs from local models that failed to apply
and were silently dropped):

- Markers are lines of their own, 5 to 9 marker characters (as Aider accepts them; models miscount),
  `SEARCH` and `REPLACE` in any case, with surrounding spaces. Prose, headings and ``` fences between
  blocks are ignored, so blocks may sit inside a ```python fence or each in its own. A ``` fence line as
  the first or last line of a SEARCH or REPLACE text is refused: it belongs around the block, and would
  otherwise end up in the code.
- Line endings are normalised to "\\n" in the parent and the answer before anything is compared (they are
  transport, not code); the result has "\\n" endings, and `Applied.fuzz` notes that CRs were read.
- Every block's SEARCH text must match whole lines of the code exactly once. Blocks apply in order, each to
  the result of the ones before it. A SEARCH text that is not found exactly is tried once more line by line
  ignoring trailing whitespace (models often drop or add it); such a match is still required to be the only
  one and is reported in `Applied.fuzz`. Nothing looser: indentation is Python's syntax, so a SEARCH text
  that matches only with other indentation is refused (the reason says so).
- Every failure raises `EditError`, whose message names the block and what was wrong, in words meant for the
  LLM's retry: not found (changed by an earlier block, lines left out with `...`, other indentation, or else
  the parent's closest region by difflib's ratio and the first line that differs); found more than once, with
  where; an empty or blank SEARCH; malformed or nested markers; no blocks; a result identical to the parent.
- The answer is hostile input, so the work it can cause is bounded: at most `MAX_BLOCKS` blocks of at most
  `MAX_BLOCK_LINES` lines per SEARCH or REPLACE text (more is refused with the reason, which points to a full
  module), and the closest-region search of a not-found reason is linear in the parent (a sliding token
  overlap picks a few windows; only those are compared line by line, on a bounded number of tokens per line).
  Before, difflib over every window took 2 minutes for one 400-line parent.

A line of 5-9 `=` inside a block is always a divider, so code holding such a line cannot be edited in this
format (it is not valid Python outside a string).
"""

from __future__ import annotations

import difflib
import heapq
import itertools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from agentarch.errors import AgentarchError

_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$", re.I)
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$", re.I)
_FENCE = re.compile(r"^\s*`{3,}[\w+.-]*\s*$")
_ELISIONS = ("...", "…", "# ...", "# …", "# ... rest unchanged ...", "# rest unchanged")

SHOWN_LINES = 12
"""The most lines of the parent's closest region a not-found reason shows (the start of it, then a count)."""

MAX_BLOCKS = 40
"""The most SEARCH/REPLACE blocks an answer may hold: more is a rewrite, which a full module says better."""
MAX_BLOCK_LINES = 300
"""The most lines a SEARCH or REPLACE text may have: blocks are meant to be small, and the work of matching one
grows with its length."""
REFINED = 4
"""How many windows of the parent, the best by token overlap, the closest-region search compares line by line."""
LINE_TOKENS = 24
"""How many tokens of a line the closest-region search reads (difflib's cost grows with their square)."""
_TOKEN = re.compile(r"\w+|[^\w\s]")


class EditError(AgentarchError, ValueError):
    """An answer's edit does not apply; the message says which block and why, in words meant for the LLM.

    `block` is the 1-based number of the failing block, None when the answer as a whole is at fault.
    """

    def __init__(self, message: str, block: int | None = None) -> None:
        super().__init__(message)
        self.block = block


@dataclass(frozen=True)
class Block:
    """One SEARCH/REPLACE pair, each text a run of lines ending in "\\n" (an empty REPLACE deletes); `line` is
    where its SEARCH marker is in the answer (1-based)."""

    search: str
    replace: str
    line: int


@dataclass(frozen=True)
class Applied:
    """The edited module, how many blocks it took, and a note for each block that did not match exactly."""

    code: str
    blocks: int
    fuzz: list[str] = field(default_factory=list)


def looks_like_edit(answer: str) -> bool:
    """Whether an answer is meant as an edit (it has a SEARCH or REPLACE marker line) rather than a full module.

    A malformed edit still counts, so the loop sends it to `apply` and shows the reason back instead of
    reading it as a module.
    """
    return any(_SEARCH.match(line) or _REPLACE.match(line) for line in _lines(answer))


def parse(answer: str) -> list[Block]:
    """The blocks of an answer, in order; raises EditError for malformed markers or no blocks at all."""
    blocks: list[Block] = []
    section: str | None = None  # None between blocks, then "search", then "replace"
    start = 0
    search: list[str] = []
    replace: list[str] = []
    for number, line in enumerate(_lines(answer), start=1):
        n = len(blocks) + 1
        if _SEARCH.match(line):
            if section is None and n > MAX_BLOCKS:
                raise EditError(
                    f"the answer has more than {MAX_BLOCKS} SEARCH/REPLACE blocks (block {n} starts at line {number}); "
                    "that is a rewrite rather than an edit: change less, or answer with the whole module",
                    n,
                )
            if section is not None:
                raise EditError(
                    f"block {n} (from line {start}) is not closed: line {number} opens another "
                    f"`<<<<<<< SEARCH` before block {n}'s {_missing(section)}; blocks cannot nest, close each one "
                    "with `>>>>>>> REPLACE` before the next",
                    n,
                )
            section, start, search, replace = "search", number, [], []
        elif _DIVIDER.match(line) and section is not None:
            if section == "replace":
                raise EditError(
                    f"block {n} (from line {start}) has a second `=======` divider at line {number}; a block has "
                    "exactly one, between its SEARCH and REPLACE texts",
                    n,
                )
            section = "replace"
        elif _REPLACE.match(line):
            if section is None:
                raise EditError(
                    f"line {number} has `>>>>>>> REPLACE` without a `<<<<<<< SEARCH` before it; every block "
                    "starts with `<<<<<<< SEARCH`, then the lines to find, `=======`, the new lines, and "
                    "`>>>>>>> REPLACE`"
                )
            if section == "search":
                raise EditError(
                    f"block {n} (from line {start}) has no `=======` divider before its `>>>>>>> REPLACE` at "
                    f"line {number}; put `=======` between the lines to find and the lines that replace them",
                    n,
                )
            blocks.append(_block(search, replace, start, n))
            section = None
        elif section == "search":
            search.append(line)
        elif section == "replace":
            replace.append(line)
    if section is not None:
        n = len(blocks) + 1
        raise EditError(
            f"block {n} (from line {start}) has no {_missing(section)}: the answer ends inside it, perhaps cut "
            "off at the output length limit; finish every block, or change less",
            n,
        )
    if not blocks:
        raise EditError(
            "the answer holds no SEARCH/REPLACE block; write each change as `<<<<<<< SEARCH`, the exact lines "
            "from the parent, `=======`, the new lines, `>>>>>>> REPLACE`"
        )
    return blocks


def apply(parent_code: str, answer: str) -> Applied:
    """The parent with every block of `answer` applied in order, or EditError saying which block failed and why."""
    original = _lines(parent_code)
    code = list(original)
    fuzz = ["line endings: CR or CRLF read as LF"] if "\r" in parent_code or "\r" in answer else []
    blocks = parse(answer)
    for n, block in enumerate(blocks, start=1):
        search = _split(block.search)
        at, note = _locate(code, search, original, n)
        if note:
            fuzz.append(note)
        code[at : at + len(search)] = _split(block.replace)
    if code == original:
        raise EditError(
            f"the edit ({_count(len(blocks), 'block')}) changes nothing: the result is the parent itself; change "
            "the design, with REPLACE texts that differ from their SEARCH texts"
        )
    return Applied(code="\n".join(code), blocks=len(blocks), fuzz=fuzz)


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _text(lines: list[str]) -> str:
    """Lines as a text where each ends with "\\n", so that no lines ("") and one empty line ("\\n") differ."""
    return "".join(line + "\n" for line in lines)


def _split(text: str) -> list[str]:
    return text.split("\n")[:-1]


def _missing(section: str) -> str:
    return "`=======` divider" if section == "search" else "`>>>>>>> REPLACE` line"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _block(search: list[str], replace: list[str], start: int, n: int) -> Block:
    if not search or all(not line.strip() for line in search):
        raise EditError(
            f"block {n} (from line {start}) has an empty SEARCH text; to add code, put the exact line(s) next to "
            "where it goes in SEARCH and repeat them in REPLACE with the new code",
            n,
        )
    for name, text in (("SEARCH", search), ("REPLACE", replace)):
        if len(text) > MAX_BLOCK_LINES:
            raise EditError(
                f"block {n} (from line {start}) has a {name} text of {len(text)} lines, over the limit of "
                f"{MAX_BLOCK_LINES}; split the change into smaller blocks, or answer with the whole module",
                n,
            )
        if text and (_FENCE.match(text[0]) or _FENCE.match(text[-1])):
            raise EditError(
                f"block {n} (from line {start}) has a ``` fence line inside its {name} text; put fences around "
                "whole blocks (or leave them out), never between the markers",
                n,
            )
    return Block(search=_text(search), replace=_text(replace), line=start)


def _find(code: list[str], search: list[str], same: Callable[[str], str]) -> list[int]:
    """Where `search` matches whole lines of `code`, each line compared through `same` (once per line).

    Each distinct line is spelled as one character and the search is `str.find` on those spellings, so every match
    is of whole lines and the time is linear in the parent. Comparing line lists at every line whose first line
    matched took O(parent x SEARCH) in Python: 3.8 s for one answer of 40 blocks of 300 lines against a parent of
    64,000 blank lines (both within their limits)."""
    lines, wanted = (code, search) if same is _exact else ([*map(same, code)], [*map(same, search)])
    spelling = {line: chr(i) for i, line in enumerate(dict.fromkeys(lines + wanted))}
    text, needle = "".join(map(spelling.__getitem__, lines)), "".join(map(spelling.__getitem__, wanted))
    found: list[int] = []
    at = text.find(needle)
    while at != -1:
        found.append(at)
        at = text.find(needle, at + 1)
    return found


def _exact(line: str) -> str:
    return line


def _after(n: int) -> str:
    """Where block `n` was looked for, when earlier blocks changed the parent first."""
    if n == 1:
        return ""
    return " (in the code after block 1 applied)" if n == 2 else f" (in the code after blocks 1-{n - 1} applied)"


def _locate(code: list[str], search: list[str], original: list[str], n: int) -> tuple[int, str | None]:
    """The line where block `n`'s SEARCH text matches exactly once (exactly, else ignoring trailing whitespace),
    with a note when only the second pass matched; EditError otherwise."""
    for same, note in ((_exact, None), (str.rstrip, f"block {n}: matched ignoring trailing whitespace")):
        found = _find(code, search, same)
        if len(found) == 1:
            return found[0], note
        if len(found) > 1:
            places = ", ".join(_span(i, len(search)) for i in found[:5])
            raise EditError(
                f"block {n}'s SEARCH text matches {len(found)} places{_after(n)}: {places}; add neighbouring "
                "lines to SEARCH until it matches exactly one place",
                n,
            )
    raise EditError(_not_found(code, search, original, n), n)


def _span(i: int, k: int) -> str:
    return f"line {i + 1}" if k == 1 else f"lines {i + 1}-{i + k}"


def _not_found(code: list[str], search: list[str], original: list[str], n: int) -> str:
    """Why block `n`'s SEARCH text is not in `code`: changed by an earlier block, lines left out with `...`, other
    indentation, or a typo (with the closest region of the code and the first line that differs)."""
    head = f"block {n}'s SEARCH text ({_count(len(search), 'line')}) is not in the parent{_after(n)}"
    if n > 1 and len(_find(original, search, str.rstrip)) == 1:
        return (
            f"{head}: it is in the original parent, but an earlier block changed those lines; blocks apply in "
            "order, each to the result of the ones before, so merge the two blocks into one"
        )
    elided = next((i for i, line in enumerate(search) if line.strip() in _ELISIONS), None)
    if elided is not None:
        return (
            f"{head}: its line {elided + 1} is `{search[elided].strip()}`, which leaves lines out; SEARCH must quote "
            "every line of the region it replaces (use a smaller region, or several blocks)"
        )
    indented = _find(code, search, str.strip)
    if indented:
        return (
            f"{head}: it matches {_span(indented[0], len(search))} only with other indentation; copy the lines "
            "with their exact leading spaces"
        )
    at, ratio = _closest(code, search)
    region = code[at : at + len(search)]
    shown = "\n".join(region[:SHOWN_LINES])
    if len(region) > SHOWN_LINES:
        shown += f"\n[... {len(region) - SHOWN_LINES} more lines]"
    lines = [
        f"{head}. The closest region is {_span(at, len(region))} ({int(ratio * 100)}% similar):",
        "```",
        shown,
        "```",
    ]
    differ = next((i for i, (a, b) in enumerate(zip(search, region)) if a.rstrip() != b.rstrip()), None)
    if differ is not None:
        lines.append(
            f"Its line {differ + 1} is `{search[differ].strip()}` where the parent has `{region[differ].strip()}`."
        )
    lines.append("Copy SEARCH lines exactly from the parent, every character and space.")
    return "\n".join(lines)


def _closest(code: list[str], search: list[str]) -> tuple[int, float]:
    """The start of the window of `code` (as many lines as `search`) most similar to it, and how similar (0-1).

    Linear in the parent, whatever the answer: a sliding window keeps the overlap of its tokens with the
    SEARCH text's (Dice's coefficient over token counts, the first `LINE_TOKENS` tokens of each line), the
    `REFINED` best windows are compared line by line (`_line_ratio`), and the most similar of them wins (the
    first on a tie). The similarity is the mean over SEARCH lines; a line the window lacks counts 0.
    """
    k = len(search)
    bags = [Counter(_tokens(line)) for line in code]
    wanted = Counter(token for line in search for token in _tokens(line))
    total = sum(wanted.values())
    have: dict[str, int] = {}
    common = size = 0

    def move(bag: Counter[str], step: int) -> None:
        nonlocal common, size
        for token, count in bag.items():
            before = have.get(token, 0)
            have[token] = after = before + step * count
            if token in wanted:
                common += min(after, wanted[token]) - min(before, wanted[token])
            size += step * count

    scores: list[tuple[float, int]] = []
    for i in range(max(1, len(code) - k + 1)):
        if i == 0:
            for bag in bags[:k]:
                move(bag, 1)
        else:
            move(bags[i - 1], -1)
            move(bags[i + k - 1], 1)
        scores.append((-2 * common / ((size + total) or 1), i))
    best, best_ratio = 0, -1.0
    for _, i in heapq.nsmallest(REFINED, scores):
        ratio = sum(_line_ratio(a, b) for a, b in zip(code[i : i + k], search)) / k
        if ratio > best_ratio or (ratio == best_ratio and i < best):
            best, best_ratio = i, ratio
    return best, best_ratio


def _tokens(line: str) -> list[str]:
    """The first `LINE_TOKENS` words and punctuation marks of a line (a longer line is read no further)."""
    return [match.group() for match in itertools.islice(_TOKEN.finditer(line), LINE_TOKENS)]


def _line_ratio(a: str, b: str) -> float:
    """How alike two lines are (0-1): equal ignoring trailing whitespace is 1, else difflib's ratio of their tokens
    (leading spaces count as one token per width, so other indentation is a difference)."""
    a, b = a.rstrip(), b.rstrip()
    if a == b:
        return 1.0
    left = [f"{len(a) - len(a.lstrip())} spaces", *_tokens(a)]
    right = [f"{len(b) - len(b.lstrip())} spaces", *_tokens(b)]
    return difflib.SequenceMatcher(None, left, right, autojunk=False).ratio()
