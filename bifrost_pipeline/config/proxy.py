"""The sections the ingestion proxy reads: `client`, `providers` (with their pricing) and `proxy`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator

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
    # Logging-header metadata is bounded: at most this many keys per record (the rest are dropped and
    # counted), each value cut to this many bytes with a visible suffix saying how much was cut.
    max_logging_headers: Annotated[int, Field(ge=1)] = 64
    max_logging_header_bytes: Annotated[int, Field(ge=16)] = 2048

    @field_validator("logging_headers")
    @classmethod
    def _no_secret_headers(cls, v: list[str]) -> list[str]:
        # A credential must never reach a log record, even when someone lists it here.
        secret = {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "x-goog-api-key"}
        bad = [h for h in v if h.strip().lower() in secret]
        if bad:
            raise ValueError(f"{', '.join(bad)} carries credentials and cannot be a logging header")
        return v


class ProviderKey(Strict):
    """One of several keys of a provider; chosen per attempt by weight (see README, Retries and fallbacks)."""

    name: Annotated[str, Field(min_length=1)]  # recorded in the attempt trail and the selected_key_* labels
    value: SecretStr
    weight: Annotated[float, Field(gt=0)] = 1.0


class ProviderConfig(Strict):
    base_url: str
    api_key: SecretStr | None = None  # one key (recorded as key "default"); `keys` for several
    keys: list[ProviderKey] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    timeout_s: Annotated[float, Field(gt=0)] = 600.0
    # Retries on 429, 5xx and connection errors, with exponential backoff from retry_backoff_s (or the
    # provider's retry-after), never waiting more than retry_backoff_max_s before one retry.
    max_retries: Annotated[int, Field(ge=0, le=10)] = 0
    retry_backoff_s: Annotated[float, Field(ge=0)] = 0.5
    retry_backoff_max_s: Annotated[float, Field(ge=0)] = 10.0
    # A key that answers 401 or 429 is not chosen again for this long (or the 429's retry-after if longer).
    key_cooldown_s: Annotated[float, Field(ge=0)] = 60.0
    # provider/model pairs tried in order when this provider fails (after its retries).
    fallbacks: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_way_to_give_keys(self) -> ProviderConfig:
        if self.api_key is not None and self.keys:
            raise ValueError("give either api_key or keys, not both")
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError(f"keys: names must be distinct ({', '.join(names)})")
        bad = [f for f in self.fallbacks if "/" not in f.strip("/")]
        if bad:
            raise ValueError(f"fallbacks: {', '.join(bad)} is not provider/model")
        return self


class VirtualKeyConfig(Strict):
    """A key the proxy hands to a client (see README, Virtual keys): who is billed and what it may use."""

    id: Annotated[str, Field(min_length=1)]
    name: str | None = None  # the virtual_key_name metric label; the id when not given
    secret: SecretStr  # from the environment: ${VAR}
    customer_id: Annotated[str, Field(min_length=1)]
    team_id: str | None = None
    providers: list[str] = Field(default_factory=list)  # empty: every provider
    models: list[str] = Field(default_factory=list)  # empty: every model
    requests_per_minute: Annotated[int, Field(ge=1)] | None = None

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("a virtual key secret must be at least 16 characters")
        return v


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
    # Clients present a virtual key (Authorization: Bearer ... or x-bf-vk); with require_virtual_key a
    # request without a known one is refused with 401. On by default: the demo config turns it off.
    virtual_keys: list[VirtualKeyConfig] = Field(default_factory=list)
    require_virtual_key: bool = True

    @model_validator(mode="after")
    def _distinct_virtual_keys(self) -> ProxyConfig:
        ids = [k.id for k in self.virtual_keys]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"virtual_keys: id {', '.join(dup)} is given more than once")
        secrets = [k.secret.get_secret_value() for k in self.virtual_keys]
        if len(set(secrets)) != len(secrets):
            raise ValueError("virtual_keys: two keys share a secret")  # never name the secret
        return self
