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
import gzip
from collections.abc import Iterable
from datetime import UTC, datetime
from operator import methodcaller
from typing import Any

import orjson

from bifrost_pipeline.records import SCHEMA_VERSION

from . import otlp_wire
from .capture import tool_name
from .protocol import DEFAULT_ENDPOINT
from .record import iso, iso_ns, json_text, usage_fields

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


_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def _json_span(s: dict, resource: dict) -> dict:
    status = s.get("status") or {}
    code = status.get("code", 0)
    return {
        "name": s.get("name", ""),
        "trace_id": str(s.get("traceId", s.get("trace_id", ""))).lower(),
        "span_id": str(s.get("spanId", s.get("span_id", ""))).lower(),
        "parent_span_id": str(s.get("parentSpanId", s.get("parent_span_id", "")) or "").lower(),
        "start_ns": _json_nanos(s, "startTimeUnixNano", "start_time_unix_nano"),
        "end_ns": _json_nanos(s, "endTimeUnixNano", "end_time_unix_nano"),
        "status_code": _STATUS_NAMES.get(code, 0) if isinstance(code, str) else int(code),
        "status_message": status.get("message", ""),
        "attributes": _json_attributes(s.get("attributes")),
        "events": [
            {"name": e.get("name", ""), "attributes": _json_attributes(e.get("attributes"))}
            for e in s.get("events") or []
        ],
        "resource": resource,
    }


def _json_nanos(s: dict, name: str, snake: str) -> int:
    """A fixed64 time of OTLP/JSON: an integer or its decimal text, from 0 to 2**64 - 1 (0 when absent)."""
    value = s.get(name, s.get(snake))
    if value is None or value == "":
        return 0
    n = value
    if isinstance(n, str):
        try:
            n = int(n.strip())
        except ValueError:
            n = None
    elif isinstance(n, float) and n.is_integer():
        n = int(n)
    if n.__class__ is not int or not 0 <= n < 2**64:
        raise ValueError(f"{name}: {str(value)[:40]!r} is not nanoseconds since the epoch (an integer, 0 to 2^64 - 1)")
    return n


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


def decode(body: bytes, content_type: str, content_encoding: str = "") -> tuple[Iterable[dict], bool]:
    """(spans, is_json). Raises ValueError on a body that is not OTLP; protobuf spans are made one at a time
    as they are iterated, and one with an attribute value that cannot be read (a string that is not UTF-8,
    bytes that are not an AnyValue) raises ValueError then, naming the attribute (``otlp_wire``)."""
    if content_encoding.strip().lower() == "gzip":
        body = gzip.decompress(body)
    is_json = "json" in content_type
    try:
        return (decode_json(body) if is_json else otlp_wire.decode_spans(body)), is_json
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


# What a record reads from a span -> the attribute names that carry it, the preferred one first (current
# conventions, then older ones, then LiteLLM's and OpenLLMetry's). A name belongs to one reading only.
READS: dict[str, tuple[str, ...]] = {
    "operation": ("gen_ai.operation.name", "llm.request.type"),
    "model": ("gen_ai.request.model", "gen_ai.response.model"),
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "error.llm_provider"),
    "routed_model": ("litellm.provider.model",),
    "request_id": ("bifrost.request_id", "request.id", "gen_ai.request.id"),
    "customer": ("customer.id", "bifrost.customer_id", "user.id"),
    "user": ("gen_ai.request.user", "gen_ai.user"),
    "endpoint": ("http.route", "url.path"),
    "method": ("http.request.method", "http.method"),
    "stream": ("gen_ai.request.stream", "llm.is_streaming", "gen_ai.is_streaming"),
    "time_to_first_token": ("gen_ai.server.time_to_first_token", "gen_ai.response.time_to_first_chunk"),
    "status_code": ("http.response.status_code", "http.status_code", "error.code"),
    "error_type": ("error.type",),
    "error_message": ("error.message",),
    "finish_reasons": ("gen_ai.response.finish_reasons", "llm.response.finish_reason"),
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens"),
    "output_tokens": (
        "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.usage.completion_tokens"
    ),
    "total_tokens": ("gen_ai.usage.total_tokens", "llm.usage.total_tokens"),
    "cached_tokens": (
        "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.cached_tokens"
    ),
    "reasoning_tokens": ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens"),
    "cost": ("gen_ai.usage.cost", "gen_ai.cost", "gen_ai.cost.total_cost"),
    "input_content": ("gen_ai.input.messages", "gen_ai.prompt", "gen_ai.request.messages"),
    "output_content": ("gen_ai.output.messages", "gen_ai.completion", "gen_ai.response.messages"),
}  # fmt: skip
_READ_AS = {name: (reading, rank) for reading, names in READS.items() for rank, name in enumerate(names)}


def readings(a: dict) -> dict[str, Any]:
    """The value of each of ``READS`` a span's attributes hold: that of its first name whose value is not
    None or empty. One pass over the attributes (a dozen), not a lookup of each name (sixty)."""
    out: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    read_as_of = _READ_AS  # a local the compiled form knows is a dict: .get is then one C call
    for key, value in a.items():
        read_as = read_as_of.get(key)
        if read_as is None or value is None or value == "":
            continue
        reading, rank = read_as
        if reading not in out or rank < ranks[reading]:
            out[reading] = value
            ranks[reading] = rank
    return out


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
    if v is None:
        return None
    n = _signed(v)
    return n if n is not None and n >= 0 else None


def _int(v: Any) -> int | None:
    if v.__class__ is int:  # what emitters send: no text or float to read
        return v if v >= 0 else None
    if v is None:
        return None
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
    return any(map(_GEN_AI_NAME, span["attributes"])) or span["name"].startswith("gen_ai.")


_GEN_AI_NAME = methodcaller("startswith", "gen_ai.")
_LITELLM_NAME = methodcaller("startswith", "litellm.")


def _request_type(span: dict, r: dict) -> str:
    op = r.get("operation")
    if op is None and span["name"].startswith("gen_ai."):
        op = span["name"][len("gen_ai.") :]
    op = str(op or "chat").split(" ")[0].lower()
    call = op[1:] if op.startswith("a") and op[1:] in LITELLM_OPERATIONS else op
    if call in LITELLM_OPERATIONS and any(map(_LITELLM_NAME, span["attributes"])):
        return LITELLM_OPERATIONS[call]
    return OPERATIONS.get(op, "chat")


def _provider(r: dict, model: str) -> str:
    """The provider; when the emitter leaves it empty (LiteLLM on embeddings), the "provider/model" prefix."""
    named = r.get("provider")
    if named is not None:
        return str(named)
    for routed in (r.get("routed_model"), model):
        if isinstance(routed, str) and "/" in routed.strip("/"):
            return routed.split("/", 1)[0]
    return "unknown"


def _finish_reason(a: dict, r: dict) -> str | None:
    reasons = _json_value(r.get("finish_reasons"))
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


def _error_type(r: dict) -> str:
    kind = str(r.get("error_type") or "error")
    # openai-v2 2.4b0 sends str(type(exc)): "<class 'openai.NotFoundError'>"
    if kind.startswith("<class '") and kind.endswith("'>"):
        kind = kind[len("<class '") : -len("'>")]
    return kind


def _error_message(span: dict, r: dict) -> str | None:
    message = span["status_message"] or r.get("error_message")
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


def _tokens(a: dict, r: dict) -> dict[str, int | None]:
    out = {
        "input_tokens": _int(r.get("input_tokens")),
        "output_tokens": _int(r.get("output_tokens")),
        "total_tokens": _int(r.get("total_tokens")),
        "cached_tokens": _int(r.get("cached_tokens")),
        "reasoning_tokens": _int(r.get("reasoning_tokens")),
    }
    if "metadata.usage_object" in a:
        for key, value in _litellm_usage(a).items():
            if out[key] is None:
                out[key] = value
    if out["total_tokens"] is None and (out["input_tokens"] is not None or out["output_tokens"] is not None):
        out["total_tokens"] = (out["input_tokens"] or 0) + (out["output_tokens"] or 0)
    return out


_RESOURCE_METADATA = ("service.name", "deployment.environment", "deployment.environment.name")
_SPAN_METADATA = ("gen_ai.response.id", "gen_ai.conversation.id", "litellm.call_id")


def _metadata(span: dict) -> dict[str, str]:
    a, resource = span["attributes"], span["resource"]
    metadata: dict[str, str] = {}
    if resource:
        for key in _RESOURCE_METADATA:
            if key in resource:
                metadata[key] = str(resource[key])
    for key in _SPAN_METADATA:
        if a.get(key):
            metadata[key] = str(a[key])
    metadata["trace_id"] = span["trace_id"]
    metadata["span_id"] = span["span_id"]
    return metadata


def request_id(span: dict, r: dict | None = None) -> str:
    """The sender's request id, else one fixed by the span's identity (trace_id, span_id): the same span
    resent (a retry, or once as protobuf and once as OTLP/JSON) gets the same id, which raw_logs dedups.
    ``r``: the span's ``readings``, when already made."""
    given = (readings(span["attributes"]) if r is None else r).get("request_id")
    return str(given) if given is not None else f"{span['trace_id']}-{span['span_id']}"


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def _outcome(rec: dict, span: dict, r: dict) -> None:
    """status, status_code and (on failure) error_type and error_message."""
    status_code = _int(r.get("status_code"))
    failed = span["status_code"] == STATUS_ERROR or r.get("error_type") is not None or (status_code or 0) >= 400
    rec["status"] = "error" if failed else "success"
    if status_code is None or not 100 <= status_code <= 599:
        status_code = 500 if failed else 200
    rec["status_code"] = status_code
    if failed:
        rec["error_type"] = _error_type(r)
        message = _error_message(span, r)
        if message is not None:
            rec["error_message"] = message


def _set_present(rec: dict, fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        if value is not None:
            rec[key] = value


def span_to_record(span: dict, *, customer_id: str, content: bool, pricing) -> dict:
    """The record of a GenAI span. A field the span says nothing of is left out of the record: the schema
    reads an absent field as null, as it does for the records ``/v1/logs`` takes, and a record of the 30
    fields a span fills is checked and written in half the time of one of all 68."""
    a = span["attributes"]
    return _record(span, a, readings(a), customer_id, content, pricing)


def _record(span: dict, a: dict, r: dict, customer_id: str, content: bool, pricing) -> dict:
    """span_to_record's work, with the span's attributes ``a`` and their ``readings`` ``r``."""
    request_type = _request_type(span, r)
    model = str(r.get("model") or "unknown")
    provider = _provider(r, model)
    method = str(r.get("method") or "POST").upper()
    start_ns = span["start_ns"]
    end_ns = span["end_ns"] or start_ns
    rec = {
        "schema_version": SCHEMA_VERSION,
        "timestamp": iso_ns(start_ns) if start_ns else iso(datetime.now(UTC)),
        "ended_at": iso_ns(end_ns) if end_ns else iso(datetime.now(UTC)),
        "request_id": request_id(span, r),
        "customer_id": str(r.get("customer") or customer_id),
        "provider": provider,
        "model": model,
        "endpoint": str(r.get("endpoint") or DEFAULT_ENDPOINT.get(request_type, "/v1/chat/completions")),
        "method": method if method in _METHODS else "POST",
        "request_type": request_type,
        "stream": bool(_bool(r.get("stream"))),
        "retries": 0,
        "fallback_index": 0,
        "latency_ms": max(0, min(2147483647, int((end_ns - start_ns) / 1e6))) if start_ns else 0,
        "metadata": _metadata(span),
    }
    user = r.get("user")
    if user is not None:
        rec["user_id"] = str(user)
    _outcome(rec, span, r)
    ttft = _number(r.get("time_to_first_token"))
    if ttft is not None:
        # the conventions give seconds; past 1e305 s the product is inf, and the check names the field
        rec["time_to_first_token_ms"] = int(ttft * 1000) if ttft < 1e300 else int(ttft) * 1000
    finish_reason = _finish_reason(a, r)
    if finish_reason is not None:
        rec["finish_reason"] = finish_reason
    tokens = _tokens(a, r)
    _set_present(rec, tokens)
    cost = _number(r.get("cost"))
    if cost is None:
        cost = pricing.cost(provider, model, tokens["input_tokens"], tokens["output_tokens"])
    if cost is not None:
        rec["cost_usd"] = cost
    if content:
        _set_present(rec, {"input_content": _content(r.get("input_content")),
                           "output_content": _content(r.get("output_content"))})  # fmt: skip
    if span["trace_id"]:
        rec["trace_id"] = span["trace_id"]
    parent = span.get("parent_span_id") or ""
    if parent.strip("0"):
        rec["span_id"] = parent  # the caller's span (none for a root span)
    if not _PARAM_NAMES.isdisjoint(a):
        _set_present(rec, _request_params(a))
    if _may_have_tools(a):
        _set_present(rec, _tool_fields(a, content))
    if not _BIFROST_NAMES.isdisjoint(a):
        for key, value in _bifrost_fields(a).items():
            if value is None:
                rec.pop(key, None)  # null as sent: absent
            else:
                rec[key] = value
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
_PARAM_NAMES = frozenset(REQUEST_PARAM_ATTRIBUTES.values())

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
_BIFROST_NAMES = frozenset("bifrost." + field for field in BIFROST_FIELDS)


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


def _may_have_tools(a: dict) -> bool:
    """Whether a span may offer tools or call them: tool definitions, or output messages whose text has a
    ``tool_call`` part (or a \\u escape, which could spell one); most spans have neither, and this spares
    parsing their messages."""
    if "gen_ai.tool.definitions" in a:
        return True
    output = a.get("gen_ai.output.messages")
    if output.__class__ is str:
        return "tool_call" in output or "\\u" in output
    return output is not None


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
