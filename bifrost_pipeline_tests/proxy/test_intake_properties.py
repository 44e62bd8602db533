"""Whatever a request holds, the intake answers it, and what it lands the pipeline takes.

For generated ``/v1/traces`` requests (every attribute the mapping reads, with values of every kind and
size) and ``/v1/logs`` bodies (numbers past every column's range among them):
- the intake never raises: every span or line is landed, skipped (a span that is not GenAI) or rejected with
  a reason that names the field at fault;
- every landed line is a record the day's validation keeps: nothing the intake answered "landed" for is
  quarantined later (an integer past its Parquet column, a time the reader cannot parse, ...).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from bifrost_pipeline import validation
from bifrost_pipeline.proxy import intake, otlp, otlp_wire
from bifrost_pipeline.proxy.pricing import Pricing
from bifrost_pipeline_tests.helpers import land_bytes, make_app, record

from .test_native import READ_NAMES, genai_requests

INT64_MAX = 2**63 - 1


def _validation_keeps(lines: list[bytes]) -> None:
    """Land ``lines`` by their UTC day and validate each day: every line is kept, none quarantined."""
    by_day: dict = defaultdict(list)
    for line in lines:
        by_day[intake.record_hour(orjson.loads(line)).date()].append(line)
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(Path(tmp))
        for day, day_lines in by_day.items():
            land_bytes(app, b"\n".join(day_lines) + b"\n", datetime(day.year, day.month, day.day, 12, tzinfo=UTC))
            result = validation.validate_day(app, day)
            assert result.quarantined_rows == 0, dict(result.reasons)
            assert result.valid_rows + result.duplicates == len(day_lines)


def _named_field(reason: str) -> str:
    """The field a rejection names: "span <id>: <path>: <reason>" or "<path>" of a line's report."""
    return reason.split(": ", 2)[1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(genai_requests(), st.booleans())
def test_every_span_is_landed_skipped_or_rejected_naming_a_field_and_validation_keeps_what_landed(body, content):
    spans = list(otlp_wire.decode_spans(body))
    batch = intake.convert_spans(spans, customer_id="c", content=content, pricing=Pricing())
    assert batch.landed + batch.skipped + batch.rejected == len(spans)
    assert len(batch.reasons) == batch.rejected
    for reason in batch.reasons:
        assert _named_field(reason) != "(span)", reason  # a field, not an exception's words
    lines = [line for group in batch.groups.values() for line in group]
    for line in lines:
        assert intake.check_record(orjson.loads(line)) == []
    _validation_keeps(lines)


def _span_request(**attributes: AnyValue) -> bytes:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    spans.add(name="chat gpt-4o", trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=1_700_000_000 * 10**9,
              attributes=[KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o"))])
    spans.add(name="chat gpt-4o", trace_id=b"\x01" * 16, span_id=b"\x03" * 8, start_time_unix_nano=1_700_000_000 * 10**9,
              attributes=[KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o")),
                          *[KeyValue(key=k, value=v) for k, v in attributes.items()]])  # fmt: skip
    return req.SerializeToString()


def test_numbers_past_a_column_reject_their_span_naming_the_field_and_the_other_spans_land():
    """Found by the generated spans: a seed sent as the double 2**64 passed the check (it had no bound) and
    then failed the whole request where the record is written. Each integer field is now bounded by its
    Parquet column in schemas/, and a span past it is rejected, its field named; the request's other spans land."""
    cases = {
        "gen_ai.request.seed": (AnyValue(double_value=2.0**64), "seed"),
        "gen_ai.request.max_tokens": (AnyValue(int_value=2**31), "max_tokens"),
        "gen_ai.usage.input_tokens": (AnyValue(string_value="1e300"), "input_tokens"),
        "gen_ai.response.time_to_first_chunk": (AnyValue(double_value=1e306), "time_to_first_token_ms"),
        "bifrost.retries": (AnyValue(int_value=2**40), "retries"),
        "bifrost.request_bytes": (AnyValue(string_value=str(2**70)), "request_bytes"),
    }
    for name, (value, field) in cases.items():
        batch = intake.convert_spans(
            list(otlp_wire.decode_spans(_span_request(**{name: value}))), customer_id="c", content=False, pricing=Pricing()
        )
        assert (batch.landed, batch.rejected) == (1, 1), name
        assert _named_field(batch.reasons[0]) == field, batch.reasons
    # within range, the same numbers land
    batch = intake.convert_spans(
        list(otlp_wire.decode_spans(_span_request(**{"gen_ai.request.seed": AnyValue(int_value=-(2**63))}))),
        customer_id="c", content=False, pricing=Pricing(),
    )  # fmt: skip
    assert batch.landed == 2 and {orjson.loads(x).get("seed") for g in batch.groups.values() for x in g} == {None, -(2**63)}


# Integers of every size, past int64 and uint64 both ways (orjson reads up to 2**64 - 1 as an int, and
# -2**63 - 1 as the float -2**63), and numbers with a fraction or an exponent (100.0, 1e+20).
big_integers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**31 - 1, 2**31, INT64_MAX, INT64_MAX + 1, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**70), 2**70).map(float),
)
INTEGER_FIELDS = ["seed", "retries", "fallback_index", "latency_ms", "input_tokens", "max_tokens", "n",
                  "tool_call_count", "request_bytes", "response_bytes", "input_audio_bytes", "status_code"]  # fmt: skip


# RFC 3339 date-times as senders may write them: any year, any offset, any number of fraction digits, lower
# case t and z; the edges of the calendar, where the UTC time leaves years 1-9999.
timestamps = st.builds(
    lambda day, time, fraction, zone, t: f"{day}{t}{time}{fraction}{zone}",
    st.dates().map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}"),
    st.times().map(lambda x: f"{x.hour:02d}:{x.minute:02d}:{x.second:02d}"),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=12).map(lambda f: "." + f)),
    st.one_of(st.sampled_from(["Z", "z", "+00:00", "-00:00"]),
              st.builds(lambda s, h, m: f"{s}{h:02d}:{m:02d}", st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59))),
    st.sampled_from("Tt"),
)  # fmt: skip
timestamps = st.one_of(timestamps, st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-00:01"]))


@st.composite
def ndjson_bodies(draw) -> tuple[bytes, int]:
    lines = []
    for i in range(draw(st.integers(1, 8))):
        rec = record(request_id=f"r{i}")
        if draw(st.booleans()):
            rec["timestamp"] = draw(timestamps)
        for name in draw(st.lists(st.sampled_from(INTEGER_FIELDS), max_size=3)):
            rec[name] = draw(big_integers)
        if draw(st.booleans()):
            rec["attempts"] = [{"provider": "openai", "model": "gpt-4o", "status_code": draw(big_integers),
                                "latency_ms": draw(big_integers)}]  # fmt: skip
        lines.append(json.dumps(rec).encode())  # json, not orjson: it writes integers of any size
    return b"\n".join(lines), len(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ndjson_bodies(), st.booleans())
def test_every_line_is_landed_or_rejected_naming_a_field_and_validation_keeps_what_landed(body_and_count, strip):
    body, count = body_and_count
    groups, report = intake.process_batch(body, strip_content=strip)
    assert report["accepted"] + report["rejected_count"] == count
    for rejected in report["rejected"]:
        assert rejected["path"] not in ("(line)", "(record)", ""), rejected
        assert re.split(r"[.[]", rejected["path"])[0] in [*INTEGER_FIELDS, "attempts", "timestamp"], rejected
    lines = [line for group in groups.values() for line in group]
    assert len(lines) == report["accepted"]
    _validation_keeps(lines)


def _integer_properties(props: dict, prefix: str = ""):
    for name, prop in props.items():
        types = prop.get("type") if isinstance(prop.get("type"), list) else [prop.get("type")]
        if "integer" in types:
            yield prefix + name, prop
        yield from _integer_properties(prop.get("properties", {}), prefix + name + ".")
        yield from _integer_properties(prop.get("items", {}).get("properties", {}), prefix + name + "[].")


def test_every_integer_in_the_schema_is_bounded_by_what_its_column_holds():
    """The check at intake is the schema; a field without bounds let through what Parquet cannot hold."""
    found = list(_integer_properties(intake.reference_validator().schema["properties"]))
    assert len(found) > 20
    for name, prop in found:
        low, high = (-(2**31), 2**31 - 1) if prop.get("x-parquet") == "int32" else (-(2**63), 2**63 - 1)
        assert "minimum" in prop and "maximum" in prop, name
        assert low <= prop["minimum"] <= prop["maximum"] <= high, name


# OTLP/JSON as senders write it, and not: any JSON where a time, an id or an AnyValue's field goes.
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.sampled_from(["1700000000000000000", "-1", "18446744073709551616", "NaN", "Infinity", "1e3"]),
)  # fmt: skip
json_any_values = st.one_of(
    json_scalars,
    st.builds(lambda k, v: {k: v}, st.sampled_from(["stringValue", "boolValue", "intValue", "doubleValue", "bytesValue"]), json_scalars),
    st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(st.builds(lambda v: {"stringValue": v}, json_scalars), max_size=2)),
)  # fmt: skip


@st.composite
def otlp_json_bodies(draw) -> bytes:
    spans = []
    for i in range(draw(st.integers(1, 3))):
        span = {"name": "chat", "traceId": "ab" * 16, "spanId": f"{i + 1:016x}",
                "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}]}  # fmt: skip
        for key in draw(st.lists(st.sampled_from(["startTimeUnixNano", "endTimeUnixNano", "status"]), max_size=3)):
            span[key] = draw(json_scalars) if key != "status" else {"code": draw(json_scalars)}
        for name, value in draw(st.lists(st.tuples(st.sampled_from(READ_NAMES), json_any_values), max_size=6)):
            span["attributes"].append({"key": name, "value": value})
        spans.append(span)
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(otlp_json_bodies())
def test_otlp_json_spans_are_landed_or_rejected_with_a_reason_and_validation_keeps_what_landed(body):
    """A body is refused whole (ValueError: a 400) or each span is landed or rejected with its reason; a
    time that is not nanoseconds since the epoch is named."""
    try:
        spans, _ = otlp.decode(body, "application/json")
        spans = list(spans)
    except ValueError:
        return
    batch = intake.convert_spans(spans, customer_id="c", content=True, pricing=Pricing())
    assert batch.landed + batch.skipped + batch.rejected == len(spans)
    for reason in batch.reasons:
        if "TimeUnixNano" in reason:
            assert "is not nanoseconds since the epoch" in reason, reason
    _validation_keeps([line for group in batch.groups.values() for line in group])
