"""The canonical log record (``schemas/log_record.schema.json``) of one proxied request: opened when the
request is accepted, finished once the answer has been sent.

Cheap on purpose: plain dicts and a few lookups. Serialization happens in the landing writer's thread.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from bifrost_pipeline.records import SCHEMA_VERSION, LogRecord

from . import capture
from .pricing import Pricing
from .protocol import SECRET_HEADERS

if TYPE_CHECKING:
    from .assembler import StreamAssembler
    from .forward import ClientRequest

LOGGING_HEADER_PREFIX = "x-bf-lh-"


_SECONDS: dict[tuple[int, ...], str] = {}  # (year, ..., second) -> "YYYY-MM-DDTHH:MM:SS": isoformat is slow


def iso(ts: datetime) -> str:
    """``ts`` in UTC as RFC 3339 text to the millisecond, e.g. 2026-03-04T05:06:07.089Z."""
    utc = ts.astimezone(UTC)
    second = (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)
    text = _SECONDS.get(second)
    if text is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        text = _SECONDS[second] = utc.replace(microsecond=0, tzinfo=None).isoformat()
    return f"{text}.{utc.microsecond // 1000:03d}Z"


_SECONDS_SINCE_EPOCH: dict[int, str] = {}  # whole seconds since the epoch -> "YYYY-MM-DDTHH:MM:SS"


def iso_ns(ns: int) -> str:
    """``ns`` nanoseconds since the epoch (an OTLP time) as ``iso`` writes it, cut to the millisecond."""
    seconds, rest = divmod(ns, 1_000_000_000)
    text = _SECONDS_SINCE_EPOCH.get(seconds)
    if text is None:
        if len(_SECONDS_SINCE_EPOCH) >= 4096:
            _SECONDS_SINCE_EPOCH.clear()
        text = _SECONDS_SINCE_EPOCH[seconds] = datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None).isoformat()
    return text + _MILLISECONDS[rest // 1_000_000]


_MILLISECONDS = [f".{ms:03d}Z" for ms in range(1000)]


def hour_key(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def logging_metadata(
    headers: dict[str, str], configured: tuple[str, ...], max_keys: int = 64, max_value: int = 2048
) -> tuple[dict[str, str] | None, int, int]:
    """Seed 001: configured headers under their lower-cased name, plus x-bf-lh-<name> as <name>; merged.

    Bounded, as clients control it: at most ``max_keys`` keys (configured ones first; the others are dropped
    and a ``_dropped`` key says how many), each value cut to ``max_value`` characters with a suffix saying
    how much was cut; a key name longer than ``max_value`` is dropped. Returns (metadata, values cut, keys
    dropped).
    """
    meta: dict[str, str] = {}
    cut = dropped = 0
    for name in configured:
        value = headers.get(name)
        if value is not None:
            meta[name] = value
    for name, value in headers.items():
        if name.startswith(LOGGING_HEADER_PREFIX):
            key = name[len(LOGGING_HEADER_PREFIX) :]
            if not key or key in SECRET_HEADERS:
                continue
            if key not in meta and (len(meta) >= max_keys or len(key) > max_value):
                dropped += 1
            else:
                meta[key] = value
    for key, value in meta.items():
        if len(value) > max_value:
            meta[key] = f"{value[:max_value]}…[{len(value) - max_value} more characters cut]"
            cut += 1
    if dropped:
        meta["_dropped"] = f"{dropped} more logging header(s) dropped (client.max_logging_headers={max_keys})"
    return meta or None, cut, dropped


_INF = float("inf")


def usage_fields(usage: Any) -> dict[str, int | None]:
    """Token counts from an OpenAI usage object (chat/completions/embeddings or responses naming)."""
    out: dict[str, int | None] = {
        "input_tokens": None,
        "output_tokens": None,
        "total_tokens": None,
        "cached_tokens": None,
        "reasoning_tokens": None,
    }
    if not isinstance(usage, dict):
        return out

    def num(v: Any) -> int | None:
        # not a count: negative, NaN, or inf (1e999 in LiteLLM's Python-literal usage text)
        return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < _INF else None

    out["input_tokens"] = num(usage.get("prompt_tokens", usage.get("input_tokens")))
    out["output_tokens"] = num(usage.get("completion_tokens", usage.get("output_tokens")))
    out["total_tokens"] = num(usage.get("total_tokens"))
    if out["total_tokens"] is None and (out["input_tokens"] is not None or out["output_tokens"] is not None):
        out["total_tokens"] = (out["input_tokens"] or 0) + (out["output_tokens"] or 0)
    in_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    if isinstance(in_details, dict):
        out["cached_tokens"] = num(in_details.get("cached_tokens"))
    if isinstance(out_details, dict):
        out["reasoning_tokens"] = num(out_details.get("reasoning_tokens"))
    return out


def request_input(request_type: str, body: dict | None, form: dict | None) -> Any:
    """The content part of a request (messages, prompt, input), without sampling parameters."""
    if form is not None:
        return form
    if not isinstance(body, dict):
        return None
    if request_type == "chat":
        return body.get("messages")
    if request_type == "text_completion":
        return body.get("prompt")
    if request_type == "responses":
        if body.get("instructions") is not None:
            return {"instructions": body.get("instructions"), "input": body.get("input")}
        return body.get("input")
    if request_type in ("embeddings", "speech"):
        return body.get("input")
    return body.get("prompt", body.get("input"))


def response_output(request_type: str, body: Any) -> Any:
    """The content part of a non-streamed response."""
    if not isinstance(body, dict):
        return None
    if request_type in ("chat", "text_completion"):
        return body.get("choices")
    if request_type == "responses":
        return body.get("output")
    if request_type == "embeddings":
        data = body.get("data") or []
        dims = len(data[0].get("embedding") or []) if data and isinstance(data[0], dict) else 0
        # Vectors are not content a person reads: keep their count and size only.
        return {"embeddings": len(data), "dimensions": dims}
    if request_type == "transcription":
        return {"text": body.get("text")}
    return body.get("data", body.get("output"))


def finish_reason_of(request_type: str, body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        fr = choices[0].get("finish_reason")
        return fr if isinstance(fr, str) else None
    if request_type == "responses":
        status = body.get("status")
        return status if isinstance(status, str) else None
    return None


def error_of(body: Any, fallback: str) -> tuple[str | None, str | None]:
    """(error_type, error_message) from an OpenAI-style error body."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            etype = err.get("type") or err.get("code")
            msg = err.get("message")
            return (str(etype) if etype else fallback, str(msg)[:2000] if msg is not None else None)
        if isinstance(err, str):
            return fallback, err[:2000]
        if isinstance(body.get("message"), str):
            return fallback, body["message"][:2000]
    return fallback, None


def base_record(
    *,
    timestamp: str,
    request_id: str,
    customer_id: str,
    provider: str,
    model: str,
    endpoint: str,
    method: str,
    request_type: str,
    stream: bool,
    metadata: dict[str, str] | None,
    user_id: str | None = None,
) -> LogRecord:
    rec: Any = _EMPTY_RECORD.copy()  # a copy of 68 keys costs a quarter of a dict display of them
    rec["timestamp"] = timestamp
    rec["request_id"] = request_id
    rec["customer_id"] = customer_id
    rec["user_id"] = user_id
    rec["provider"] = provider
    rec["model"] = model
    rec["endpoint"] = endpoint
    rec["method"] = method
    rec["request_type"] = request_type
    rec["stream"] = stream
    rec["metadata"] = metadata
    return rec


# The fields schema version 2 added, empty until the request and its answer fill them (finish_record).
_V2_FIELDS: dict[str, Any] = dict.fromkeys(
    (
        "temperature", "top_p", "max_tokens", "stop", "seed", "n", "presence_penalty", "frequency_penalty",
        "response_format_type", "tool_choice", "parallel_tool_calls", "reasoning_effort", "request_params",
        "tool_names", "tool_definitions", "tool_call_names", "tool_calls", "tool_call_count", "input_images",
        "input_audio_format", "input_audio_bytes", "input_audio_seconds", "output_audio_format",
        "output_audio_bytes", "image_size", "image_quality", "output_image_count", "video_id", "video_size",
        "video_seconds", "request_bytes", "response_bytes", "trace_id", "span_id", "attempts",
    )
)


# A record before the request and its answer fill it in (base_record), in the order records are written.
_EMPTY_RECORD: dict[str, Any] = {
    "schema_version": SCHEMA_VERSION,
    "timestamp": None,
    "ended_at": None,
    "request_id": None,
    "parent_request_id": None,
    "customer_id": None,
    "user_id": None,
    "team_id": None,
    "virtual_key_id": None,
    "provider": None,
    "model": None,
    "endpoint": None,
    "method": None,
    "request_type": None,
    "stream": None,
    "status": "success",
    "status_code": 200,
    "error_type": None,
    "error_message": None,
    "finish_reason": None,
    "retries": 0,
    "fallback_index": 0,
    "latency_ms": 0,
    "time_to_first_token_ms": None,
    "input_tokens": None,
    "output_tokens": None,
    "total_tokens": None,
    "cached_tokens": None,
    "reasoning_tokens": None,
    "cost_usd": None,
    "metadata": None,
    "input_content": None,
    "output_content": None,
    **_V2_FIELDS,
}


def set_error(rec: LogRecord, status_code: int, error_type: str, message: str | None) -> None:
    rec["status"] = "error"
    rec["status_code"] = status_code
    rec["error_type"] = error_type
    rec["error_message"] = message


def mark_aborted(rec: LogRecord, err: BaseException) -> None:
    """A request the proxy could not take to its end: cancelled at shutdown, or a bug in the proxy.

    A record that already holds an error keeps it (it says more than the abort).
    """
    if rec["status"] != "success":
        return
    if isinstance(err, asyncio.CancelledError):
        message = "the proxy shut down (proxy.shutdown_grace_s) before the request ended"
        set_error(rec, 503, "cancelled", message)
    else:
        set_error(rec, 500, "proxy_error", f"{type(err).__name__}: {err}"[:2000])


@dataclass(frozen=True, slots=True)
class ResponseIds:
    """What the provider's answer said of itself (not record fields: the OTLP span's gen_ai.response.*)."""

    id: str | None = None
    model: str | None = None


def _ids(doc: Any) -> ResponseIds | None:
    if not isinstance(doc, dict):
        return None
    rid, model = doc.get("id"), doc.get("model")
    return ResponseIds(rid if isinstance(rid, str) else None, model if isinstance(model, str) else None)


@dataclass(frozen=True, slots=True)
class RecordRules:
    """What the proxy's configuration says about every record: how to price it, whether to keep content."""

    pricing: Pricing
    keep_content: bool


def finish_record(
    rec: LogRecord,
    request: ClientRequest,
    stream: StreamAssembler | None,
    t0: float,
    rules: RecordRules,
    answer: bytes | None = None,
    answer_type: str = "",
    sent: int | None = None,
) -> ResponseIds | None:
    """Fill in what the request held and what the answer taught: parameters, tools, media (``capture``),
    timings, usage, finish reason, errors, cost and content. Returns the answer's id and model, if it said.

    ``answer`` is the provider's whole body (None when it was streamed or never came) and ``answer_type``
    its content type; ``t0`` is the ``time.perf_counter()`` of the request's arrival; ``sent`` the size of
    the body sent to the client.
    """
    rec["ended_at"] = iso(datetime.now(UTC))
    rec["latency_ms"] = int((time.perf_counter() - t0) * 1000)
    asked, body_without_media = capture.request_fields(request, rules.keep_content)
    rec.update(asked)  # type: ignore[typeddict-item]
    rec["response_bytes"] = sent
    if stream is not None and answer is None:
        output = _from_stream(rec, stream, t0, answer_type, rules.keep_content)
        ids = _ids({"id": stream.response_id, "model": stream.response_model})
    else:
        output, doc = _from_body(rec, answer, answer_type, rules.keep_content)
        ids = _ids(doc)
    rec["cost_usd"] = rules.pricing.cost(rec["provider"], rec["model"], rec["input_tokens"], rec["output_tokens"])
    if rules.keep_content:
        body = body_without_media if body_without_media is not None else request.json
        rec["input_content"] = json_text(request_input(rec["request_type"], body, request.form))
        rec["output_content"] = json_text(capture.without_media_bytes(rec["request_type"], output))
    return ids


def _from_stream(rec: LogRecord, stream: StreamAssembler, t0: float, answer_type: str, keep_content: bool) -> Any:
    """Usage, first-token time, finish reason, tool calls and error of a streamed answer; returns its output."""
    request_type = rec["request_type"]
    calls = []
    if request_type == "responses" and stream.output is not None:
        calls = capture.responses_tool_calls(stream.output)  # the whole output: built-in tools too
    elif request_type in capture.TOOL_TYPES:
        calls = stream.tool_calls()
    if request_type in capture.TOOL_TYPES:
        rec.update(capture.tool_call_fields(calls, keep_content))  # type: ignore[typeddict-item]
    if stream.audio_bytes and request_type != "video":
        rec["output_audio_bytes"] = stream.audio_bytes
    rec.update(usage_fields(stream.usage))
    rec["time_to_first_token_ms"] = int((stream.first_token - t0) * 1000) if stream.first_token else None
    rec["finish_reason"] = stream.finish_reason or stream.response_status
    if stream.error is not None and rec["status"] == "success":
        etype, msg = error_of({"error": stream.error}, "stream_error")
        set_error(rec, 500, etype or "stream_error", msg)
    if request_type == "speech":
        ok = stream.audio_bytes or rec["status"] == "success"
        return {"audio_bytes": stream.audio_bytes, "content_type": answer_type} if ok else None
    if request_type == "video":
        return {"bytes": stream.audio_bytes, "content_type": answer_type}
    if stream.output is not None:
        return stream.output
    text = "".join(stream.text)
    if request_type != "chat":
        return {"text": text}
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls
        ]
    return message


def _from_body(rec: LogRecord, answer: bytes | None, answer_type: str, keep_content: bool) -> tuple[Any, Any]:
    """Usage, finish reason, tool calls and media of a whole answer, or its error; returns its output (None
    for an error) and the answer's JSON document."""
    doc: Any = None
    if answer is not None and "json" in (answer_type or ""):
        try:
            doc = orjson.loads(answer)
        except orjson.JSONDecodeError:
            doc = None
    if rec["status"] == "success" and isinstance(doc, dict):
        rec.update(usage_fields(doc.get("usage")))
        rec["finish_reason"] = finish_reason_of(rec["request_type"], doc)
        _answer_capture(rec, doc, keep_content)
    elif rec["status"] == "error" and rec["error_type"] is None:
        rec["error_type"], rec["error_message"] = error_of(doc, f"http_{rec['status_code']}")
    return (response_output(rec["request_type"], doc) if rec["status"] == "success" else None), doc


def _answer_capture(rec: LogRecord, doc: dict, keep_content: bool) -> None:
    request_type = rec["request_type"]
    if request_type == "chat":
        calls = capture.chat_tool_calls(doc.get("choices"))
    elif request_type == "responses":
        calls = capture.responses_tool_calls(doc.get("output"))
    else:
        calls = []
    if request_type in capture.TOOL_TYPES:
        rec.update(capture.tool_call_fields(calls, keep_content))  # type: ignore[typeddict-item]
    rec.update(capture.answer_fields(request_type, doc))  # type: ignore[typeddict-item]
