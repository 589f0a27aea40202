"""A real HTTP server on 127.0.0.1 that speaks OpenAI's chat-completions API and replays a script.

Tests of the LLM client and of the whole agent loop talk to it through litellm exactly as they would
talk to vLLM, Ollama or OpenAI, so retries, timeouts and parsing are exercised over a real socket
without any network or key. Each request takes the next scripted reply; the script can also inject
the failures a real provider produces (429 with Retry-After, 5xx, slow answers, broken bodies).

By default it answers every request with one JSON completion, even one that asks for a stream (as a server
that ignores `stream` does). It can also play a local model's server:

- `stream=True`: stream requests get server-sent events, one per piece of the answer, after the reply's
  `first_token_delay_s`, with `chunk_delay_s` between pieces, a `stall_s` pause after `stall_after` pieces,
  and usage in a last event when the request asks for it (`stream_options.include_usage`);
- `slots=N`: at most N requests are answered at once, the others wait in the server's queue, as llama.cpp's
  slots do; `most_in_flight` is the most requests it held at once (queued ones included);
- `props=True`: llama.cpp's GET /props (`total_slots`, `n_ctx`), GET /slots and POST /tokenize; by default
  (None) GET /props says only `total_slots`: `slots`, else `PARALLEL` (this server answers that many at once
  and more, so a client need not queue its calls); `props=False`: a server that says nothing of itself;
  `models=True`: GET /v1/models with vLLM's `max_model_len`;
- `context_tokens=N`: a request whose prompt (counted by `count_tokens`, a tokenizer unlike litellm's) and
  `max_tokens` exceed N is refused as OpenAI and vLLM refuse it (HTTP 400, `context_length_exceeded`),
  and listed in `oversized`.

A client that hangs up while the server waits or streams is seen at once (the socket polled) and its request's
index is listed in `disconnects`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PATHS = ("/v1/chat/completions", "/chat/completions")
PARALLEL = 16
"""The slots the stand-in reports when not told otherwise: a threading server answers any number at once."""


@dataclass
class Reply:
    """One scripted answer: a normal completion, or an error/failure of the given kind."""

    content: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    raw_body: str | None = None
    finish_reason: str = "stop"
    prompt_tokens: int = 100
    completion_tokens: int = 50
    # streamed replies (a server built with stream=True, answering a request with "stream": true)
    first_token_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    stall_after: int | None = None  # pieces sent before the stall
    stall_s: float = 0.0
    pieces: int | None = None  # how many pieces the content streams in (default: about one per word, at most 400)


Responder = Callable[[dict[str, Any]], "Reply | str"]


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up (a timeout, a cut stream) is what these tests are about, not an error to print."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class ScriptedLLMServer:
    """Answers POST /v1/chat/completions from `script`, then from `default` once the script is used up.

    Use as a context manager; `url` is the `api_base` to hand to the client and `requests` holds
    every request body received, in order.
    """

    def __init__(
        self,
        script: Iterable[Reply | str] = (),
        default: Reply | str | Responder | None = None,
        *,
        stream: bool = False,
        slots: int | None = None,
        props: bool | None = None,
        models: bool = False,
        context_tokens: int | None = None,
    ) -> None:
        self._script: deque[Reply | str] = deque(script)
        self._default = default
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.stream = stream
        self.slots = slots
        self.props = props
        self.models = models
        self.context_tokens = context_tokens
        self._slots = threading.Semaphore(slots) if slots else None
        self.in_flight = 0
        self.most_in_flight = 0
        self.disconnects: list[int] = []  # indexes into `requests` of the requests whose client hung up
        self.oversized: list[int] = []  # requests refused as longer than the window
        self.prompt_counts: list[int] = []  # every chat request's prompt tokens, as this server counts them
        self.gets: list[str] = []  # paths of the GET and tokenize requests (the client asking about the server)
        self.events: list[tuple[float, str, int]] = []  # (monotonic time, "request" or "disconnect", request index)
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        # Handler threads may still be sleeping out a `delay_s` the client gave up on; they must
        # neither keep the test process alive nor make shutdown wait for them.
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="scripted-llm-server", daemon=True
        )

    def __enter__(self) -> ScriptedLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def push(self, *replies: Reply | str) -> None:
        """Append replies to the script."""
        with self._lock:
            self._script.extend(replies)

    def _next_reply(self, body: dict[str, Any]) -> tuple[int, Reply]:
        """Record the request and pick its answer (thread-safe: concurrent requests take distinct entries)."""
        with self._lock:
            index = len(self.requests)
            self.requests.append(body)
            self.events.append((time.monotonic(), "request", index))
            entry = self._script.popleft() if self._script else None
        return index, self._as_reply(entry, body)

    def _disconnected(self, index: int) -> None:
        with self._lock:
            self.disconnects.append(index)
            self.events.append((time.monotonic(), "disconnect", index))

    def _as_reply(self, entry: Reply | str | None, body: dict[str, Any]) -> Reply:
        if entry is None:
            if self._default is None:
                return _error_reply(500, "the scripted LLM server's script ran out", "script_exhausted")
            entry = self._default(body) if callable(self._default) else self._default
        return Reply(content=entry) if isinstance(entry, str) else entry

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?")[0].rstrip("/")
                server.gets.append(path)
                n_ctx = server.context_tokens or 4096
                if server.props is not False and path == "/props":
                    info: dict[str, Any] = {"total_slots": server.slots or PARALLEL}
                    if server.props:
                        info["default_generation_settings"] = {"n_ctx": n_ctx}
                    self._json(200, info)
                elif server.props and path == "/slots":
                    self._json(
                        200, [{"id": i, "n_ctx": n_ctx, "is_processing": False} for i in range(server.slots or 1)]
                    )
                elif server.models and path in ("/v1/models", "/models"):
                    self._json(200, {"object": "list", "data": [{"id": "scripted", "max_model_len": n_ctx}]})
                else:
                    self._json(404, _error_body(404, f"no route {path}", "not_found"))

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?")[0].rstrip("/")
                if server.props and path == "/tokenize":
                    server.gets.append(path)
                    text = json.loads(raw or b"{}").get("content", "")
                    self._json(200, {"tokens": list(range(count_text(text)))})
                    return
                if path not in _PATHS:
                    self._send(_error_reply(404, f"no route {self.path}", "not_found"), {})
                    return
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(_error_reply(400, "request body is not JSON", "invalid_json"), {})
                    return
                index, reply = server._next_reply(body)
                with server._lock:
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    if server._slots is not None:  # wait for a slot, as llama.cpp queues a request
                        while not server._slots.acquire(timeout=0.02):
                            if self._gone():
                                server._disconnected(index)
                                return
                    try:
                        self._answer(index, reply, body)
                    finally:
                        if server._slots is not None:
                            server._slots.release()
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, index: int, reply: Reply, body: dict[str, Any]) -> None:
                counted = count_tokens(body.get("messages") or [])
                server.prompt_counts.append(counted)
                if server.props or server.models or server.context_tokens is not None:
                    reply = dataclasses.replace(reply, prompt_tokens=counted)  # a model's server counts for real
                asked = int(body.get("max_tokens") or 0)
                if server.context_tokens is not None and counted + asked > server.context_tokens:
                    server.oversized.append(index)
                    message = (
                        f"This model's maximum context length is {server.context_tokens} tokens. However, you "
                        f"requested {counted + asked} tokens ({counted} in the messages, {asked} in the completion). "
                        "Please reduce the length of the messages or completion."
                    )
                    error = {"message": message, "type": "invalid_request_error", "param": "messages"}
                    self._json(400, {"error": {**error, "code": "context_length_exceeded"}})
                    return
                if server.stream and body.get("stream") and reply.raw_body is None and reply.status < 400:
                    self._stream(index, reply, body)
                    return
                if reply.delay_s and not self._wait(reply.delay_s):
                    server._disconnected(index)
                    return
                self._send(reply, body)

            def _stream(self, index: int, reply: Reply, body: dict[str, Any]) -> None:
                """Server-sent events: a piece of the content per event, then the finish reason, the usage when
                asked for, and [DONE]; a client gone while waiting or on a write is listed in `disconnects`."""
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                    if not self._wait(reply.first_token_delay_s):
                        raise BrokenPipeError
                    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk"}
                    base.update(created=int(time.time()), model=body.get("model", "scripted"))
                    for n, piece in enumerate(_pieces(reply.content or "", reply.pieces)):
                        if n and not self._wait(reply.chunk_delay_s):
                            raise BrokenPipeError
                        if reply.stall_after is not None and n == reply.stall_after and not self._wait(reply.stall_s):
                            raise BrokenPipeError
                        delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                        self._event({**base, "choices": [delta]})
                    self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]})
                    if (body.get("stream_options") or {}).get("include_usage"):
                        usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
                        usage["total_tokens"] = reply.prompt_tokens + reply.completion_tokens
                        self._event({**base, "choices": [], "usage": usage})
                    self._chunk(b"data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    server._disconnected(index)
                self.close_connection = True

            def _event(self, data: dict[str, Any]) -> None:
                self._chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _wait(self, seconds: float) -> bool:
                """Sleep `seconds` while watching the client; False as soon as it hangs up."""
                deadline = time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    if self._gone(min(left, 0.02)):
                        return False
                return not self._gone()

            def _gone(self, wait_s: float = 0.0) -> bool:
                """Whether the client closed its end (its socket reads as ended)."""
                try:
                    readable, _, _ = select.select([self.connection], [], [], wait_s)
                    if not readable:
                        return False
                    return self.connection.recv(1, socket.MSG_PEEK) == b""
                except (OSError, ValueError):
                    return True

            def _json(self, status: int, data: Any) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _send(self, reply: Reply, body: dict[str, Any]) -> None:
                payload = (reply.raw_body if reply.raw_body is not None else json.dumps(_body(reply, body))).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    # The client timed out and hung up while we were sleeping: nothing left to answer.
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
                """Stay quiet: pytest output is for failures, not access logs."""

        return Handler


def _error_reply(status: int, message: str, code: str) -> Reply:
    return Reply(status=status, raw_body=json.dumps(_error_body(status, message, code)))


def _error_body(status: int, message: str, code: str) -> dict[str, Any]:
    kind = "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "code": code}}


def _body(reply: Reply, request: dict[str, Any]) -> dict[str, Any]:
    """The JSON body for a reply with no `raw_body`: a chat.completion, or OpenAI's error shape."""
    if reply.status >= 400:
        return _error_body(reply.status, reply.content or f"scripted HTTP {reply.status}", str(reply.status))
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "scripted"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content},
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def count_text(text: str) -> int:
    """This server's tokenizer: about 3.3 bytes of UTF-8 a token, as a small model's tokenizer counts code (more
    tokens than litellm's tiktoken count of the same text)."""
    return math.ceil(len(text.encode()) / 3.3)


def count_tokens(messages: list[dict[str, Any]]) -> int:
    """A prompt's tokens as this server counts them: each message's text, and 6 for the chat template around it."""
    return sum(count_text(str(m.get("content") or "")) + 6 for m in messages)


def _pieces(content: str, pieces: int | None) -> list[str]:
    """The content in `pieces` parts (default: a part per word, at most 400), joined they are the content."""
    if not content:
        return []
    words = content.split(" ")
    n = pieces or min(len(words), 400)
    n = max(1, min(n, len(content)))
    size = math.ceil(len(content) / n)
    return [content[i : i + size] for i in range(0, len(content), size)]
