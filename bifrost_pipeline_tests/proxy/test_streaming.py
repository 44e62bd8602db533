"""How a stream becomes a record, without a server: recorded SSE chunk sequences fed to the assembler.

The sequences copy the shapes OpenAI sends (and the mock upstream imitates): chat completion chunks with a
role chunk first and an empty-choices usage chunk last, Responses API events named by ``type``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiohttp
import orjson
import pytest

from bifrost_pipeline.proxy.assembler import StreamAssembler
from bifrost_pipeline.proxy.forward import ClientRequest
from bifrost_pipeline.proxy.pricing import Pricing
from bifrost_pipeline.proxy.record import RecordRules, base_record, finish_record, iso
from bifrost_pipeline.proxy.streaming import relay_stream

RULES = RecordRules(Pricing(), keep_content=True)
CHAT_ID = "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"


def sse(obj: dict | str, event: str | None = None) -> bytes:
    data = obj if isinstance(obj, str) else orjson.dumps(obj).decode()
    return (f"event: {event}\n" if event else "").encode() + f"data: {data}\n\n".encode()


def chat_chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    doc = {
        "id": CHAT_ID,
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_06737a9306",
        "choices": choices,
    }
    if usage is not None:
        doc["usage"] = usage
    return sse(doc)


CHAT_USAGE = {
    "prompt_tokens": 9,
    "completion_tokens": 3,
    "total_tokens": 12,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}
CHAT_EVENTS = [
    chat_chunk({"role": "assistant", "content": "", "refusal": None}),
    chat_chunk({"content": "Hello"}),
    chat_chunk({"content": " there"}),
    chat_chunk({"content": "!"}),
    chat_chunk({}, "stop"),
    chat_chunk(None, usage=CHAT_USAGE),
    sse("[DONE]"),
]


def request_of(request_type: str, body: dict, path: str = "/v1/chat/completions") -> ClientRequest:
    raw = orjson.dumps(body)
    return ClientRequest(path, request_type, {}, raw, body, None, None, body["model"], True)


def new_record(request: ClientRequest) -> dict:
    return base_record(
        timestamp=iso(datetime.now(UTC)),
        request_id="req-1",
        customer_id="cust_1",
        provider="openai",
        model=request.model,
        endpoint=request.path,
        method="POST",
        request_type=request.request_type,
        stream=True,
        metadata=None,
    )


def cut(stream: bytes, sizes: list[int]) -> list[bytes]:
    """The bytes of a stream as the network may deliver them: in pieces that ignore event boundaries."""
    out, at = [], 0
    for n in sizes:
        out.append(stream[at : at + n])
        at += n
    out.append(stream[at:])
    return [c for c in out if c]


def assemble(request: ClientRequest, chunks: list[bytes], hide_usage: bool = False):
    """Feed the chunks one by one; returns (finished record, bytes passed on, the assembler)."""
    rec = new_record(request)
    assembler = StreamAssembler(request.request_type, hide_usage)
    t0 = 100.0
    passed = b"".join(assembler.take(chunk, t0 + 0.01 * (i + 1)) for i, chunk in enumerate(chunks))
    passed += assembler.pending
    finish_record(rec, request, assembler, t0, RULES, None, "text/event-stream")
    return rec, passed, assembler


CHAT_REQUEST = request_of("chat", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})


@pytest.mark.parametrize("sizes", [[], [7, 200, 3, 1, 90], [1] * 40], ids=["one piece", "uneven", "bytewise"])
def test_a_chat_stream_becomes_its_text_usage_and_finish_reason(sizes):
    stream = b"".join(CHAT_EVENTS)
    rec, passed, assembler = assemble(CHAT_REQUEST, cut(stream, sizes))
    assert passed == stream  # events are passed on untouched, whole
    assert orjson.loads(rec["output_content"]) == {"role": "assistant", "content": "Hello there!"}
    assert orjson.loads(rec["input_content"]) == [{"role": "user", "content": "Hi"}]
    assert rec["finish_reason"] == "stop"
    assert (rec["input_tokens"], rec["output_tokens"], rec["total_tokens"]) == (9, 3, 12)
    assert (rec["cached_tokens"], rec["reasoning_tokens"]) == (0, 0)
    assert rec["status"] == "success" and rec["error_type"] is None
    assert rec["cost_usd"] is not None and rec["cost_usd"] > 0
    assert assembler.events == 6  # [DONE] is not an event with content
    assert len(assembler.gaps) == 2  # between the three content pieces


def test_crlf_line_ends_are_read_as_plain_newlines():
    stream = b"".join(CHAT_EVENTS).replace(b"\n", b"\r\n")
    rec, passed, _ = assemble(CHAT_REQUEST, cut(stream, [5, 60, 61]))
    assert passed == stream.replace(b"\r\n", b"\n")
    assert orjson.loads(rec["output_content"])["content"] == "Hello there!"


def test_the_usage_chunk_the_proxy_asked_for_is_read_but_not_passed_on():
    stream = b"".join(CHAT_EVENTS)
    rec, passed, _ = assemble(CHAT_REQUEST, [stream], hide_usage=True)
    assert passed == stream.replace(CHAT_EVENTS[5], b"")
    assert b'"usage"' not in passed
    assert rec["total_tokens"] == 12


def test_tool_call_deltas_end_with_their_finish_reason_and_usage():
    def tool_delta(**function) -> dict:
        call = {"index": 0, "function": function}
        if "name" in function:
            call.update(id="call_DdmO9pD3xa9XTPNJ32zg2hcA", type="function")
        return {"tool_calls": [call]}

    events = [
        chat_chunk({"role": "assistant", "content": None, **tool_delta(name="get_weather", arguments="")}),
        chat_chunk(tool_delta(arguments='{"location"')),
        chat_chunk(tool_delta(arguments=': "Paris"}')),
        chat_chunk({}, "tool_calls"),
        chat_chunk(None, usage={"prompt_tokens": 59, "completion_tokens": 16, "total_tokens": 75}),
        sse("[DONE]"),
    ]
    rec, _, assembler = assemble(CHAT_REQUEST, events)
    assert rec["finish_reason"] == "tool_calls"
    assert (rec["input_tokens"], rec["output_tokens"]) == (59, 16)
    # The call is assembled from its deltas: the first names it, the next ones add to its arguments. They
    # are tokens the model produced, so the first of them is the first token.
    call = {"id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather", "arguments": '{"location": "Paris"}'}
    assert rec["tool_calls"] == [call]
    assert (rec["tool_call_names"], rec["tool_call_count"]) == (["get_weather"], 1)
    assert orjson.loads(rec["output_content"]) == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": call["id"], "type": "function", "function": {"name": "get_weather", "arguments": call["arguments"]}}
        ],
    }
    assert rec["time_to_first_token_ms"] is not None
    assert assembler.events == 5


def test_a_text_completion_stream_keeps_its_text():
    def chunk(text: str, finish: str | None = None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return sse({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [choice]})

    request = request_of("text_completion", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say"}, "/v1/completions")
    rec, _, _ = assemble(request, [chunk("Hi"), chunk(" you"), chunk("", "length"), sse("[DONE]")])
    assert orjson.loads(rec["output_content"]) == {"text": "Hi you"}
    assert rec["finish_reason"] == "length"


def responses_events(final_status: str = "completed") -> list[bytes]:
    usage = {
        "input_tokens": 37,
        "input_tokens_details": {"cached_tokens": 5},
        "output_tokens": 11,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 48,
    }
    item = {"id": "msg_67c", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    response = {"id": "resp_67c", "object": "response", "created_at": 1741290958, "model": "gpt-4.1-2025-04-14"}
    done_item = {**item, "status": "completed", "content": [{"type": "output_text", "text": "Hi there", "annotations": []}]}
    seq = iter(range(100))

    def ev(kind: str, **fields) -> bytes:
        return sse({"type": kind, "sequence_number": next(seq), **fields}, kind)

    return [
        ev("response.created", response={**response, "status": "in_progress", "output": [], "usage": None}),
        ev("response.in_progress", response={**response, "status": "in_progress", "output": [], "usage": None}),
        ev("response.output_item.added", output_index=0, item=item),
        ev("response.content_part.added", item_id="msg_67c", output_index=0, content_index=0,
           part={"type": "output_text", "text": "", "annotations": []}),
        ev("response.output_text.delta", item_id="msg_67c", output_index=0, content_index=0, delta="Hi"),
        ev("response.output_text.delta", item_id="msg_67c", output_index=0, content_index=0, delta=" there"),
        ev("response.output_text.done", item_id="msg_67c", output_index=0, content_index=0, text="Hi there"),
        ev("response.output_item.done", output_index=0, item=done_item),
        ev(f"response.{final_status}",
           response={**response, "status": final_status, "output": [done_item], "usage": usage}),
    ]


def test_a_responses_stream_keeps_the_final_output_and_usage():
    request = request_of("responses", {"model": "gpt-4.1", "input": "Say hi"}, "/v1/responses")
    stream = b"".join(responses_events())
    rec, passed, _ = assemble(request, cut(stream, [100, 333, 17]))
    assert passed == stream
    output = orjson.loads(rec["output_content"])
    assert output[0]["content"][0]["text"] == "Hi there"
    assert rec["finish_reason"] == "completed"
    assert (rec["input_tokens"], rec["output_tokens"], rec["total_tokens"]) == (37, 11, 48)
    assert (rec["cached_tokens"], rec["reasoning_tokens"]) == (5, 2)
    assert rec["time_to_first_token_ms"] is not None
    assert orjson.loads(rec["input_content"]) == "Say hi"


def test_a_failed_response_event_makes_an_error_record():
    request = request_of("responses", {"model": "gpt-4.1", "input": "x"}, "/v1/responses")
    events = responses_events("failed")
    last = orjson.loads(events[-1].split(b"data: ", 1)[1])
    last["response"]["error"] = {"code": "server_error", "message": "The model failed."}
    events[-1] = sse(last, "response.failed")
    rec, _, _ = assemble(request, events)
    assert (rec["status"], rec["status_code"]) == ("error", 500)
    assert rec["finish_reason"] == "failed"


def test_an_error_event_mid_stream_makes_an_error_record_with_its_message():
    request = request_of("responses", {"model": "gpt-4.1", "input": "x"}, "/v1/responses")
    error = {"type": "error", "code": "ERR_SOMETHING", "message": "Something went wrong", "param": None}
    rec, _, _ = assemble(request, [*responses_events()[:5], sse({**error, "sequence_number": 5}, "error")])
    assert (rec["status"], rec["status_code"]) == ("error", 500)
    assert rec["error_message"] == "Something went wrong"


def test_an_upstream_stream_that_ends_early_keeps_what_came():
    """The provider's stream stops after two content chunks (no finish chunk, no [DONE], half an event)."""
    half = CHAT_EVENTS[3][:20]
    rec, passed, assembler = assemble(CHAT_REQUEST, [*CHAT_EVENTS[:3], half])
    assert passed.endswith(half)  # the unfinished event is passed on as it came
    assert assembler.pending == half
    assert orjson.loads(rec["output_content"])["content"] == "Hello there"
    assert rec["finish_reason"] is None and rec["input_tokens"] is None and rec["cost_usd"] is None
    assert rec["status"] == "success"


class _Content:
    def __init__(self, chunks: list[bytes], then: BaseException | str):
        self.chunks, self.then = chunks, then

    async def iter_any(self):
        for chunk in self.chunks:
            yield chunk
        if isinstance(self.then, BaseException):
            raise self.then
        if self.then == "hang":
            await asyncio.Event().wait()  # the provider keeps the stream open


class _Response:
    """The part of an aiohttp response ``relay_stream`` reads."""

    def __init__(self, chunks: list[bytes], then: BaseException | str):
        self.headers = {"Content-Type": "text/event-stream", "X-Request-Id": "up-1", "Date": "now"}
        self.content = _Content(chunks, then)


def relay(chunks: list[bytes], *, then: BaseException | str = "end", disconnect_after: int | None = None):
    """Run ``relay_stream`` against a fake provider and client; returns (record, messages sent, assembler).

    After its chunks the provider ends the stream (``then="end"``), keeps it open (``"hang"``) or fails
    (an exception); the client leaves once ``disconnect_after`` bodies were sent to it, else stays.
    """
    request = CHAT_REQUEST
    rec = new_record(request)
    assembler = StreamAssembler("chat", hide_usage=False)
    sent: list[dict] = []

    async def run() -> None:
        body_sent = asyncio.Event()

        async def send(msg: dict) -> None:
            sent.append(msg)
            bodies = sum(1 for m in sent if m["type"] == "http.response.body")
            if disconnect_after is not None and bodies >= disconnect_after:
                body_sent.set()

        async def receive() -> dict:
            if disconnect_after is None:
                await asyncio.Event().wait()
            await body_sent.wait()
            return {"type": "http.disconnect"}

        await relay_stream(send, receive, _Response(chunks, then), rec, assembler)

    asyncio.run(asyncio.wait_for(run(), 5))
    finish_record(rec, request, assembler, 0.0, RULES, None, "text/event-stream")
    return rec, sent, assembler


def test_a_client_that_leaves_mid_stream_ends_the_relay_with_a_499_record():
    rec, sent, _ = relay(CHAT_EVENTS[:3], then="hang", disconnect_after=3)
    start = sent[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"x-request-id"] == b"req-1" and headers[b"x-upstream-request-id"] == b"up-1"
    assert b"date" not in headers
    assert [m["body"] for m in sent[1:]] == CHAT_EVENTS[:3]
    assert (rec["status"], rec["status_code"], rec["error_type"]) == ("error", 499, "client_disconnected")
    assert rec["error_message"] == "the client closed the connection after 3 event(s)"
    assert orjson.loads(rec["output_content"])["content"] == "Hello there"  # what came before the close


def test_a_provider_failing_mid_stream_makes_a_502_record_and_ends_the_answer():
    err = aiohttp.ClientPayloadError("Response payload is not completed")
    rec, sent, _ = relay([*CHAT_EVENTS[:2], b"data: {\"id\""], then=err)
    assert sent[-1] == {"type": "http.response.body", "body": b"data: {\"id\"", "more_body": False}
    assert (rec["status"], rec["status_code"], rec["error_type"]) == ("error", 502, "upstream_error")
    assert rec["error_message"].startswith("provider openai: ClientPayloadError: Response payload")


def test_a_whole_stream_relayed_ends_in_success():
    stream = b"".join(CHAT_EVENTS)
    rec, sent, _ = relay([stream[:50], stream[50:]])
    assert b"".join(m["body"] for m in sent[1:]) == stream
    assert sent[-1]["more_body"] is False
    assert rec["status"] == "success" and rec["finish_reason"] == "stop"


def test_parallel_chat_tool_calls_are_assembled_by_their_index():
    def piece(index: int, **call) -> bytes:
        return chat_chunk({"tool_calls": [{"index": index, **call}]})

    events = [
        piece(0, id="call_a", type="function", function={"name": "get_weather", "arguments": ""}),
        piece(1, id="call_b", type="function", function={"name": "search", "arguments": '{"q"'}),
        piece(0, function={"arguments": '{"city": '}),
        piece(1, function={"arguments": ': "x"}'}),
        piece(0, function={"arguments": '"Oslo"}'}),
        chat_chunk({}, "tool_calls"),
        sse("[DONE]"),
    ]
    rec, passed, assembler = assemble(CHAT_REQUEST, events)
    assert rec["tool_calls"] == [
        {"id": "call_a", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"id": "call_b", "name": "search", "arguments": '{"q": "x"}'},
    ]
    assert (rec["tool_call_names"], rec["tool_call_count"]) == (["get_weather", "search"], 2)
    assert assembler.sent_bytes == len(passed) == len(b"".join(events))
    assert "".join(assembler.text) == ""  # arguments are not the text of the answer


def test_a_responses_function_call_cut_short_keeps_the_arguments_received():
    request = request_of("responses", {"model": "gpt-4o-mini", "input": "weather?"}, "/v1/responses")
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": ""}
    events = [
        sse({"type": "response.output_item.added", "output_index": 0, "item": item}, "response.output_item.added"),
        sse({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": '{"city":'}),
        sse({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": ' "Oslo"'}),
    ]  # the stream ends here: no output_item.done, no response.completed
    rec, _, assembler = assemble(request, events)
    assert rec["tool_calls"] == [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"'}]
    assert assembler.text == []


def test_content_logging_off_keeps_tool_names_not_arguments():
    events = [
        chat_chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}),
        chat_chunk({}, "tool_calls"),
    ]
    rec = new_record(CHAT_REQUEST)
    assembler = StreamAssembler("chat", False)
    for i, chunk in enumerate(events):
        assembler.take(chunk, 100.0 + i)
    finish_record(rec, CHAT_REQUEST, assembler, 100.0, RecordRules(Pricing(), keep_content=False))
    assert (rec["tool_call_names"], rec["tool_call_count"], rec["tool_calls"]) == (["f"], 1, None)
    assert rec["input_content"] is None and rec["output_content"] is None
