"""Prometheus metrics with the names and base labels of Bifrost's telemetry (seed 002).

Custom labels come from the config's ``client.prometheus_labels`` and are filled from ``x-bf-prom-<label>``
request headers. Only configured names become labels (any other ``x-bf-prom-*`` header is ignored) and a
value is cut to ``MAX_LABEL_VALUE`` characters, so a client cannot create new series names at will.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("bifrost_pipeline.proxy.metrics")

PROM_HEADER_PREFIX = "x-bf-prom-"
MAX_LABEL_VALUE = 64
OTHER = "__other__"

BASE_LABELS = (
    "provider",
    "model",
    "method",
    "virtual_key_id",
    "virtual_key_name",
    "routing_engines_used",
    "routing_rule_id",
    "routing_rule_name",
    "selected_key_id",
    "selected_key_name",
    "number_of_retries",
    "fallback_index",
)
HTTP_LABELS = ("path", "method", "status")

# request_type of the record -> the `method` label of seed 002 (chat, text, embedding, speech, transcription).
METHOD_LABEL = {
    "chat": "chat",
    "text_completion": "text",
    "responses": "responses",
    "embeddings": "embedding",
    "speech": "speech",
    "transcription": "transcription",
    "image": "image",
    "video": "video",
}

# Body sizes in bytes: 100 B to 100 MB, x~3 per bucket (a chat request is a few KB, audio and images MBs).
SIZE_BUCKETS = (100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1e6, 3e6, 1e7, 3e7, 1e8)
# Where a landed record came from: the proxy's own requests, or a batch pushed to /v1/logs or /v1/traces.
RECORD_SOURCES = ("proxy", "logs", "traces")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def custom_label_name(configured: str) -> str:
    """A configured label as a Prometheus label name (``team-id`` -> ``team_id``)."""
    return configured.strip().lower().replace("-", "_")


class Metrics:
    # __init__ is long on purpose: every metric is declared here, once, so one place lists them all.
    def __init__(self, custom_labels: list[str], max_label_values: int = 1000):
        self.registry = CollectorRegistry(auto_describe=True)
        # Values a client controls (custom labels, provider and model names) are capped per label: past
        # max_label_values distinct values, new ones are counted under OTHER (and logged once per label).
        self.max_label_values = max_label_values
        self._seen: dict[str, set[str]] = {}
        # header name (lower case, after the prefix) -> label name
        self.custom = {}
        for name in custom_labels:
            label = custom_label_name(name)
            if not _LABEL_NAME.match(label) or label in BASE_LABELS + HTTP_LABELS + (
                "status_code",
                "is_success",
            ):
                raise ValueError(f"client.prometheus_labels: {name!r} cannot be a Prometheus label name")
            self.custom[name.strip().lower().replace("_", "-")] = label
        c = tuple(self.custom.values())
        self.custom_names = c
        r = self.registry
        self.http_requests = Counter(
            "http_requests_total", "Total number of HTTP requests", HTTP_LABELS + c, registry=r
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Duration of HTTP requests",
            HTTP_LABELS + c,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_request_size = Histogram(
            "http_request_size_bytes",
            "Size of incoming HTTP requests",
            HTTP_LABELS + c,
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.http_response_size = Histogram(
            "http_response_size_bytes",
            "Size of outgoing HTTP responses",
            HTTP_LABELS + c,
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.upstream_requests = Counter(
            "bifrost_upstream_requests_total",
            "Total requests forwarded to upstream providers",
            BASE_LABELS + c,
            registry=r,
        )
        self.success_requests = Counter(
            "bifrost_success_requests_total",
            "Total successful requests to upstream providers",
            BASE_LABELS + c,
            registry=r,
        )
        self.error_requests = Counter(
            "bifrost_error_requests_total",
            "Total failed requests to upstream providers",
            BASE_LABELS + ("status_code",) + c,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "bifrost_upstream_latency_seconds",
            "Latency of upstream provider requests",
            BASE_LABELS + ("is_success",) + c,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.input_tokens = Counter(
            "bifrost_input_tokens_total",
            "Total input tokens sent to upstream providers",
            BASE_LABELS + c,
            registry=r,
        )
        self.output_tokens = Counter(
            "bifrost_output_tokens_total",
            "Total output tokens received from upstream providers",
            BASE_LABELS + c,
            registry=r,
        )
        self.cost = Counter(
            "bifrost_cost_total",
            "Total cost in USD for upstream provider requests",
            BASE_LABELS + c,
            registry=r,
        )
        self.first_token = Histogram(
            "bifrost_stream_first_token_latency_seconds",
            "Time from request start to first streamed token",
            BASE_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "bifrost_stream_inter_token_latency_seconds",
            "Latency between subsequent streamed tokens",
            BASE_LABELS,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        # Not in seed 002: the proxy's own health (landing queue), named so they cannot be confused with it.
        self.records_landed = Counter(
            "bifrost_proxy_records_landed_total",
            "Records durably written (fsynced) to the landing zone, by source (proxy, logs, traces)",
            ("source",),
            registry=r,
        )
        for source in RECORD_SOURCES:  # every series exists from the start, at 0
            self.records_landed.labels(source)
        self.records_rejected = Counter(
            "bifrost_proxy_requests_rejected_total",
            "Requests refused because the landing queue was full (client.drop_excess_requests)",
            registry=r,
        )
        self.queue_waits = Counter(
            "bifrost_proxy_queue_full_waits_total",
            "Requests that waited for room in the landing queue (backpressure)",
            registry=r,
        )
        self.landing_errors = Counter(
            "bifrost_proxy_landing_errors_total",
            "Failed writes, flushes or publishes of landing segments (each is retried)",
            registry=r,
        )
        self.records_lost = Counter(
            "bifrost_proxy_records_lost_total",
            "Records the proxy shut down without landing, because the disk kept refusing them",
            registry=r,
        )

        self.refused = Counter(
            "bifrost_proxy_requests_refused_total",
            "Requests the proxy answered itself before any provider saw them, by reason (invalid_json, "
            "body_too_large, missing_header, missing_virtual_key, invalid_virtual_key, model_not_allowed, "
            "rate_limited, ...)",
            ("reason",),
            registry=r,
        )
        self.refusals_unlanded = Counter(
            "bifrost_proxy_refusals_unlanded_total",
            "Refused requests whose record was not landed because the landing queue was full",
            registry=r,
        )
        self.metadata_cut = Counter(
            "bifrost_proxy_logging_metadata_cut_total",
            "Logging-header metadata cut to its bounds: values truncated (what=value) and headers dropped "
            "(what=key)",
            ("what",),
            registry=r,
        )
        # OTLP export (config otel): spans never slow a request, so the ones that could not leave are counted.
        self.otel_spans_exported = Counter(
            "bifrost_proxy_otel_spans_exported_total",
            "Spans of proxied requests accepted by the OTLP collector",
            registry=r,
        )
        self.otel_spans_dropped = Counter(
            "bifrost_proxy_otel_spans_dropped_total",
            "Spans of proxied requests not exported: queue_full (the export queue was full: the collector is "
            "slow or down) or export_failed (the collector refused them or could not be reached, after retries)",
            ("reason",),
            registry=r,
        )
        self.otel_export_failures = Counter(
            "bifrost_proxy_otel_export_failures_total",
            "Failed OTLP export calls, by signal (traces, metrics)",
            ("signal",),
            registry=r,
        )

    def custom_values(self, headers: dict[str, str]) -> tuple[str, ...]:
        """Values of the configured custom labels from ``x-bf-prom-<name>`` headers ("" when absent)."""
        if not self.custom:
            return ()
        return tuple(
            self.cap(label, headers.get(PROM_HEADER_PREFIX + h, "")[:MAX_LABEL_VALUE])
            for h, label in self.custom.items()
        )

    def cap(self, label: str, value: str) -> str:
        seen = self._seen.get(label)
        if seen is None:
            seen = self._seen[label] = set()
        if value in seen:
            return value
        if len(seen) >= self.max_label_values:
            if OTHER not in seen:
                seen.add(OTHER)
                log.warning(
                    "metrics: label %r has %d distinct values; further ones are counted as %r",
                    label,
                    self.max_label_values,
                    OTHER,
                )
            return OTHER
        seen.add(value)
        return value

    def base_values(
        self, rec: dict, routing: tuple[str, str, str] = ("", "", "")
    ) -> tuple[str, ...]:
        """Seed 002's base labels of a record. ``routing`` is (virtual key name, name of the provider key that
        served the answer, routing engines used); no routing rules exist here, so those labels stay empty.
        The selected key is empty on a final error, as seed 002 says."""
        vk_name, key_name, engines = routing
        ok = rec["status"] == "success"
        return (
            self.cap("provider", rec["provider"]),
            self.cap("model", rec["model"]),
            METHOD_LABEL.get(rec["request_type"], rec["request_type"]),
            rec.get("virtual_key_id") or "",
            vk_name,
            engines,
            "",
            "",
            key_name if ok else "",
            key_name if ok else "",
            str(rec.get("retries") or 0),
            str(rec.get("fallback_index") or 0),
        )

    def observe_http(
        self, path: str, method: str, status: int, seconds: float, custom: tuple[str, ...], sizes: Any = None
    ) -> None:
        """One HTTP request; ``sizes`` has the body bytes ``received`` and ``sent`` (an ``asgi.Metered``)."""
        labels = (path, method, str(status)) + custom
        self.http_requests.labels(*labels).inc()
        self.http_duration.labels(*labels).observe(seconds)
        if sizes is not None:
            self.http_request_size.labels(*labels).observe(sizes.received)
            self.http_response_size.labels(*labels).observe(sizes.sent)

    def observe_record(
        self,
        rec: dict,
        upstream_s: float | None,
        custom: tuple[str, ...],
        gaps: list[float],
        routing: tuple[str, str, str] = ("", "", ""),
    ) -> None:
        """Upstream metrics of one proxied request, from its log record (``routing``: see base_values)."""
        base = self.base_values(rec, routing)
        labels = base + custom
        ok = rec["status"] == "success"
        self.upstream_requests.labels(*labels).inc()
        if ok:
            self.success_requests.labels(*labels).inc()
        else:
            self.error_requests.labels(*base, str(rec["status_code"]), *custom).inc()
        if upstream_s is not None:
            self.upstream_latency.labels(*base, "true" if ok else "false", *custom).observe(upstream_s)
        if rec.get("input_tokens"):
            self.input_tokens.labels(*labels).inc(rec["input_tokens"])
        if rec.get("output_tokens"):
            self.output_tokens.labels(*labels).inc(rec["output_tokens"])
        if rec.get("cost_usd"):
            self.cost.labels(*labels).inc(rec["cost_usd"])
        if rec.get("time_to_first_token_ms") is not None:
            self.first_token.labels(*base).observe(rec["time_to_first_token_ms"] / 1000)
        if gaps:
            h = self.inter_token.labels(*base)
            for g in gaps:
                h.observe(g)

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # --workers N: the sum over every worker's files
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
