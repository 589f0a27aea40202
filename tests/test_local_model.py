"""A model served on the user's own box, as issue 24 met it: one llama.cpp-like server on 127.0.0.1 that answers
one request at a time, streams its answers token by token, has a small context window, and sometimes stalls.

Each test talks to the real stand-in (tests/llm_server.py) through litellm over a socket, and checks what the
server saw: how many requests it held at once, which clients hung up and when, which requests were longer than
its window.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from agentarch.config import ModelArm, Settings
from agentarch.llm import client as llm_client
from agentarch.llm import gate as gates
from agentarch.llm import prompts, streaming
from agentarch.llm import window as windows
from agentarch.llm.client import AnswerTooLarge, ContextOverflow, LLMCancelled, LLMClient
from agentarch.llm.fewshot import FewShot
from agentarch.store.archive import Archive
from agentarch.tasks.registry import get_task
from tests.llm_server import Reply, ScriptedLLMServer

MESSAGES = [{"role": "user", "content": "Propose a Net."}]
ANSWER = "```python\nclass Net(nn.Module):\n    pass\n```\n" + " ".join(f"word{i}" for i in range(20))


@pytest.fixture(scope="module", autouse=True)
def warm_litellm():
    """litellm's first streamed call imports and builds a second's worth of machinery; it is not the server's."""
    with ScriptedLLMServer(default="warm", stream=True) as server:
        LLMClient("openai/warm", api_base=server.url, concurrency=4).complete(MESSAGES, "warm-up")


@pytest.fixture
def archive(tmp_path: Path):
    with Archive(tmp_path / "a.db") as archive:
        yield archive


@pytest.fixture
def run_id(archive: Archive) -> str:
    return archive.start_run("local-model", "digits", "llm", {})


def local(server: ScriptedLLMServer, **overrides) -> LLMClient:
    options = dict(api_base=server.url, timeout_s=1.0, max_retries=2, backoff_s=0.01, max_backoff_s=0.05)
    return LLMClient("openai/smollm2", **{**options, **overrides})


def statuses(archive: Archive, run_id: str) -> list[str]:
    return [row["status"] for row in archive.llm_calls(run_id=run_id)]


# -- one slot, three callers ----------------------------------------------------------------------------------------


def three_at_once(server: ScriptedLLMServer, **options) -> tuple[list[object], float, list[int]]:
    """Three threads, each with its own client (as the loop has one per thread), call the server at once; returns
    their answers (or errors), the wall time, and the gate's queue length sampled while they ran."""
    results: list[object] = [None] * 3
    queued: list[int] = []
    start = threading.Barrier(3)

    def call(i: int) -> None:
        llm = local(server, **options)
        start.wait()
        try:
            results[i] = llm.complete(MESSAGES, "propose", tag=f"run/{i}")
        except Exception as err:
            results[i] = err

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        queued.append(sum(row["state"] == "queued" for row in llm_client.calls_in_progress()))
        time.sleep(0.02)
    return results, time.monotonic() - started, queued


def slow_answer() -> Reply:
    """About 0.7 s per answer: a first token after 0.1 s, then 13 pieces 0.05 s apart."""
    return Reply(content=ANSWER, first_token_delay_s=0.1, chunk_delay_s=0.05, pieces=13)


def test_three_callers_of_a_single_slot_server_take_turns_and_none_times_out(archive, run_id):
    with ScriptedLLMServer(default=slow_answer(), stream=True, slots=1, props=True) as server:
        results, elapsed, queued = three_at_once(server, archive=archive, run_id=run_id)
        gate = local(server).gate
    assert all(getattr(r, "text", None) == ANSWER for r in results), results
    assert server.most_in_flight == 1 and len(server.requests) == 3 and server.disconnects == []
    assert statuses(archive, run_id) == ["ok"] * 3  # no timeout, no retry
    # Together they waited longer than one call may take to its first token: the wait for a turn is not counted.
    assert elapsed > 1.5 * 1.0, elapsed
    assert max(queued) == 2 and gate.most_in_flight == 1
    assert (gate.limit, gate.source) == (1, "the server's /props (total_slots)")
    assert sorted(round(r.queued_s) for r in results) == [0, 1, 1] or max(r.queued_s for r in results) > 1.0
    assert gate.snapshot()["queued"] == 0 and gate.snapshot()["in_flight"] == 0


def test_without_the_gate_the_same_server_makes_callers_time_out(archive, run_id):
    """The control: three calls in flight at once (an explicit limit of 3) queue inside the server, where the wait
    counts, so the later ones miss their first-token deadline, as in the issue's run."""
    with ScriptedLLMServer(default=slow_answer(), stream=True, slots=1, props=True) as server:
        results, _, _ = three_at_once(server, archive=archive, run_id=run_id, concurrency=3, max_retries=0)
    assert server.most_in_flight == 3
    failed = [r for r in results if isinstance(r, Exception)]
    assert failed and all("no first token within 1s" in str(err) for err in failed), results
    assert statuses(archive, run_id).count("timeout") == len(failed)


def test_the_limit_comes_from_the_spec_the_setting_the_server_or_where_the_server_is(monkeypatch):
    arm = ModelArm.parse("openai/smollm2@http://127.0.0.1:8080/v1#LOCAL_KEY~2")
    assert (arm.name, arm.api_base, arm.key_env, arm.concurrency) == (
        "openai/smollm2",
        "http://127.0.0.1:8080/v1",
        "LOCAL_KEY",
        2,
    )
    assert ModelArm.parse(arm.spec) == arm and arm.spec.endswith("#LOCAL_KEY~2")
    assert ModelArm.parse("ollama/qwen2.5-coder:7b~3").concurrency == 3
    assert ModelArm.parse("openai/odd~name").name == "openai/odd~name"  # not digits at the end: part of the name
    for bad in ("openai/x~0", "openai/x~"):
        with pytest.raises(Exception, match=r"~"):
            ModelArm.parse(bad)
    monkeypatch.setenv("LOCAL_KEY", "k")
    settings = Settings(llm_concurrency=5, llm_first_token_timeout_s=7, llm_stall_timeout_s=3, context_tokens=4096)
    assert LLMClient.for_arm(arm, settings).concurrency == 2  # the spec wins over the setting
    plain = LLMClient.for_arm(ModelArm.parse("openai/other@http://127.0.0.1:9/v1"), settings)
    assert (plain.concurrency, plain.first_token_timeout_s, plain.stall_timeout_s, plain.context_tokens) == (
        5,
        7,
        3,
        4096,
    )
    assert gates.resolve_concurrency(None, None) == (8, "a hosted provider's default (8)")
    assert gates.resolve_concurrency("http://127.0.0.1:9/v1", 4)[0] == 4
    with ScriptedLLMServer(props=True, slots=3) as server:
        assert gates.resolve_concurrency(server.url, None) == (3, "the server's /props (total_slots)")
    with ScriptedLLMServer(props=False) as server:  # says nothing: local, so one at a time
        assert gates.resolve_concurrency(server.url, None)[0] == 1
    with ScriptedLLMServer() as server:  # the stand-in's default: as many as a threading server takes
        assert gates.resolve_concurrency(server.url, None)[0] == 16
    assert gates.is_local("http://localhost:8000/v1") and gates.is_local("http://192.168.1.20:8000/v1")
    assert gates.is_local("http://[::1]:8000/v1") and not gates.is_local("https://8.8.8.8/v1")


def test_a_gate_lets_callers_through_in_order_and_an_interrupt_empties_its_queue():
    gate = gates.ModelGate("m", None, 1, "test")
    order: list[int] = []
    outcomes: dict[int, str] = {}

    def wait_turn(i: int) -> None:
        try:
            with gate.slot():
                order.append(i)
                time.sleep(0.05)
            outcomes[i] = "served"
        except gates.Cancelled:
            outcomes[i] = "cancelled"

    threads = []
    for i in range(4):
        threads.append(threading.Thread(target=wait_turn, args=(i,)))
        threads[-1].start()
        time.sleep(0.01)  # arrive in order
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3] and gate.most_in_flight == 1 and gate.calls == 4 and gate.waited_s > 0.1
    with gate.slot():
        waiting = threading.Thread(target=wait_turn, args=(9,))
        waiting.start()
        time.sleep(0.1)
        assert gate.snapshot()["queued"] == 1
        try:
            gates.interrupt_calls()
            waiting.join(timeout=2)
        finally:
            gates.resume_calls()
    assert outcomes[9] == "cancelled" and gate.queued == 0


# -- honest deadlines -------------------------------------------------------------------------------------------------


def test_a_stalled_stream_is_cut_and_retried_on_a_new_connection_after_the_server_saw_the_first_go(archive, run_id):
    stalled = Reply(content=ANSWER, pieces=10, chunk_delay_s=0.02, stall_after=3, stall_s=10)
    with ScriptedLLMServer([stalled, Reply(content=ANSWER, pieces=10)], stream=True) as server:
        llm = local(server, stall_timeout_s=0.4, first_token_timeout_s=5.0, archive=archive, run_id=run_id)
        started = time.monotonic()
        answer = llm.complete(MESSAGES, "propose")
        elapsed = time.monotonic() - started
        events = list(server.events)
    assert answer.text == ANSWER and answer.streamed_tokens == 10 and answer.finish_reason == "stop"
    assert elapsed < 2.5, elapsed  # cut 0.4 s into the stall: not at the first-token deadline, nor 10 s later
    assert server.disconnects == [0]
    (sent,) = [t for t, kind, i in events if kind == "request" and i == 0]
    (gone,) = [t for t, kind, i in events if kind == "disconnect"]
    (second,) = [t for t, kind, i in events if kind == "request" and i == 1]
    assert gone - sent < 2 and gone < second  # the first connection was closed before the retry was sent
    first, ok = archive.llm_calls(run_id=run_id)
    assert first["status"] == "timeout" and "stalled: no token for 0.4s" in first["error"] and ok["status"] == "ok"


def test_the_first_token_deadline_counts_from_sending_and_the_server_sees_the_give_up(archive, run_id):
    late = Reply(content=ANSWER, first_token_delay_s=10)
    with ScriptedLLMServer([late, ANSWER], stream=True) as server:
        llm = local(server, first_token_timeout_s=0.5, stall_timeout_s=5, archive=archive, run_id=run_id)
        started = time.monotonic()
        assert llm.complete(MESSAGES, "propose").text == ANSWER
        assert time.monotonic() - started < 3
        assert server.disconnects == [0]
    assert statuses(archive, run_id) == ["timeout", "ok"]
    assert "no first token within 0.5s" in archive.llm_calls(run_id=run_id)[0]["error"]


def test_a_slow_but_steady_answer_is_not_cut_and_a_trickle_below_the_rate_is(monkeypatch, archive, run_id):
    steady = Reply(content=ANSWER, pieces=20, chunk_delay_s=0.1)  # 2 s in all, a chunk every 0.1 s
    with ScriptedLLMServer([steady], stream=True) as server:
        answer = local(server, timeout_s=0.8).complete(MESSAGES, "propose")  # longer than any one deadline
    assert answer.text == ANSWER and answer.latency_s > 1.8 and answer.streamed_tokens == 20
    monkeypatch.setattr(streaming, "RATE_AFTER_S", 0.5)
    trickle = Reply(content=ANSWER, pieces=40, chunk_delay_s=0.2)  # 5 tokens/s
    with ScriptedLLMServer([trickle, ANSWER], stream=True) as server:
        llm = local(server, min_tokens_per_s=10, archive=archive, run_id=run_id)
        assert llm.complete(MESSAGES, "propose").text == ANSWER
        assert server.disconnects == [0]
    assert "slower than 10 tokens/s" in archive.llm_calls(run_id=run_id)[0]["error"]


def test_an_interrupt_cuts_a_stream_in_flight_and_no_retry_follows(archive, run_id):
    with ScriptedLLMServer(default=Reply(content=ANSWER, first_token_delay_s=10), stream=True) as server:
        llm = local(server, first_token_timeout_s=20, archive=archive, run_id=run_id)
        caught: list[BaseException] = []
        thread = threading.Thread(target=lambda: _catch(caught, llm.complete, MESSAGES, "propose"))
        thread.start()
        time.sleep(0.3)
        try:
            assert llm_client.interrupt() == 1
            thread.join(timeout=3)
        finally:
            llm_client.resume()
        assert not thread.is_alive() and len(server.requests) == 1 and server.disconnects == [0]
    assert isinstance(caught[0], LLMCancelled)
    assert statuses(archive, run_id) == ["cancelled"]


def test_an_interrupt_cuts_a_call_still_queued_at_the_server_before_any_header(archive, run_id):
    """A single-slot server busy with another client answers nothing, not even headers, to a call waiting for its
    turn; an interrupt must close that connection too (else the server generates for a client that left)."""
    busy = Reply(content=ANSWER, first_token_delay_s=10)
    with ScriptedLLMServer(default=busy, stream=True, slots=1) as server:
        other = threading.Thread(target=_occupy, args=(server.url,), daemon=True)  # someone else's call holds the slot
        other.start()
        while server.in_flight < 1:
            time.sleep(0.02)
        caught: list[BaseException] = []
        llm = local(server, concurrency=1, first_token_timeout_s=20, stall_timeout_s=20, archive=archive, run_id=run_id)
        ours = threading.Thread(target=lambda: _catch(caught, llm.complete, MESSAGES, "propose"))
        ours.start()
        while server.in_flight < 2:
            time.sleep(0.02)
        time.sleep(0.2)
        try:
            started = time.monotonic()
            llm_client.interrupt()
            ours.join(timeout=3)
            stopped = time.monotonic() - started
        finally:
            llm_client.resume()
        deadline = time.monotonic() + 2
        while 1 not in server.disconnects and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not ours.is_alive() and stopped < 1, stopped
        assert server.disconnects == [1]  # ours, queued; the other client's call goes on
    assert len(caught) == 1 and isinstance(caught[0], LLMCancelled), caught


def _occupy(url: str) -> None:
    """Another client of the server: a streamed call read to its end (or until the server goes)."""
    body = {"model": "other", "stream": True, "messages": MESSAGES}
    try:
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=30) as response:
            for _ in response.iter_bytes():
                pass
    except httpx.HTTPError:
        pass


def _catch(into: list[BaseException], call, *args) -> None:
    try:
        call(*args)
    except BaseException as err:  # noqa: BLE001 (the test reads what was raised)
        into.append(err)


def test_a_streamed_answer_over_the_byte_cap_is_cut_as_it_arrives(archive, run_id):
    huge = Reply(content="x " * 200_000, pieces=400, chunk_delay_s=0.001)
    with ScriptedLLMServer([huge], stream=True) as server:
        with pytest.raises(AnswerTooLarge, match="passed 10,000 bytes as it streamed"):
            local(server, max_answer_bytes=10_000, archive=archive, run_id=run_id).complete(MESSAGES, "propose")
        deadline = time.monotonic() + 2
        while not server.disconnects and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.disconnects == [0]
    assert statuses(archive, run_id) == ["too_large"]


# -- the context window -----------------------------------------------------------------------------------------------

TASK = get_task("digits")


def long_example(i: int, lines: int) -> dict:
    body = "\n".join(
        f"        self.layer{j} = nn.Linear({32 + j}, {32 + j})  # block {j} of candidate {i}" for j in range(lines)
    )
    code = f"import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n        super().__init__()\n{body}\n\n    def forward(self, x):\n        return x\n"
    analysis = f"Candidate {i} widened every block; it trained in 40 s and gained 0.4 points. " * 6
    return {
        "id": i,
        "code": code,
        "val_accuracy": 0.9 + i / 1000,
        "params": 10_000 * i,
        "proposer": "llm",
        "analysis": analysis,
    }


def test_a_2048_token_window_with_long_examples_never_gets_an_oversized_request(archive, run_id):
    note = {"after": 10, "text": "Wider blocks helped twice; deeper ones never did. " * 40}
    shapes = ((1, 10), (2, 40), (3, 60), (3, 120), (4, 200), (6, 30))
    with ScriptedLLMServer(default=ANSWER, stream=True, props=True, context_tokens=2048) as server:
        llm = local(server, archive=archive, run_id=run_id)
        window = llm.window()
        assert (window.context_tokens, window.source) == (2048, "the server's /props (n_ctx)")
        assert window.answer_tokens == 1024  # the default 8,192 answer tokens cannot have more than half
        records = []
        for n_examples, lines in shapes:
            window = llm.window()  # as each proposal asks: it counts like the server, as the server's answers showed
            examples = [long_example(i, lines) for i in range(1, n_examples + 1)]
            shot = FewShot(parent=examples[0], examples=examples, strategy="topk")
            fitted = prompts.fit_prompt("propose", TASK, shot, window, notebook=note)
            answer = llm.complete(fitted.messages, "propose")
            records.append(fitted.record(window))
            assert answer.text == ANSWER and answer.answer_tokens >= records[-1]["answer_tokens"]
        # The repair prompt is not fitted by its builder: the client shortens it itself.
        huge = long_example(9, 400)["code"]
        repair = prompts.repair_messages(TASK, huge, "RuntimeError: shapes do not match", attempt=1)
        assert llm.complete(repair, "repair").shortened_lines > 0
    sent = [count + request["max_tokens"] for count, request in zip(server.prompt_counts, server.requests)]
    assert server.oversized == [] and max(sent) <= 2048, sent
    assert statuses(archive, run_id) == ["ok"] * 7
    # This task's system prompt and card alone take about 1,400 of the 2,048 tokens: everything else gives way,
    # in the stated order: the other kinds' contract, the notebook, examples from the last, lines, answer tokens.
    assert all(r["compact_contract"] and r["notebook_after"] == 10 for r in records)
    assert [r["examples"] for r in records] == [[], [2], [3, 2], [3, 2], [4, 3, 2], [6, 5, 4, 3, 2]]
    assert all(r["lines_cut"]["1"] > 0 and r["examples"] == list(range(len(r["examples"]) + 1, 1, -1)) for r in records)
    assert all(r["prompt_tokens"] <= r["prompt_limit"] == 2048 - r["answer_tokens"] - 32 for r in records)
    assert all(256 <= r["answer_tokens"] < 1024 for r in records), records


def test_an_8192_token_window_keeps_what_fits_and_the_answer_its_half(archive, run_id):
    """SmolLM2's own window: three examples of 8 lines go whole; six of 400 lines lose examples from the last."""
    with ScriptedLLMServer(default=ANSWER, stream=True, props=True, context_tokens=8192) as server:
        llm = local(server, archive=archive, run_id=run_id)
        window = llm.window()
        small = [long_example(i, 8) for i in (1, 2, 3)]
        whole = prompts.fit_prompt("propose", TASK, FewShot(small[0], small, "topk"), window)
        big = [long_example(i, 400) for i in range(1, 7)]
        fitted = prompts.fit_prompt("propose", TASK, FewShot(big[0], big, "topk"), window)
        for messages in (whole.messages, fitted.messages):
            llm.complete(messages, "propose")
    kept = whole.record(window)  # at most the other kinds' contract and the knobs' bounds left out: examples whole
    assert (kept is None or (kept["examples"] == [] and kept["lines_cut"] == {})) and window.answer_tokens == 4096
    record = fitted.record(window)
    assert record["examples"] == [6, 5, 4, 3, 2] and record["lines_cut"]["1"] > 0 and record["answer_tokens"] == 4096
    assert record["prompt_tokens"] <= record["prompt_limit"] == 8192 - 4096 - 32
    assert server.oversized == [] and [r["max_tokens"] for r in server.requests][0] >= 4096


def test_an_edit_prompt_keeps_its_parent_whole_or_says_it_cannot_fit():
    examples = [long_example(1, 400), long_example(2, 10)]
    window = windows.Window("openai/smollm2", 4096, "test", 8192, 1.25)
    with pytest.raises(ContextOverflow, match="edit prompt is about"):
        prompts.fit_prompt("edit", TASK, FewShot(examples[0], examples, "topk"), window)
    small = [long_example(1, 20), long_example(2, 200)]
    fitted = prompts.fit_prompt("edit", TASK, FewShot(small[0], small, "topk"), window)
    assert small[0]["code"] in fitted.messages[1]["content"] and fitted.left_out.examples == [2]


def test_a_context_length_error_becomes_one_shorter_retry_then_a_clear_failure(archive, run_id):
    """A server that does not say its window (no /props): the first request is too long, its refusal states the
    window and the prompt's size, and the retry is cut to fit."""
    long_prompt = [{"role": "user", "content": long_example(1, 300)["code"]}]
    with ScriptedLLMServer(default=ANSWER, stream=True, context_tokens=2048) as server:
        llm = local(server, archive=archive, run_id=run_id)
        answer = llm.complete(long_prompt, "propose")
        assert answer.text == ANSWER and answer.shortened_lines > 0
        assert server.oversized == [0] and len(server.requests) == 2
        assert server.prompt_counts[1] + server.requests[1]["max_tokens"] <= 2048
        assert llm.window().context_tokens == 2048  # learned: the next prompt is fitted before it is sent
        llm.complete(long_prompt, "propose")
        assert server.oversized == [0]
    assert statuses(archive, run_id) == ["too_long", "ok", "ok"]
    refusal = Reply(status=400, content="This model's maximum context length is 2048 tokens; your prompt is longer")
    with ScriptedLLMServer(default=refusal, stream=True) as server:
        with pytest.raises(ContextOverflow, match="do not fit openai/smollm2's context window") as err:
            local(server, archive=archive, run_id=run_id, max_retries=0).complete(long_prompt, "propose")
        assert len(server.requests) == 2  # one shorter retry (even with no retries for faults), then the reason
    assert "llama.cpp -c" in str(err.value) and len(err.value.call_ids) == 2


def test_the_window_comes_from_the_server_litellm_or_the_setting():
    with ScriptedLLMServer(models=True, context_tokens=6000) as server:
        window = windows.window_for("openai/served", server.url, 4096, None)
        assert (window.context_tokens, window.source) == (6000, "the server's /v1/models (max_model_len)")
        assert windows.window_for("openai/served", server.url, 4096, 3000).context_tokens == 3000  # the smaller
    known = windows.window_for("openai/gpt-4o-mini", None, 4096, None)
    assert (known.context_tokens, known.source, known.answer_tokens) == (128000, "litellm's model map", 4096)
    assert windows.window_for("openai/unheard-of", None, 4096, None).prompt_limit is None
    with ScriptedLLMServer(props=True, context_tokens=4096) as server:
        scaled = windows.window_for("openai/smollm2", server.url, 1024, None)
        assert "/tokenize" in server.gets and 1.0 < scaled.scale < 1.5  # its tokenizer counts more than tiktoken


# -- reading the answer ----------------------------------------------------------------------------------------------

CODE = "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def forward(self, x):\n        return x\n"


def test_cut_off_is_said_only_when_the_server_says_length():
    unclosed = f"Intent: plain.\n\n```python\n{CODE}"
    with pytest.raises(prompts.ExtractError, match="cut off at the output length limit"):
        prompts.extract_code(unclosed, "length")
    assert prompts.extract_code(unclosed, "stop").code == CODE  # a whole module, only the fence left open
    broken = f"```python\n{CODE}    def more(self:\n"
    with pytest.raises(prompts.ExtractError) as err:
        prompts.extract_code(broken, "stop")
    assert "never closed, and its code does not parse (line 8" in str(err.value) and "cut off" not in str(err.value)
    with pytest.raises(prompts.ExtractError, match="holds no code"):
        prompts.extract_code("I would use a ResNet.", "stop")
    with pytest.raises(prompts.ExtractError, match="cut off at the output length limit before it gave any code"):
        prompts.extract_code("Let me think about residual blocks and", "length")
    with pytest.raises(prompts.ExtractError, match="the answer was cut off"):
        prompts.extract_code(broken)  # no finish reason known: read as before


def test_a_streamed_answer_records_its_finish_reason_and_tokens():
    cut = Reply(content=f"```python\n{CODE}", pieces=7, finish_reason="length", completion_tokens=7)
    with ScriptedLLMServer([cut], stream=True) as server:
        answer = local(server).complete(MESSAGES, "propose")
    assert (answer.finish_reason, answer.streamed_tokens, answer.completion_tokens) == ("length", 7, 7)
    assert answer.first_token_s is not None and answer.first_token_s < answer.latency_s
    assert server.requests[0]["stream"] is True and server.requests[0]["stream_options"] == {"include_usage": True}
    with pytest.raises(prompts.ExtractError, match="output length limit"):
        prompts.extract_code(answer.text, answer.finish_reason)
