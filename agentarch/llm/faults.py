"""What went wrong with an LLM call, in words a person can act on: the errors a call ends with, and each failed
attempt sorted by what actually happened (reading the exception chain under litellm's), with the message that
says what to do. The client's retry policy reads the sort; nothing here sends a request.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from dataclasses import dataclass

import httpx

from agentarch.errors import AgentarchError
from agentarch.llm import window as windows
from agentarch.llm.streaming import Cut, Watch, litellm

# "litellm.InternalServerError: InternalServerError: OpenAIException - <what the server said>"
_LITELLM_PREAMBLE = re.compile(r"^litellm\.\w+:\s*(\w+Error:\s*)?(\w+Exception\s*-\s*)?")


class LLMError(AgentarchError, RuntimeError):
    """The call failed for good; the message says what to do. `call_ids` are the ledger rows of its attempts."""

    def __init__(self, message: str, call_ids: list[int] | None = None) -> None:
        super().__init__(message)
        self.call_ids: list[int] = call_ids or []


class AnswerTooLarge(LLMError):
    """An answer over `max_answer_bytes`, refused where it arrived and not retried: a model that ran away once is
    likely to again, and every try is billed. The loop records it like any failed call."""


class ContextOverflow(LLMError):
    """The prompt and the answer's budget do not fit the model's window, even shortened (or the server refused the
    shortened retry too); the message gives the sizes and what to change."""


class LLMCancelled(LLMError):
    """The run is stopping (`interrupt`): the call gave up its turn or was cut, and is not retried."""


@dataclass
class Failure:
    """One failed attempt, classified: `status` is a ledger status, `retry_after_s` the server's wish."""

    status: str
    message: str
    http_status: int | None = None
    retry_after_s: float | None = None
    overflow: windows.Overflow | None = None


class Diagnosis:
    """The client's half that sorts failed attempts and words its errors (LLMClient derives from it): it reads
    the client's model, api_base, key, stream and timeout settings."""

    model: str
    api_base: str | None
    _api_key: str | None
    stream: bool
    timeout_s: float
    first_token_timeout_s: float
    max_retries: int

    def _classify(self, err: Exception, watch: Watch | None = None) -> Failure:
        """Sort a litellm exception by what actually happened, reading the exception chain.

        litellm's top-level class is not reliable for this: a 401 without "invalid key" in the body
        arrives as BadRequestError, and a refused connection, an unparseable body and a missing key
        all arrive as InternalServerError(500). The original httpx/openai/json exception underneath
        says what happened; the real HTTP status is on the httpx.HTTPStatusError in the chain. A streamed
        call its watch cut is a timeout (or cancelled), whatever the reader saw of the closed connection.
        """
        import openai

        lite = litellm()
        chain = chain_of(err)
        text = str(err).strip()
        message = self._scrub(text.splitlines()[0] if text else type(err).__name__)
        reason = watch.reason if watch is not None else next((e.reason for e in chain if isinstance(e, Cut)), None)
        if reason is not None:
            return Failure("cancelled" if reason.startswith("cancelled") else "timeout", reason)
        http_status = next((e.response.status_code for e in chain if isinstance(e, httpx.HTTPStatusError)), None)
        if any(isinstance(e, (openai.APITimeoutError, httpx.TimeoutException, TimeoutError)) for e in chain):
            waited = self.first_token_timeout_s if self.stream else self.timeout_s
            return Failure("timeout", f"no {'first token' if self.stream else 'answer'} within {waited:g}s")
        said = any(isinstance(e, lite.ContextWindowExceededError) for e in chain)
        overflow = windows.overflow_of(text, said) if said or http_status in (400, 413, 422, 500) else None
        if overflow is not None:
            return Failure("too_long", message, http_status, overflow=overflow)
        if http_status is None:
            if any(isinstance(e, (openai.APIConnectionError, httpx.TransportError, ConnectionError)) for e in chain):
                return Failure("connection", message)
            if any(isinstance(e, (json.JSONDecodeError, ValueError, lite.APIError)) for e in chain):
                return Failure("bad_response", message)
            # Raised before any request was sent (no key, unknown provider...): retrying cannot help.
            return Failure("error", message, getattr(err, "status_code", None))
        if http_status == 429:
            return Failure("rate_limited", message, 429, _retry_after_s(err))
        if http_status == 408 or http_status >= 500:
            return Failure("server_error", message, http_status, _retry_after_s(err))
        return Failure("error", message, http_status)

    def _scrub(self, text: str) -> str:
        """Error text as stored and raised: one line, short, without litellm's class-name preamble, and
        without the key even if a provider echoed it."""
        text = _LITELLM_PREAMBLE.sub("", text)
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text[:300]

    def _where(self) -> str:
        return f"the server at {self.api_base}" if self.api_base else f"the provider of {self.model!r}"

    def _fatal_message(self, failure: Failure) -> str:
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
        missing = litellm().validate_environment(self.model).get("missing_keys") or []
        return (
            f"set {' or '.join(missing)} or give api_key"
            if missing
            else "set the provider's key variable or give api_key"
        )

    def _exhausted_message(self, failure: Failure) -> str:
        """Why the call gave up after all retries, in terms of the fault that kept happening."""
        tried = f"{self.max_retries + 1} attempts"
        if failure.status == "connection":
            return (
                f"{self._where()} is not answering ({tried}): is it running, and is api_base right? ({failure.message})"
            )
        if failure.status == "timeout":
            setting = "llm_first_token_timeout_s / llm_stall_timeout_s" if self.stream else "llm_timeout_s"
            return f"{self._where()} kept timing out ({tried}; last: {failure.message}): raise {setting} or use a faster model"
        if failure.status == "rate_limited":
            return f"{self._where()} kept rate-limiting ({tried}): lower the request rate or raise llm_retries. ({failure.message})"
        if failure.status == "bad_response":
            return f"{self._where()} kept giving unusable answers ({tried}): {failure.message}"
        return f"{self._where()} kept failing ({tried}): {failure.message}"


def chain_of(err: BaseException) -> list[BaseException]:
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
