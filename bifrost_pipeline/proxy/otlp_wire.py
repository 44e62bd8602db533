"""OTLP trace requests in protobuf, read with protobuf's own parser (upb) through a view of the messages that
hands over the bytes of what the generated classes would make Python objects of.

opentelemetry-proto's generated classes make an object of every attribute's KeyValue and of its AnyValue,
and reading them costs about a microsecond an attribute: most of the time ``/v1/traces`` spent. The view is
the same ``.proto`` files with one field of ``Span`` read differently: ``attributes`` (field 9, repeated
KeyValue) as ``map<string, bytes>``. A map entry is a message with the key in field 1 and the value in
field 2, which is what a KeyValue is, so upb hands over each key with its AnyValue's bytes. A string
(nearly every attribute), an integer below 2**63 or an array of strings is read from those bytes here; any
other value is parsed by the generated AnyValue class.

As with the generated classes, a duplicated key keeps its last value, and a request they refuse is refused
(a string that is not UTF-8 included), with one leniency: the value of a key that a later duplicate
replaces is never read, so a malformed one there is not noticed. ``test_otlp_wire`` checks on generated,
damaged and recorded requests that both reads agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from . import native

ATTRIBUTES = 9  # Span's field the view reads differently (a field number is fixed for good by protobuf's rules)
# AnyValue's string_value (field 1, length-delimited), int_value (3, varint), array_value (5, length-delimited)
_STRING_TAG, _INT_TAG, _ARRAY_TAG = 0x0A, 0x18, 0x2A


def _view_span(span: Any) -> None:
    """Change ``span`` (a DescriptorProto of Span) into the view: its attributes as a map of bytes."""
    from google.protobuf.descriptor_pb2 import FieldDescriptorProto as Field

    fields = {f.number: f for f in span.field}
    if fields[ATTRIBUTES].name != "attributes":
        raise RuntimeError("opentelemetry-proto's Span is not the one this view was written for")
    entry = span.nested_type.add(name="AttributeBytes")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=Field.TYPE_STRING, label=Field.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=Field.TYPE_BYTES, label=Field.LABEL_OPTIONAL)
    fields[ATTRIBUTES].type_name = f".opentelemetry.proto.trace.v1.Span.{entry.name}"


@cache
def request_class() -> type:
    """The view's ExportTraceServiceRequest, in a descriptor pool of its own."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        if module is trace_pb2:
            _view_span(next(m for m in proto.message_type if m.name == "Span"))
        pool.Add(proto)
    name = "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def any_value(v: Any) -> Any:
    """A generated AnyValue as a Python value (bytes as base64 text, as OTLP/JSON writes them)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        import base64

        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    """A generated repeated KeyValue as a dict (resource and event attributes)."""
    return {kv.key: kv.value.string_value or any_value(kv.value) for kv in kvs}


def value_of(raw: bytes) -> Any:
    """The value of an AnyValue's bytes. A string, an integer below 2**63 or an array of strings, alone in
    the message, is read here; anything else (other kinds, a field written twice, unknown fields, malformed
    bytes) by the generated AnyValue class."""
    fast = _simple(raw)
    return fast if fast is not _OTHER else any_value(AnyValue.FromString(raw))


_OTHER = object()  # what _simple returns for bytes it leaves to AnyValue


def _length(raw: bytes, pos: int) -> tuple[int, int]:
    """(a length of under 16,384 written at ``pos``, where what it measures starts), or (-1, 0)."""
    b = raw[pos]
    if b < 0x80:
        return b, pos + 1
    if pos + 1 < len(raw) and raw[pos + 1] < 0x80:
        return (b & 0x7F) | raw[pos + 1] << 7, pos + 2
    return -1, 0


def _simple(raw: bytes) -> Any:
    size = len(raw)
    if size < 2:
        return None if size == 0 else _OTHER
    tag = raw[0]
    if tag == _STRING_TAG:
        length, start = _length(raw, 1)
        return raw[start:].decode() if start + length == size else _OTHER
    if tag == _INT_TAG and size <= 10:  # at most 9 bytes of varint: below 2**63, not negative
        n = shift = 0
        for pos in range(1, size):
            byte = raw[pos]
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                return n if pos + 1 == size else _OTHER
            shift += 7
        return _OTHER
    if tag == _ARRAY_TAG:  # ArrayValue: its values, each an AnyValue in field 1
        length, pos = _length(raw, 1)
        if pos + length != size:
            return _OTHER
        values = []
        while pos < size:
            if raw[pos] != _STRING_TAG or pos + 1 == size:
                return _OTHER
            length, start = _length(raw, pos + 1)
            pos = start + length
            if length < 0 or pos > size:
                return _OTHER
            value = _simple(raw[start:pos])
            if value.__class__ is not str:
                return _OTHER
            values.append(value)
        return values
    return _OTHER


def _span_attributes(view: Any) -> dict[str, Any]:
    out = {}
    key = ""
    try:
        for key in view:  # keys, then each value: the map's items() is a generator in Python, a third slower
            raw = view[key]
            # A string of under 128 bytes alone in its AnyValue, the most common attribute, read inline.
            if len(raw) > 1 and raw[0] == _STRING_TAG and raw[1] < 0x80 and raw[1] + 2 == len(raw):
                out[key] = raw[2:].decode()
            else:
                out[key] = value_of(raw)
    except UnicodeDecodeError as err:
        raise ValueError(f"attribute {key[:200]!r}: a string that is not UTF-8 ({err})") from None
    except DecodeError as err:  # read only now: the view parsed the value as bytes
        raise ValueError(f"attribute {key[:200]!r}: its value is not an OTLP AnyValue ({err})") from None
    return out


def decode_spans(body: bytes) -> Iterator[dict]:
    """The spans of an ExportTraceServiceRequest, each a dict (``otlp.decode`` describes it), made one at a
    time: each is mapped to its record while it is still in the processor's cache. The body is parsed first,
    and raises what protobuf raises on a body that is not one; a span raises ValueError when one of its
    attribute values is not (a string that is not UTF-8, bytes that are not an AnyValue), which refuses the
    whole body as protobuf would."""
    req = request_class()()
    req.ParseFromString(body)
    if _scan is not None:
        try:
            parts = _scan.layout(body)
        except _scan.Unusual:
            return _spans(req)
        return _scan.spans(body, parts, req, _span, attributes)
    return _spans(req)


def _load_scan() -> Any:
    """otlp_scan, when it is compiled from the otlp_scan.pyx beside this (``native``), else None."""
    if native.state("otlp_scan") != "compiled":
        return None
    from . import otlp_scan

    return otlp_scan


_scan = _load_scan()


def _spans(req: Any) -> Iterator[dict]:
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield _span(s, resource)


def _span(s: Any, resource: dict) -> dict:
    status = s.status
    return {
        "name": s.name,
        "trace_id": s.trace_id.hex(),
        "span_id": s.span_id.hex(),
        "parent_span_id": s.parent_span_id.hex(),
        "start_ns": s.start_time_unix_nano,
        "end_ns": s.end_time_unix_nano,
        "status_code": status.code,
        "status_message": status.message,
        "attributes": _span_attributes(s.attributes),
        "events": [{"name": e.name, "attributes": attributes(e.attributes)} for e in s.events],
        "resource": resource,
    }
