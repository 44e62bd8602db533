"""The sections the ingestion proxy reads: `client`, `providers` (with their pricing) and `proxy`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator

from bifrost_pipeline.config.base import Strict


class ClientConfig(Strict):
    logging_headers: list[str] = Field(default_factory=list)
    required_headers: list[str] = Field(default_factory=list)
    prometheus_labels: list[str] = Field(default_factory=list)
    # Distinct values kept per client-controlled metric label (custom labels, provider, model); more are
    # counted as "__other__" so that a client cannot grow the number of series without bound.
    prometheus_max_label_values: Annotated[int, Field(ge=1)] = 1000
    disable_content_logging: bool = False
    # Kept from Bifrost's config.json: when the landing queue is full, answer 429 instead of waiting.
    drop_excess_requests: bool = False
    # Kept from Bifrost's config.json: upstream connection pool size of the proxy.
    initial_pool_size: Annotated[int, Field(ge=1)] = 300

    @field_validator("logging_headers")
    @classmethod
    def _no_secret_headers(cls, v: list[str]) -> list[str]:
        # A credential must never reach a log record, even when someone lists it here.
        secret = {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "x-goog-api-key"}
        bad = [h for h in v if h.strip().lower() in secret]
        if bad:
            raise ValueError(f"{', '.join(bad)} carries credentials and cannot be a logging header")
        return v


class ProviderConfig(Strict):
    base_url: str
    api_key: SecretStr | None = None
    models: list[str] = Field(default_factory=list)
    timeout_s: Annotated[float, Field(gt=0)] = 600.0


class ModelPrice(Strict):
    input_per_million: Annotated[float, Field(ge=0)]
    output_per_million: Annotated[float, Field(ge=0)]


class ProxyConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    customer_header: str = "x-bf-customer-id"
    default_customer: str = "anonymous"
    pricing: dict[str, ModelPrice] = Field(default_factory=dict)
    queue_size: Annotated[int, Field(ge=1)] = 100_000
    segment_max_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    segment_max_age_s: Annotated[float, Field(gt=0)] = 60.0
    flush_interval_s: Annotated[float, Field(gt=0)] = 1.0
    # Largest request body proxied, and largest /v1/logs or /v1/traces batch (bytes).
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    max_intake_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    # On SIGTERM: how long in-flight requests (long streams included) may run on before being cut.
    shutdown_grace_s: Annotated[float, Field(gt=0)] = 30.0
