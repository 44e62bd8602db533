"""The OTLP spans of one /v1/traces request -> records to land, without a server (``intake.convert_spans``)."""

from __future__ import annotations

import orjson

from bifrost_pipeline.proxy import intake
from bifrost_pipeline.proxy.pricing import Pricing

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def span(span_id: str, name: str, attributes: dict, **extra) -> dict:
    return {
        "name": name,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": span_id,
        "start_ns": START_NS,
        "end_ns": START_NS + 250_000_000,
        "status_code": 0,
        "status_message": "",
        "attributes": attributes,
        "resource": {"service.name": "svc"},
        **extra,
    }


CHAT_SPAN = span(
    "b7ad6b7169203331",
    "chat gpt-4o-mini",
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5,
    },
)
PLAIN_SPAN = span("00f067aa0ba902b7", "GET /health", {"http.request.method": "GET"})
BROKEN_SPAN = span("1111111111111111", "", {}, error="attribute gen_ai.usage.input_tokens: not a number")


def test_genai_spans_become_records_others_are_skipped_and_unreadable_ones_reported():
    batch = intake.convert_spans(
        [CHAT_SPAN, PLAIN_SPAN, BROKEN_SPAN], customer_id="cust_1", content=False, pricing=Pricing()
    )
    assert (batch.landed, batch.skipped, batch.rejected) == (1, 1, 1)
    assert batch.reasons == ["span 1111111111111111: (span): attribute gen_ai.usage.input_tokens: not a number"]
    [(hour, [line])] = batch.groups.items()
    rec = orjson.loads(line)
    assert hour.isoformat() == "2026-01-01T00:00:00+00:00"
    assert (rec["customer_id"], rec["provider"], rec["model"]) == ("cust_1", "openai", "gpt-4o-mini")
    assert intake.check_record(rec) == []


def test_nothing_is_landed_when_no_span_makes_a_record():
    batch = intake.convert_spans([PLAIN_SPAN], customer_id="c", content=False, pricing=Pricing())
    assert batch.landed == 0 and batch.groups == {}
