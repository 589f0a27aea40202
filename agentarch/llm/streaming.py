"""What arrives over the wire: the answer's size held to its cap as it comes, and a streamed answer read token by
token under honest deadlines.

One wall clock for a whole answer is wrong both ways: a slow local model writing a long module at a steady ten
tokens a second "times out", and a server that went silent after its first token is waited on for the full
limit. So a streamed call is watched (`Watch`) by three deadlines: the first token within
`llm_first_token_timeout_s` of sending (the server reading the prompt), no gap between chunks longer than
`llm_stall_timeout_s`, and, once `RATE_AFTER_S` have passed since the first token, at least
`llm_min_tokens_per_s`. When one passes, the watch shuts the connection's socket down: the thread reading it
wakes at once, and the server sees the disconnect (llama.cpp and vLLM then stop generating for it), so an
abandoned call is cancelled before any retry is sent.

The answer cap (`max_answer_bytes`) holds for both kinds of body. `_cap_body` runs as an httpx response hook of
litellm's HTTP client before a body is read: it refuses a declared length over what an answer within the cap can
take, a compressed body, and wraps the rest in `_CappedStream`, which stops reading past that size. A streamed
body carries an event envelope per token, so its byte limit allows `SSE_EVENT_BYTES` per token on top; the text
itself is held to the cap as it accumulates (`read_stream`). A server that ignores `stream` and answers with one
JSON completion is read too: `_CappedStream` keeps such a body (within the cap) for `read_stream` to parse.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

RATE_AFTER_S = 60.0
"""The slowest-rate check starts this long after the first token: the start of an answer is often slower."""
SEND_GRACE_S = 30.0
"""Before the request is seen going out (a provider whose HTTP client is not hooked), the first-token deadline
counts from the call's start plus this: litellm's own preparation is not the server's time."""
SSE_EVENT_BYTES = 1024
"""What a streamed body may carry around each token: one server-sent event's JSON envelope (llama.cpp's with its
timings is about 400 bytes)."""
JSON_INFLATION = 6
"""How much larger an answer's JSON body may be than the answer: JSON writes a control character as 6 bytes."""
BODY_OVERHEAD = 64 * 1024

# litellm fetches its model price map from GitHub at import time unless told to use the bundled copy;
# runs must start (and tests must pass) without network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# The call this thread is making (None outside LLMClient.complete): its caps and its watch, read by the HTTP hook.
_arrival = threading.local()


class OverCap(Exception):
    """An answer over the cap, raised inside httpx (or after parsing); `seen` says what showed it, in words."""

    def __init__(self, seen: str, measured: bool = True) -> None:
        super().__init__(seen)
        self.seen = seen
        self.measured = measured  # False: refused because its size could not be known as it arrived


class Cut(Exception):
    """The watch cut a streamed call: `reason` says which deadline passed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Caps:
    """The byte limits of one call's HTTP body: a plain JSON completion's, and a streamed body's (an event per token)."""

    answer_bytes: int
    json_bytes: int
    stream_bytes: int

    @classmethod
    def of(cls, max_answer_bytes: int, max_tokens: int) -> Caps:
        plain = max_answer_bytes * JSON_INFLATION + BODY_OVERHEAD
        return cls(max_answer_bytes, plain, plain + SSE_EVENT_BYTES * (max_tokens + 64))


@contextlib.contextmanager
def arriving(caps: Caps, watch: Watch | None) -> Iterator[None]:
    """Within the block, HTTP bodies this thread receives are held to `caps` and watched by `watch`."""
    _arrival.caps, _arrival.watch = caps, watch
    try:
        yield
    finally:
        _arrival.caps = _arrival.watch = None


_import_lock = threading.Lock()


def litellm() -> Any:
    """Import litellm on first use (it takes seconds) and keep it quiet: no banners, no feedback links; its HTTP
    client for OpenAI-compatible servers is ours (`capped_session`). Locked: the loop's first calls come from
    several threads at once, and each must find litellm set up once (a second setup wrapped every body twice)."""
    with _import_lock:
        return _setup_litellm()


@functools.cache
def _setup_litellm() -> Any:
    import litellm as module

    module.suppress_debug_info = True
    module.disable_hf_tokenizer_download = True  # count with the bundled tiktoken, never fetch a tokenizer at run time
    module.client_session = capped_session()
    return module


def capped_session() -> httpx.Client:
    """The HTTP client litellm would build for OpenAI-compatible calls, asking for uncompressed bodies (so the size
    read is the size held) and checking each response's body against the cap of the call that asked for it. The
    client may be litellm's shared one: its hooks are added once, however often this is called."""
    try:
        from litellm.llms.openai.common_utils import BaseOpenAILLM

        session = BaseOpenAILLM._get_sync_http_client() or httpx.Client(follow_redirects=True)
    except (ImportError, AttributeError):  # litellm moved it: its defaults are httpx's, which is what we build
        session = httpx.Client(follow_redirects=True)
    session.headers["Accept-Encoding"] = "identity"
    for event, hook in (("request", _sending), ("response", _cap_body)):
        if hook not in session.event_hooks[event]:
            session.event_hooks[event].append(hook)
    return session


def _sending(request: httpx.Request) -> None:
    """httpx request hook, run as the request goes out: the first-token deadline counts from here, not from the
    seconds litellm spends preparing the call."""
    watch: Watch | None = getattr(_arrival, "watch", None)
    if watch is not None:
        watch.sent()
        # A watched call gets a connection of its own, and the watch its socket as soon as it is connected: a call
        # queued at a single-slot server gets no headers until its turn, and must be cut (closed) before then too.
        request.headers["Connection"] = "close"
        request.extensions["trace"] = watch.trace


def _cap_body(response: httpx.Response) -> None:
    """httpx response hook, run before the body is read: refuse a body declared larger than an answer within the
    cap can make, or compressed (its size read would not be its size held), and stop reading one that grows past it.
    It hands the connection to the call's watch. Outside `LLMClient.complete` (no caps in this thread) it does
    nothing."""
    caps: Caps | None = getattr(_arrival, "caps", None)
    if caps is None:
        return
    watch: Watch | None = getattr(_arrival, "watch", None)
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = caps.stream_bytes if kind == "text/event-stream" else caps.json_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        response.close()
        raise OverCap(f"its HTTP body declares {int(declared):,} bytes")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        response.close()
        raise OverCap(f"its HTTP body is compressed ({encoding}), which agentarch did not ask for", False)
    keep = watch is not None and kind != "text/event-stream" and response.status_code == 200
    if watch is not None:
        watch.attach(response)
        if keep:  # a whole completion instead of a stream: its answer is here, only the body is left to read
            watch.progress(0)
    response.stream = _CappedStream(response.stream, limit, watch if keep else None)


class _CappedStream(httpx.SyncByteStream):
    """A response body that raises OverCap once more than `limit` bytes have arrived (a body without a length).
    With `keep`, the bytes are also kept on that watch (`plain_body`): a JSON answer to a request for a stream."""

    def __init__(self, stream: httpx.SyncByteStream, limit: int, keep: Watch | None = None) -> None:
        self._stream = stream
        self._limit = limit
        self._keep = keep

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._stream:
            seen += len(chunk)
            if seen > self._limit:
                raise OverCap(f"its HTTP body passed {seen:,} bytes")
            if self._keep is not None:
                self._keep.plain_body += chunk
            yield chunk

    def close(self) -> None:
        self._stream.close()


_watches: weakref.WeakSet[Watch] = weakref.WeakSet()
_watches_lock = threading.Lock()


def cut_all(reason: str) -> int:
    """Cut every streamed call in flight in this process (a run being interrupted); returns how many."""
    with _watches_lock:
        live = list(_watches)
    for watch in live:
        watch.cut(reason)
    return len(live)


class Watch:
    """The deadlines of one streamed attempt. A thread of its own waits for the next deadline and, when it passes,
    shuts the connection down (or, before the connection is known, marks the call cut for the reader to stop)."""

    def __init__(self, first_token_s: float, stall_s: float, min_rate: float, rate_after_s: float | None = None):
        self.first_token_s = first_token_s
        self.stall_s = stall_s
        self.min_rate = min_rate
        self.rate_after_s = RATE_AFTER_S if rate_after_s is None else rate_after_s
        self.started = time.monotonic()
        self.sent_at: float | None = None  # when the request went out (None: not yet, or a client we do not hook)
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.tokens = 0
        self.reason: str | None = None
        self.plain_body = bytearray()
        self._socket: socket.socket | None = None
        self._response: httpx.Response | None = None
        self._cond = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="llm-watch", daemon=True)

    def __enter__(self) -> Watch:
        with _watches_lock:
            _watches.add(self)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        with _watches_lock:
            _watches.discard(self)
        self.close()

    def attach(self, response: httpx.Response) -> None:
        """The connection the answer arrives on (from the HTTP hook), so a cut can close it."""
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._cond:
            self._response = response
            self._socket = sock if isinstance(sock, socket.socket) else None
            if self.reason is not None:
                self._shutdown()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace of the call's request: the socket, once connected, before any byte of the answer."""
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with self._cond:
                self._socket = sock
                if self.reason is not None:
                    self._shutdown()

    def progress(self, tokens: int = 1) -> None:
        """A chunk with `tokens` tokens arrived."""
        now = time.monotonic()
        with self._cond:
            if self.first_at is None:  # the next deadline is now a stall's, likely sooner: the watch thread re-reads it
                self.first_at = now
                self._cond.notify_all()
            self.last_at = now
            self.tokens += tokens

    def sent(self) -> None:
        """The request went out: the first-token deadline counts from now."""
        with self._cond:
            self.sent_at = time.monotonic()
            self._cond.notify_all()

    @property
    def first_token_after_s(self) -> float | None:
        return None if self.first_at is None else self.first_at - (self.sent_at or self.started)

    def cut(self, reason: str) -> None:
        """Stop the call now: remember why, and shut its connection down so the reader wakes and the server sees
        the client go."""
        with self._cond:
            if self.reason is None:
                self.reason = reason
            self._shutdown()
            self._cond.notify_all()

    def check(self) -> None:
        """Raise Cut if the call was cut (the reader calls this between chunks)."""
        if self.reason is not None:
            raise Cut(self.reason)

    def close(self) -> None:
        """Close the connection's response, whatever state it is in (a no-op once closed)."""
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()

    def _deadline(self) -> tuple[float, str]:
        if self.first_at is None or self.last_at is None:
            since = self.sent_at if self.sent_at is not None else self.started + SEND_GRACE_S
            return since + self.first_token_s, f"no first token within {self.first_token_s:g}s"
        deadline, why = self.last_at + self.stall_s, f"the answer stalled: no token for {self.stall_s:g}s"
        if self.min_rate > 0:
            slow = self.first_at + max(self.rate_after_s, self.tokens / self.min_rate)
            if slow < deadline:
                deadline = slow
                why = (
                    f"the answer streamed slower than {self.min_rate:g} tokens/s "
                    f"({self.tokens} tokens in {slow - self.first_at:.0f}s)"
                )
        return deadline, why

    def _run(self) -> None:
        with self._cond:
            while not self._done and self.reason is None:
                deadline, why = self._deadline()
                now = time.monotonic()
                if now >= deadline:
                    self.reason = why
                    self._shutdown()
                    return
                self._cond.wait(deadline - now)

    def _shutdown(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)


@dataclass
class Streamed:
    """A streamed answer as it came: its text, why it ended, its usage (None where the server sent none), the
    number of chunks that carried text (about one token each) and when the first one came."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    chunks: int
    first_token_s: float | None
    cost_response: Any = None  # a plain JSON completion, when the server did not stream


def read_stream(stream: Iterable[Any], watch: Watch, caps: Caps) -> Streamed:
    """Read a litellm stream to its end under the watch: the text held to the cap as it grows (OverCap past it,
    the connection cut), each chunk with text or reasoning counted as progress. A server that answered a stream
    request with one JSON completion is read from the body the watch kept."""
    parts: list[str] = []
    size = 0
    finish: str | None = None
    usage: Any = None
    chunks = 0
    for chunk in stream:
        watch.check()
        usage = getattr(chunk, "usage", None) or usage
        choices = getattr(chunk, "choices", None) or []
        if not choices:
            continue
        choice = choices[0]
        finish = getattr(choice, "finish_reason", None) or finish
        delta = getattr(choice, "delta", None)
        text = getattr(delta, "content", None) if delta is not None else None
        thought = getattr(delta, "reasoning_content", None) if delta is not None else None
        if text or thought:
            chunks += 1
            watch.progress()
        if text:
            parts.append(text)
            size += len(text.encode("utf-8", "surrogatepass"))
            if size > caps.answer_bytes:
                watch.cut("the answer passed the byte cap")
                raise OverCap(
                    f"it passed {caps.answer_bytes:,} bytes as it streamed ({sum(map(len, parts)):,} characters)"
                )
    watch.check()
    if not parts and watch.plain_body:
        return _plain(bytes(watch.plain_body), watch)
    prompt, completion = _usage_of(usage)
    return Streamed("".join(parts), finish, prompt, completion, chunks, watch.first_token_after_s)


def _plain(body: bytes, watch: Watch) -> Streamed:
    """A server that ignored `stream` sent one chat.completion: its text, finish reason and usage."""
    try:
        data = json.loads(body)
        choice = (data.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        finish = choice.get("finish_reason")
        usage = data.get("usage") or {}
        prompt, completion = usage_count(usage.get("prompt_tokens")), usage_count(usage.get("completion_tokens"))
    except (ValueError, AttributeError, TypeError, IndexError) as err:
        raise ValueError(f"the server answered a stream request with a body that is not a completion ({err})") from None
    if not isinstance(text, str):
        raise ValueError("the server's completion holds no text")
    return Streamed(
        text,
        finish if isinstance(finish, str) else None,
        prompt,
        completion,
        1 if text else 0,
        time.monotonic() - watch.started,
        cost_response=data,
    )


def _usage_of(usage: Any) -> tuple[int | None, int | None]:
    if usage is None:
        return None, None
    return usage_count(getattr(usage, "prompt_tokens", None)), usage_count(getattr(usage, "completion_tokens", None))


def usage_count(value: Any) -> int | None:
    """A server's token count, or None where it is none (not an int, a bool, or below zero): a negative count would
    price to a negative cost and lower the run's spend under --max-cost, so the caller uses its estimate instead."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
