"""The LLM client: one litellm call with our own retries, timeouts, cost ledger and spend counter.

litellm speaks to any provider (OpenAI, Anthropic, Ollama, vLLM...) by model string; what it does not
give us is a retry policy we can see and record. So litellm runs with its own (and the OpenAI SDK's)
retries off, and `LLMClient.complete` loops itself: every attempt, failed or not, lands in the
archive's `llm_calls` ledger with its status, tokens, cost and latency, so a run's spend and a
provider's flakiness are both visible afterwards.

Keys: only `api_key` (which the caller read from the environment or agentarch.toml) or litellm's
usual environment variables. A key is never logged, stored, or put in an error message.
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
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

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


class LLMError(AgentarchError, RuntimeError):
    """The call failed for good; the message says what to do. `call_ids` are the ledger rows of its attempts."""

    def __init__(self, message: str, call_ids: list[int] | None = None) -> None:
        super().__init__(message)
        self.call_ids: list[int] = call_ids or []


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
    return litellm


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
        max_tokens: int = 4096,
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
        self.archive = archive
        self.run_id = run_id
        self.spent_usd = 0.0
        self.attempts = 0
        self.faults: dict[str, int] = dict.fromkeys((*FAULTS, "error"), 0)
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
                failure = self._classify(err)
                self._record(
                    call_ids, purpose, attempt, failure.status, failure.message, latency_s=time.monotonic() - started
                )
                if failure.status == "error":
                    raise LLMError(self._fatal_message(failure), call_ids) from None
                continue
            latency = time.monotonic() - started
            prompt_tokens, completion_tokens = _usage(response)
            attempt_cost = _cost(litellm, response)
            cost += attempt_cost
            choice = response.choices[0] if response.choices else None
            text = choice.message.content if choice is not None else None
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
        import httpx
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


def _usage(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


def _cost(litellm: ModuleType, response: Any) -> float:
    """Price from litellm's bundled cost map; 0.0 for models it does not know (local servers, new models)."""
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:  # litellm raises several kinds for unmapped models; none of them should stop a run
        return 0.0
