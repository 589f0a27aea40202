"""How many calls a model takes at once, and what its server says about itself.

A llama.cpp server started with one slot answers one request at a time and queues the rest; a client that
sends three at once sees two of them "time out" while they wait, and its retries queue behind generations the
server keeps computing for clients that gave up. So every model has a concurrency limit, and every call passes
its `ModelGate`: one per (model, api_base) for the whole process, shared by each thread's LLMClient, so never
more calls are in flight to one server than its limit. The limit is, in this order: the spec's `~N`, the run's
`llm_concurrency`, what the server says (llama.cpp's GET /props `total_slots`, or the length of GET /slots),
then 1 for a local server (loopback or a private address) and `HOSTED_CONCURRENCY` for a hosted provider.
Waiting at the gate is counted apart (`queued`, `waited_s`): a progress view reads it, and no timeout does.

`server_info` asks the server once per process (short timeouts, small bodies, errors ignored) for its slots and
context window (llama.cpp /props and /slots, vLLM's GET /v1/models `max_model_len`), and how its tokenizer
counts a sample against litellm's (POST /tokenize), so prompts can be fitted before the first call.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from agentarch.errors import AgentarchError

HOSTED_CONCURRENCY = 8
"""Calls in flight at once to a hosted provider (no api_base, or a public one that does not say)."""
LOCAL_CONCURRENCY = 1
"""Calls in flight at once to a local server that does not say how many slots it has: one, as llama.cpp's default."""
PROBE_TIMEOUT_S = 3.0
PROBE_MAX_BYTES = 1_000_000
# What the server's tokenizer is asked to count once, against litellm's count of the same text: code and prose,
# as a prompt holds both.
TOKENIZER_SAMPLE = (
    "class Net(nn.Module):\n    def __init__(self, in_shape: tuple[int, ...], num_classes: int) -> None:\n"
    "        super().__init__()\n        channels, height, width = in_shape\n"
    "        self.stem = nn.Sequential(nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.GELU())\n"
    "        self.head = nn.Linear(32, num_classes)\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
    "        return self.head(self.stem(x).mean(dim=(2, 3)))\n\n"
    "- Validation accuracy: 97.22%\n- Parameters: 12,810\n"
    "Design a new architecture for digits that reaches a higher validation accuracy than the parent, candidate 12.\n"
)


class Cancelled(AgentarchError, RuntimeError):
    """The run asked every LLM call to stop (`interrupt_calls`): a call waiting at a gate gives up its turn."""


_interrupted = threading.Event()


def interrupt_calls() -> None:
    """Make every call waiting at a gate, and every call started from now on, stop with `Cancelled` (the client
    also cuts the streams in flight); `resume_calls` lets calls through again."""
    _interrupted.set()
    for gate in gates():
        with gate._cond:
            gate._cond.notify_all()


def resume_calls() -> None:
    _interrupted.clear()


def interrupted() -> bool:
    return _interrupted.is_set()


@dataclass
class ModelGate:
    """The calls of one model at one server: at most `limit` in flight, the rest queued in arrival order."""

    model: str
    api_base: str | None
    limit: int
    source: str  # where the limit came from, in words: "the spec's ~2", "the server's /props (total_slots)", ...
    in_flight: int = 0
    queued: int = 0
    calls: int = 0  # calls that got through
    waited_s: float = 0.0  # time all calls spent queued here
    most_in_flight: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False, compare=False)
    _waiting: deque[object] = field(default_factory=deque, repr=False, compare=False)

    @contextlib.contextmanager
    def slot(self) -> Iterator[float]:
        """Hold one of the model's places for the duration of the block; yields the seconds waited for it. Callers
        go through in the order they came, so no thread starves; `interrupt_calls` makes the waiting ones give up."""
        started = time.monotonic()
        me = object()
        with self._cond:
            self._waiting.append(me)
            self.queued += 1
            try:
                while self.in_flight >= self.limit or self._waiting[0] is not me:
                    if _interrupted.is_set():
                        raise Cancelled(f"the call to {self.model} was cancelled while it waited for its turn")
                    self._cond.wait(0.5)
                if _interrupted.is_set():
                    raise Cancelled(f"the call to {self.model} was cancelled while it waited for its turn")
            finally:
                self._waiting.remove(me)
                self.queued -= 1
                self._cond.notify_all()
            waited = time.monotonic() - started
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.calls += 1
            self.waited_s += waited
        try:
            yield waited
        finally:
            with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    def snapshot(self) -> dict[str, object]:
        """The gate as plain data, for a progress view: model, server, limit, in flight, queued, waited."""
        with self._cond:
            return {
                "model": self.model,
                "api_base": self.api_base,
                "limit": self.limit,
                "source": self.source,
                "in_flight": self.in_flight,
                "queued": self.queued,
                "calls": self.calls,
                "waited_s": round(self.waited_s, 3),
            }


_gates: dict[tuple[str, str | None], ModelGate] = {}
_gates_lock = threading.Lock()


def gate_for(model: str, api_base: str | None, concurrency: int | None, api_key: str | None = None) -> ModelGate:
    """The process-wide gate of `model` at `api_base`, made on first use with its limit settled (asking the server
    once). A later explicit `concurrency` changes the limit of the gate every client shares."""
    key = (model, _normal(api_base))
    with _gates_lock:
        gate = _gates.get(key)
    if gate is None:
        limit, source = resolve_concurrency(api_base, concurrency, api_key)  # may ask the server: not under the lock
        with _gates_lock:
            return _gates.setdefault(key, ModelGate(model, api_base, limit, source))
    with _gates_lock:
        if concurrency is not None and concurrency != gate.limit:
            with gate._cond:
                gate.limit, gate.source = concurrency, f"set to {concurrency}"
                gate._cond.notify_all()
        return gate


def gates() -> list[ModelGate]:
    """Every gate of this process (one per model and server asked so far)."""
    with _gates_lock:
        return list(_gates.values())


def forget_gates() -> None:
    """Drop every gate and what servers said (tests; a long-lived process whose servers changed)."""
    with _gates_lock:
        _gates.clear()
    with _info_lock:
        _infos.clear()


def resolve_concurrency(api_base: str | None, concurrency: int | None, api_key: str | None = None) -> tuple[int, str]:
    """The limit and where it came from: the one given, else the server's slots, else by where the server is."""
    if concurrency is not None:
        return concurrency, f"given ({concurrency})"
    if api_base is None:
        return HOSTED_CONCURRENCY, f"a hosted provider's default ({HOSTED_CONCURRENCY})"
    info = server_info(api_base, api_key)
    if info.slots:
        return info.slots, f"the server's {info.slots_from}"
    if is_local(api_base):
        return LOCAL_CONCURRENCY, f"a local server that does not say its slots ({LOCAL_CONCURRENCY})"
    return HOSTED_CONCURRENCY, f"a remote server that does not say its slots ({HOSTED_CONCURRENCY})"


def is_local(api_base: str) -> bool:
    """Whether the server is on this machine or a private network: loopback, a private or link-local address, or a
    name that resolves only to such addresses (localhost, a .local name)."""
    host = urlsplit(api_base).hostname or ""
    if host in ("localhost", "host.docker.internal") or host.endswith((".local", ".localhost", ".internal")):
        return True
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)]
        except (OSError, ValueError):
            return False
    return bool(addresses) and all(a.is_private or a.is_loopback or a.is_link_local for a in addresses)


@dataclass
class ServerInfo:
    """What an OpenAI-compatible server said about itself; None where it said nothing."""

    slots: int | None = None
    slots_from: str = ""
    context_tokens: int | None = None
    context_from: str = ""
    tokens_per_sample: int | None = None  # its tokenizer's count of TOKENIZER_SAMPLE


_infos: dict[str, ServerInfo] = {}
_info_lock = threading.Lock()


_probing: dict[str | None, threading.Lock] = {}


def server_info(api_base: str, api_key: str | None = None, model: str | None = None) -> ServerInfo:
    """Ask the server once per process (per api_base) what it can tell: llama.cpp's /props and /slots, vLLM's and
    others' /v1/models, and a /tokenize of the sample. Every question is short and may fail: then it says nothing.
    Proposals that start together wait for the one probe rather than each asking the server."""
    base = _normal(api_base)
    with _info_lock:
        if base in _infos:
            return _infos[base]
        probing = _probing.setdefault(base, threading.Lock())
    with probing:
        with _info_lock:
            if base in _infos:
                return _infos[base]
        info = _probe(base, api_key, model)
        with _info_lock:
            return _infos.setdefault(base, info)


def remember_context(api_base: str | None, tokens: int, source: str) -> None:
    """A window learned later (a server's context-length error states it): what every later prompt is fitted to."""
    if api_base is None:
        return
    base = _normal(api_base)
    with _info_lock:
        info = _infos.setdefault(base, ServerInfo())
        if info.context_tokens is None or tokens < info.context_tokens:
            info.context_tokens, info.context_from = tokens, source


def _probe(base: str, api_key: str | None, model: str | None) -> ServerInfo:
    info = ServerInfo()
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(timeout=PROBE_TIMEOUT_S, headers=headers, follow_redirects=False) as http:
        props = _get_json(http, f"{root}/props")
        if isinstance(props, dict):
            slots = props.get("total_slots")
            if isinstance(slots, int) and slots > 0:
                info.slots, info.slots_from = slots, "/props (total_slots)"
            settings = props.get("default_generation_settings")
            n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
            n_ctx = n_ctx if isinstance(n_ctx, int) else props.get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:  # per slot: llama.cpp splits -c among its slots
                info.context_tokens, info.context_from = n_ctx, "/props (n_ctx)"
        if info.slots is None:
            slots = _get_json(http, f"{root}/slots")
            if isinstance(slots, list) and slots:
                info.slots, info.slots_from = len(slots), "/slots"
                if (
                    info.context_tokens is None
                    and isinstance(slots[0], dict)
                    and isinstance(slots[0].get("n_ctx"), int)
                ):
                    info.context_tokens, info.context_from = slots[0]["n_ctx"], "/slots (n_ctx)"
        if info.context_tokens is None:
            info.context_tokens, info.context_from = _models_window(_get_json(http, f"{base}/models"), model)
        info.tokens_per_sample = _tokenize(http, root, model)
    return info


def _models_window(listing: object, model: str | None) -> tuple[int | None, str]:
    """The context window in a GET /v1/models listing: vLLM's `max_model_len`, others' `context_length` or
    llama.cpp's `meta.n_ctx_train`, of the model asked for (or the only one)."""
    rows = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(rows, list) or not rows:
        return None, ""
    wanted = (model or "").split("/", 1)[-1]
    row = next((r for r in rows if isinstance(r, dict) and r.get("id") == wanted), rows[0] if len(rows) == 1 else None)
    if not isinstance(row, dict):
        return None, ""
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    for key, value in (("max_model_len", row.get("max_model_len")), ("context_length", row.get("context_length"))):
        if isinstance(value, int) and value > 0:
            return value, f"/v1/models ({key})"
    if isinstance(meta.get("n_ctx_train"), int):
        return meta["n_ctx_train"], "/v1/models (n_ctx_train)"
    return None, ""


def _tokenize(http: httpx.Client, root: str, model: str | None) -> int | None:
    """The server's own count of TOKENIZER_SAMPLE (llama.cpp: `content` → tokens; vLLM: `prompt` → count)."""
    body = {"content": TOKENIZER_SAMPLE, "prompt": TOKENIZER_SAMPLE, "add_special": False}
    if model:
        body["model"] = model.split("/", 1)[-1]
    answer = _post_json(http, f"{root}/tokenize", body)
    if not isinstance(answer, dict):
        return None
    count = answer.get("count")
    if isinstance(count, int) and count > 0:
        return count
    tokens = answer.get("tokens")
    return len(tokens) if isinstance(tokens, list) and tokens else None


def _get_json(http: httpx.Client, url: str) -> object:
    return _read_json(lambda: http.stream("GET", url))


def _post_json(http: httpx.Client, url: str, body: dict[str, object]) -> object:
    return _read_json(lambda: http.stream("POST", url, json=body))


def _read_json(open_: object) -> object:
    """A small JSON answer, or None for anything else (an error status, a large or broken body, no server)."""
    try:
        with open_() as response:  # type: ignore[operator]
            if response.status_code != 200:
                return None
            data = b""
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > PROBE_MAX_BYTES:
                    return None
        return json.loads(data)
    except (httpx.HTTPError, ValueError, OSError):
        return None


def _normal(api_base: str | None) -> str | None:
    return api_base.rstrip("/") if api_base else api_base
