"""``POST /v1/traces``: OTLP/HTTP spans (protobuf or JSON) following the OpenTelemetry GenAI conventions.

Each span that carries GenAI attributes becomes one canonical record; other spans are skipped (counted in
the answer). Both the current attribute names and the older ones that Bifrost's OTel plugin and earlier
semantic-convention versions send are read: ``gen_ai.provider.name`` or ``gen_ai.system``,
``gen_ai.usage.input_tokens`` or ``gen_ai.usage.prompt_tokens``, ``gen_ai.usage.output_tokens`` or
``gen_ai.usage.completion_tokens``.
"""

from __future__ import annotations

import base64
import gzip
from datetime import UTC, datetime
from typing import Any

import orjson

from .protocol import DEFAULT_ENDPOINT
from .record import base_record, json_text

# gen_ai.operation.name (or the span name's suffix, e.g. "gen_ai.chat") -> request_type
OPERATIONS = {
    "chat": "chat",
    "generate_content": "chat",
    "text_completion": "text_completion",
    "text": "text_completion",
    "completion": "text_completion",
    "responses": "responses",
    "response": "responses",
    "embeddings": "embeddings",
    "embedding": "embeddings",
    "speech": "speech",
    "transcription": "transcription",
    "image": "image",
    "image_generation": "image",
    "video": "video",
    "video_generation": "video",
}
STATUS_ERROR = 2


# --- decoding -----------------------------------------------------------------------------------------------


def _any_pb(v) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_pb(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_pb(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind)


def _any_json(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "arrayValue" in v:
        return [_any_json(x) for x in (v["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in v:
        return {kv["key"]: _any_json(kv.get("value")) for kv in (v["kvlistValue"] or {}).get("values", [])}
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def decode_protobuf(body: bytes) -> list[dict]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    spans = []
    for rs in req.resource_spans:
        resource = {kv.key: _any_pb(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append(
                    {
                        "name": s.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "start_ns": s.start_time_unix_nano,
                        "end_ns": s.end_time_unix_nano,
                        "status_code": s.status.code,
                        "status_message": s.status.message,
                        "attributes": {kv.key: _any_pb(kv.value) for kv in s.attributes},
                        "resource": resource,
                    }
                )
    return spans


_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def _json_span(s: dict, resource: dict) -> dict:
    status = s.get("status") or {}
    code = status.get("code", 0)
    return {
        "name": s.get("name", ""),
        "trace_id": str(s.get("traceId", s.get("trace_id", ""))).lower(),
        "span_id": str(s.get("spanId", s.get("span_id", ""))).lower(),
        "start_ns": int(s.get("startTimeUnixNano", s.get("start_time_unix_nano", 0)) or 0),
        "end_ns": int(s.get("endTimeUnixNano", s.get("end_time_unix_nano", 0)) or 0),
        "status_code": _STATUS_NAMES.get(code, 0) if isinstance(code, str) else int(code),
        "status_message": status.get("message", ""),
        "attributes": {kv["key"]: _any_json(kv.get("value")) for kv in s.get("attributes") or []},
        "resource": resource,
    }


def decode_json(body: bytes) -> list[dict]:
    doc = orjson.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("expected an OTLP ExportTraceServiceRequest object")
    spans = []
    for rs in doc.get("resourceSpans") or doc.get("resource_spans") or []:
        resource = {
            kv["key"]: _any_json(kv.get("value")) for kv in (rs.get("resource") or {}).get("attributes", [])
        }
        for ss in rs.get("scopeSpans") or rs.get("scope_spans") or []:
            for s in ss.get("spans") or []:
                try:
                    spans.append(_json_span(s, resource))
                except (TypeError, ValueError, KeyError, AttributeError) as err:
                    # One unreadable span is reported (OTLP partial_success), not the whole batch.
                    span_id = str(s.get("spanId", "")) if isinstance(s, dict) else ""
                    spans.append(
                        {"span_id": span_id, "error": f"unreadable span: {type(err).__name__}: {err}"}
                    )
    return spans


def decode(body: bytes, content_type: str, content_encoding: str = "") -> tuple[list[dict], bool]:
    """(spans, is_json). Raises ValueError on a body that is not OTLP."""
    if content_encoding.strip().lower() == "gzip":
        body = gzip.decompress(body)
    is_json = "json" in content_type
    try:
        return (decode_json(body) if is_json else decode_protobuf(body)), is_json
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"not an OTLP trace export ({'JSON' if is_json else 'protobuf'}): {err}") from None


def encode_response(is_json: bool, rejected: int, message: str) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    if is_json:
        doc: dict = {}
        if rejected:
            doc["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
        return orjson.dumps(doc)
    resp = ExportTraceServiceResponse()
    if rejected:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = message
    return resp.SerializeToString()


# --- mapping ------------------------------------------------------------------------------------------------


def _first(attrs: dict, *names: str) -> Any:
    for n in names:
        v = attrs.get(n)
        if v is not None and v != "":
            return v
    return None


def _int(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        i = int(v)
    except (TypeError, ValueError):
        return None
    return i if i >= 0 else None


def _content(v: Any) -> str | None:
    """JSON text of a content attribute (the conventions send JSON-encoded strings; plain text is quoted)."""
    if isinstance(v, str):
        try:
            orjson.loads(v)
            return v
        except orjson.JSONDecodeError:
            return json_text(v)
    return json_text(v)


def is_genai(span: dict) -> bool:
    if "error" in span:
        return True  # an unreadable span is reported as rejected, not skipped
    a = span["attributes"]
    return any(k.startswith("gen_ai.") for k in a) or span["name"].startswith("gen_ai.")


def span_to_record(span: dict, *, customer_id: str, content: bool, pricing) -> dict:
    a = span["attributes"]
    op = _first(a, "gen_ai.operation.name")
    if op is None and span["name"].startswith("gen_ai."):
        op = span["name"][len("gen_ai.") :]
    op = str(op or "chat").split(" ")[0].lower()
    request_type = OPERATIONS.get(op, "chat")
    provider = str(_first(a, "gen_ai.provider.name", "gen_ai.system") or "unknown")
    model = str(_first(a, "gen_ai.request.model", "gen_ai.response.model") or "unknown")
    start = datetime.fromtimestamp(span["start_ns"] / 1e9, UTC) if span["start_ns"] else datetime.now(UTC)
    end_ns = span["end_ns"] or span["start_ns"]
    ended = datetime.fromtimestamp(end_ns / 1e9, UTC) if end_ns else start

    metadata: dict[str, str] = {}
    for key in ("service.name", "deployment.environment", "deployment.environment.name"):
        if key in span["resource"]:
            metadata[key] = str(span["resource"][key])
    for key in ("gen_ai.response.id", "gen_ai.conversation.id"):
        if key in a:
            metadata[key] = str(a[key])
    metadata["trace_id"] = span["trace_id"]
    metadata["span_id"] = span["span_id"]

    rec = base_record(
        started=start,
        request_id=str(
            _first(a, "bifrost.request_id", "request.id", "gen_ai.request.id")
            or f"{span['trace_id']}-{span['span_id']}"
        ),
        customer_id=str(_first(a, "customer.id", "bifrost.customer_id", "user.id") or customer_id),
        provider=provider,
        model=model,
        endpoint=str(
            _first(a, "http.route", "url.path") or DEFAULT_ENDPOINT.get(request_type, "/v1/chat/completions")
        ),
        method=str(_first(a, "http.request.method", "http.method") or "POST").upper(),
        request_type=request_type,
        stream=bool(_first(a, "gen_ai.request.stream", "llm.is_streaming") or False),
        metadata=metadata,
        user_id=(str(a["gen_ai.request.user"]) if a.get("gen_ai.request.user") else None),
    )
    if rec["method"] not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        rec["method"] = "POST"
    rec["ended_at"] = ended.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    rec["latency_ms"] = (
        max(0, min(2147483647, int((end_ns - span["start_ns"]) / 1e6))) if span["start_ns"] else 0
    )
    error_type = _first(a, "error.type")
    status_code = _int(_first(a, "http.response.status_code", "http.status_code"))
    failed = span["status_code"] == STATUS_ERROR or error_type is not None or (status_code or 0) >= 400
    rec["status"] = "error" if failed else "success"
    if status_code is None or not 100 <= status_code <= 599:
        status_code = 500 if failed else 200
    rec["status_code"] = status_code
    if failed:
        rec["error_type"] = str(error_type or "error")
        rec["error_message"] = (span["status_message"] or None) and span["status_message"][:2000]
    reasons = a.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, list) and reasons:
        rec["finish_reason"] = str(reasons[0])
    elif isinstance(reasons, str):
        rec["finish_reason"] = reasons
    rec["input_tokens"] = _int(_first(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"))
    rec["output_tokens"] = _int(_first(a, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"))
    total = _int(_first(a, "gen_ai.usage.total_tokens", "llm.usage.total_tokens"))
    if total is None and (rec["input_tokens"] is not None or rec["output_tokens"] is not None):
        total = (rec["input_tokens"] or 0) + (rec["output_tokens"] or 0)
    rec["total_tokens"] = total
    rec["cached_tokens"] = _int(
        _first(a, "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cached_tokens")
    )
    rec["reasoning_tokens"] = _int(
        _first(a, "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
    )
    ttft = _first(a, "gen_ai.server.time_to_first_token", "gen_ai.response.time_to_first_chunk")
    if isinstance(ttft, int | float) and not isinstance(ttft, bool) and ttft >= 0:
        rec["time_to_first_token_ms"] = int(ttft * 1000)  # the conventions give seconds
    cost = _first(a, "gen_ai.usage.cost", "gen_ai.cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
        rec["cost_usd"] = float(cost)
    else:
        rec["cost_usd"] = pricing.cost(provider, model, rec["input_tokens"], rec["output_tokens"])
    if content:
        inp = _first(a, "gen_ai.input.messages", "gen_ai.prompt", "gen_ai.request.messages")
        out = _first(a, "gen_ai.output.messages", "gen_ai.completion", "gen_ai.response.messages")
        rec["input_content"] = _content(inp)
        rec["output_content"] = _content(out)
    return rec
