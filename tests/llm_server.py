"""A real HTTP server on 127.0.0.1 that speaks OpenAI's chat-completions API and replays a script.

Tests of the LLM client and of the whole agent loop talk to it through litellm exactly as they would
talk to vLLM, Ollama or OpenAI, so retries, timeouts and parsing are exercised over a real socket
without any network or key. Each request takes the next scripted reply; the script can also inject
the failures a real provider produces (429 with Retry-After, 5xx, slow answers, broken bodies).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PATHS = ("/v1/chat/completions", "/chat/completions")


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


Responder = Callable[[dict[str, Any]], "Reply | str"]


class ScriptedLLMServer:
    """Answers POST /v1/chat/completions from `script`, then from `default` once the script is used up.

    Use as a context manager; `url` is the `api_base` to hand to the client and `requests` holds
    every request body received, in order.
    """

    def __init__(self, script: Iterable[Reply | str] = (), default: Reply | str | Responder | None = None) -> None:
        self._script: deque[Reply | str] = deque(script)
        self._default = default
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
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

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        """Record the request and pick its answer (thread-safe: concurrent requests take distinct entries)."""
        with self._lock:
            self.requests.append(body)
            entry = self._script.popleft() if self._script else None
        if entry is None:
            if self._default is None:
                return _error_reply(500, "the scripted LLM server's script ran out", "script_exhausted")
            entry = self._default(body) if callable(self._default) else self._default
        return Reply(content=entry) if isinstance(entry, str) else entry

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.split("?")[0].rstrip("/") not in _PATHS:
                    self._send(_error_reply(404, f"no route {self.path}", "not_found"), {})
                    return
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(_error_reply(400, "request body is not JSON", "invalid_json"), {})
                    return
                reply = server._next_reply(body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                self._send(reply, body)

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
