"""``otlp_wire`` reads OTLP trace requests as opentelemetry-proto's generated classes do: the same spans, value
for value, on generated requests (every kind of attribute value, duplicated keys, long strings, status and
events) and on the recorded emitters' bodies; on bodies with bytes cut, changed or inserted it refuses
nothing they read, reads the same wherever the body is written as protobuf writes it, and refuses with a
ValueError or protobuf's DecodeError, never anything else.

Where the package is compiled, ``decode_spans`` reads most requests with ``otlp_scan`` (C, from the bytes)
and leaves the rest to the view. It reads exactly what the view alone reads on every body an encoder writes
(generated, recorded), and what the generated classes read on requests with fields added at every level:
unknown ones, known ones written again or with another wire type, groups. There the view itself falls
short: its map drops an attribute whose KeyValue holds a field it does not know."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from bifrost_pipeline.proxy import native, otlp_wire

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "otlp"


def reference_decode(body: bytes) -> list[dict]:
    """The spans as the generated classes read them (what ``/v1/traces`` did before ``otlp_wire``)."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    spans = []
    for rs in req.resource_spans:
        resource = otlp_wire.attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append(
                    {
                        "name": s.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "start_ns": s.start_time_unix_nano,
                        "end_ns": s.end_time_unix_nano,
                        "status_code": s.status.code,
                        "status_message": s.status.message,
                        "attributes": otlp_wire.attributes(s.attributes),
                        "events": [{"name": e.name, "attributes": otlp_wire.attributes(e.attributes)} for e in s.events],
                        "resource": resource,
                    }
                )
    return spans


def view_decode(body: bytes) -> list[dict]:
    """The spans as the view alone reads them (``decode_spans`` without ``otlp_scan``)."""
    req = otlp_wire.request_class()()
    req.ParseFromString(body)
    return list(otlp_wire._spans(req))


def assert_read_as_the_view(body: bytes) -> tuple[str, object]:
    """decode_spans (the scanner where compiled) reads exactly what the view reads, or refuses what it refuses."""
    mine, view = outcome(otlp_wire.decode_spans, body), outcome(view_decode, body)
    assert mine[0] == view[0]
    assert same(mine[1], view[1])
    return mine


def outcome(decode, body: bytes) -> tuple[str, object]:
    """("spans", the spans) or ("refused", None). Any other exception fails the test: the intake answers a
    refusal (ValueError, DecodeError) with 400, anything else would be a 500."""
    try:
        return "spans", list(decode(body))
    except (DecodeError, ValueError):
        return "refused", None


def same(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN (a double attribute may be NaN) and a bool not equal to an int."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# --- generated requests -------------------------------------------------------------------------------------

texts = st.one_of(
    st.text(max_size=40),
    st.text(min_size=120, max_size=300),  # a length written in two bytes
    st.sampled_from(["", "é" * 70, "x" * 16_383, "y" * 16_384, "z" * 70_000]),  # around the inline limits
)
scalars = st.one_of(
    st.builds(lambda s: AnyValue(string_value=s), texts),
    st.builds(lambda b: AnyValue(bool_value=b), st.booleans()),
    st.builds(lambda i: AnyValue(int_value=i), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda i: AnyValue(int_value=i), st.sampled_from([0, 1, 127, 128, 2**62, 2**63 - 1, -1])),
    st.builds(lambda d: AnyValue(double_value=d), st.floats()),
    st.builds(lambda b: AnyValue(bytes_value=b), st.binary(max_size=20)),
    st.just(AnyValue()),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.builds(lambda vs: AnyValue(array_value=ArrayValue(values=vs)), st.lists(inner, max_size=4)),
        st.builds(
            lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs])),
            st.lists(st.tuples(st.text(max_size=8), inner), max_size=3),
        ),
    ),
    max_leaves=6,
)
keys = st.one_of(st.sampled_from(["gen_ai.request.model", "gen_ai.usage.input_tokens", "k", ""]), st.text(max_size=20))
attribute_lists = st.lists(st.tuples(keys, st.one_of(values, st.none())), max_size=8)  # keys may repeat


def _key_values(pairs: list) -> list[KeyValue]:
    return [KeyValue(key=k) if v is None else KeyValue(key=k, value=v) for k, v in pairs]


@st.composite
def spans(draw) -> Span:
    span = Span(
        name=draw(st.text(max_size=20)),
        trace_id=draw(st.binary(min_size=16, max_size=16)),
        span_id=draw(st.binary(min_size=8, max_size=8)),
        parent_span_id=draw(st.sampled_from([b"", b"\x00" * 8, b"\x01" * 8])),
        start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        end_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        attributes=_key_values(draw(attribute_lists)),
    )
    if draw(st.booleans()):
        span.status.CopyFrom(Status(code=draw(st.sampled_from([0, 1, 2])), message=draw(st.text(max_size=20))))
    for name, pairs in draw(st.lists(st.tuples(st.text(max_size=10), attribute_lists), max_size=2)):
        span.events.add(name=name, attributes=_key_values(pairs))
    return span


@st.composite
def requests(draw) -> bytes:
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(_key_values(draw(attribute_lists)))
        for _ in range(draw(st.integers(0, 2))):
            rs.scope_spans.add().spans.extend(draw(st.lists(spans(), max_size=3)))
    return req.SerializeToString()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(requests())
def test_generated_requests_read_the_same(body):
    assert same(list(otlp_wire.decode_spans(body)), reference_decode(body))
    assert_read_as_the_view(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(requests(), st.data())
def test_damaged_requests_are_refused_or_read_the_same(body, data):
    """Bytes cut off, changed or inserted. What protobuf reads is read, and read the same when the damaged
    body is still written as protobuf writes it. Protobuf may refuse a body the view reads: a malformed value
    of a key a later duplicate replaces, which the view never reads (the module's one leniency); and where a
    message field is written twice (protobuf merges the copies, a map keeps the last), the two reads may
    differ, which no encoder writes."""
    if not body:
        return
    pos = data.draw(st.integers(0, len(body) - 1))
    how = data.draw(st.sampled_from(["cut", "change", "insert"]))
    byte = bytes([data.draw(st.integers(0, 255))])
    damaged = {"cut": body[:pos], "change": body[:pos] + byte + body[pos + 1 :], "insert": body[:pos] + byte + body[pos:]}[how]
    mine, reference = outcome(otlp_wire.decode_spans, damaged), outcome(reference_decode, damaged)
    if reference[0] == "spans":
        assert mine[0] == "spans"
        canonical = ExportTraceServiceRequest.FromString(damaged).SerializeToString() == damaged
        if canonical:
            assert same(mine[1], reference[1])


def test_a_malformed_value_replaced_by_a_later_duplicate_is_the_one_leniency():
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(name="s", attributes=[
        KeyValue(key="k", value=AnyValue(string_value="first")), KeyValue(key="k", value=AnyValue(string_value="last")),
    ])  # fmt: skip
    body = req.SerializeToString().replace(b"\x0a\x05first", b"\x00\x05first")  # field number 0: malformed
    assert outcome(reference_decode, body)[0] == "refused"
    (span,) = list(otlp_wire.decode_spans(body))
    assert span["attributes"] == {"k": "last"}
    assert_read_as_the_view(body)


def test_a_status_written_twice_is_merged_as_protobuf_merges_it():
    span = Span(name="s", span_id=b"\x01" * 8).SerializeToString()
    copies = Status(code=2).SerializeToString(), Status(message="late").SerializeToString()
    doubled = _wrap_span(span + b"".join(b"\x7a" + _varint(len(c)) + c for c in copies))  # field 15, twice
    (mine,) = list(otlp_wire.decode_spans(doubled))
    (theirs,) = reference_decode(doubled)
    assert (mine["status_code"], mine["status_message"]) == (theirs["status_code"], theirs["status_message"]) == (2, "late")
    assert_read_as_the_view(doubled)


def _wrap_span(span_bytes: bytes) -> bytes:
    """An ExportTraceServiceRequest holding one span given as its bytes (written as they are)."""
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2]) + _varint(len(payload)) + payload

    return field(1, field(2, field(2, span_bytes)))  # resource_spans(1) > scope_spans(2) > spans(2)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        out += bytes([n & 0x7F | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def test_a_malformed_value_refuses_the_body_naming_the_attribute():
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(name="s", attributes=[KeyValue(key="gen_ai.system", value=AnyValue(string_value="x"))])
    body = req.SerializeToString().replace(b"\x0a\x01x", b"\x00\x01x")
    with pytest.raises(ValueError, match="gen_ai.system"):
        list(otlp_wire.decode_spans(body))


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.traces.pb")), ids=lambda p: p.name)
def test_recorded_emitters_read_the_same(path):
    body = path.read_bytes()
    assert same(list(otlp_wire.decode_spans(body)), reference_decode(body))
    assert_read_as_the_view(body)


@pytest.mark.parametrize(
    "value",
    [
        AnyValue(string_value="stop"),
        AnyValue(string_value="ü" * 100),
        AnyValue(int_value=412),
        AnyValue(int_value=-5),
        AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="stop"), AnyValue(string_value="length")])),
        AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="a"), AnyValue(int_value=1)])),
        AnyValue(array_value=ArrayValue()),
        AnyValue(bool_value=False),
        AnyValue(double_value=0.25),
        AnyValue(),
    ],
    ids=str,
)
def test_each_kind_of_value(value):
    assert same(otlp_wire.value_of(value.SerializeToString()), otlp_wire.any_value(value))


def test_a_string_written_twice_keeps_the_last_as_protobuf_does():
    raw = AnyValue(string_value="first").SerializeToString() + AnyValue(string_value="last").SerializeToString()
    assert otlp_wire.value_of(raw) == "last" == otlp_wire.any_value(AnyValue.FromString(raw))


def test_a_string_that_is_not_utf8_refuses_the_body():
    good = ExportTraceServiceRequest()
    good.resource_spans.add().scope_spans.add().spans.add(name="s", attributes=[KeyValue(key="k", value=AnyValue(string_value="ab"))])
    body = good.SerializeToString().replace(b"ab", b"a\xff")
    assert outcome(otlp_wire.decode_spans, body)[0] == "refused" == outcome(reference_decode, body)[0]


# --- what the scanner leaves to the view ---------------------------------------------------------------------

WIRE_VALUES = {0: _varint(300), 1: b"\x01" * 8, 2: _varint(3) + b"abc", 5: b"\x02" * 4}  # wire type -> a payload


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _extra(number: int, wire: int) -> bytes:
    if wire == 3:  # a group holding a varint field, closed by the END_GROUP of its number
        return _field(number, 3, b"") + _field(1, 0, _varint(5)) + _field(number, 4, b"")
    return _field(number, wire, WIRE_VALUES[wire])


def extra_fields(merged: set[int]):
    """Fields to add to a message: known numbers (1-20) and unknown ones, each with any wire type; not a
    message field of ``merged``'s numbers written again (protobuf merges the copies, which no encoder writes
    and which the view does not merge)."""
    field = st.builds(
        _extra, st.one_of(st.integers(1, 20), st.integers(100, 5000)), st.sampled_from([0, 1, 2, 3, 5])
    ).filter(lambda b: not any(b.startswith(_varint(n << 3 | 2)) for n in merged))
    return st.lists(field, max_size=3)


def _message(number: int, body: bytes) -> bytes:
    return _field(number, 2, _varint(len(body)) + body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    spans(), attribute_lists, extra_fields({15}), extra_fields({2}), extra_fields(set()), extra_fields(set()),
    extra_fields({1}), extra_fields(set()),
)  # fmt: skip
def test_fields_added_at_every_level_are_read_as_protobuf_reads_them(span, resource, in_span, in_kv, in_status, in_scope, in_resource_spans, in_request):
    """Extra fields in a span, an attribute, a status, a scope's and a resource's spans and the request:
    whatever protobuf's generated classes read, decode_spans reads the same."""
    kv = KeyValue(key="gen_ai.system", value=AnyValue(string_value="openai")).SerializeToString() + b"".join(in_kv)
    status = Status(code=2, message="m").SerializeToString() + b"".join(in_status)
    if span.HasField("status"):
        span.ClearField("status")  # the status below is the span's only one
    span_bytes = span.SerializeToString() + _message(9, kv) + _message(15, status) + b"".join(in_span)
    scope = _message(2, span_bytes) + b"".join(in_scope)
    resource_bytes = _message(1, b"".join(_message(1, kv.SerializeToString()) for kv in _key_values(resource)))
    body = _message(1, resource_bytes + _message(2, scope) + b"".join(in_resource_spans)) + b"".join(in_request)
    reference = outcome(reference_decode, body)
    if reference[0] == "spans":
        mine = outcome(otlp_wire.decode_spans, body)
        assert mine[0] == "spans"
        assert same(mine[1], reference[1])


def test_a_span_the_scanner_does_not_read_is_read_by_the_view_alone():
    """A status written twice (protobuf merges the copies) and a value that is not UTF-8 under a key a later
    duplicate replaces: the compiled scanner leaves those spans to the view, one by one, and reads the rest."""
    if native.state("otlp_scan") != "compiled":
        pytest.skip(f"otlp_scan is {native.state('otlp_scan')}")
    from bifrost_pipeline.proxy import otlp_scan

    plain = Span(name="plain", span_id=b"\x01" * 8).SerializeToString()
    merged = Span(name="merged", span_id=b"\x02" * 8).SerializeToString() + _message(15, Status(code=2).SerializeToString()) + _message(15, Status(message="late").SerializeToString())
    replaced = Span(name="replaced", span_id=b"\x03" * 8, attributes=[
        KeyValue(key="k", value=AnyValue(string_value="\x00bad")), KeyValue(key="k", value=AnyValue(string_value="good")),
    ]).SerializeToString().replace(b"\x00bad", b"\xffbad")  # fmt: skip
    body = _message(1, _message(2, b"".join(_message(2, s) for s in (plain, merged, replaced, plain))))
    read_by_view = []

    def view_span(s, resource):
        read_by_view.append(s.name)
        return otlp_wire._span(s, resource)

    req = otlp_wire.request_class()()
    req.ParseFromString(body)
    spans = list(otlp_scan.spans(body, otlp_scan.layout(body), req, view_span, otlp_wire.attributes))
    assert read_by_view == ["merged", "replaced"]
    assert same(spans, view_decode(body))
    assert (spans[1]["status_code"], spans[1]["status_message"]) == (2, "late")
    assert spans[2]["attributes"] == {"k": "good"}


def _key_slot(name: str) -> int:
    """The slot of otlp_scan's cache of attribute names (FNV-1a of the UTF-8 bytes, 1,024 slots)."""
    h = 14695981039346656037
    for b in name.encode():
        h = ((h ^ b) * 1099511628211) % 2**64
    return h & 1023


def test_attribute_names_that_share_a_cache_slot_long_ones_and_non_ascii_ones_are_each_read_as_written():
    """otlp_scan reuses the str of an attribute name read before; names that hash to the same slot take turns
    in it, and names over 64 bytes or not ASCII are never kept. Span after span, each reads as protobuf does."""
    by_slot: dict[int, str] = {}
    pair = None
    for i in range(5000):
        name = f"gen_ai.k{i}"
        slot = _key_slot(name)
        if slot in by_slot:
            pair = (by_slot[slot], name)
            break
        by_slot[slot] = name
    assert pair is not None
    names = [*pair, "x" * 65, "é.model", "gen_ai.request.model", "", pair[0]]
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    for i in range(12):
        attrs = [(names[(i + j) % len(names)], AnyValue(string_value=f"v{i}-{j}")) for j in range(4)]
        attrs.append((names[i % 2], AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="stop"), AnyValue(string_value="")]))))
        attrs.append(("gen_ai.request.temperature", AnyValue(double_value=-0.0 if i % 2 else 0.7)))
        attrs.append(("gen_ai.request.stream", AnyValue(bool_value=bool(i % 2))))
        attrs.append(("gen_ai.input.messages", AnyValue(string_value="m" * (100 + 40 * i))))
        scope.spans.append(Span(name="chat", trace_id=bytes(16), span_id=(i + 1).to_bytes(8, "big"),
                                attributes=_key_values(attrs)))  # fmt: skip
    body = req.SerializeToString()
    read = list(otlp_wire.decode_spans(body))
    assert same(read, reference_decode(body))
    assert read[1]["attributes"]["gen_ai.request.temperature"] == 0.0 and read[2]["attributes"]["gen_ai.request.stream"] is False
    assert read[0]["attributes"][pair[0]] == ["stop", ""]
