"""``POST /v1/traces``: OTLP/HTTP spans (protobuf or JSON) following the OpenTelemetry GenAI conventions.

Each span that carries GenAI attributes becomes one canonical record; other spans (an application's parent
span, an HTTP client's child span) are skipped and counted in the answer. The names real emitters send are
all read (recorded bodies in ``bifrost_pipeline_tests/data/otlp/``, listed in ``docs/otel-emitters.md``):
the current conventions (``gen_ai.provider.name``, ``gen_ai.usage.input_tokens``), the older ones
(``gen_ai.system``, ``gen_ai.usage.prompt_tokens``), LiteLLM's (``llm.is_streaming`` as text, operations
named ``acompletion``, an empty ``gen_ai.system``, ``gen_ai.cost.total_cost``) and OpenLLMetry's
(``gen_ai.is_streaming``). Booleans and numbers sent as text are read as booleans and numbers.
"""

from __future__ import annotations

import ast
import base64
import gzip
from datetime import UTC, datetime
from typing import Any

import orjson

from .capture import tool_name
from .protocol import DEFAULT_ENDPOINT
from .record import base_record, json_text, usage_fields

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
                        "parent_span_id": s.parent_span_id.hex(),
                        "start_ns": s.start_time_unix_nano,
                        "end_ns": s.end_time_unix_nano,
                        "status_code": s.status.code,
                        "status_message": s.status.message,
                        "attributes": {kv.key: _any_pb(kv.value) for kv in s.attributes},
                        "events": [
                            {"name": e.name, "attributes": {kv.key: _any_pb(kv.value) for kv in e.attributes}}
                            for e in s.events
                        ],
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
        "parent_span_id": str(s.get("parentSpanId", s.get("parent_span_id", "")) or "").lower(),
        "start_ns": int(s.get("startTimeUnixNano", s.get("start_time_unix_nano", 0)) or 0),
        "end_ns": int(s.get("endTimeUnixNano", s.get("end_time_unix_nano", 0)) or 0),
        "status_code": _STATUS_NAMES.get(code, 0) if isinstance(code, str) else int(code),
        "status_message": status.get("message", ""),
        "attributes": _json_attributes(s.get("attributes")),
        "events": [
            {"name": e.get("name", ""), "attributes": _json_attributes(e.get("attributes"))}
            for e in s.get("events") or []
        ],
        "resource": resource,
    }


def _json_attributes(kvs: list | None) -> dict:
    return {kv["key"]: _any_json(kv.get("value")) for kv in kvs or []}


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

# LiteLLM names its operations after its own functions (``acompletion``, ``aembedding``, ...; the leading
# "a" is the async twin). Read only on LiteLLM's spans: elsewhere "completion" is the legacy Completions API.
LITELLM_OPERATIONS = {
    "completion": "chat",
    "embedding": "embeddings",
    "text_completion": "text_completion",
    "responses": "responses",
    "image_generation": "image",
    "speech": "speech",
    "transcription": "transcription",
}
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})
USAGE_TEXT_LIMIT = 4096  # a LiteLLM usage object (Python literal text) longer than this is not parsed


def _first(attrs: dict, *names: str) -> Any:
    for n in names:
        v = attrs.get(n)
        if v is not None and v != "":
            return v
    return None


def _bool(v: Any) -> bool | None:
    """A boolean, also when sent as text ("False", "true") or 0/1: ``bool("False")`` would be true."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int | float):
        return v != 0
    if isinstance(v, str):
        text = v.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def _number(v: Any) -> float | None:
    """A finite number >= 0, also when sent as text ("12", "5.7e-06"); booleans are not numbers."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return None
    if not isinstance(v, int | float) or v != v or v in (float("inf"), float("-inf")) or v < 0:
        return None
    return v


def _int(v: Any) -> int | None:
    n = _number(v)
    return int(n) if n is not None and n == int(n) else None


def _content(v: Any) -> str | None:
    """JSON text of a content attribute (the conventions send JSON-encoded strings; plain text is quoted)."""
    if isinstance(v, str):
        try:
            orjson.loads(v)
            return v
        except orjson.JSONDecodeError:
            return json_text(v)
    return json_text(v)


def _json_value(v: Any) -> Any:
    """A value that emitters send either as itself or as its JSON text (LiteLLM: '["stop"]')."""
    if isinstance(v, str) and v[:1] in ("[", "{"):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return v


def is_genai(span: dict) -> bool:
    if "error" in span:
        return True  # an unreadable span is reported as rejected, not skipped
    a = span["attributes"]
    return any(k.startswith("gen_ai.") for k in a) or span["name"].startswith("gen_ai.")


def _is_litellm(a: dict) -> bool:
    return any(k.startswith("litellm.") for k in a)


def _request_type(span: dict) -> str:
    a = span["attributes"]
    op = _first(a, "gen_ai.operation.name", "llm.request.type")
    if op is None and span["name"].startswith("gen_ai."):
        op = span["name"][len("gen_ai.") :]
    op = str(op or "chat").split(" ")[0].lower()
    if _is_litellm(a):
        call = op[1:] if op.startswith("a") and op[1:] in LITELLM_OPERATIONS else op
        if call in LITELLM_OPERATIONS:
            return LITELLM_OPERATIONS[call]
    return OPERATIONS.get(op, "chat")


def _provider(a: dict, model: str) -> str:
    """The provider; when the emitter leaves it empty (LiteLLM on embeddings), the "provider/model" prefix."""
    named = _first(a, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "error.llm_provider")
    if named is not None:
        return str(named)
    for routed in (_first(a, "litellm.provider.model"), model):
        if isinstance(routed, str) and "/" in routed.strip("/"):
            return routed.split("/", 1)[0]
    return "unknown"


def _finish_reason(a: dict) -> str | None:
    reasons = _json_value(_first(a, "gen_ai.response.finish_reasons", "llm.response.finish_reason"))
    if isinstance(reasons, list):
        return str(reasons[0]) if reasons else None
    if reasons is not None:
        return str(reasons)
    # Some emitters put the reason only in the captured output messages (openai-v2 on streams).
    messages = _json_value(a.get("gen_ai.output.messages"))
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        reason = messages[-1].get("finish_reason")
        return str(reason) if reason else None
    return None


def _error_type(a: dict) -> str:
    kind = str(_first(a, "error.type") or "error")
    # openai-v2 2.4b0 sends str(type(exc)): "<class 'openai.NotFoundError'>"
    if kind.startswith("<class '") and kind.endswith("'>"):
        kind = kind[len("<class '") : -len("'>")]
    return kind


def _error_message(span: dict) -> str | None:
    message = span["status_message"] or _first(span["attributes"], "error.message")
    if not message:
        for event in span.get("events") or []:
            if event["name"] == "exception" and event["attributes"].get("exception.message"):
                message = event["attributes"]["exception.message"]
                break
    return str(message)[:2000] if message else None


def _litellm_usage(a: dict) -> dict[str, int | None]:
    """LiteLLM sends cached and reasoning tokens only inside ``metadata.usage_object``, as a Python literal."""
    text = a.get("metadata.usage_object")
    if not isinstance(text, str) or len(text) > USAGE_TEXT_LIMIT:
        return usage_fields(None)
    try:
        usage = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return usage_fields(None)
    return usage_fields(usage)


def _tokens(a: dict) -> dict[str, int | None]:
    usage = _litellm_usage(a)
    out = {
        "input_tokens": _int(
            _first(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens")
        ),
        "output_tokens": _int(
            _first(
                a, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.usage.completion_tokens"
            )
        ),
        "total_tokens": _int(_first(a, "gen_ai.usage.total_tokens", "llm.usage.total_tokens")),
        "cached_tokens": _int(
            _first(
                a,
                "gen_ai.usage.cache_read.input_tokens",
                "gen_ai.usage.cache_read_input_tokens",
                "gen_ai.usage.cached_tokens",
            )
        ),
        "reasoning_tokens": _int(
            _first(a, "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
        ),
    }
    for key, value in out.items():
        if value is None:
            out[key] = usage[key]
    if out["total_tokens"] is None and (out["input_tokens"] is not None or out["output_tokens"] is not None):
        out["total_tokens"] = (out["input_tokens"] or 0) + (out["output_tokens"] or 0)
    return out


def _metadata(span: dict) -> dict[str, str]:
    a = span["attributes"]
    metadata: dict[str, str] = {}
    for key in ("service.name", "deployment.environment", "deployment.environment.name"):
        if key in span["resource"]:
            metadata[key] = str(span["resource"][key])
    for key in ("gen_ai.response.id", "gen_ai.conversation.id", "litellm.call_id"):
        if a.get(key):
            metadata[key] = str(a[key])
    metadata["trace_id"] = span["trace_id"]
    metadata["span_id"] = span["span_id"]
    return metadata


def request_id(span: dict) -> str:
    """The sender's request id, else one fixed by the span's identity (trace_id, span_id): the same span
    resent (a retry, or once as protobuf and once as OTLP/JSON) gets the same id, which raw_logs dedups."""
    a = span["attributes"]
    given = _first(a, "bifrost.request_id", "request.id", "gen_ai.request.id")
    return str(given) if given is not None else f"{span['trace_id']}-{span['span_id']}"


def _timing(rec: dict, span: dict, a: dict) -> None:
    end_ns = span["end_ns"] or span["start_ns"]
    ended = datetime.fromtimestamp(end_ns / 1e9, UTC) if end_ns else datetime.now(UTC)
    rec["ended_at"] = ended.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    rec["latency_ms"] = (
        max(0, min(2147483647, int((end_ns - span["start_ns"]) / 1e6))) if span["start_ns"] else 0
    )
    ttft = _number(_first(a, "gen_ai.server.time_to_first_token", "gen_ai.response.time_to_first_chunk"))
    if ttft is not None:
        rec["time_to_first_token_ms"] = int(ttft * 1000)  # the conventions give seconds


def _outcome(rec: dict, span: dict, a: dict) -> None:
    """status, status_code and (on failure) error_type and error_message."""
    status_code = _int(_first(a, "http.response.status_code", "http.status_code", "error.code"))
    failed = span["status_code"] == STATUS_ERROR or _first(a, "error.type") is not None or (status_code or 0) >= 400
    rec["status"] = "error" if failed else "success"
    if status_code is None or not 100 <= status_code <= 599:
        status_code = 500 if failed else 200
    rec["status_code"] = status_code
    if failed:
        rec["error_type"] = _error_type(a)
        rec["error_message"] = _error_message(span)


def span_to_record(span: dict, *, customer_id: str, content: bool, pricing) -> dict:
    a = span["attributes"]
    request_type = _request_type(span)
    model = str(_first(a, "gen_ai.request.model", "gen_ai.response.model") or "unknown")
    provider = _provider(a, model)
    start = datetime.fromtimestamp(span["start_ns"] / 1e9, UTC) if span["start_ns"] else datetime.now(UTC)
    user = _first(a, "gen_ai.request.user", "gen_ai.user")
    rec = base_record(
        started=start,
        request_id=request_id(span),
        customer_id=str(_first(a, "customer.id", "bifrost.customer_id", "user.id") or customer_id),
        provider=provider,
        model=model,
        endpoint=str(
            _first(a, "http.route", "url.path") or DEFAULT_ENDPOINT.get(request_type, "/v1/chat/completions")
        ),
        method=str(_first(a, "http.request.method", "http.method") or "POST").upper(),
        request_type=request_type,
        stream=bool(_bool(_first(a, "gen_ai.request.stream", "llm.is_streaming", "gen_ai.is_streaming"))),
        metadata=_metadata(span),
        user_id=str(user) if user is not None else None,
    )
    if rec["method"] not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        rec["method"] = "POST"
    _timing(rec, span, a)
    _outcome(rec, span, a)
    rec["finish_reason"] = _finish_reason(a)
    rec.update(_tokens(a))
    cost = _number(_first(a, "gen_ai.usage.cost", "gen_ai.cost", "gen_ai.cost.total_cost"))
    if cost is None:
        cost = pricing.cost(provider, model, rec["input_tokens"], rec["output_tokens"])
    rec["cost_usd"] = cost
    if content:
        inp = _first(a, "gen_ai.input.messages", "gen_ai.prompt", "gen_ai.request.messages")
        out = _first(a, "gen_ai.output.messages", "gen_ai.completion", "gen_ai.response.messages")
        rec["input_content"] = _content(inp)
        rec["output_content"] = _content(out)
    rec.update(_trace_fields(span))
    rec.update(_request_params(a))
    rec.update(_tool_fields(a, content))
    rec.update(_bifrost_fields(a))
    return rec


# --- schema version 2 fields ------------------------------------------------------------------------------

# record field -> the GenAI conventions' request attribute (the proxy's OTLP export writes the same names)
REQUEST_PARAM_ATTRIBUTES = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "stop": "gen_ai.request.stop_sequences",
}
_FLOAT_PARAMS = frozenset({"temperature", "top_p", "presence_penalty", "frequency_penalty"})

# Record fields the conventions do not name, sent by this project's proxy as ``bifrost.<field>`` (see
# otel_export) and read back here, so that a span from another bifrost proxy lands as the record it was.
BIFROST_FIELDS = (
    "parent_request_id", "user_id", "team_id", "virtual_key_id", "endpoint", "request_type", "stream",
    "retries", "fallback_index", "latency_ms", "time_to_first_token_ms", "total_tokens",
    "response_format_type", "tool_choice", "parallel_tool_calls", "reasoning_effort", "request_params",
    "tool_names", "tool_call_names", "tool_call_count", "input_images", "input_audio_format",
    "input_audio_bytes", "input_audio_seconds", "output_audio_format", "output_audio_bytes", "image_size",
    "image_quality", "output_image_count", "video_id", "video_size", "video_seconds", "request_bytes",
    "response_bytes", "attempts",
)
JSON_FIELDS = frozenset({"input_images", "attempts"})  # lists of objects: sent as JSON text


def _trace_fields(span: dict) -> dict[str, str | None]:
    """trace_id and span_id as the proxy records them: the trace, and the caller's span (the span's parent;
    None for a root span)."""
    parent = span.get("parent_span_id") or ""
    return {
        "trace_id": span["trace_id"] or None,
        "span_id": parent if parent.strip("0") else None,
    }


def _signed(v: Any) -> float | None:
    """A finite number, negative ones too (penalties, seeds), also when sent as text."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return None
    if not isinstance(v, int | float) or v != v or v in (float("inf"), float("-inf")):
        return None
    return v


def _request_params(a: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, name in REQUEST_PARAM_ATTRIBUTES.items():
        v = a.get(name)
        if v is None:
            continue
        if field == "stop":
            v = _json_value(v)
            out[field] = [v] if isinstance(v, str) else [str(x) for x in v] if isinstance(v, list) else None
            continue
        n = _signed(v)
        if n is not None:
            out[field] = float(n) if field in _FLOAT_PARAMS else int(n) if n == int(n) else None
    return out


def _tool_fields(a: dict, content: bool) -> dict[str, Any]:
    """Tools offered (gen_ai.tool.definitions) and the tool calls among the output messages' parts."""
    out: dict[str, Any] = {}
    definitions = a.get("gen_ai.tool.definitions")
    tools = _json_value(definitions)
    if isinstance(tools, list) and tools:
        out["tool_definitions"] = definitions if isinstance(definitions, str) else orjson.dumps(tools).decode()
        out["tool_names"] = [n for n in (tool_name(t) for t in tools) if n is not None]
    calls = []
    for message in _as_list(_json_value(a.get("gen_ai.output.messages"))):
        for part in _as_list(message.get("parts") if isinstance(message, dict) else None):
            if isinstance(part, dict) and part.get("type") == "tool_call":
                args = part.get("arguments")
                calls.append(
                    {
                        "id": _text_or_none(part.get("id")),
                        "name": _text_or_none(part.get("name")),
                        "arguments": args if isinstance(args, str) or args is None else orjson.dumps(args).decode(),
                    }
                )
    if calls:
        out["tool_call_names"] = [c["name"] for c in calls if c["name"] is not None]
        out["tool_call_count"] = len(calls)
        out["tool_calls"] = calls if content else None
    return out


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else []


def _text_or_none(v: Any) -> str | None:
    return str(v) if v is not None else None


def _bifrost_fields(a: dict) -> dict[str, Any]:
    """The fields another bifrost proxy sent as ``bifrost.<field>``."""
    out: dict[str, Any] = {}
    for field in BIFROST_FIELDS:
        v = a.get("bifrost." + field)
        if v is None:
            continue
        if field in JSON_FIELDS and isinstance(v, str):
            try:
                v = orjson.loads(v)
            except orjson.JSONDecodeError:
                continue  # the record's check names the field
        out[field] = list(v) if isinstance(v, tuple) else v
    if out.get("attempts") == []:  # refused before any provider was tried: no retry, no fallback (as sent)
        out["retries"] = out["fallback_index"] = None
    return out
