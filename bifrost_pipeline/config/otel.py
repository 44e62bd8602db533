"""The `otel` section: OTLP traces and metrics sent out by the proxy (see docs/otel-export.md). Off by default."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from bifrost_pipeline.config.base import Strict


class OtelTracesConfig(Strict):
    """One span per proxied request, batched off the request path by the SDK's BatchSpanProcessor."""

    enabled: bool = True
    # Spans waiting for export; past this many, new spans are dropped and counted
    # (bifrost_proxy_otel_spans_dropped_total{reason="queue_full"}): a slow collector never holds a request.
    queue_size: Annotated[int, Field(ge=1)] = 8192
    # Small batches, sent often: the export thread encodes a batch while holding the GIL, so a large batch
    # stalls the requests being served meanwhile (bench/proxy_bench.py --otel at 500 requests/s: added p99
    # +31 ms with 512 spans a batch, +2.8 to +8.3 ms with 32 every 0.1 s, +3.6 to +4.5 ms with 16 every
    # 0.05 s). The cost: about 30 small POSTs a second at 500 requests/s.
    batch_size: Annotated[int, Field(ge=1)] = 16
    # Longest a span waits in the queue before its batch is sent.
    delay_s: Annotated[float, Field(gt=0)] = 0.05

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> OtelTracesConfig:
        if self.batch_size > self.queue_size:
            raise ValueError(f"batch_size ({self.batch_size}) cannot exceed queue_size ({self.queue_size})")
        return self


class OtelMetricsConfig(Strict):
    """The proxy's Prometheus metrics (the /metrics ones), pushed over OTLP for multi-node setups."""

    enabled: bool = False
    interval_s: Annotated[float, Field(ge=1)] = 60.0


class OtelConfig(Strict):
    enabled: bool = False
    # The collector's base URL: OTLP/HTTP appends /v1/traces and /v1/metrics (as OTEL_EXPORTER_OTLP_ENDPOINT
    # does); gRPC takes host:port (or a URL). traces_endpoint / metrics_endpoint: whole URLs, used as given.
    endpoint: str = "http://127.0.0.1:4318"
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    # Sent with every export (Datadog's dd-api-key, Honeycomb's x-honeycomb-team, Grafana Cloud's and
    # Langfuse's Authorization: Basic ...). Values are secrets: give them as ${VAR}; they are never logged.
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    compression: Literal["gzip", "none"] = "gzip"
    # TLS: a CA bundle to trust (a private CA); for gRPC, `insecure: true` speaks plaintext (a local agent).
    ca_file: str | None = None
    insecure: bool = False
    # service.name of the resource; unset: OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES's, else
    # "bifrost-proxy". resource_attributes are merged over OTEL_RESOURCE_ATTRIBUTES.
    service_name: str | None = None
    resource_attributes: dict[str, str] = Field(default_factory=dict)
    # Prompts and answers as gen_ai.input.messages / gen_ai.output.messages (and tool definitions and
    # calls): off unless asked, and never when client.disable_content_logging is on.
    capture_content: bool = False
    # One export call (each of its retries included) gives up after this long.
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    # At shutdown: how long the queued spans and the last metrics may take to leave.
    shutdown_timeout_s: Annotated[float, Field(ge=0)] = 5.0
    traces: OtelTracesConfig = Field(default_factory=OtelTracesConfig)
    metrics: OtelMetricsConfig = Field(default_factory=OtelMetricsConfig)

    @model_validator(mode="after")
    def _insecure_is_grpc(self) -> OtelConfig:
        if self.insecure and self.protocol != "grpc":
            raise ValueError("insecure applies to protocol grpc only (for http/protobuf, use an http:// endpoint)")
        if self.insecure and self.ca_file:
            raise ValueError("give either insecure or ca_file, not both")
        return self
