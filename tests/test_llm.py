"""The LLM client against a real OpenAI-compatible HTTP server on loopback, through litellm for real.

Every failure a provider produces (429 with Retry-After, 5xx, slow answers, broken or empty bodies,
refused keys) is scripted on the server, and the client's behaviour is checked where it matters:
what it returns, how long it waited, and what the archive's ledger says afterwards.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agentarch.llm.client import Completion, LLMClient, LLMError
from agentarch.store.archive import Archive
from tests.llm_server import Reply, ScriptedLLMServer

KEY = "sk-test-SECRET-123"
MESSAGES = [
    {"role": "system", "content": "You design networks."},
    {"role": "user", "content": "Propose a Net with ünïcode and\nnewlines."},
]


@pytest.fixture
def archive(tmp_path: Path):
    with Archive(tmp_path / "a.db") as archive:
        yield archive


@pytest.fixture
def run_id(archive: Archive) -> str:
    return archive.start_run("llm-test", "digits", "llm", {})


def client(server: ScriptedLLMServer, archive: Archive | None, run_id: str | None, **overrides) -> LLMClient:
    options = dict(
        api_base=server.url,
        api_key=KEY,
        timeout_s=2.0,
        max_retries=3,
        backoff_s=0.01,
        max_backoff_s=0.05,
        archive=archive,
        run_id=run_id,
    )
    return LLMClient("openai/test-model", **{**options, **overrides})


def statuses(archive: Archive, run_id: str) -> list[str]:
    return [row["status"] for row in archive.llm_calls(run_id=run_id)]


def test_good_answer_is_returned_and_recorded(archive, run_id):
    with ScriptedLLMServer([Reply(content="class Net: ...", prompt_tokens=321, completion_tokens=45)]) as server:
        answer = client(server, archive, run_id, temperature=0.3, max_tokens=777).complete(MESSAGES, "propose")
    assert isinstance(answer, Completion)
    assert answer.text == "class Net: ..."
    assert (answer.prompt_tokens, answer.completion_tokens) == (321, 45)
    assert answer.finish_reason == "stop" and answer.model == "openai/test-model"
    assert 0 < answer.latency_s < 2
    [row] = archive.llm_calls(run_id=run_id)
    assert answer.call_ids == [row["id"]]
    assert row["status"] == "ok" and row["error"] is None and row["candidate_id"] is None
    assert (row["purpose"], row["model"], row["attempt"]) == ("propose", "openai/test-model", 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (321, 45)
    [request] = server.requests
    assert request["messages"] == MESSAGES
    assert request["model"] == "test-model"
    assert request["temperature"] == 0.3 and request["max_tokens"] == 777


def test_rate_limit_waits_as_long_as_retry_after_says(archive, run_id):
    script = [Reply(status=429, headers={"Retry-After": "1"}), "ok"]
    with ScriptedLLMServer(script) as server:
        llm = client(server, archive, run_id, max_backoff_s=5.0)
        started = time.monotonic()
        answer = llm.complete(MESSAGES, "propose")
        waited = time.monotonic() - started
    assert answer.text == "ok"
    assert waited >= 0.95
    assert statuses(archive, run_id) == ["rate_limited", "ok"]
    assert llm.faults["rate_limited"] == 1 and llm.attempts == 2
    assert len(answer.call_ids) == 2


def test_retry_after_beyond_the_cap_is_cut_to_max_backoff(archive, run_id):
    with ScriptedLLMServer([Reply(status=429, headers={"Retry-After": "3600"}), "ok"]) as server:
        started = time.monotonic()
        client(server, archive, run_id, max_backoff_s=0.1).complete(MESSAGES, "propose")
    assert time.monotonic() - started < 5


def test_server_errors_are_retried(archive, run_id):
    with ScriptedLLMServer([Reply(status=500), Reply(status=503), "fine"]) as server:
        llm = client(server, archive, run_id)
        answer = llm.complete(MESSAGES, "repair")
    assert answer.text == "fine"
    assert statuses(archive, run_id) == ["server_error", "server_error", "ok"]
    assert [row["attempt"] for row in archive.llm_calls(run_id=run_id)] == [1, 2, 3]
    assert llm.faults["server_error"] == 2


def test_a_slow_answer_times_out_and_is_retried(archive, run_id):
    with ScriptedLLMServer([Reply(content="late", delay_s=1.5), "in time"]) as server:
        started = time.monotonic()
        answer = client(server, archive, run_id, timeout_s=0.3).complete(MESSAGES, "propose")
    assert answer.text == "in time"
    assert time.monotonic() - started < 1.4  # did not wait for the slow answer
    assert statuses(archive, run_id) == ["timeout", "ok"]


@pytest.mark.parametrize("body", ["{not json", '{"id": "chatcmpl-1", "object": "chat.comp', ""])
def test_an_unparseable_body_is_retried(archive, run_id, body):
    with ScriptedLLMServer([Reply(raw_body=body), "parsed"]) as server:
        answer = client(server, archive, run_id).complete(MESSAGES, "propose")
    assert answer.text == "parsed"
    assert statuses(archive, run_id) == ["bad_response", "ok"]


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_an_empty_answer_is_retried_and_its_tokens_kept(archive, run_id, content):
    with ScriptedLLMServer([Reply(content=content, prompt_tokens=10, completion_tokens=0), "something"]) as server:
        answer = client(server, archive, run_id).complete(MESSAGES, "propose")
    assert answer.text == "something"
    empty, ok = archive.llm_calls(run_id=run_id)
    assert (empty["status"], empty["prompt_tokens"], ok["status"]) == ("bad_response", 10, "ok")


def test_a_truncated_answer_is_returned_with_its_finish_reason(archive, run_id):
    with ScriptedLLMServer([Reply(content="class Net(nn.Mod", finish_reason="length")]) as server:
        answer = client(server, archive, run_id).complete(MESSAGES, "propose")
    assert (answer.text, answer.finish_reason) == ("class Net(nn.Mod", "length")
    assert statuses(archive, run_id) == ["ok"]


def test_persistent_server_errors_give_up_after_max_retries(archive, run_id):
    with ScriptedLLMServer(default=Reply(status=500)) as server:
        with pytest.raises(LLMError, match="kept failing") as caught:
            client(server, archive, run_id, max_retries=2).complete(MESSAGES, "propose")
        assert len(server.requests) == 3
    rows = archive.llm_calls(run_id=run_id)
    assert caught.value.call_ids == [row["id"] for row in rows]
    assert [row["status"] for row in rows] == ["server_error"] * 3


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "refused the credentials"),
        (403, "refused the credentials"),
        (404, "does not know model"),
        (400, "cannot call"),
    ],
)
def test_client_errors_fail_at_once_with_a_hint(archive, run_id, status, hint):
    with ScriptedLLMServer([Reply(status=status, content=f"scripted {status}")], default="never asked") as server:
        with pytest.raises(LLMError, match=hint) as caught:
            client(server, archive, run_id).complete(MESSAGES, "propose")
        assert len(server.requests) == 1
    assert statuses(archive, run_id) == ["error"]
    assert len(caught.value.call_ids) == 1


def test_a_refused_key_names_the_variable_to_set(archive, run_id, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedLLMServer([Reply(status=401)]) as server:
        with pytest.raises(LLMError, match="OPENAI_API_KEY"):
            client(server, archive, run_id, api_key=None).complete(MESSAGES, "propose")


def test_a_local_server_needs_no_key(archive, run_id, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedLLMServer(["local answer"]) as server:
        assert client(server, archive, run_id, api_key=None).complete(MESSAGES, "propose").text == "local answer"


def test_a_server_that_is_not_running_is_reported_as_such():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = LLMClient("openai/test-model", api_base=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_s=0.01)
    with pytest.raises(LLMError, match=f"server at http://127.0.0.1:{port}/v1 is not answering") as caught:
        llm.complete(MESSAGES, "propose")
    assert llm.faults["connection"] == 2
    assert caught.value.call_ids == []  # no archive, no ledger


def test_the_key_is_never_stored_shown_or_raised(tmp_path, caplog):
    echoed = f"Incorrect API key provided: {KEY}"
    with (
        Archive(tmp_path / "a.db") as archive,
        ScriptedLLMServer([Reply(status=500, content=echoed), "ok", Reply(status=401, content=echoed)]) as server,
    ):
        run_id = archive.start_run("llm-test", "digits", "llm", {})
        llm = client(server, archive, run_id)
        llm.complete(MESSAGES, "propose")
        with pytest.raises(LLMError) as caught:
            llm.complete(MESSAGES, "propose")
        rows = archive.llm_calls(run_id=run_id)
    assert "***" in rows[0]["error"]  # the echo was scrubbed, not dropped
    shown = [str(caught.value), repr(caught.value), repr(llm), json.dumps(rows), caplog.text]
    assert not [text for text in shown if KEY in text]
    files = list(tmp_path.glob("a.db*"))
    assert files and not [path for path in files if KEY.encode() in path.read_bytes()]


def test_cost_is_zero_for_models_litellm_cannot_price(archive, run_id):
    with ScriptedLLMServer(["a", "b"]) as server:
        llm = client(server, archive, run_id)
        assert llm.complete(MESSAGES, "propose").cost_usd == 0.0
        llm.complete(MESSAGES, "analyze")
    assert llm.spent_usd == 0.0 and archive.spent_usd(run_id) == 0.0


def test_cost_of_a_known_model_is_priced_offline_and_summed(archive, run_id):
    import litellm

    price = litellm.model_cost["gpt-4o-mini"]
    expected = 1000 * price["input_cost_per_token"] + 200 * price["output_cost_per_token"]
    reply = Reply(content="priced", prompt_tokens=1000, completion_tokens=200)
    with ScriptedLLMServer([reply, Reply(content=None, prompt_tokens=1000, completion_tokens=200), reply]) as server:
        llm = LLMClient(
            "openai/gpt-4o-mini", api_base=server.url, api_key=KEY, backoff_s=0.01, archive=archive, run_id=run_id
        )
        first = llm.complete(MESSAGES, "propose")
        second = llm.complete(MESSAGES, "propose")  # an empty answer is billed, then retried
    assert expected > 0
    assert first.cost_usd == pytest.approx(expected)
    assert second.cost_usd == pytest.approx(2 * expected)
    assert llm.spent_usd == pytest.approx(3 * expected)
    assert archive.spent_usd(run_id) == pytest.approx(3 * expected)


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_server_speaks_openai_and_falls_back_to_default():
    echo = lambda body: Reply(content=body["messages"][-1]["content"].upper(), finish_reason="length")  # noqa: E731
    with ScriptedLLMServer(["scripted"], default=echo) as server:
        status, first = post(server.url, {"model": "m1", "messages": [{"role": "user", "content": "hi"}]})
        server.push(Reply(status=503, content="overloaded"))
        _, pushed = post(server.url, {"model": "m1", "messages": []})
        _, echoed = post(server.url, {"model": "m2", "messages": [{"role": "user", "content": "shout"}]})
        assert len(server.requests) == 3 and server.requests[2]["model"] == "m2"
    assert status == 200 and first["object"] == "chat.completion" and first["model"] == "m1"
    assert first["choices"][0]["message"] == {"role": "assistant", "content": "scripted"}
    assert first["usage"] == {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    assert pushed["error"]["message"] == "overloaded" and set(pushed["error"]) == {"message", "type", "code"}
    assert echoed["choices"][0]["message"]["content"] == "SHOUT" and echoed["choices"][0]["finish_reason"] == "length"


def test_server_without_default_says_the_script_ran_out():
    with ScriptedLLMServer() as server:
        status, body = post(server.url, {"model": "m", "messages": []})
    assert status == 500 and "script ran out" in body["error"]["message"]


def test_a_client_that_does_not_stream_waits_one_wall_clock_for_the_whole_answer(archive, run_id):
    with ScriptedLLMServer([Reply(content="late", delay_s=1.0), "in time"], stream=True) as server:
        llm = client(server, archive, run_id, stream=False, timeout_s=0.4)
        answer = llm.complete(MESSAGES, "propose")
        assert "stream" not in server.requests[0]
    assert (answer.text, answer.streamed_tokens) == ("in time", None)
    assert statuses(archive, run_id) == ["timeout", "ok"]
    assert "no answer within 0.4s" in archive.llm_calls(run_id=run_id)[0]["error"]


def test_a_server_that_ignores_stream_is_read_from_its_one_json_answer(archive, run_id):
    """The stand-in's default, like an OpenAI-compatible proxy that does not stream: the client asked for a stream,
    got a chat.completion, and reads its text, finish reason and usage."""
    reply = Reply(content="whole", finish_reason="length", prompt_tokens=12, completion_tokens=3)
    with ScriptedLLMServer([reply]) as server:
        answer = client(server, archive, run_id).complete(MESSAGES, "propose")
        assert server.requests[0]["stream"] is True
    assert (answer.text, answer.finish_reason, answer.prompt_tokens, answer.completion_tokens) == (
        "whole",
        "length",
        12,
        3,
    )


def get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_server_plays_a_local_model_streams_events_and_says_what_it_is():
    reply = Reply(content="one two three", pieces=3, prompt_tokens=9, completion_tokens=3)
    with ScriptedLLMServer([reply], stream=True, props=True, slots=2, context_tokens=100) as server:
        root = server.url.removesuffix("/v1")
        assert get(f"{root}/props") == (200, {"total_slots": 2, "default_generation_settings": {"n_ctx": 100}})
        assert [slot["n_ctx"] for slot in get(f"{root}/slots")[1]] == [100, 100]
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "stream": True}
        body["stream_options"] = {"include_usage": True}
        request = urllib.request.Request(f"{server.url}/chat/completions", data=json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=5) as response:
            kind, events = response.headers["Content-Type"], response.read().decode().split("\n\n")
        too_long = {**body, "stream": False, "max_tokens": 99}
        status, refusal = post(server.url, too_long)
    assert kind == "text/event-stream" and events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "one two three"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"]["prompt_tokens"] == server.prompt_counts[0]  # a model's server counts for real
    assert status == 400 and refusal["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 100 tokens" in refusal["error"]["message"] and server.oversized == [1]
    with ScriptedLLMServer(props=False) as quiet:
        assert get(f"{quiet.url.removesuffix('/v1')}/props")[0] == 404
