"""OTLP out (config ``otel``, docs/otel-export.md): one span per proxied request in the OpenTelemetry GenAI
semantic conventions, and the proxy's Prometheus metrics pushed over OTLP, through the official SDK and
exporters (OTLP/HTTP protobuf or OTLP/gRPC).

Off the request path: the proxy calls ``OtelExport.record`` once a request's record is finished and
queued for landing; it builds the span and hands it to the SDK's BatchSpanProcessor, which only appends it
to a bounded queue. Export runs on the processor's own thread, so a slow or dead collector never slows or
fails a request: when the queue is full, spans are dropped and counted
(``bifrost_proxy_otel_spans_dropped_total``).

Attribute names: the GenAI conventions where they name the field (``gen_ai.*``, ``error.type``,
``http.response.status_code``, ``server.address``); cost as ``gen_ai.usage.cost`` (not in the conventions,
read by Langfuse and by this project's own intake); every other record field as ``bifrost.<field>``
(``otlp.BIFROST_FIELDS``), so that this project's ``/v1/traces`` intake rebuilds the record from the span.

The SDK is imported only when ``otel.enabled``: the proxy starts as fast as before when it is off.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import orjson

from bifrost_pipeline.config.otel import OtelConfig

from .otlp import BIFROST_FIELDS, JSON_FIELDS, REQUEST_PARAM_ATTRIBUTES

if TYPE_CHECKING:
    from .metrics import Metrics
    from .record import LogRecord, ResponseIds

log = logging.getLogger("bifrost_pipeline.proxy.otel")

# request_type -> gen_ai.operation.name: the conventions' names where they have one, else the request type
# (which this project's intake reads back, otlp.OPERATIONS).
OPERATION_NAMES = {"chat": "chat", "text_completion": "text_completion", "embeddings": "embeddings"}
DEFAULT_SERVICE = "bifrost-proxy"


def _attribute(value: Any) -> Any:
    """A record value as an OTel attribute value: scalars and lists of text as they are, the rest as JSON."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return value


def span_attributes(
    rec: LogRecord, response: ResponseIds | None, server: tuple[str, int | None] | None, content: bool
) -> dict[str, Any]:
    """The span's attributes of one finished record (None values left out)."""
    a: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION_NAMES.get(rec["request_type"], rec["request_type"]),
        "gen_ai.provider.name": rec["provider"],
        "gen_ai.request.model": rec["model"],
        "http.request.method": rec["method"],
        "http.response.status_code": rec["status_code"],
        "gen_ai.usage.input_tokens": rec.get("input_tokens"),
        "gen_ai.usage.output_tokens": rec.get("output_tokens"),
        "gen_ai.usage.cache_read.input_tokens": rec.get("cached_tokens"),
        "gen_ai.usage.reasoning.output_tokens": rec.get("reasoning_tokens"),
        "gen_ai.usage.cost": rec.get("cost_usd"),
        "error.type": rec.get("error_type") if rec["status"] != "success" else None,
        "bifrost.request_id": rec["request_id"],  # the intake reads these two back (otlp.request_id)
        "bifrost.customer_id": rec["customer_id"],
    }
    for field, name in REQUEST_PARAM_ATTRIBUTES.items():
        a[name] = rec.get(field)  # type: ignore[misc]
    if rec.get("finish_reason"):
        a["gen_ai.response.finish_reasons"] = [rec["finish_reason"]]
    if response is not None:
        a["gen_ai.response.id"] = response.id
        a["gen_ai.response.model"] = response.model
    if server is not None:
        a["server.address"], a["server.port"] = server
    for field in BIFROST_FIELDS:
        value = rec.get(field)  # type: ignore[misc]
        a["bifrost." + field] = orjson.dumps(value).decode() if field in JSON_FIELDS and value is not None else _attribute(value)
    for key, value in (rec.get("metadata") or {}).items():
        a["bifrost.metadata." + key] = value
    if content:
        a.update(content_attributes(rec))
    return {k: v for k, v in a.items() if v is not None and v != []}


# --- content: the conventions' message shape (role + parts) -------------------------------------------------


def _text_parts(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    parts = []
    for p in content if isinstance(content, list) else ():
        if isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text"):
            parts.append({"type": "text", "content": p.get("text")})
        elif isinstance(p, dict):
            parts.append(p)  # images, audio: as sent (their bytes were replaced by their size already)
    return parts


def _call_parts(calls: Any) -> list[dict]:
    parts = []
    for tc in calls if isinstance(calls, list) else ():
        fn = tc.get("function") if isinstance(tc, dict) else None
        if isinstance(fn, dict):
            parts.append({"type": "tool_call", "id": tc.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")})
    return parts


def chat_messages(messages: Any) -> list[dict]:
    """OpenAI chat messages as the conventions' input messages."""
    out = []
    for m in messages if isinstance(messages, list) else ():
        if not isinstance(m, dict):
            continue
        if m.get("role") == "tool":
            parts = [{"type": "tool_call_response", "id": m.get("tool_call_id"), "response": m.get("content")}]
        else:
            parts = _text_parts(m.get("content")) + _call_parts(m.get("tool_calls"))
        out.append({"role": m.get("role"), "parts": parts})
    return out


def chat_output(output: Any) -> list[dict]:
    """A chat answer (its choices, or the one message assembled from a stream) as output messages."""
    choices = output if isinstance(output, list) else [{"message": output}]
    out = []
    for c in choices:
        message = c.get("message") if isinstance(c, dict) else None
        if not isinstance(message, dict):
            continue
        parts = _text_parts(message.get("content")) + _call_parts(message.get("tool_calls"))
        out.append({"role": message.get("role") or "assistant", "parts": parts, "finish_reason": c.get("finish_reason")})
    return out


def content_attributes(rec: LogRecord) -> dict[str, Any]:
    """gen_ai.input.messages / gen_ai.output.messages / gen_ai.tool.definitions (JSON text). Chat content
    takes the conventions' shape; other request types' content is sent as the record holds it."""
    a: dict[str, Any] = {"gen_ai.tool.definitions": rec.get("tool_definitions")}
    inp, out = rec.get("input_content"), rec.get("output_content")
    if rec["request_type"] == "chat":
        if inp is not None:
            inp = orjson.dumps(chat_messages(orjson.loads(inp))).decode()
        if out is not None:
            out = orjson.dumps(chat_output(orjson.loads(out))).decode()
    a["gen_ai.input.messages"], a["gen_ai.output.messages"] = inp, out
    return a


# --- the SDK side ------------------------------------------------------------------------------------------------


def _signal_url(cfg: OtelConfig, signal: str) -> str:
    given = cfg.traces_endpoint if signal == "traces" else cfg.metrics_endpoint
    if given:
        return given
    if cfg.protocol == "grpc":
        return cfg.endpoint
    return cfg.endpoint.rstrip("/") + f"/v1/{signal}"


def _exporter_args(cfg: OtelConfig, signal: str) -> dict[str, Any]:
    """Keyword arguments shared by the span and metric exporters of the configured protocol."""
    headers = {k.lower(): v.get_secret_value() for k, v in cfg.headers.items()}  # gRPC metadata is lower case
    args: dict[str, Any] = {"endpoint": _signal_url(cfg, signal), "headers": headers, "timeout": cfg.timeout_s}
    if cfg.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression

        args["compression"] = Compression.Gzip if cfg.compression == "gzip" else Compression.NoCompression
        if cfg.insecure:
            args["insecure"] = True
        elif cfg.ca_file:
            import grpc

            with open(cfg.ca_file, "rb") as f:
                args["credentials"] = grpc.ssl_channel_credentials(root_certificates=f.read())
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression

        args["compression"] = Compression.Gzip if cfg.compression == "gzip" else Compression.NoCompression
        if cfg.ca_file:
            args["certificate_file"] = cfg.ca_file
    return args


def make_resource(cfg: OtelConfig):
    """service.name (config, else OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, else bifrost-proxy), the
    configured attributes over OTEL_RESOURCE_ATTRIBUTES, and an instance id per process (each --workers
    process pushes its own metrics)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    attrs: dict[str, Any] = {"service.instance.id": f"{socket.gethostname()}-{os.getpid()}"}
    attrs.update(cfg.resource_attributes)
    if cfg.service_name:
        attrs[SERVICE_NAME] = cfg.service_name
    resource = Resource.create(attrs)
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE}))
    return resource


class OtelExport:
    """The process's OTLP export: its tracer (spans of finished records) and its metric push."""

    def __init__(
        self, cfg: OtelConfig, metrics: Metrics, *, servers: dict[str, tuple[str, int | None]],
        keep_content: bool, max_metadata: int,
    ):
        self.cfg = cfg
        self.metrics = metrics
        self.servers = servers
        self.content = cfg.capture_content and keep_content
        self.max_attributes = 128 + max_metadata  # the SDK's default cap (128) would cut logging headers
        self.tracer: Any = None
        self.processor: Any = None
        self.reader: Any = None

    def start(self) -> None:
        """Build the exporters and start their threads (after the process forked: --workers)."""
        from . import otel_sdk

        resource = make_resource(self.cfg)
        if self.cfg.traces.enabled:
            self.tracer, self.processor = otel_sdk.tracer(
                self.cfg, resource, self.metrics, _exporter_args(self.cfg, "traces"), self.max_attributes
            )
        if self.cfg.metrics.enabled:
            self.reader = otel_sdk.metric_reader(
                self.cfg, resource, self.metrics, _exporter_args(self.cfg, "metrics")
            )
        log.info(
            "OTLP export (%s) to %s: traces %s, metrics %s, content %s", self.cfg.protocol,
            urlparse(_signal_url(self.cfg, "traces")).netloc or self.cfg.endpoint,
            "on" if self.tracer else "off", "on" if self.reader else "off", "on" if self.content else "off",
        )

    def record(self, rec: LogRecord, response: ResponseIds | None = None) -> None:
        """Queue the span of one finished record (never blocks, never raises into the request)."""
        if self.tracer is None:
            return
        try:
            from . import otel_sdk

            attrs = span_attributes(rec, response, self.servers.get(rec["provider"]), self.content)
            otel_sdk.emit(self.tracer, rec, attrs)
        except Exception:
            log.exception("OTLP span of request %s", rec.get("request_id"))

    def shutdown(self) -> None:
        """Send what is queued, waiting at most otel.shutdown_timeout_s per signal."""
        timeout_ms = int(self.cfg.shutdown_timeout_s * 1000)
        if self.processor is not None:
            self.processor.shutdown_within(timeout_ms)
        if self.reader is not None:
            self.reader.shutdown(timeout_millis=timeout_ms)


def servers_of(providers: dict[str, Any]) -> dict[str, tuple[str, int | None]]:
    """server.address and server.port of each configured provider's base URL."""
    out = {}
    for name, p in providers.items():
        url = urlparse(p.base_url)
        if url.hostname:
            out[name] = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    return out
