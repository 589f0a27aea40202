"""The LLM client: one litellm call with our own retries, timeouts, cost ledger and spend counter.

litellm speaks to any provider (OpenAI, Anthropic, Ollama, vLLM...) by model string; what it does not
give us is a retry policy we can see and record. So litellm runs with its own (and the OpenAI SDK's)
retries off, and `LLMClient.complete` loops itself: every attempt, failed or not, lands in the
archive's `llm_calls` ledger with its status, tokens, cost and latency, so a run's spend and a
provider's flakiness are both visible afterwards.

Keys: only `api_key` (which the caller read from the environment or agentarch.toml) or litellm's
usual environment variables. A key is never logged, stored, or put in an error message.

An answer is hostile input: a model that ignores `max_tokens` (or a server that is not a model) can send
megabytes, which would otherwise be stored as a candidate, checkpointed and served. Every answer is held to
`max_answer_bytes`: over an OpenAI-compatible connection the HTTP body is refused from its Content-Length, or
as soon as more has been read than an answer within the cap can take, so a 50 MB body is never read whole;
for every provider the answer's text is measured once it is in. Either way the call fails with
`AnswerTooLarge`, naming the size and the setting to raise.
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx

from agentarch.config import Settings
from agentarch.errors import AgentarchError

# litellm fetches its model price map from GitHub at import time unless told to use the bundled copy;
# runs must start (and tests must pass) without network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

if TYPE_CHECKING:
    from agentarch.store.archive import Archive

log = logging.getLogger(__name__)

FAULTS = ("rate_limited", "server_error", "timeout", "bad_response", "connection")
# A local OpenAI-compatible server (vLLM, Ollama, llama.cpp) ignores the key, but the OpenAI SDK
# refuses to send a request without one.
_PLACEHOLDER_KEY = "no-key-needed"
# "litellm.InternalServerError: InternalServerError: OpenAIException - <what the server said>"
_LITELLM_PREAMBLE = re.compile(r"^litellm\.\w+:\s*(\w+Error:\s*)?(\w+Exception\s*-\s*)?")
# How much larger an answer's HTTP body may be than the answer: JSON writes a control character as 6 bytes
# (\u0001) and wraps the text in the completion's fields. A body beyond this cannot hold an answer within the cap.
_JSON_INFLATION = 6
_BODY_OVERHEAD = 64 * 1024
# The cap of the call this thread is making (None outside LLMClient.complete); read by the HTTP response hook.
_arrival = threading.local()


class LLMError(AgentarchError, RuntimeError):
    """The call failed for good; the message says what to do. `call_ids` are the ledger rows of its attempts."""

    def __init__(self, message: str, call_ids: list[int] | None = None) -> None:
        super().__init__(message)
        self.call_ids: list[int] = call_ids or []


class AnswerTooLarge(LLMError):
    """An answer over `max_answer_bytes`, refused where it arrived and not retried: a model that ran away once is
    likely to again, and every try is billed. The loop records it like any failed call."""


class _OverCap(Exception):
    """An answer over the cap, raised inside httpx (or after parsing); `seen` says what showed it, in words."""

    def __init__(self, seen: str, measured: bool = True) -> None:
        super().__init__(seen)
        self.seen = seen
        self.measured = measured  # False: refused because its size could not be known as it arrived


@dataclass
class Completion:
    """An answer. Tokens and latency are those of the attempt that answered; `cost_usd` is what every
    attempt of this call cost (an empty answer is billed too); `call_ids` link all attempts to the candidate."""

    text: str
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    call_ids: list[int] = field(default_factory=list)


@dataclass
class _Failure:
    """One failed attempt, classified: `status` is a ledger status, `retry_after_s` the server's wish."""

    status: str
    message: str
    http_status: int | None = None
    retry_after_s: float | None = None


@functools.cache
def _litellm() -> ModuleType:
    """Import litellm on first use (it takes seconds) and keep it quiet: no banners, no feedback links."""
    import litellm

    litellm.suppress_debug_info = True
    litellm.client_session = _capped_session()
    return litellm


def _capped_session() -> httpx.Client:
    """The HTTP client litellm would build for OpenAI-compatible calls, asking for uncompressed bodies (so the size
    read is the size held) and checking each response's body against the cap of the call that asked for it."""
    try:
        from litellm.llms.openai.common_utils import BaseOpenAILLM

        session = BaseOpenAILLM._get_sync_http_client() or httpx.Client(follow_redirects=True)
    except (ImportError, AttributeError):  # litellm moved it: its defaults are httpx's, which is what we build
        session = httpx.Client(follow_redirects=True)
    session.headers["Accept-Encoding"] = "identity"
    session.event_hooks["response"].append(_cap_body)
    return session


def _cap_body(response: httpx.Response) -> None:
    """httpx response hook, run before the body is read: refuse a body declared larger than an answer within the
    cap can make, or compressed (its size read would not be its size held), and stop reading one that grows past it.
    Outside `LLMClient.complete` (no cap set in this thread) it does nothing."""
    limit = getattr(_arrival, "limit", None)
    if limit is None:
        return
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        response.close()
        raise _OverCap(f"its HTTP body declares {int(declared):,} bytes")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        response.close()
        raise _OverCap(f"its HTTP body is compressed ({encoding}), which agentarch did not ask for", False)
    response.stream = _CappedStream(response.stream, limit)


class _CappedStream(httpx.SyncByteStream):
    """A response body that raises _OverCap once more than `limit` bytes have arrived (a body without a length)."""

    def __init__(self, stream: httpx.SyncByteStream, limit: int) -> None:
        self._stream = stream
        self._limit = limit

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._stream:
            seen += len(chunk)
            if seen > self._limit:
                raise _OverCap(f"its HTTP body passed {seen:,} bytes")
            yield chunk

    def close(self) -> None:
        self._stream.close()


class LLMClient:
    """Calls one model, retrying rate limits, server errors, timeouts, dropped connections and unusable answers."""

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        temperature: float = 0.8,
        max_tokens: int = Settings.model_fields["max_tokens"].default,
        max_answer_bytes: int = Settings.model_fields["max_answer_bytes"].default,
        archive: Archive | None = None,
        run_id: str | None = None,
    ) -> None:
        self.model = model
        self.api_base = api_base
        self._api_key = api_key
        self.timeout_s = timeout_s
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
        self.faults: dict[str, int] = dict.fromkeys((*FAULTS, "too_large", "error"), 0)
        # A run overlaps several proposals' calls with training: counters and ledger writes are shared.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        key = "given" if self._api_key else "from environment"
        return f"LLMClient(model={self.model!r}, api_base={self.api_base!r}, api_key={key})"

    def complete(self, messages: list[dict[str, str]], purpose: str) -> Completion:
        """Ask the model; returns the first usable answer or raises LLMError after `max_retries` retries.

        A truncated answer (finish_reason "length") is usable: the caller decides whether to repair it.
        """
        litellm = _litellm()
        key = self._key()
        call_ids: list[int] = []
        cost = 0.0
        failure: _Failure | None = None
        for attempt in range(1, self.max_retries + 2):
            if failure is not None:
                delay = self._delay(attempt - 1, failure)
                log.warning(
                    "%s: attempt %d %s (%s); retrying in %.1fs",
                    self.model,
                    attempt - 1,
                    failure.status,
                    failure.message,
                    delay,
                )
                time.sleep(delay)
            started = time.monotonic()
            _arrival.limit = self.max_answer_bytes * _JSON_INFLATION + _BODY_OVERHEAD
            try:
                response = litellm.completion(
                    model=self.model,
                    messages=messages,
                    api_base=self.api_base,
                    api_key=key,
                    timeout=self.timeout_s,
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                    num_retries=0,
                    max_retries=0,
                    drop_params=True,
                )
            except Exception as err:  # litellm raises many kinds; _classify sorts them
                over = next((e for e in _chain(err) if isinstance(e, _OverCap)), None)
                if over is not None:
                    raise self._too_large(call_ids, purpose, attempt, started, over) from None
                failure = self._classify(err)
                self._record(
                    call_ids, purpose, attempt, failure.status, failure.message, latency_s=time.monotonic() - started
                )
                if failure.status == "error":
                    raise LLMError(self._fatal_message(failure), call_ids) from None
                continue
            finally:
                _arrival.limit = None
            latency = time.monotonic() - started
            prompt_tokens, completion_tokens = _usage(response)
            attempt_cost = _cost(litellm, response)
            cost += attempt_cost
            choice = response.choices[0] if response.choices else None
            text = choice.message.content if choice is not None else None
            if text and _utf8_over(text, self.max_answer_bytes):
                over = _OverCap(f"it is over {self.max_answer_bytes:,} bytes ({len(text):,} characters)")
                del response, text, choice  # the caller gets a reason, not the answer: let it go now
                usage = (prompt_tokens, completion_tokens, attempt_cost)
                raise self._too_large(call_ids, purpose, attempt, started, over, *usage)
            if not text or not text.strip():
                failure = _Failure("bad_response", "the answer was empty")
                self._record(
                    call_ids,
                    purpose,
                    attempt,
                    failure.status,
                    failure.message,
                    prompt_tokens,
                    completion_tokens,
                    attempt_cost,
                    latency,
                )
                continue
            self._record(
                call_ids, purpose, attempt, "ok", None, prompt_tokens, completion_tokens, attempt_cost, latency
            )
            return Completion(
                text=text,
                model=self.model,
                finish_reason=choice.finish_reason,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=cost,
                latency_s=latency,
                call_ids=call_ids,
            )
        assert failure is not None  # the loop only falls through after a failed attempt
        raise LLMError(self._exhausted_message(failure), call_ids)

    # -- helpers --------------------------------------------------------------------------------

    def _too_large(
        self,
        call_ids: list[int],
        purpose: str,
        attempt: int,
        started: float,
        over: _OverCap,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_usd: float = 0.0,
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
            call_ids, purpose, attempt, "too_large", message, prompt_tokens, completion_tokens, cost_usd, latency
        )
        return AnswerTooLarge(f"{self._where()} sent an answer too large to use: {message}", call_ids)

    def _key(self) -> str | None:
        """The key to send: the given one, else litellm's env lookup, else a placeholder for a local server."""
        if self._api_key:
            return self._api_key
        if self.api_base and not _litellm().validate_environment(self.model)["keys_in_environment"]:
            return _PLACEHOLDER_KEY
        return None

    def _delay(self, retry: int, failure: _Failure) -> float:
        """The server's Retry-After when it gave one, else exponential backoff with jitter; never above max_backoff_s.

        A Retry-After beyond the cap is cut to it: the next attempt may be refused again (and counted
        as a retry), but a bogus header cannot stall an overnight run.
        """
        if failure.retry_after_s is not None:
            return min(failure.retry_after_s, self.max_backoff_s)
        ceiling = min(self.backoff_s * 2 ** (retry - 1), self.max_backoff_s)
        return random.uniform(ceiling / 2, ceiling)

    def _classify(self, err: Exception) -> _Failure:
        """Sort a litellm exception by what actually happened, reading the exception chain.

        litellm's top-level class is not reliable for this: a 401 without "invalid key" in the body
        arrives as BadRequestError, and a refused connection, an unparseable body and a missing key
        all arrive as InternalServerError(500). The original httpx/openai/json exception underneath
        says what happened; the real HTTP status is on the httpx.HTTPStatusError in the chain.
        """
        import openai

        litellm = _litellm()
        chain = _chain(err)
        text = str(err).strip()
        message = self._scrub(text.splitlines()[0] if text else type(err).__name__)
        http_status = next((e.response.status_code for e in chain if isinstance(e, httpx.HTTPStatusError)), None)
        if any(isinstance(e, (openai.APITimeoutError, httpx.TimeoutException, TimeoutError)) for e in chain):
            return _Failure("timeout", f"no answer within {self.timeout_s:g}s")
        if http_status is None:
            if any(isinstance(e, (openai.APIConnectionError, httpx.TransportError, ConnectionError)) for e in chain):
                return _Failure("connection", message)
            if any(isinstance(e, (json.JSONDecodeError, litellm.APIError)) for e in chain):
                return _Failure("bad_response", message)
            # Raised before any request was sent (no key, unknown provider...): retrying cannot help.
            return _Failure("error", message, getattr(err, "status_code", None))
        if http_status == 429:
            return _Failure("rate_limited", message, 429, _retry_after_s(err))
        if http_status == 408 or http_status >= 500:
            return _Failure("server_error", message, http_status, _retry_after_s(err))
        return _Failure("error", message, http_status)

    def _scrub(self, text: str) -> str:
        """Error text as stored and raised: one line, short, without litellm's class-name preamble, and
        without the key even if a provider echoed it."""
        text = _LITELLM_PREAMBLE.sub("", text)
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text[:300]

    def _where(self) -> str:
        return f"the server at {self.api_base}" if self.api_base else f"the provider of {self.model!r}"

    def _fatal_message(self, failure: _Failure) -> str:
        """What failed for good, and what to do about it."""
        if failure.http_status in (401, 403):
            return (
                f"{self._where()} refused the credentials (HTTP {failure.http_status}): {self._key_hint()}. "
                f"({failure.message})"
            )
        if failure.http_status == 404:
            return (
                f"{self._where()} does not know model {self.model!r} (HTTP 404): check the model name "
                f"(litellm form provider/model) and api_base. ({failure.message})"
            )
        return f"cannot call {self.model!r}: {failure.message}"

    def _key_hint(self) -> str:
        """Where the key should come from: the one given, or the variables litellm reads for this provider."""
        if self._api_key:
            return "check the key given as api_key (agentarch.toml or AGENTARCH_API_KEY)"
        missing = _litellm().validate_environment(self.model).get("missing_keys") or []
        return (
            f"set {' or '.join(missing)} or give api_key"
            if missing
            else "set the provider's key variable or give api_key"
        )

    def _exhausted_message(self, failure: _Failure) -> str:
        """Why the call gave up after all retries, in terms of the fault that kept happening."""
        tried = f"{self.max_retries + 1} attempts"
        if failure.status == "connection":
            return (
                f"{self._where()} is not answering ({tried}): is it running, and is api_base right? ({failure.message})"
            )
        if failure.status == "timeout":
            return f"{self._where()} gave no answer within {self.timeout_s:g}s ({tried}): raise llm_timeout_s or use a faster model"
        if failure.status == "rate_limited":
            return f"{self._where()} kept rate-limiting ({tried}): lower the request rate or raise llm_retries. ({failure.message})"
        if failure.status == "bad_response":
            return f"{self._where()} kept giving unusable answers ({tried}): {failure.message}"
        return f"{self._where()} kept failing ({tried}): {failure.message}"

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
    ) -> None:
        """Count one attempt, and write its ledger row (when there is an archive), adding the id to `call_ids`."""
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
                            "error": error,
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "cost_usd": cost_usd,
                            "latency_s": round(latency_s, 4),
                        }
                    )
                )


def _chain(err: BaseException) -> list[BaseException]:
    """The exception and everything it was raised from or during, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _retry_after_s(err: Exception) -> float | None:
    """The server's Retry-After (seconds, or an HTTP date) or retry-after-ms, if it sent one.

    litellm rebuilds `err.response` without the provider's headers; it keeps them on
    `err.litellm_response_headers` (an httpx.Headers) instead.
    """
    headers = getattr(err, "litellm_response_headers", None) or getattr(getattr(err, "response", None), "headers", None)
    if not headers:
        return None
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _utf8_over(text: str, limit: int) -> bool:
    """Whether `text` is over `limit` bytes as UTF-8, without encoding a text that is over by its length alone."""
    return len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit


def _usage(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


def _cost(litellm: ModuleType, response: Any) -> float:
    """Price from litellm's bundled cost map; 0.0 for models it does not know (local servers, new models)."""
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:  # litellm raises several kinds for unmapped models; none of them should stop a run
        return 0.0
