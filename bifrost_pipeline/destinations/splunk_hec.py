"""`splunk_hec`: every exported row as one event in Splunk, through the HTTP Event Collector.

Splunk publishes no Python client for HEC, only the HTTP API (the splunk-sdk package talks to the
management port, not to HEC), so this module posts to `/services/collector/event` with `requests` and
urllib3's `Retry`: `Authorization: Splunk <token>`, a body of concatenated JSON event objects
(`{"time", "host", "source", "sourcetype", "index", "event"}`), gzip-compressed by default.

Limits: a request carries at most `batch_bytes` of uncompressed body (Splunk's `max_content_length` in
limits.conf, default 1 MB here so it fits any deployment, Splunk Cloud included); an event above
`max_event_bytes` has its content fields cut visibly (log_events.py). 429 and 5xx (503 "server is busy")
are retried with exponential backoff, honouring Retry-After; 400, 401, 403 and 413 fail with Splunk's
`text` and `code`. TLS certificates are verified unless `verify_tls: false`; `ca_file` adds a private CA.

Splunk cannot delete events through HEC: a re-run sends the partition again; each event carries
`bifrost.run_id` and `record.request_id` for deduplication downstream (docs/forwarding.md).
"""

from __future__ import annotations

import gzip
from functools import cached_property
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from bifrost_pipeline.destinations.base import DatasetFile, DestinationConfig, PartitionOutput
from bifrost_pipeline.destinations.log_events import Encoded, Event, EventDestination, to_json
from bifrost_pipeline.destinations.object_store import check_endpoint, short

EVENT_PATH = "/services/collector/event"
RETRY_STATUSES = (429, 500, 502, 503, 504)


class SplunkHecConfig(DestinationConfig):
    url: str  # the HEC base URL, e.g. https://splunk.example.com:8088 (the event path is added)
    token: SecretStr  # write it as ${SPLUNK_HEC_TOKEN}
    index: str | None = None  # None: the token's default index
    sourcetype: str = "_json"
    source: str = "bifrost"
    host: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None  # a CA bundle (PEM) for a HEC behind a private CA
    gzip: bool = True
    batch_bytes: int = Field(1_000_000, ge=10_000, le=800 * 1024 * 1024)  # uncompressed body per request
    max_event_bytes: int | None = Field(None, ge=1_000)  # default: batch_bytes
    max_attempts: int = Field(5, ge=1, le=20)
    backoff_seconds: float = Field(1.0, ge=0)
    timeout_seconds: float = Field(60, gt=0)

    _url = field_validator("url")(classmethod(lambda cls, v: check_endpoint(v)))

    @field_validator("token")
    @classmethod
    def _token_set(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("token is empty (set it as ${SPLUNK_HEC_TOKEN})")
        return v

    @model_validator(mode="after")
    def _sizes(self):
        if self.max_event_bytes and self.max_event_bytes > self.batch_bytes:
            raise ValueError("max_event_bytes must not exceed batch_bytes (an event goes in one request)")
        if "/services/collector" in self.url:
            raise ValueError(f"url is the HEC base (https://host:8088), without {EVENT_PATH}; got {self.url!r}")
        if self.ca_file and not self.verify_tls:
            raise ValueError("ca_file is for verifying TLS: it makes no sense with verify_tls: false")
        return self


class SplunkHecDestination(EventDestination):
    kind = "splunk_hec"
    Config = SplunkHecConfig
    config: SplunkHecConfig
    max_batch_events = 1_000_000  # HEC counts bytes, not events
    item_overhead = 1  # the newline between events

    @property
    def max_batch_bytes(self) -> int:
        return self.config.batch_bytes

    @property
    def max_event_bytes(self) -> int:
        return self.config.max_event_bytes or self.config.batch_bytes

    def describe(self) -> str:
        return f"splunk HEC {self.config.url} (index {self.config.index or 'of the token'})"

    def secrets(self) -> list[SecretStr | str | None]:
        return [self.config.token]

    def envelope(self, event: Event) -> dict[str, Any]:
        cfg = self.config
        wrapped: dict[str, Any] = {
            "time": round(event.time.timestamp(), 3),  # epoch seconds, millisecond precision
            "source": cfg.source,
            "sourcetype": cfg.sourcetype,
            "event": event.body,
        }
        if cfg.index:
            wrapped["index"] = cfg.index
        if cfg.host:
            wrapped["host"] = cfg.host
        return wrapped

    def encode(self, event: Event) -> bytes:
        return to_json(self.envelope(event))

    @cached_property
    def session(self):
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        cfg = self.config
        retry = Retry(
            total=cfg.max_attempts - 1,
            backoff_factor=cfg.backoff_seconds,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"POST"}),  # a repeated POST may duplicate events: see the re-run docs
            respect_retry_after_header=True,
            raise_on_status=False,  # the last answer comes back, with Splunk's text and code
        )
        session = requests.Session()
        session.mount("https://", HTTPAdapter(max_retries=retry))
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.headers["Authorization"] = f"Splunk {cfg.token.get_secret_value()}"
        session.verify = str(self.context.resolve(cfg.ca_file)) if cfg.ca_file else cfg.verify_tls
        return session

    def send_batch(self, output: PartitionOutput, file: DatasetFile, batch: list[Encoded]) -> int:
        cfg = self.config
        body = b"\n".join(e.data for e in batch)
        headers = {"Content-Type": "application/json"}
        if cfg.gzip:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        where = f"partition {output.partition_key}, dataset {file.dataset}"
        try:
            reply = self.session.post(cfg.url + EVENT_PATH, data=body, headers=headers, timeout=cfg.timeout_seconds)
        except Exception as err:  # connection refused, TLS verification failed, retries exhausted on errors
            raise self.error(
                f"{where}: cannot send {len(batch)} events after {cfg.max_attempts} attempt(s): "
                f"{type(err).__name__}: {short(err)}",
                retryable=True,
            ) from None
        if 200 <= reply.status_code < 300:
            return len(batch)
        raise self._answer_error(where, reply, len(batch))

    def _answer_error(self, where: str, reply, count: int):
        try:
            answer = reply.json()
            said = f"{answer.get('text')} (code {answer.get('code')})"
        except ValueError:
            said = short(reply.text or reply.reason or "")
        status = reply.status_code
        hint = {
            400: "the events were refused (format, or an index the token may not write to)",
            401: "no valid Authorization header reached HEC",
            403: "the token is invalid or disabled (check token)",
            413: f"the request is above HEC's max_content_length: lower batch_bytes (now {self.config.batch_bytes})",
        }.get(status, "")
        retryable = status in RETRY_STATUSES
        tries = f" after {self.config.max_attempts} attempt(s)" if retryable else ""
        return self.error(
            f"{where}: HEC answered {status}{tries} to {count} events: {said}" + (f"; {hint}" if hint else ""),
            retryable=retryable,
        )
