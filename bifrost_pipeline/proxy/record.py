"""Building the canonical log record (``schemas/log_record.schema.json``) of one proxied request.

Cheap on purpose: plain dicts and a few lookups. Serialization happens in the landing writer's thread.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from bifrost_pipeline.records import SCHEMA_VERSION

# The OpenAI-compatible endpoints the proxy serves -> request_type of the record.
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/audio/speech": "speech",
    "/v1/audio/transcriptions": "transcription",
    "/v1/images/generations": "image",
}
DEFAULT_ENDPOINT = {v: k for k, v in ENDPOINTS.items()}

# Request headers that hold secrets: never forwarded to a provider as they are, never logged, never landed.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "set-cookie", "x-goog-api-key"}
)
LOGGING_HEADER_PREFIX = "x-bf-lh-"


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hour_key(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def logging_metadata(headers: dict[str, str], configured: tuple[str, ...]) -> dict[str, str] | None:
    """Seed 001: configured headers under their lower-cased name, plus x-bf-lh-<name> as <name>; merged."""
    meta: dict[str, str] = {}
    for name in configured:
        value = headers.get(name)
        if value is not None:
            meta[name] = value
    for name, value in headers.items():
        if name.startswith(LOGGING_HEADER_PREFIX):
            key = name[len(LOGGING_HEADER_PREFIX) :]
            if key and key not in SECRET_HEADERS:
                meta[key] = value
    return meta or None


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
        return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 else None

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
    started: datetime,
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
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "timestamp": iso(started),
        "ended_at": None,
        "request_id": request_id,
        "parent_request_id": None,
        "customer_id": customer_id,
        "user_id": user_id,
        "team_id": None,
        "virtual_key_id": None,
        "provider": provider,
        "model": model,
        "endpoint": endpoint,
        "method": method,
        "request_type": request_type,
        "stream": stream,
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
        "metadata": metadata,
        "input_content": None,
        "output_content": None,
    }
