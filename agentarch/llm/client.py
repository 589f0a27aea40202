"""The LLM client: one litellm call with our own retries, deadlines, concurrency, context budget and cost ledger.

litellm speaks to any provider (OpenAI, Anthropic, Ollama, vLLM...) by model string; what it does not
give us is a retry policy we can see and record. So litellm runs with its own (and the OpenAI SDK's)
retries off, and `LLMClient.complete` loops itself: every attempt, failed or not, lands in the
archive's `llm_calls` ledger with its status, tokens, cost and latency, so a run's spend and a
provider's flakiness are both visible afterwards.

Each attempt first takes a place at its model's `ModelGate` (agentarch.llm.gate): never more calls in flight to
one server than it takes, and the wait for a place counts against no deadline. Answers stream where the provider
can (`stream`), under the deadlines of agentarch.llm.streaming (first token, stalls, slowest rate), and a call cut
by one is closed, so the server stops, before the retry. Each prompt is held to the model's context window
(agentarch.llm.window): one that does not fit is shortened before it is sent, and a server's "too long" becomes
one shorter retry, then `ContextOverflow`.

Keys: only `api_key` (which the caller read from the environment or agentarch.toml) or litellm's
usual environment variables. A key is never logged, stored, or put in an error message.

An answer is hostile input: a model that ignores `max_tokens` (or a server that is not a model) can send
megabytes, which would otherwise be stored as a candidate, checkpointed and served. Every answer is held to
`max_answer_bytes` as it arrives (agentarch.llm.streaming: the HTTP body from its Content-Length or as it is
read, a stream's text as it grows), and for every provider the answer's text is measured once it is in. Either
way the call fails with `AnswerTooLarge`, naming the size and the setting to raise.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx

from agentarch.config import ModelArm, Settings
from agentarch.llm import gate as gates
from agentarch.llm import window as windows
from agentarch.llm.faults import (
    AnswerTooLarge,
    ContextOverflow,
    Diagnosis,
    Failure,
    LLMCancelled,
    LLMError,
    chain_of,
)
from agentarch.llm.streaming import (
    Caps,
    OverCap,
    Streamed,
    Watch,
    arriving,
    cut_all,
    litellm,
    read_stream,
    usage_count,
)

if TYPE_CHECKING:
    from agentarch.store.archive import Archive

log = logging.getLogger(__name__)

MAX_USAGE_TOKENS = 10**9
"""The most tokens one attempt is taken to have used, prompt or answer: no context window comes near it. A server's
bigger count is held to it before pricing and recording (10**20 overflowed SQLite's integers, and the call went
unrecorded and uncounted by --max-cost), and the call's record says so."""

FAULTS = ("rate_limited", "server_error", "timeout", "bad_response", "connection", "too_long")
# A local OpenAI-compatible server (vLLM, Ollama, llama.cpp) ignores the key, but the OpenAI SDK
# refuses to send a request without one.
_PLACEHOLDER_KEY = "no-key-needed"
CONNECT_TIMEOUT_S = 30.0
_litellm = litellm  # the loader, under the name other modules and tests know
__all__ = ["AnswerTooLarge", "Completion", "ContextOverflow", "LLMCancelled", "LLMClient", "LLMError"]


def interrupt(reason: str = "the run is stopping") -> int:
    """Stop every LLM call of this process: those waiting for their model's turn give up, streams in flight are cut
    (their connections closed, so servers stop generating), and no retry starts, until `resume`. Returns how many
    streams were cut."""
    gates.interrupt_calls()
    return cut_all(f"cancelled: {reason}")


def resume() -> None:
    gates.resume_calls()


@dataclass
class Completion:
    """An answer. Tokens and latency are those of the attempt that answered; `cost_usd` is what every
    attempt of this call cost (an empty answer is billed too); `call_ids` link all attempts to the candidate.
    `finish_reason` is the server's ("length": cut at the answer's budget), `streamed_tokens` the chunks with
    text that arrived (None when not streamed), `queued_s` the time spent waiting for the model's turn (all
    attempts), `shortened_lines` what the client cut from the prompt to fit the window."""

    text: str
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    call_ids: list[int] = field(default_factory=list)
    streamed_tokens: int | None = None
    first_token_s: float | None = None
    queued_s: float = 0.0
    answer_tokens: int | None = None  # the max_tokens the answering attempt asked for
    shortened_lines: int = 0


# Calls in progress, for a live view: what each waits for and how far its answer is.
_calls: dict[int, dict[str, Any]] = {}
_calls_lock = threading.Lock()
_call_ids = itertools.count()


def calls_in_progress() -> list[dict[str, Any]]:
    """Every call of this process not yet answered: its tag (the caller's: a proposal's key), model, purpose,
    attempt, state (queued: waiting for the model's turn; waiting: sent, no token yet; streaming), seconds in that
    state and tokens streamed so far."""
    now = time.monotonic()
    with _calls_lock:
        rows = [dict(row) for row in _calls.values()]
    for row in rows:
        watch: Watch | None = row.pop("watch", None)
        row["tokens"] = watch.tokens if watch is not None else 0
        if row["state"] == "sent":
            row["state"] = "streaming" if watch is not None and watch.tokens else "waiting"
        row["seconds"] = round(now - row.pop("since"), 1)
    return rows


class LLMClient(Diagnosis):
    """Calls one model, retrying rate limits, server errors, timeouts, dropped connections and unusable answers."""

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        first_token_timeout_s: float | None = None,
        stall_timeout_s: float | None = None,
        min_tokens_per_s: float = 0.0,
        stream: bool = True,
        concurrency: int | None = None,
        context_tokens: int | None = None,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        temperature: float = 0.8,
        max_tokens: int = Settings.model_fields["max_tokens"].default,
        max_answer_bytes: int = Settings.model_fields["max_answer_bytes"].default,
        archive: Archive | None = None,
        run_id: str | None = None,
    ) -> None:
        """`timeout_s` bounds each wait for the server: the whole answer when not streaming, and the first token
        and each gap between tokens when streaming unless `first_token_timeout_s` / `stall_timeout_s` say else.
        `concurrency` None: the model's limit is settled by agentarch.llm.gate (asking the server)."""
        self.model = model
        self.api_base = api_base
        self._api_key = api_key
        self.timeout_s = timeout_s
        self.first_token_timeout_s = first_token_timeout_s or timeout_s
        self.stall_timeout_s = stall_timeout_s or timeout_s
        self.min_tokens_per_s = min_tokens_per_s
        self.stream = stream
        self.concurrency = concurrency
        self.context_tokens = context_tokens
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_answer_bytes = max_answer_bytes
        self.archive = archive
        self.run_id = run_id
        self.spent_usd = 0.0
        self.attempts = 0
        self.faults: dict[str, int] = dict.fromkeys((*FAULTS, "too_large", "cancelled", "error"), 0)
        # A run overlaps several proposals' calls with training: counters and ledger writes are shared.
        self._lock = threading.Lock()

    @classmethod
    def for_arm(
        cls, arm: ModelArm, settings: Settings, *, archive: Archive | None = None, run_id: str | None = None
    ) -> LLMClient:
        """The client of one `--model` arm with the run's settings; the arm's own server, key variable and ~N win
        over the run's `api_base`, `api_key` and `llm_concurrency`."""
        s = settings
        return cls(
            arm.name,
            api_base=arm.api_base or s.api_base,
            api_key=arm.api_key() or (s.api_key.get_secret_value() if s.api_key else None),
            timeout_s=s.llm_timeout_s,
            first_token_timeout_s=s.llm_first_token_timeout_s,
            stall_timeout_s=s.llm_stall_timeout_s,
            min_tokens_per_s=s.llm_min_tokens_per_s,
            stream=s.llm_stream,
            concurrency=arm.concurrency or s.llm_concurrency,
            context_tokens=s.context_tokens,
            max_retries=s.llm_retries,
            temperature=s.temperature,
            max_tokens=s.max_tokens,
            max_answer_bytes=s.max_answer_bytes,
            archive=archive,
            run_id=run_id,
        )

    def __repr__(self) -> str:
        key = "given" if self._api_key else "from environment"
        return f"LLMClient(model={self.model!r}, api_base={self.api_base!r}, api_key={key})"

    @property
    def gate(self) -> gates.ModelGate:
        """The model's gate, shared by every client of this model and server in the process."""
        return gates.gate_for(self.model, self.api_base, self.concurrency, self._api_key)

    def window(self) -> windows.Window:
        """The model's context window and this client's answer budget (what prompts are fitted to)."""
        return windows.window_for(self.model, self.api_base, self.max_tokens, self.context_tokens, self._api_key)

    def complete(self, messages: list[dict[str, str]], purpose: str, *, tag: str | None = None) -> Completion:
        """Ask the model; returns the first usable answer or raises LLMError after `max_retries` retries.

        A truncated answer (finish_reason "length") is usable: the caller decides whether to repair it. `tag`
        names the call in `calls_in_progress` (the loop gives the proposal's key).
        """
        lite = litellm()
        key = self._key()
        model_gate = self.gate
        window = self.window()
        messages, shortened = self._fit(messages, window)
        call_ids: list[int] = []
        cost = queued = 0.0
        failure: Failure | None = None
        retried_overflow = False
        me = next(_call_ids)
        row: dict[str, Any] = {"tag": tag, "model": self.model, "purpose": purpose, "attempt": 1}
        try:
            attempt = 0
            while (attempt := attempt + 1) <= self.max_retries + 1 + retried_overflow:  # a shorter retry is extra
                if failure is not None and failure.status != "too_long":
                    delay = self._delay(attempt - 1, failure)
                    log.warning(
                        "%s%s %s: attempt %d %s (%s); retrying in %.1fs",
                        f"{tag} " if tag else "",
                        purpose,
                        self.model,
                        attempt - 1,
                        failure.status,
                        failure.message,
                        delay,
                    )
                    self._sleep(delay, call_ids)
                counted = window.count(messages) if window.context_tokens else None
                answer_tokens = window.answer_for(counted) if counted is not None else self.max_tokens
                row.update(attempt=attempt, state="queued", since=time.monotonic(), watch=None)
                with _calls_lock:
                    _calls[me] = row
                try:
                    with model_gate.slot() as waited:
                        queued += waited
                        started = time.monotonic()
                        got = self._attempt(lite, messages, key, answer_tokens, row)
                except gates.Cancelled as err:
                    raise LLMCancelled(str(err), call_ids) from None
                except Exception as err:  # litellm raises many kinds; _classify sorts them
                    over = next((e for e in chain_of(err) if isinstance(e, OverCap)), None)
                    if over is not None:
                        raise self._too_large(call_ids, purpose, attempt, started, over) from None
                    failure = self._classify(err, row.get("watch"))
                    self._record(
                        call_ids,
                        purpose,
                        attempt,
                        failure.status,
                        failure.message,
                        latency_s=time.monotonic() - started,
                    )
                    if failure.status == "cancelled":
                        raise LLMCancelled(f"the call to {self.model} was {failure.message}", call_ids) from None
                    if failure.status == "too_long":
                        if retried_overflow:  # one shorter retry, then the reason
                            raise ContextOverflow(self._overflow_message(window, messages, failure), call_ids) from None
                        retried_overflow = True
                        window = self._learn(window, messages, failure.overflow, counted, answer_tokens)
                        messages, cut = self._fit(messages, window, call_ids)
                        shortened += cut
                    elif failure.status == "error":
                        raise LLMError(self._fatal_message(failure), call_ids) from None
                    continue
                latency = time.monotonic() - started
                text, finish, prompt_tokens, completion_tokens, attempt_cost, streamed, first, note = got
                cost += attempt_cost
                if text and _utf8_over(text, self.max_answer_bytes):
                    over = OverCap(f"it is over {self.max_answer_bytes:,} bytes ({len(text):,} characters)")
                    del got, text  # the caller gets a reason, not the answer: let it go now
                    usage = (prompt_tokens, completion_tokens, attempt_cost)
                    raise self._too_large(call_ids, purpose, attempt, started, over, *usage, note=note)
                if not text or not text.strip():
                    failure = Failure("bad_response", "the answer was empty")
                    self._record(
                        call_ids, purpose, attempt, "bad_response", failure.message, prompt_tokens, completion_tokens,
                        attempt_cost, latency, note,
                    )  # fmt: skip
                    continue
                self._record(
                    call_ids, purpose, attempt, "ok", None, prompt_tokens, completion_tokens, attempt_cost, latency,
                    note,
                )  # fmt: skip
                return Completion(
                    text=text,
                    model=self.model,
                    finish_reason=finish,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost_usd=cost,
                    latency_s=latency,
                    call_ids=call_ids,
                    streamed_tokens=streamed,
                    first_token_s=first,
                    queued_s=queued,
                    answer_tokens=answer_tokens,
                    shortened_lines=shortened,
                )
        finally:
            with _calls_lock:
                _calls.pop(me, None)
        assert failure is not None  # the loop only falls through after a failed attempt
        raise LLMError(self._exhausted_message(failure), call_ids)

    # -- one attempt ------------------------------------------------------------------------------

    def _attempt(
        self, lite: ModuleType, messages: list[dict[str, str]], key: str | None, answer_tokens: int, row: dict[str, Any]
    ) -> tuple[str | None, str | None, int, int, float, int | None, float | None, str | None]:
        """Send once and read the answer: (text, finish reason, prompt and completion tokens, cost, chunks streamed,
        seconds to the first token, a note when the server's usage was capped). Raises what litellm, httpx or the
        watch raised."""
        request = dict(
            model=self.model,
            messages=messages,
            api_base=self.api_base,
            api_key=key,
            temperature=self.temperature,
            max_tokens=answer_tokens,
            num_retries=0,
            max_retries=0,
            drop_params=True,
        )
        caps = Caps.of(self.max_answer_bytes, answer_tokens)
        row.update(state="sent", since=time.monotonic())
        if not self.stream:
            with arriving(caps, None):
                response = lite.completion(**request, timeout=self.timeout_s)
            prompt_tokens, completion_tokens, note = _capped(*_usage(response))
            choice = response.choices[0] if response.choices else None
            text = choice.message.content if choice is not None else None
            finish = choice.finish_reason if choice is not None else None
            attempt_cost = _priced(lite, self.model, prompt_tokens, completion_tokens)
            return text, finish, prompt_tokens, completion_tokens, attempt_cost, None, None, note
        read_s = max(self.first_token_timeout_s, self.stall_timeout_s)
        timeout = httpx.Timeout(read_s, connect=min(read_s, CONNECT_TIMEOUT_S))
        with Watch(self.first_token_timeout_s, self.stall_timeout_s, self.min_tokens_per_s) as watch:
            row["watch"] = watch
            stream = None
            try:
                with arriving(caps, watch):
                    stream = lite.completion(
                        **request, stream=True, stream_options={"include_usage": True}, timeout=timeout
                    )
                    got: Streamed = read_stream(stream, watch, caps)
            finally:
                _close(stream)
        estimated = windows.raw_count(self.model, messages)
        if got.prompt_tokens:
            windows.observe(self.model, self.api_base, estimated, got.prompt_tokens)
        prompt_tokens, completion_tokens, note = _capped(
            got.prompt_tokens if got.prompt_tokens is not None else estimated,
            got.completion_tokens if got.completion_tokens is not None else got.chunks,
        )
        attempt_cost = _priced(lite, self.model, prompt_tokens, completion_tokens)
        return (
            got.text,
            got.finish_reason,
            prompt_tokens,
            completion_tokens,
            attempt_cost,
            got.chunks,
            got.first_token_s,
            note,
        )

    # -- the window ---------------------------------------------------------------------------------

    def _fit(
        self, messages: list[dict[str, str]], window: windows.Window, call_ids: list[int] | None = None
    ) -> tuple[list[dict[str, str]], int]:
        """The messages as sent: unchanged when they leave at least MIN_ANSWER_TOKENS of the window for the answer
        (or the window is unknown), else shortened (the longest message's middle cut); ContextOverflow when no cut
        fits. Giving the answer more room is the prompt builder's part (prompts.fit_prompt): this is the floor that
        keeps every request inside the window."""
        floor = min(windows.MIN_ANSWER_TOKENS, window.answer_tokens)
        if window.fits(messages, floor):
            return messages, 0
        shortened = windows.shorten(messages, lambda m: window.fits(m, floor))
        if shortened is None:
            raise ContextOverflow(self._overflow_message(window, messages, None), call_ids or [])
        log.info("%s: prompt shortened by %d lines to fit %s", self.model, shortened[1], window.describe())
        return shortened

    def _learn(
        self,
        window: windows.Window,
        messages: list[dict[str, str]],
        overflow: windows.Overflow | None,
        counted: int | None,
        answer_tokens: int,
    ) -> windows.Window:
        """What a server's "too long" taught: its window (kept for every later call) and how it counts this prompt;
        where it said neither, a window a quarter smaller than what was just asked for."""
        if overflow is not None and overflow.prompt_tokens:
            windows.observe(self.model, self.api_base, windows.raw_count(self.model, messages), overflow.prompt_tokens)
        if overflow is not None and overflow.context_tokens:
            gates.remember_context(self.api_base, overflow.context_tokens, "context-length error")
            learned = self.window()
            if self.api_base is None or learned.context_tokens != overflow.context_tokens:
                learned.context_tokens, learned.source = overflow.context_tokens, "the server's context-length error"
            return learned
        asked = (counted if counted is not None else window.count(messages)) + answer_tokens
        return windows.Window(self.model, int(asked * 0.75), "guessed from a refusal", self.max_tokens, window.scale)

    def _overflow_message(self, window: windows.Window, messages: list[dict[str, str]], failure: Failure | None) -> str:
        counted = window.count(messages)
        said = f" ({failure.message})" if failure is not None else ""
        size = f"{window.context_tokens:,}" if window.context_tokens else "unknown"
        return (
            f"the prompt (about {counted:,} tokens) and an answer of {window.answer_tokens:,} tokens do not fit "
            f"{self.model}'s context window ({size} tokens, from {window.source}) even shortened{said}: give fewer "
            "examples, lower max_tokens, or start the server with a larger context (llama.cpp -c, vLLM "
            "--max-model-len; context_tokens if the server does not say)"
        )

    # -- helpers --------------------------------------------------------------------------------

    def _too_large(
        self,
        call_ids: list[int],
        purpose: str,
        attempt: int,
        started: float,
        over: OverCap,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_usd: float = 0.0,
        *,
        note: str | None = None,
    ) -> AnswerTooLarge:
        """Record the refused attempt (status `too_large`) and say why, naming the size and the setting to raise."""
        cap = f"max_answer_bytes ({self.max_answer_bytes:,} bytes)"
        if not over.measured:
            message = f"{over.seen}; answers are held to {cap} as they arrive, so they must come uncompressed"
        else:
            message = (
                f"{over.seen}, more than an answer within {cap} can be; it was refused and not kept. Raise "
                f"max_answer_bytes if the model writes that much on purpose, or lower max_tokens (now "
                f"{self.max_tokens:,})"
            )
        latency = time.monotonic() - started
        self._record(
            call_ids, purpose, attempt, "too_large", message, prompt_tokens, completion_tokens, cost_usd, latency, note
        )
        return AnswerTooLarge(f"{self._where()} sent an answer too large to use: {message}", call_ids)

    def _sleep(self, seconds: float, call_ids: list[int]) -> None:
        """Back off before a retry, unless the run is stopping (then the call ends now)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if gates.interrupted():
                raise LLMCancelled(f"the call to {self.model} was cancelled before its retry", call_ids)
            time.sleep(min(left, 0.2))

    def _key(self) -> str | None:
        """The key to send: the given one, else litellm's env lookup, else a placeholder for a local server."""
        if self._api_key:
            return self._api_key
        if self.api_base and not litellm().validate_environment(self.model)["keys_in_environment"]:
            return _PLACEHOLDER_KEY
        return None

    def _delay(self, retry: int, failure: Failure) -> float:
        """The server's Retry-After when it gave one, else exponential backoff with jitter; never above max_backoff_s.

        A Retry-After beyond the cap is cut to it: the next attempt may be refused again (and counted
        as a retry), but a bogus header cannot stall an overnight run.
        """
        if failure.retry_after_s is not None:
            return min(failure.retry_after_s, self.max_backoff_s)
        ceiling = min(self.backoff_s * 2 ** (retry - 1), self.max_backoff_s)
        return random.uniform(ceiling / 2, ceiling)

    def _record(
        self,
        call_ids: list[int],
        purpose: str,
        attempt: int,
        status: str,
        error: str | None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_usd: float = 0.0,
        latency_s: float = 0.0,
        note: str | None = None,
    ) -> None:
        """Count one attempt, and write its ledger row (when there is an archive), adding the id to `call_ids`.
        `note` (a capped usage) joins the row's error, the one text column, so even an ok call says so."""
        with self._lock:
            self.attempts += 1
            self.spent_usd += cost_usd
            if status != "ok":
                self.faults[status] += 1
            if self.archive is not None:
                call_ids.append(
                    self.archive.record_llm_call(
                        {
                            "run_id": self.run_id,
                            "candidate_id": None,
                            "purpose": purpose,
                            "model": self.model,
                            "attempt": attempt,
                            "status": status,
                            "error": "; ".join(filter(None, (error, note))) or None,
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "cost_usd": cost_usd,
                            "latency_s": round(latency_s, 4),
                        }
                    )
                )


def _close(stream: Any) -> None:
    """Close a litellm stream's HTTP response (a no-op once it is closed): the connection goes, the server stops."""
    inner = getattr(stream, "completion_stream", None)
    for closable in (inner, getattr(inner, "response", None)):
        close = getattr(closable, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # closing a cut connection may complain; it is closed either way
                pass


def _utf8_over(text: str, limit: int) -> bool:
    """Whether `text` is over `limit` bytes as UTF-8, without encoding a text that is over by its length alone."""
    return len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit


def _usage(response: Any) -> tuple[int, int]:
    """A plain answer's usage: the server's counts where they are non-negative ints, else 0."""
    usage = getattr(response, "usage", None)
    prompt = usage_count(getattr(usage, "prompt_tokens", None))
    completion = usage_count(getattr(usage, "completion_tokens", None))
    return prompt or 0, completion or 0


def _capped(prompt_tokens: int, completion_tokens: int) -> tuple[int, int, str | None]:
    """The counts held to MAX_USAGE_TOKENS, and a note naming those that were (None when neither was)."""
    over = [
        name
        for name, count in (("prompt", prompt_tokens), ("completion", completion_tokens))
        if count > MAX_USAGE_TOKENS
    ]
    if not over:
        return prompt_tokens, completion_tokens, None
    note = f"the server reported over {MAX_USAGE_TOKENS:,} {' and '.join(over)} tokens; counted as {MAX_USAGE_TOKENS:,}"
    log.warning("%s", note)
    return min(prompt_tokens, MAX_USAGE_TOKENS), min(completion_tokens, MAX_USAGE_TOKENS), note


def _priced(lite: ModuleType, model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """An answer's price from its (checked, capped) token counts and litellm's bundled cost map: 0.0 for unknown
    models, and never below 0, so no answer can lower the run's spend under --max-cost."""
    try:
        prompt_usd, completion_usd = lite.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
        return max(0.0, float(prompt_usd + completion_usd))
    except Exception:  # unmapped models raise; they cost nothing we know of
        return 0.0
