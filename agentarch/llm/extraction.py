"""Code read back out of an LLM's answer: the candidate module and its `Intent:` paragraph.

Its own module because reading an answer is a job apart from writing the prompt (agentarch.llm.prompts): it must cope
with whatever a model sends (prose around the code, several blocks, a fence left open, an answer cut off at its token
budget), and its errors say what was wrong with the answer in words meant for the LLM, since the repair prompt shows
them.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

from agentarch.errors import AgentarchError
from agentarch.evaluation.checks import parse


class ExtractError(AgentarchError, ValueError):
    """No usable code in an answer; the message says why, in words meant for the LLM's repair."""


@dataclass
class Extracted:
    """The module read from an answer, and the `Intent:` paragraph before it (None when absent)."""

    code: str
    intent: str | None


def intent_of(answer: str) -> str | None:
    """The `Intent:` paragraph of an answer that is not one module (an edit's prose before its blocks)."""
    return _find_intent(answer.splitlines())


_FENCE = re.compile(r"^\s*(`{3,})\s*([\w+.-]*)[^`]*$")
_NET = re.compile(r"^class\s+Net\b", re.M)
_INTENT = re.compile(r"^[\s>#*_]*intent[*_]*\s*[:\-][*_]*\s*", re.I)


@dataclass
class _Block:
    text: str
    closed: bool
    line: int = 0  # the answer's line that opened it


def extract_code(answer: str, finish_reason: str | None = None) -> Extracted:
    """The candidate module in an LLM answer, and its `Intent:` paragraph.

    Fenced blocks come first: of several, the one defining `class Net` (the last such, as a model
    that revises itself puts its final version last). An answer without fences is taken as bare
    code if it parses and defines `Net`. A block opened and never closed is read by `finish_reason`, the
    server's word on why the answer ended: "length" means it was cut off at the answer's token budget, which a
    repair can only fix by writing less; any other (the model stopped) means the model left the fence open,
    and the block is used if its code is a whole module. Unknown (None), an unclosed block reads as cut off.
    """
    if not answer.strip():
        raise ExtractError("the answer was empty; answer with the full module in one ```python block")
    cut = finish_reason == "length"
    blocks, prose = _split(answer)
    if not blocks:
        intent, rest = _leading_intent(answer)
        if _defines_net(rest):
            return Extracted(code=_tidy(rest), intent=intent)
        if cut:
            raise ExtractError(
                "the answer was cut off at the output length limit before it gave any code: write less before "
                "the code, and give the full module, defining `class Net(nn.Module)`, in one ```python block"
            )
        raise ExtractError(
            "the answer holds no code: give the full module, defining `class Net(nn.Module)`, in one ```python block"
        )
    with_net = [block for block in blocks if _NET.search(textwrap.dedent(block.text))]
    if not with_net:
        if not blocks[-1].closed and (cut or finish_reason is None):
            raise _cut_off(cut)
        raise ExtractError(
            f"none of the answer's {len(blocks)} code block(s) defines `class Net`; give the full "
            "module, defining `class Net(nn.Module)`, in one ```python block"
        )
    chosen = with_net[-1]
    if not chosen.closed:
        if cut or finish_reason is None:
            raise _cut_off(cut)
        problem = _syntax_problem(chosen.text)
        if problem is not None:
            raise ExtractError(
                f"the ``` code block opened at line {chosen.line} was never closed, and its code does not parse "
                f"({problem}); the model ended the answer itself (finish_reason {finish_reason!r}): "
                "give the whole module in one ```python block and close it with ```"
            )
    return Extracted(code=_tidy(chosen.text), intent=_find_intent(prose))


def _cut_off(length: bool = False) -> ExtractError:
    if length:
        return ExtractError(
            "the answer was cut off at the output length limit (the server stopped it at its token budget) "
            "inside a ``` code block; answer with a shorter complete module in one ```python block"
        )
    return ExtractError(
        "the answer was cut off: a ``` code block was opened but never closed, probably at the "
        "output length limit; answer with a shorter complete module in one ```python block"
    )


def _syntax_problem(code: str) -> str | None:
    """Why the code does not parse (line and message), or None when it does and defines `Net`."""
    try:
        tree = parse(textwrap.dedent(code))
    except SyntaxError as err:
        return f"line {err.lineno}: {err.msg}"
    if not any(isinstance(node, ast.ClassDef) and node.name == "Net" for node in tree.body):
        return "no top-level `class Net`"
    return None


def _split(answer: str) -> tuple[list[_Block], list[str]]:
    """The fenced blocks of an answer (the last possibly unclosed) and its prose lines outside them."""
    blocks: list[_Block] = []
    prose: list[str] = []
    fence: str | None = None
    body: list[str] = []
    start = 0
    for number, line in enumerate(answer.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, body, start = match.group(1), [], number
                prose.append("")  # a block ends the paragraph before it
            else:
                prose.append(line)
        elif match and len(match.group(1)) >= len(fence) and not match.group(2):
            blocks.append(_Block("\n".join(body), closed=True, line=start))
            fence = None
        else:
            body.append(line)
    if fence is not None:
        blocks.append(_Block("\n".join(body), closed=False, line=start))
    return blocks, prose


def _leading_intent(answer: str) -> tuple[str | None, str]:
    """Split a bare-code answer into its leading `Intent:` paragraph (if any) and the rest."""
    head, _, rest = answer.strip().partition("\n\n")
    if _INTENT.match(head):
        return _find_intent(head.splitlines()), rest
    return None, answer


def _find_intent(lines: list[str]) -> str | None:
    """The first paragraph that starts with `Intent:`, as one line without the label."""
    for start, line in enumerate(lines):
        if _INTENT.match(line):
            paragraph = [_INTENT.sub("", line)]
            for following in lines[start + 1 :]:
                if not following.strip():
                    break
                paragraph.append(following.strip())
            text = " ".join(part.strip() for part in paragraph).strip().strip("*_").strip()
            return text or None
    return None


def _defines_net(code: str) -> bool:
    try:
        tree = parse(textwrap.dedent(code))
    except SyntaxError:
        return False
    return any(isinstance(node, ast.ClassDef) and node.name == "Net" for node in tree.body)


def _tidy(code: str) -> str:
    return textwrap.dedent(code).strip("\n") + "\n"
