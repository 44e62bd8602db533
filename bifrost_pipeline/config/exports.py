"""The `log_exports` section: each export's schedule, filters, transformations, data and destination.

A transformation is typed by its `type` (a discriminated union); a destination's `config` is checked by
the config model of its `type`, which the loader hands over in a `LoadContext` (this module never imports
a destination module).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from bifrost_pipeline import records
from bifrost_pipeline.config.base import Strict
from bifrost_pipeline.destinations.base import Destination, DestinationConfig

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DATASETS = ("request_logs", "response_logs", "error_logs", "metrics", "traces")
RECORD_DATASETS = ("request_logs", "response_logs", "error_logs")
FORMATS = ("parquet", "json", "csv")
COMPRESSIONS = {
    "parquet": ("none", "gzip", "zstd", "snappy"),
    "json": ("none", "gzip", "zstd"),
    "csv": ("none", "gzip", "zstd"),
}
AGGREGATE_METRICS = (
    "count",
    "total_requests",
    "error_count",
    "avg_latency",
    "p50_latency",
    "p95_latency",
    "p99_latency",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "total_cost",
    "error_rate",
)
TIME_GROUPS = ("date", "hour")
DATE_RANGES = {"last_24_hours": 1, "last_7_days": 7, "last_30_days": 30}


@dataclass(frozen=True)
class LoadContext:
    """What validating an export needs from outside the file (pydantic's validation context).

    env: where `key_env` of an anonymize step is read. destinations: the destination registry, type ->
    Destination class, whose `Config` checks that destination's `config`.
    """

    env: Mapping[str, str]
    destinations: Mapping[str, type[Destination]]


def _load_context(info: ValidationInfo) -> LoadContext | None:
    return info.context if isinstance(info.context, LoadContext) else None


# --- schedule ---------------------------------------------------------------------------------------------


class Schedule(Strict):
    frequency: Literal["daily", "weekly", "monthly"]
    time: str = "00:00"
    timezone: str = "UTC"
    day: str | int | None = None

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        if not re.fullmatch(r"\d{2}:\d{2}", v):
            raise ValueError(f"expected a time as HH:MM, got {v!r}")
        hh, mm = int(v[:2]), int(v[3:])
        if hh > 23 or mm > 59:
            raise ValueError(f"expected a time as HH:MM, got {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone such as 'UTC' or 'Europe/Paris', got {v!r}") from None
        return v

    @model_validator(mode="after")
    def _day(self) -> Schedule:
        if self.frequency == "daily" and self.day is not None:
            raise ValueError("day: only weekly and monthly schedules take a day")
        if self.frequency == "weekly":
            if not isinstance(self.day, str) or self.day.lower() not in WEEKDAYS:
                raise ValueError(f"day: expected a weekday name, got {self.day!r}")
        if self.frequency == "monthly":
            if isinstance(self.day, bool) or not isinstance(self.day, int) or not 1 <= self.day <= 28:
                raise ValueError(f"day: expected a day of the month from 1 to 28, got {self.day!r}")
        return self

    @property
    def hour(self) -> int:
        return int(self.time[:2])

    @property
    def minute(self) -> int:
        return int(self.time[3:])

    @property
    def weekday(self) -> int:
        """Day of week as cron counts it (0 = Sunday)."""
        return (WEEKDAYS.index(str(self.day).lower()) + 1) % 7


# --- filters ----------------------------------------------------------------------------------------------


class DateRange(Strict):
    start: datetime | None = None
    end: datetime | None = None

    @model_validator(mode="after")
    def _order(self) -> DateRange:
        for name in ("start", "end"):
            v = getattr(self, name)
            if v is not None and v.tzinfo is None:
                raise ValueError(f"{name}: expected a time with a zone, e.g. 2024-01-01T00:00:00Z")
        if self.start and self.end and self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class Filters(Strict):
    # "last_24_hours" | "last_7_days" | "last_30_days" | {start, end}; typed in _date_range.
    date_range: Any = None
    providers: list[str] | None = None
    models: list[str] | None = None
    status_codes: list[Annotated[int, Field(ge=100, le=599)]] | None = None
    customers: list[str] | None = None
    min_latency_ms: Annotated[int, Field(ge=0)] | None = None
    max_latency_ms: Annotated[int, Field(ge=0)] | None = None
    has_errors: bool | None = None

    @field_validator("date_range")
    @classmethod
    def _date_range(cls, v: Any) -> str | DateRange | None:
        if v is None or isinstance(v, DateRange):
            return v
        if isinstance(v, str):
            if v not in DATE_RANGES:
                raise ValueError(f"expected {', '.join(DATE_RANGES)} or {{start, end}}, got {v!r}")
            return v
        if isinstance(v, dict):
            # Its ValidationError becomes errors under date_range (pydantic keeps their paths).
            return DateRange.model_validate(v)
        raise ValueError(f"expected {', '.join(DATE_RANGES)} or {{start, end}}, got {v!r}")

    @model_validator(mode="after")
    def _latency(self) -> Filters:
        if (
            self.min_latency_ms is not None
            and self.max_latency_ms is not None
            and self.min_latency_ms > self.max_latency_ms
        ):
            raise ValueError("min_latency_ms must not be above max_latency_ms")
        return self


# --- transformations ----------------------------------------------------------------------------------------


def _record_field(name: str) -> str:
    if name not in records.field_names():
        raise ValueError(f"unknown field {name!r} (fields: {', '.join(records.field_names())})")
    return name


class Aggregate(Strict):
    type: Literal["aggregate"]
    group_by: list[str] = Field(min_length=1)
    metrics: list[str] = Field(min_length=1)

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in TIME_GROUPS:
                _record_field(name)
        if len(set(v)) != len(v):
            raise ValueError("group_by lists a field twice")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in AGGREGATE_METRICS:
                raise ValueError(f"unknown metric {name!r} (metrics: {', '.join(AGGREGATE_METRICS)})")
        return v


class Anonymize(Strict):
    type: Literal["anonymize"]
    fields: list[str] = Field(min_length=1)
    method: Literal["hash", "redact", "drop"] = "hash"
    # hash: the HMAC key comes from the environment variable key_env, or from `key` written as
    # "${VAR:-fallback}" (the demo config's way to run without setup); never dumped or printed.
    key_env: str = "BIFROST_ANONYMIZE_KEY"
    key: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        for name in v:
            _record_field(name)
        return v

    @model_validator(mode="wrap")
    @classmethod
    def _key_from_env(cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Anonymize:
        """At load, a hash step gets its key: `key` when the file sets it, else the variable `key_env`."""
        step = handler(data)
        context = _load_context(info)
        if context is None or step.method != "hash" or not isinstance(data, dict):
            return step
        key = step.key.get_secret_value() if step.key else context.env.get(step.key_env)
        if not key:
            raise ValueError(
                f"key_env: environment variable {step.key_env} is not set (the secret key of the hash)"
            )
        return handler({**data, "key": key})


class Enrich(Strict):
    type: Literal["enrich"]
    add_fields: dict[str, str | int | float | bool] = Field(min_length=1)

    @field_validator("add_fields")
    @classmethod
    def _names(cls, v: dict) -> dict:
        for name in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"field name {name!r} must be letters, digits and _")
        return v


TRANSFORMATION_TYPES = tuple(get_args(m.model_fields["type"].annotation)[0] for m in (Aggregate, Anonymize, Enrich))


def _known_transformation(v: Any) -> Any:
    # Said before the union is tried, so that a wrong or missing `type` gets one plain message.
    kind = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    if kind not in TRANSFORMATION_TYPES:
        raise ValueError(f"type: expected one of {', '.join(TRANSFORMATION_TYPES)}, got {kind!r}")
    return v


Transformation = Annotated[
    Aggregate | Anonymize | Enrich, Field(discriminator="type"), BeforeValidator(_known_transformation)
]


class DataConfig(Strict):
    format: Literal["parquet", "json", "csv"] = "parquet"
    compression: Literal["none", "gzip", "zstd", "snappy"] | None = None
    include: list[str] = Field(default_factory=lambda: ["request_logs"], min_length=1)
    filters: Filters = Field(default_factory=Filters)
    transformations: list[Transformation] = Field(default_factory=list)

    @field_validator("include")
    @classmethod
    def _include(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in DATASETS:
                raise ValueError(f"unknown dataset {name!r} (datasets: {', '.join(DATASETS)})")
        if len(set(v)) != len(v):
            raise ValueError("include lists a dataset twice")
        return v

    @model_validator(mode="after")
    def _compression(self) -> DataConfig:
        if self.compression is not None and self.compression not in COMPRESSIONS[self.format]:
            raise ValueError(
                f"compression: {self.compression!r} is not available for format {self.format!r} "
                f"(choose {', '.join(COMPRESSIONS[self.format])})"
            )
        return self

    @property
    def codec(self) -> str:
        if self.compression is not None:
            return self.compression
        return "zstd" if self.format == "parquet" else "none"


class DestinationSpec(Strict):
    type: str
    # The instance of the `Config` model of the destination named by `type` (SerializeAsAny: dumped with
    # that model's fields, not the base's).
    config: SerializeAsAny[DestinationConfig] = Field(default_factory=dict, validate_default=True)

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str, info: ValidationInfo) -> str:
        context = _load_context(info)
        if context is not None and v not in context.destinations:
            raise ValueError(f"unknown destination {v!r} (known: {', '.join(sorted(context.destinations))})")
        return v

    @field_validator("config", mode="before")
    @classmethod
    def _config_of_its_type(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, DestinationConfig):
            return v
        context = _load_context(info)
        kind = info.data.get("type")
        if kind is None:
            return DestinationConfig()  # `type` is wrong and already reported; its config cannot be checked
        if context is None:
            raise ValueError("a destination's config is checked by parse_config (with the destination registry)")
        # Its ValidationError becomes errors under `config` (pydantic keeps their paths).
        return context.destinations[kind].Config.model_validate(v or {}, context=info.context)


class ExportConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    enabled: bool = True
    schedule: Schedule
    destination: DestinationSpec
    data: DataConfig = Field(default_factory=DataConfig)

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_shorthand(cls, v: Any) -> Any:
        # Bifrost's docs also write `"schedule": "daily"`.
        return {"frequency": v} if isinstance(v, str) else v

    @property
    def asset_name(self) -> str:
        return f"export_{self.name}"

    @property
    def transformations(self) -> list[Transformation]:
        return self.data.transformations


class LogExports(Strict):
    enabled: bool = True
    # Each entry is checked on its own by parse_config (a disabled one needs none of its variables).
    exports: list[ExportConfig] = Field(default_factory=list)
