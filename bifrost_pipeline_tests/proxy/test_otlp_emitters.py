"""`/v1/traces` against what real OTel emitters send: bodies recorded by `scripts/record_otel_fixtures.py`.

Each fixture in `bifrost_pipeline_tests/data/otlp/` goes through the functions `/v1/traces` uses
(otlp.decode, otlp.is_genai, otlp.span_to_record, intake.check_record) and every mapped field is asserted.
The emitter libraries are not needed: the fixtures are files.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bifrost_pipeline.proxy import intake, otlp

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "otlp"
QUESTION = "Say hello."
ANSWER = "Hello from the fake upstream."


class NoPrices:
    """No price table: cost_usd is then what the emitter sent, or None."""

    def cost(self, provider, model, input_tokens, output_tokens):
        return None


def _chat(**fields) -> dict:
    base = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "request_type": "chat",
        "endpoint": "/v1/chat/completions",
        "stream": False,
        "finish_reason": "stop",
        "status": "success",
        "status_code": 200,
        "error_type": None,
        "error_message": None,
        "input_tokens": 12,
        "output_tokens": 7,
        "total_tokens": 19,
        "cached_tokens": None,
        "reasoning_tokens": None,
        "cost_usd": None,
        "user_id": None,
        "content": False,
    }
    return base | fields


_STREAM = {"input_tokens": 11, "output_tokens": 6, "total_tokens": 17}
_EMBEDDING = {
    "model": "text-embedding-3-small",
    "request_type": "embeddings",
    "endpoint": "/v1/embeddings",
    "finish_reason": None,
    "input_tokens": 5,
    "output_tokens": None,
    "total_tokens": 5,
}
_NOT_FOUND = "The model `no-such-model` does not exist or you do not have access to it."
_ERROR = {
    "model": "no-such-model",
    "finish_reason": None,
    "status": "error",
    "input_tokens": None,
    "output_tokens": None,
    "total_tokens": None,
}

# What each recorded span must map to (one GenAI span per case; its other spans are skipped).
EXPECTED: dict[str, dict] = {
    # openai-v2 2.4b0 says nothing about streaming (no gen_ai.request.stream), nor cached/reasoning tokens;
    # on a stream it sends the finish reason only inside the captured output messages.
    "openai-v2--chat": _chat(),
    "openai-v2--chat-content": _chat(content=True),
    "openai-v2--chat-stream": _chat(**_STREAM, finish_reason=None),
    "openai-v2--chat-stream-content": _chat(**_STREAM, content=True),
    "openai-v2--chat-json": _chat(content=True),
    "openai-v2--embedding": _chat(**_EMBEDDING),
    # no HTTP status on the span: an error without one lands as 500; error.type is "<class '...'>" as sent
    "openai-v2--error-404": _chat(
        **_ERROR,
        status_code=500,
        error_type="openai.NotFoundError",
        error_message=f"Error code: 404 - {_NOT_FOUND}",
    ),
    # 2.0b0: gen_ai.system; its content goes to /v1/logs as events, never on the span
    "openai-v2-legacy--chat": _chat(),
    "openai-v2-legacy--chat-content": _chat(),
    "litellm--acompletion": _chat(cached_tokens=4, reasoning_tokens=2, cost_usd=5.7e-06, content=True),
    "litellm--acompletion-stream": _chat(
        **_STREAM, stream=True, cached_tokens=3, reasoning_tokens=1, cost_usd=5.025e-06, content=True
    ),
    "litellm--aembedding": _chat(**_EMBEDDING | {"output_tokens": 0}, cost_usd=1e-07, content="input"),
    "litellm--completion-error": _chat(
        **_ERROR,
        status_code=404,
        error_type="NotFoundError",
        error_message=f"litellm.NotFoundError: NotFoundError: OpenAIException - {_NOT_FOUND}",
        content="input",
    ),
    "traceloop--chat": _chat(cached_tokens=4, reasoning_tokens=2, user_id="u-42", content=True),
    "traceloop--chat-stream": _chat(**_STREAM, stream=True, cached_tokens=3, content=True),
}


def _sidecars() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*.json") if p.name.count(".") == 1)


def trace_bodies(case: str) -> list[tuple[dict, bytes]]:
    meta = json.loads((FIXTURES / f"{case}.json").read_text())
    return [(b, (FIXTURES / b["file"]).read_bytes()) for b in meta["bodies"] if b["path"] == "/v1/traces"]


def map_body(entry: dict, body: bytes) -> tuple[list[dict], list[dict]]:
    """(records, skipped spans) of one recorded body, as /v1/traces maps them."""
    spans, is_json = otlp.decode(body, entry["content_type"], entry["content_encoding"])
    assert is_json == ("json" in entry["content_type"])
    records, skipped = [], []
    for span in spans:
        if not otlp.is_genai(span):
            skipped.append(span)
            continue
        rec = otlp.span_to_record(span, customer_id="tenant-a", content=True, pricing=NoPrices())
        assert intake.check_record(rec) == [], rec
        records.append(rec)
    return records, skipped


def the_record(case: str) -> dict:
    records = [r for entry, body in trace_bodies(case) for r in map_body(entry, body)[0]]
    assert len({r["request_id"] for r in records}) == 1, records
    return records[0]


def test_every_recorded_case_has_its_expectation():
    assert sorted(p.stem for p in _sidecars()) == sorted(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_recorded_span_maps_every_field(case):
    rec = the_record(case)
    want = dict(EXPECTED[case])
    content = want.pop("content")
    cost = want.pop("cost_usd")
    assert {k: rec.get(k) for k in want} == want  # a field a span says nothing of is absent: null
    assert rec.get("cost_usd") == (None if cost is None else pytest.approx(cost, rel=1e-9))
    assert rec["customer_id"] == "tenant-a"
    assert rec["method"] == "POST"
    assert rec["metadata"]["service.name"] == "otel-fixture-recorder"
    assert rec["request_id"] == f"{rec['metadata']['trace_id']}-{rec['metadata']['span_id']}"
    if content:
        assert QUESTION in orjson.loads(rec["input_content"])[0]["parts"][0]["content"]
    else:
        assert "input_content" not in rec
    if content is True:
        assert ANSWER in orjson.loads(rec["output_content"])[0]["parts"][0]["content"]
    else:
        assert "output_content" not in rec


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_spans_that_are_not_genai_calls_are_skipped(case):
    skipped = [s for entry, body in trace_bodies(case) for s in map_body(entry, body)[1]]
    # the application's parent span (openai-v2, traceloop) or LiteLLM's raw_gen_ai_request child
    names = {s["name"] for s in skipped}
    if case == "litellm--completion-error":  # LiteLLM sends no raw_gen_ai_request span for a failure
        assert names == set()
    else:
        assert names == ({"raw_gen_ai_request"} if case.startswith("litellm") else {"handle_user_request"})


def test_same_span_as_protobuf_and_as_json_gets_one_request_id():
    (pb_entry, pb), (json_entry, js) = trace_bodies("openai-v2--chat-json")
    assert "protobuf" in pb_entry["content_type"] and "json" in json_entry["content_type"]
    (from_pb,), _ = map_body(pb_entry, pb)
    (from_json,), _ = map_body(json_entry, js)
    assert from_pb["request_id"] == from_json["request_id"]
    assert from_pb == from_json


def test_same_span_sent_twice_gets_the_same_request_id():
    entry, body = trace_bodies("litellm--acompletion")[0]
    first, _ = map_body(entry, body)
    again, _ = map_body(entry, body)
    assert [r["request_id"] for r in first] == [r["request_id"] for r in again]


def _litellm_error_span() -> dict:
    entry, body = trace_bodies("litellm--completion-error")[0]
    spans, _ = otlp.decode(body, entry["content_type"])
    (span,) = [s for s in spans if otlp.is_genai(s)]
    return span


def test_error_message_from_error_message_attribute_when_status_has_none():
    # LiteLLM versions and proxies that end the span with an empty status message still send error.message.
    span = copy.deepcopy(_litellm_error_span())
    span["status_message"] = ""
    rec = otlp.span_to_record(span, customer_id="c", content=False, pricing=NoPrices())
    assert rec["error_message"] == span["attributes"]["error.message"]
    assert rec["error_type"] == "NotFoundError"


def test_error_message_from_the_exception_event_when_nothing_else_says():
    span = copy.deepcopy(_litellm_error_span())
    span["status_message"] = ""
    del span["attributes"]["error.message"]
    (event,) = [e for e in span["events"] if e["name"] == "exception"]
    rec = otlp.span_to_record(span, customer_id="c", content=False, pricing=NoPrices())
    assert rec["error_message"] == event["attributes"]["exception.message"]


def test_exception_events_are_decoded_from_protobuf_and_json():
    span = _litellm_error_span()
    assert any(e["name"] == "exception" for e in span["events"])
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "ab" * 16,
                                "spanId": "cd" * 8,
                                "name": "chat",
                                "events": [
                                    {
                                        "name": "exception",
                                        "attributes": [
                                            {"key": "exception.message", "value": {"stringValue": "boom"}}
                                        ],
                                    }
                                ],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    (decoded,), _ = otlp.decode(orjson.dumps(doc), "application/json")
    assert decoded["events"] == [{"name": "exception", "attributes": {"exception.message": "boom"}}]


def test_legacy_content_arrives_as_a_separate_logs_export_linked_by_span_id():
    """openai-v2 2.0b0 sends message content as log events in its own /v1/logs request, not in the span
    export: the proxy cannot join them (its /v1/logs takes canonical records), so the span maps without it."""
    meta = json.loads((FIXTURES / "openai-v2-legacy--chat-content.json").read_text())
    (logs,) = [b for b in meta["bodies"] if b["path"] == "/v1/logs"]
    request = ExportLogsServiceRequest()
    request.ParseFromString((FIXTURES / logs["file"]).read_bytes())
    events = {}
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for log in scope_logs.log_records:
                name = {kv.key: kv.value.string_value for kv in log.attributes}["event.name"]
                events[name] = log
    assert set(events) == {"gen_ai.user.message", "gen_ai.choice"}
    rec = the_record("openai-v2-legacy--chat-content")
    for log in events.values():
        assert log.trace_id.hex() == rec["metadata"]["trace_id"]
        assert log.span_id.hex() == rec["metadata"]["span_id"]
    assert "Say hello." in str(events["gen_ai.user.message"].body)
    assert rec.get("input_content") is None and rec.get("output_content") is None


@pytest.mark.parametrize(
    ("sent", "read"),
    [("False", False), ("false", False), ("True", True), ("1", True), ("0", False), (0, False), (True, True)],
)
def test_booleans_sent_as_text_are_read_as_booleans(sent, read):
    span = copy.deepcopy(_litellm_error_span())
    span["attributes"]["llm.is_streaming"] = sent
    assert otlp.span_to_record(span, customer_id="c", content=False, pricing=NoPrices())["stream"] is read


def test_numbers_sent_as_text_are_read_as_numbers():
    span = copy.deepcopy(_litellm_error_span())
    span["attributes"] |= {
        "gen_ai.usage.input_tokens": "12",
        "gen_ai.usage.output_tokens": "7.0",
        "gen_ai.cost.total_cost": "5.7e-06",
        "http.response.status_code": "404",
    }
    rec = otlp.span_to_record(span, customer_id="c", content=False, pricing=NoPrices())
    assert (rec["input_tokens"], rec["output_tokens"], rec["total_tokens"]) == (12, 7, 19)
    assert rec["cost_usd"] == 5.7e-06
    assert rec["status_code"] == 404


def test_empty_provider_falls_back_to_the_model_prefix():
    span = copy.deepcopy(_litellm_error_span())
    span["attributes"] |= {"gen_ai.system": "", "gen_ai.request.model": "anthropic/claude-x"}
    del span["attributes"]["litellm.provider.model"]
    del span["attributes"]["error.llm_provider"]
    rec = otlp.span_to_record(span, customer_id="c", content=False, pricing=NoPrices())
    assert rec["provider"] == "anthropic"


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_trace_context_is_the_spans_trace_and_its_parent(case):
    """As the proxy records a traceparent: trace_id is the trace, span_id the caller's span (the parent)."""
    rec = the_record(case)
    assert rec["trace_id"] == rec["metadata"]["trace_id"]
    app_spans = [s for entry, body in trace_bodies(case) for s in map_body(entry, body)[1]]
    parents = {s["span_id"] for s in app_spans if s["name"] == "handle_user_request"}
    if case.startswith(("openai-v2", "traceloop")):  # the GenAI span is the child of the application's span
        assert rec["span_id"] in parents
    else:  # LiteLLM's span is the root of its trace
        assert "span_id" not in rec


def test_request_parameters_and_tool_calls_of_the_conventions_are_mapped():
    """gen_ai.request.* parameters, gen_ai.tool.definitions and tool_call parts of gen_ai.output.messages."""
    span = copy.deepcopy(_litellm_error_span())
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    span["attributes"].update(
        {
            "gen_ai.request.temperature": 0.3,
            "gen_ai.request.top_p": "0.8",
            "gen_ai.request.max_tokens": 100,
            "gen_ai.request.seed": -1,
            "gen_ai.request.stop_sequences": '["END"]',
            "gen_ai.request.choice.count": 2,
            "gen_ai.request.frequency_penalty": -0.5,
            "gen_ai.tool.definitions": orjson.dumps(tools).decode(),
            "gen_ai.output.messages": orjson.dumps(
                [{"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "get_weather",
                                                  "arguments": {"city": "Oslo"}}]}]
            ).decode(),
        }
    )
    rec = otlp.span_to_record(span, customer_id="t", content=True, pricing=NoPrices())
    assert intake.check_record(rec) == []
    assert (rec["temperature"], rec["top_p"], rec["max_tokens"], rec["seed"]) == (0.3, 0.8, 100, -1)
    assert (rec["stop"], rec["n"], rec["frequency_penalty"]) == (["END"], 2, -0.5)
    assert rec["tool_names"] == ["get_weather"] and orjson.loads(rec["tool_definitions"]) == tools
    assert rec["tool_calls"] == [{"id": "c1", "name": "get_weather", "arguments": '{"city":"Oslo"}'}]
    assert (rec["tool_call_names"], rec["tool_call_count"]) == (["get_weather"], 1)
    without = otlp.span_to_record(span, customer_id="t", content=False, pricing=NoPrices())
    assert "tool_calls" not in without and without["tool_call_names"] == ["get_weather"]
