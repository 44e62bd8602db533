"""`datadog_logs`: every exported row as one log in Datadog, through datadog-api-client (Logs API v2).

Limits (Datadog's "Send logs" reference): at most 1000 logs and 5 MB (uncompressed) per request, 1 MB
per log (Datadog would cut a bigger log itself; we cut its content fields visibly first, see
log_events.py). Payloads are gzip-compressed as Datadog recommends. 408, 429 and 5xx answers are retried
by the client's own retry policy (exponential backoff; on 429 it waits for X-Ratelimit-Reset); 400, 401,
403 and 413 fail the partition with the status and Datadog's reason.

Datadog cannot delete logs: a re-run of a partition sends its events again. Each event carries
`bifrost.export`, `bifrost.partition`, `bifrost.run_id` and `record.request_id` so the copies can be told
apart downstream (docs/forwarding.md).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, field_validator

from bifrost_pipeline.destinations.base import DatasetFile, DestinationConfig, PartitionOutput
from bifrost_pipeline.destinations.log_events import (
    Encoded,
    Event,
    EventDestination,
    oldest_event_time,
    to_json,
)
from bifrost_pipeline.destinations.object_store import check_endpoint, short

# The sites of the Logs intake (datadog-api-client's server variables for submit_log).
SITES = (
    "datadoghq.com", "us3.datadoghq.com", "us5.datadoghq.com", "ap1.datadoghq.com", "ap2.datadoghq.com",
    "uk1.datadoghq.com", "datadoghq.eu", "ddog-gov.com", "us2.ddog-gov.com",
)
MAX_LOGS_PER_REQUEST = 1000
MAX_PAYLOAD_BYTES = 5 * 1000 * 1000  # "5MB": read as decimal megabytes, the smaller reading
MAX_LOG_BYTES = 1000 * 1000
MAX_RECORD_AGE_HOURS = 18  # "Log events can be submitted with a timestamp that is up to 18 hours in the past"
SUMMARY_FIELDS = ("request_id", "provider", "model", "status_code", "latency_ms")


class DatadogLogsConfig(DestinationConfig):
    site: Literal[SITES] = "datadoghq.com"  # type: ignore[valid-type]
    api_key: SecretStr  # write it as ${DD_API_KEY}
    service: str = "bifrost"
    source: str = "bifrost"  # ddsource
    tags: list[str] = []  # ddtags, e.g. ["env:prod", "team:ml-platform"]
    hostname: str | None = None
    # sent: the log is dated when Datadog receives it (the row's own time stays in record.timestamp).
    # record: dated by the row's time; Datadog accepts at most 18 h in the past, so a partition holding an
    # older row fails before anything is sent (a daily export usually does: keep `sent` for those).
    timestamp: Literal["sent", "record"] = "sent"
    # Instead of the site's intake: a Datadog Agent / Observability Pipelines worker, or a test receiver.
    intake_url: str | None = None
    gzip: bool = True
    ca_file: str | None = None  # a CA bundle for intake_url behind a private CA
    max_attempts: int = Field(5, ge=1, le=20)
    backoff_seconds: float = Field(1.0, ge=0)  # the first retry's wait; doubled on each further retry
    timeout_seconds: float = Field(60, gt=0)

    _intake = field_validator("intake_url")(classmethod(lambda cls, v: check_endpoint(v)))

    @field_validator("api_key")
    @classmethod
    def _key_set(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("api_key is empty (set it as ${DD_API_KEY})")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not t or "," in t]
        if bad:
            raise ValueError(f"a tag must be non-empty and hold no comma, got {bad[0]!r}")
        return v


class DatadogLogsDestination(EventDestination):
    kind = "datadog_logs"
    Config = DatadogLogsConfig
    config: DatadogLogsConfig
    max_batch_events = MAX_LOGS_PER_REQUEST
    item_overhead = 1  # the comma between array items
    payload_overhead = 2  # [ ]

    max_batch_bytes = MAX_PAYLOAD_BYTES
    max_event_bytes = MAX_LOG_BYTES

    @classmethod
    def location_key(cls, config, context) -> str | None:
        return None  # many exports may send to one Datadog org: nothing is overwritten

    def describe(self) -> str:
        where = self.config.intake_url or f"https://http-intake.logs.{self.config.site}"
        return f"datadog logs {where} (service {self.config.service})"

    def secrets(self) -> list[SecretStr | str | None]:
        return [self.config.api_key]

    def item(self, event: Event) -> dict[str, Any]:
        cfg = self.config
        record = event.body["record"]
        summary = " ".join(f"{k}={record[k]}" for k in SUMMARY_FIELDS if record.get(k) is not None)
        item: dict[str, Any] = {
            "ddsource": cfg.source,
            "service": cfg.service,
            "message": f"{event.body['bifrost']['dataset']} {summary}".strip(),
            **event.body,
        }
        if cfg.tags:
            item["ddtags"] = ",".join(cfg.tags)
        if cfg.hostname:
            item["hostname"] = cfg.hostname
        if cfg.timestamp == "record":
            item["timestamp"] = int(event.time.timestamp() * 1000)  # epoch ms: one of Datadog's date forms
        return item

    def encode(self, event: Event) -> bytes:
        return to_json(self.item(event))

    def write_partition(self, output: PartitionOutput):
        if self.config.timestamp == "record":
            self._check_age(output)
        return super().write_partition(output)

    def _check_age(self, output: PartitionOutput) -> None:
        from datetime import UTC, datetime, timedelta

        limit = datetime.now(UTC) - timedelta(hours=MAX_RECORD_AGE_HOURS)
        for file in output.files:
            oldest = oldest_event_time(output, file)
            if oldest is not None and oldest < limit:
                raise self.error(
                    f"partition {output.partition_key}, dataset {file.dataset}: rows from {oldest:%Y-%m-%d %H:%M} "
                    f"UTC are older than the {MAX_RECORD_AGE_HOURS} h Datadog accepts with `timestamp: record` "
                    "(Datadog would drop them silently); use `timestamp: sent`"
                )

    @cached_property
    def api(self):
        from datadog_api_client import ApiClient, Configuration
        from datadog_api_client.rest import ClientRetry
        from datadog_api_client.v2.api.logs_api import LogsApi

        cfg = self.config
        conf = Configuration(
            host=cfg.intake_url,
            api_key={"apiKeyAuth": cfg.api_key.get_secret_value()},
            ssl_ca_cert=str(self.context.resolve(cfg.ca_file)) if cfg.ca_file else None,
            request_timeout=cfg.timeout_seconds,
            # raise_on_status=False: the last answer comes back as an ApiException with its status and body.
            retry_policy=ClientRetry(
                total=cfg.max_attempts - 1, backoff_factor=cfg.backoff_seconds, raise_on_status=False
            ),
        )
        conf.server_variables["site"] = cfg.site  # over DD_SITE from the environment: the config decides
        return LogsApi(ApiClient(conf))

    def send_batch(self, output: PartitionOutput, file: DatasetFile, batch: list[Encoded]) -> int:
        from datadog_api_client.exceptions import ApiException
        from datadog_api_client.v2.model.content_encoding import ContentEncoding
        from datadog_api_client.v2.model.http_log import HTTPLog
        from datadog_api_client.v2.model.http_log_item import HTTPLogItem

        # From the encoded form: the client then sends exactly what was measured against the limits.
        body = HTTPLog([HTTPLogItem(**orjson.loads(e.data)) for e in batch])
        where = f"partition {output.partition_key}, dataset {file.dataset}"
        kwargs = {"content_encoding": ContentEncoding.GZIP} if self.config.gzip else {}
        try:
            self.api.submit_log(body, **kwargs)
        except ApiException as err:
            raise self._answer_error(where, err.status, err.body, len(batch)) from None
        except Exception as err:  # connection refused, TLS failure, timeouts after the retries
            raise self.error(
                f"{where}: cannot send {len(batch)} logs after {self.config.max_attempts} attempt(s): "
                f"{type(err).__name__}: {short(err)}",
                retryable=True,
            ) from None
        return len(batch)

    def _answer_error(self, where: str, status: int | None, body: Any, count: int):
        reason = short(str(body)) if body else ""
        hint = {
            400: "the payload was refused as malformed",
            401: "no API key reached Datadog (check api_key)",
            403: "the API key is not valid for this site (check api_key and site)",
            413: f"the payload is above Datadog's {MAX_PAYLOAD_BYTES} bytes",
        }.get(status or 0, "")
        retryable = status in (408, 429) or (status or 0) >= 500
        tries = f" after {self.config.max_attempts} attempt(s)" if retryable else ""
        return self.error(
            f"{where}: Datadog answered {status}{tries} to {count} logs" + (f": {hint}" if hint else "")
            + (f" ({reason})" if reason else ""),
            retryable=retryable,
        )

