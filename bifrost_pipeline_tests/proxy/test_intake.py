"""`/v1/logs` (canonical records, NDJSON or JSON array) and `/v1/traces` (OTLP/HTTP, protobuf and JSON)."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from .conftest import canonical_record, landed, wait_for


def _by_id(root, ids: set[str]) -> dict[str, dict]:
    def find():
        found = {r["request_id"]: r for r in landed(root) if r["request_id"] in ids}
        return found if len(found) == len(ids) else None

    return wait_for(find, 5, f"{len(ids)} intake records")


def test_logs_ndjson_accepts_valid_and_reports_rejected_lines(proxy_env):
    good1, good2 = canonical_record(), canonical_record(timestamp="2026-03-04T23:59:59+02:00")  # 21:59 UTC
    lines = [
        json.dumps(good1),
        '{"request_id": "broken", "timestamp": ',
        json.dumps({k: v for k, v in canonical_record().items() if k != "customer_id"}),
        "",
        json.dumps(canonical_record(status_code="two hundred")),
        json.dumps(canonical_record(timestamp="yesterday")),
        json.dumps(good2),
        json.dumps(canonical_record(metadata={"n": 1})),
    ]
    r = httpx.post(
        proxy_env["url"] + "/v1/logs",
        content="\n".join(lines).encode(),
        headers={"content-type": "application/x-ndjson"},
    )
    assert r.status_code == 200
    report = r.json()
    assert report["accepted"] == 2 and report["rejected_count"] == 5
    got = {x["line"]: (x["path"], x["reason"]) for x in report["rejected"]}
    assert set(got) == {2, 3, 5, 6, 8}
    assert got[2][0] == "(line)" and got[2][1].startswith("invalid JSON")
    assert got[3] == ("customer_id", "'customer_id' is a required property")
    assert got[5][0] == "status_code" and "is not of type 'integer'" in got[5][1]
    assert got[6][0] == "timestamp" and "is not a 'date-time'" in got[6][1]
    assert got[8][0] == "metadata.n"
    recs = _by_id(proxy_env["landing"], {good1["request_id"], good2["request_id"]})
    assert recs[good1["request_id"]]["latency_ms"] == 321
    # Each record lands in the hour directory of its own UTC timestamp.
    paths = {
        p.parent.parent.name + "/" + p.parent.name
        for p in proxy_env["landing"].glob("date=2026-03-04/*/*.ndjson")
    }
    assert {"date=2026-03-04/hour=05", "date=2026-03-04/hour=21"} <= paths


def test_logs_json_array_reports_indexes(proxy_env):
    good = canonical_record()
    r = httpx.post(proxy_env["url"] + "/v1/logs", json=[good, {"schema_version": "2"}, "text"])
    report = r.json()
    assert report["accepted"] == 1
    assert [x["index"] for x in report["rejected"]] == [1, 2]
    assert "expected a JSON object" in report["rejected"][1]["reason"]
    _by_id(proxy_env["landing"], {good["request_id"]})


def test_logs_bad_body(proxy_env):
    r = httpx.post(proxy_env["url"] + "/v1/logs", content=b"[1, 2")
    assert r.status_code == 400 and "not a JSON array" in r.json()["error"]["message"]
    assert httpx.get(proxy_env["url"] + "/v1/logs").status_code == 405


def _tracer(url: str) -> tuple[TracerProvider, object]:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "bifrost", "deployment.environment": "test"})
    )
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces", timeout=5)))
    return provider, provider.get_tracer("bifrost.otel")


def test_traces_protobuf_from_the_otel_sdk(proxy_env):
    provider, tracer = _tracer(proxy_env["url"])
    resp_id = f"chatcmpl-{uuid.uuid4().hex[:8]}"
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 50,
                "gen_ai.response.id": resp_id,
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
                ),
            }
        )
        time.sleep(0.01)  # a span with a measurable duration, not synchronization
    # Older attribute names, as Bifrost's OTel plugin sends them, and a failed span.
    with tracer.start_as_current_span("gen_ai.embedding") as span:
        span.set_attributes(
            {
                "gen_ai.system": "anthropic",
                "gen_ai.request.model": "claude-3-haiku",
                "gen_ai.usage.prompt_tokens": 7,
                "gen_ai.usage.completion_tokens": 3,
                "gen_ai.usage.cost": 0.5,
                "http.response.status_code": 429,
                "error.type": "rate_limit_error",
            }
        )
        span.set_status(Status(StatusCode.ERROR, "rate limited"))
    with tracer.start_as_current_span("db query") as span:  # not a GenAI span: skipped
        span.set_attribute("db.system", "postgresql")
    provider.shutdown()

    def find():
        recs = [
            r
            for r in landed(proxy_env["landing"])
            if (r["metadata"] or {}).get("service.name") == "bifrost"
            and r["customer_id"] == "anonymous"
            and r["model"] in ("gpt-4o", "claude-3-haiku")
        ]
        mine = [r for r in recs if r["metadata"].get("gen_ai.response.id") == resp_id]
        if not mine:
            return None
        trace = mine[0]["metadata"]["trace_id"]
        return mine[0], [
            r for r in recs if r["metadata"]["trace_id"] != trace and r["model"] == "claude-3-haiku"
        ]

    chat, embeds = wait_for(find, 5, "the OTLP records")
    assert (chat["provider"], chat["request_type"], chat["endpoint"]) == (
        "openai",
        "chat",
        "/v1/chat/completions",
    )
    assert (chat["input_tokens"], chat["output_tokens"], chat["total_tokens"]) == (100, 50, 150)
    assert chat["status"] == "success" and chat["status_code"] == 200 and chat["finish_reason"] == "stop"
    assert chat["latency_ms"] >= 10
    assert chat["cost_usd"] == pytest.approx((100 * 2.5 + 50 * 10.0) / 1e6)
    assert json.loads(chat["input_content"])[0]["role"] == "user"
    emb = embeds[-1]
    assert (emb["provider"], emb["request_type"]) == ("anthropic", "embeddings")
    assert (emb["input_tokens"], emb["output_tokens"], emb["cost_usd"]) == (7, 3, 0.5)
    assert (emb["status"], emb["status_code"], emb["error_type"], emb["error_message"]) == (
        "error",
        429,
        "rate_limit_error",
        "rate limited",
    )


def test_traces_json(proxy_env):
    trace_id = uuid.uuid4().hex
    now = time.time_ns()
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gw-json"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "x"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": "00f067aa0ba902b7",
                                "name": "gen_ai.chat",
                                "kind": 3,
                                "startTimeUnixNano": str(now - 250_000_000),
                                "endTimeUnixNano": str(now),
                                "attributes": [
                                    {"key": "gen_ai.system", "value": {"stringValue": "mistral"}},
                                    {
                                        "key": "gen_ai.request.model",
                                        "value": {"stringValue": "mistral-large"},
                                    },
                                    {"key": "gen_ai.usage.prompt_tokens", "value": {"intValue": "1000"}},
                                    {"key": "gen_ai.usage.completion_tokens", "value": {"intValue": "2000"}},
                                    {"key": "gen_ai.request.stream", "value": {"boolValue": True}},
                                ],
                                "status": {"code": 1},
                            },
                            {
                                "traceId": trace_id,
                                "spanId": "00f067aa0ba902b8",
                                "name": "gen_ai.chat",
                                "startTimeUnixNano": "not-a-number",
                                "endTimeUnixNano": "0",
                                "attributes": [{"key": "gen_ai.system", "value": {"stringValue": "x"}}],
                            },
                        ],
                    }
                ],
            }
        ]
    }
    r = httpx.post(proxy_env["url"] + "/v1/traces", json=doc, headers={"X-Customer": "tenant-json"})
    # The span whose times are not numbers is rejected alone, in the OTLP partial_success.
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "span 00f067aa0ba902b8: (span): unreadable span: ValueError" in partial["errorMessage"]

    def find():
        return [x for x in landed(proxy_env["landing"]) if x["metadata"].get("trace_id") == trace_id]

    (rec,) = wait_for(find, 5, "the OTLP JSON record")
    assert (rec["customer_id"], rec["provider"], rec["model"], rec["stream"]) == (
        "tenant-json",
        "mistral",
        "mistral-large",
        True,
    )
    assert rec["latency_ms"] == 250 and (rec["input_tokens"], rec["output_tokens"]) == (1000, 2000)
    assert rec["cost_usd"] == pytest.approx((1000 * 2.0 + 2000 * 6.0) / 1e6)
    assert rec["request_id"] == f"{trace_id}-00f067aa0ba902b7"


def test_traces_garbage(proxy_env):
    r = httpx.post(
        proxy_env["url"] + "/v1/traces",
        content=b"\xff\x00garbage",
        headers={"content-type": "application/x-protobuf"},
    )
    assert r.status_code == 400


def test_traces_with_a_string_that_is_not_utf8_are_refused_whole_naming_the_attribute(proxy_env):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    good_model = f"model-{uuid.uuid4().hex}"
    for i, model in enumerate([good_model, "MODELX"]):  # the first span is good: nothing lands either way
        spans.add(name="chat", trace_id=bytes(16), span_id=(i + 1).to_bytes(8, "big"), start_time_unix_nano=1,
                  attributes=[KeyValue(key="gen_ai.request.model", value=AnyValue(string_value=model))])
    body = req.SerializeToString().replace(b"MODELX", b"MODEL\xff")
    r = httpx.post(proxy_env["url"] + "/v1/traces", content=body, headers={"content-type": "application/x-protobuf"})
    assert r.status_code == 400 and "gen_ai.request.model" in r.json()["message"] and "UTF-8" in r.json()["message"]
    time.sleep(0.3)
    # no segment, published or still being written, holds the good span
    assert not [p for p in proxy_env["landing"].rglob("*") if p.is_file() and good_model.encode() in p.read_bytes()]


def test_traces_gzip_protobuf(proxy_env):
    import gzip

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = uuid.uuid4().bytes
    span.span_id = b"\x01" * 8
    span.name = "chat claude-3-haiku"
    span.start_time_unix_nano = time.time_ns() - 10_000_000
    span.end_time_unix_nano = time.time_ns()
    for key, value in {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-3-haiku",
    }.items():
        span.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    span.attributes.append(KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=4)))
    r = httpx.post(
        proxy_env["url"] + "/v1/traces",
        content=gzip.compress(req.SerializeToString()),
        headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    trace_id = span.trace_id.hex()
    (rec,) = wait_for(
        lambda: [
            x for x in landed(proxy_env["landing"]) if (x["metadata"] or {}).get("trace_id") == trace_id
        ],
        5,
        "the gzip OTLP record",
    )
    assert (rec["provider"], rec["model"], rec["input_tokens"], rec.get("output_tokens")) == (
        "anthropic",
        "claude-3-haiku",
        4,
        None,
    )
