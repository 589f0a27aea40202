"""The context window as a budget: what a model can take, how many tokens a prompt is, and how to make one fit.

A model's window holds the prompt and the answer together. A server that gets more either refuses (vLLM,
OpenAI: "maximum context length is ... tokens") or silently shortens the answer (llama.cpp), so every prompt is
fitted before it is sent. The window is what the server says (`gate.server_info`: llama.cpp's /props `n_ctx`,
vLLM's /v1/models `max_model_len`), else what litellm's model map says, and never more than the `context_tokens`
setting. Of it, the answer keeps `max_tokens`, but at most `ANSWER_SHARE` (a 2,048-token window with the default
8,192 answer tokens keeps 1,024 for each); the prompt gets the rest less `SAFETY_TOKENS`.

Prompts are counted with litellm's token counter. For a model litellm does not know, that is another model's
tokenizer, so counts are scaled: by the server's own count of a sample (POST /tokenize) when it gives one, else
by `UNKNOWN_SCALE`; and once answers come back, by the largest ratio of the server's `prompt_tokens` to the
estimate seen lately (`observe`), so the estimate follows the real tokenizer.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentarch.llm import gate
from agentarch.llm.streaming import litellm

ANSWER_SHARE = 0.5
"""The most of the window an answer's budget may take; the prompt keeps the rest."""
MIN_ANSWER_TOKENS = 256
"""A request that leaves the answer fewer tokens than this is not worth sending."""
SAFETY_TOKENS = 32
"""Kept free of prompt and answer: the chat template's own tokens and rounding."""
KNOWN_SCALE = 1.05
"""litellm knows the model (and so its tokenizer): a small margin for chat templates."""
UNKNOWN_SCALE = 1.25
"""Counting with another model's tokenizer: small models' tokenizers take up to about a fifth more tokens for code."""
OBSERVED_MARGIN = 1.03
RECENT = 16

Messages = list[dict[str, str]]


def raw_count(model: str, messages: Messages) -> int:
    """litellm's count of the messages' tokens (its tokenizer for models it knows, tiktoken's otherwise)."""
    return int(litellm().token_counter(model=model, messages=messages))


@functools.cache
def litellm_window(model: str) -> int | None:
    """The context window litellm's bundled model map gives the model, if it knows it."""
    try:
        info = litellm().get_model_info(model)
    except Exception:  # unmapped models raise; that only means litellm does not know
        return None
    window = info.get("max_input_tokens") or info.get("max_tokens")
    return int(window) if isinstance(window, int) and window > 0 else None


_seen: dict[tuple[str, str | None], deque[float]] = {}
_seen_lock = threading.Lock()


def observe(model: str, api_base: str | None, estimated: int, actual: int) -> None:
    """The server counted `actual` prompt tokens where litellm counted `estimated`: later counts follow it."""
    if estimated <= 0 or actual <= 0 or not 0.25 <= actual / estimated <= 4:
        return  # not the same text counted twice (a server's made-up usage): nothing to learn
    with _seen_lock:
        _seen.setdefault((model, api_base), deque(maxlen=RECENT)).append(actual / estimated)


def forget() -> None:
    with _seen_lock:
        _seen.clear()


@dataclass
class Window:
    """One model's budget: its window (None: unknown, nothing is fitted), where that came from, the answer
    tokens asked for, and the factor from litellm's count to the server's."""

    model: str
    context_tokens: int | None
    source: str
    max_tokens: int
    scale: float

    @property
    def answer_tokens(self) -> int:
        """The answer's budget: `max_tokens`, but no more than ANSWER_SHARE of a known window."""
        if self.context_tokens is None:
            return self.max_tokens
        return max(
            min(self.max_tokens, int(self.context_tokens * ANSWER_SHARE)), min(MIN_ANSWER_TOKENS, self.max_tokens)
        )

    @property
    def prompt_limit(self) -> int | None:
        """The most tokens a prompt may count (scaled), or None when the window is unknown."""
        if self.context_tokens is None:
            return None
        return self.context_tokens - self.answer_tokens - SAFETY_TOKENS

    def count(self, messages: Messages) -> int:
        """The prompt's tokens as the server will count them, as well as can be told."""
        return math.ceil(raw_count(self.model, messages) * self.scale)

    def fits(self, messages: Messages, answer_tokens: int | None = None) -> bool:
        """Whether the messages and an answer of `answer_tokens` (default: the answer's budget) fit the window."""
        if self.context_tokens is None:
            return True
        answer = self.answer_tokens if answer_tokens is None else answer_tokens
        return self.count(messages) <= self.context_tokens - answer - SAFETY_TOKENS

    def answer_for(self, counted: int) -> int:
        """The max_tokens to send with a prompt of `counted` tokens: all the room left, up to `max_tokens`."""
        if self.context_tokens is None:
            return self.max_tokens
        return max(0, min(self.max_tokens, self.context_tokens - counted - SAFETY_TOKENS))

    def describe(self) -> dict[str, Any]:
        return {
            "context_tokens": self.context_tokens,
            "source": self.source,
            "answer_tokens": self.answer_tokens,
            "prompt_limit": self.prompt_limit,
        }


def window_for(
    model: str, api_base: str | None, max_tokens: int, setting: int | None, api_key: str | None = None
) -> Window:
    """The model's window as the server (when there is one), litellm, and the `context_tokens` setting say:
    the server's (else litellm's), and never more than the setting."""
    info = gate.server_info(api_base, api_key, model) if api_base else None
    known = litellm_window(model)
    window, source = (None, "unknown")
    if info is not None and info.context_tokens:
        window, source = info.context_tokens, f"the server's {info.context_from}"
    elif known:
        window, source = known, "litellm's model map"
    if setting is not None and (window is None or setting < window):
        window, source = setting, "the context_tokens setting"
    return Window(model, window, source, max_tokens, _scale(model, api_base, info, known is not None))


def _scale(model: str, api_base: str | None, info: gate.ServerInfo | None, known: bool) -> float:
    with _seen_lock:
        recent = list(_seen.get((model, api_base), ()))
    if recent:
        return max(0.5, max(recent) * OBSERVED_MARGIN)
    if info is not None and info.tokens_per_sample:
        sample = _sample_count(model)
        return max(0.5, info.tokens_per_sample / max(sample, 1) * OBSERVED_MARGIN)
    return KNOWN_SCALE if known and api_base is None else UNKNOWN_SCALE


@functools.cache
def _sample_count(model: str) -> int:
    return int(litellm().token_counter(model=model, text=gate.TOKENIZER_SAMPLE))


# -- a server's "too long" ----------------------------------------------------------------------------------------

_WINDOW_SAID = (
    re.compile(r"maximum context length is (\d+)", re.I),
    re.compile(r"context length (?:of|is) (\d+)", re.I),
    re.compile(r'"?n_ctx"?\s*[:=]\s*(\d+)'),
    re.compile(r"\d+\s*tokens?\s*>\s*(\d+)\s*maximum", re.I),
)
_PROMPT_SAID = (
    re.compile(r"\((\d+) in the messages", re.I),
    re.compile(r"request has (\d+) input tokens", re.I),
    re.compile(r'"?n_prompt_tokens"?\s*[:=]\s*(\d+)'),
    re.compile(r"prompt is too long:\s*(\d+)\s*tokens", re.I),
)
_TOO_LONG = re.compile(
    r"context[_ ]length[_ ]exceeded|maximum context length|exceeds? the (?:available )?context|context size|"
    r"prompt is too long|too many tokens|input length exceeds|exceed_context_size",
    re.I,
)


@dataclass
class Overflow:
    """A server's refusal of a prompt too long for the window, with what it said of the window and the prompt."""

    context_tokens: int | None
    prompt_tokens: int | None


def overflow_of(text: str, litellm_says: bool = False) -> Overflow | None:
    """The overflow a server's error text describes, or None when it is about something else."""
    if not (litellm_says or _TOO_LONG.search(text)):
        return None
    return Overflow(_first_number(_WINDOW_SAID, text), _first_number(_PROMPT_SAID, text))


def _first_number(patterns: tuple[re.Pattern[str], ...], text: str) -> int | None:
    for pattern in patterns:
        if match := pattern.search(text):
            return int(match.group(1))
    return None


# -- fitting plain messages ---------------------------------------------------------------------------------------

MIN_LINES = 12


def shorten(messages: Messages, fits: Callable[[Messages], bool]) -> tuple[Messages, int] | None:
    """The messages cut until `fits` says they do: the longest non-system message first, its middle lines replaced
    by a line saying how many were cut (its start states the task, its end the ask). Returns them with the number
    of lines cut, or None when even the shortest cut does not fit."""
    current = [dict(m) for m in messages]
    cut_total = 0
    tried: set[int] = set()
    while not fits(current):
        order = sorted(
            (i for i, m in enumerate(current) if m.get("role") != "system" and i not in tried),
            key=lambda i: -len(current[i].get("content") or ""),
        )
        if not order:
            return None
        index = order[0]
        lines = (current[index].get("content") or "").splitlines()
        if len(lines) <= MIN_LINES:
            tried.add(index)
            continue
        low, high = MIN_LINES, len(lines) - 1  # lines kept: the most that fit, found by halving
        best: Messages | None = None
        while low <= high:
            keep = (low + high) // 2
            trial = [*current[:index], {**current[index], "content": _middle_cut(lines, keep)}, *current[index + 1 :]]
            if fits(trial):
                best, low = trial, keep + 1
            else:
                high = keep - 1
        if best is not None:
            cut_total += len(lines) - (low - 1)
            return best, cut_total
        cut_total += len(lines) - MIN_LINES
        current[index] = {**current[index], "content": _middle_cut(lines, MIN_LINES)}
        tried.add(index)
    return current, cut_total


def _middle_cut(lines: list[str], keep: int) -> str:
    head = keep // 2
    tail = keep - head
    gone = len(lines) - keep
    return "\n".join([*lines[:head], f"[... {gone} lines cut to fit the model's context window ...]", *lines[-tail:]])
