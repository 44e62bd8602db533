"""The configuration file: parsed, checked and typed once, at the edge.

One file, in the spirit of Bifrost's ``config.json`` (JSON or YAML): ``log_exports`` (the log export
format of Bifrost's docs), ``client`` (logging headers, required headers, Prometheus labels, content
logging), ``providers`` and ``proxy`` (the ingestion proxy), ``landing`` (where segments land) and
``pipeline`` (where the pipeline keeps its data). Its path comes from ``BIFROST_PIPELINE_CONFIG``,
default ``bifrost_pipeline.yaml`` in the working directory.

Every problem is reported with its path (``log_exports.exports[1].schedule.day: ...``) and all problems
are reported at once. Secrets (``${VAR}`` values) never appear in a message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bifrost_pipeline import records
from bifrost_pipeline.destinations.base import DestinationContext

DEFAULT_CONFIG_PATH = "bifrost_pipeline.yaml"
CONFIG_ENV = "BIFROST_PIPELINE_CONFIG"

# Placeholders filled when an export runs, not from the environment.
EXPORT_VARIABLES = ("EXPORT_TIMESTAMP", "EXPORT_VERSION", "EXPORT_NAME", "EXPORT_PARTITION")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

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


class ConfigError(Exception):
    """The configuration is wrong; ``problems`` holds one ``path: message`` line per mistake."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + f"{len(problems)} problem(s) in the configuration:\n  " + "\n  ".join(problems))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
            try:
                return DateRange.model_validate(v)
            except ValidationError as err:
                raise ValueError(_pydantic_problems(err, ("date_range",))[0]) from None
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
    # hash: the HMAC key comes from this environment variable (never from the file itself).
    key_env: str = "BIFROST_ANONYMIZE_KEY"
    key: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        for name in v:
            _record_field(name)
        return v


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


Transformation = Aggregate | Anonymize | Enrich
_TRANSFORMS: dict[str, type[Strict]] = {"aggregate": Aggregate, "anonymize": Anonymize, "enrich": Enrich}


class DataConfig(Strict):
    format: Literal["parquet", "json", "csv"] = "parquet"
    compression: Literal["none", "gzip", "zstd", "snappy"] | None = None
    include: list[str] = Field(default_factory=lambda: ["request_logs"], min_length=1)
    filters: Filters = Field(default_factory=Filters)
    transformations: list[Any] = Field(default_factory=list)

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
    config: Any = Field(default_factory=dict)


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
    exports: list[Any] = Field(default_factory=list)


# --- the other sections -------------------------------------------------------------------------------------


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


class LandingConfig(Strict):
    # A local directory, or an fsspec URL (s3://bucket/landing, gs://..., az://container/...) when the
    # proxy and the pipeline run on different machines.
    path: str = ".bifrost/landing"
    # For a URL: fsspec options of that store (credentials as ${VAR}), e.g. {endpoint_url: ..., key: ...}.
    storage_options: dict[str, Any] = Field(default_factory=dict)
    # For a URL: the local directory the proxy writes to before `bifrost-pipeline upload-landing` ships its
    # segments, and where the pipeline mirrors a day before validating it. Default <data_dir>/landing_local.
    local_path: str | None = None


class PipelineConfig(Strict):
    data_dir: str = ".bifrost"
    start_date: date = date(2024, 1, 1)
    warehouse: str | None = None  # DuckDB file of the embedded warehouse; default <data_dir>/warehouse.duckdb
    quarantine_max_share: Annotated[float, Field(ge=0, le=1)] = 0.01
    duckdb_memory_limit: str = "1GB"
    sensor_interval_s: Annotated[int, Field(ge=5)] = 30
    # A failed export step (raw day missing or stale, store unreachable) is retried with backoff.
    export_retries: Annotated[int, Field(ge=0, le=20)] = 3
    export_retry_delay_s: Annotated[float, Field(ge=0)] = 30.0


class AppConfig(Strict):
    log_exports: LogExports = Field(default_factory=LogExports)
    client: ClientConfig = Field(default_factory=ClientConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    landing: LandingConfig = Field(default_factory=LandingConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    # Where relative paths are resolved from: the config file's directory.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @property
    def exports(self) -> list[ExportConfig]:
        """The enabled exports (all of them typed and checked)."""
        if not self.log_exports.enabled:
            return []
        return [e for e in self.log_exports.exports if isinstance(e, ExportConfig) and e.enabled]

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.pipeline.data_dir)

    @property
    def landing_is_remote(self) -> bool:
        return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", self.landing.path) is not None

    @property
    def landing_root(self) -> str | Path:
        """Where segments land: a local Path, or the fsspec URL of an object-store landing zone."""
        return self.landing.path.rstrip("/") if self.landing_is_remote else self.resolve(self.landing.path)

    @property
    def landing_dir(self) -> Path:
        """The local landing directory: the landing zone itself, or the local side of a remote one."""
        if not self.landing_is_remote:
            return self.resolve(self.landing.path)
        return self.resolve(self.landing.local_path) if self.landing.local_path else self.data_dir / "landing_local"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw_logs"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def warehouse_path(self) -> Path:
        return self.resolve(self.pipeline.warehouse) if self.pipeline.warehouse else self.data_dir / "warehouse.duckdb"

    def export(self, name: str) -> ExportConfig:
        for e in self.exports:
            if e.name == name:
                return e
        raise KeyError(name)


# --- loading ------------------------------------------------------------------------------------------------


def format_path(loc: tuple | list) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pydantic_problems(err: ValidationError, prefix: tuple = ()) -> list[str]:
    problems = []
    for e in err.errors(include_url=False, include_input=False):
        loc = prefix + tuple(e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            # A model validator names the field in its message ("day: ..."); move it into the path.
            m = re.match(r"^([a-z_][a-z0-9_.\[\]]*): (.*)$", msg, re.S)
            if m:
                head = m.group(1)
                parts = [int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", head) if p]
                if loc and loc[-1] == parts[0]:
                    parts = parts[1:]
                loc, msg = loc + tuple(parts), m.group(2)
        problems.append(f"{format_path(loc)}: {msg}")
    return problems


def substitute_env(value: Any, path: tuple, env: Mapping[str, str], problems: list[str]) -> Any:
    """Replace ``${VAR}`` (and ``${VAR:-default}``) in every string from the environment."""
    if isinstance(value, dict):
        return {k: substitute_env(v, path + (k,), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, path + (i,), env, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in EXPORT_VARIABLES:
            return m.group(0)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(f"{format_path(path)}: environment variable {name} is not set")
        return ""

    return _VAR.sub(repl, value)


def _validate_export(raw: Any, path: tuple, env: Mapping[str, str]) -> tuple[ExportConfig | None, list[str]]:
    from bifrost_pipeline.destinations import registry

    problems: list[str] = []
    if not isinstance(raw, dict):
        return None, [f"{format_path(path)}: expected an object"]
    if raw.get("enabled", True) is False:
        return None, []  # a disabled entry loads nothing (and needs none of its variables)
    raw = substitute_env(raw, path, env, problems)
    try:
        export = ExportConfig.model_validate(raw)
    except ValidationError as err:
        problems.extend(_pydantic_problems(err, path))
        export = None

    # Transformations and destination configs are typed by their `type`; checked even when the rest failed.
    data_raw = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    transforms_raw = data_raw.get("transformations") or []
    transforms: list[Strict] = []
    for i, t in enumerate(transforms_raw if isinstance(transforms_raw, list) else []):
        tpath = path + ("data", "transformations", i)
        kind = t.get("type") if isinstance(t, dict) else None
        model = _TRANSFORMS.get(kind) if isinstance(kind, str) else None
        if model is None:
            problems.append(
                f"{format_path(tpath + ('type',))}: expected one of {', '.join(_TRANSFORMS)}, got {kind!r}"
            )
            continue
        try:
            parsed = model.model_validate(t)
        except ValidationError as err:
            problems.extend(_pydantic_problems(err, tpath))
            continue
        if isinstance(parsed, Anonymize) and parsed.method == "hash":
            key = env.get(parsed.key_env)
            if not key:
                problems.append(
                    f"{format_path(tpath + ('key_env',))}: environment variable {parsed.key_env} is not set "
                    "(the secret key of the hash)"
                )
                continue
            parsed = parsed.model_copy(update={"key": SecretStr(key)})
        transforms.append(parsed)

    dpath = path + ("destination",)
    dest_raw = raw.get("destination") if isinstance(raw.get("destination"), dict) else {}
    dest_type = dest_raw.get("type")
    destination_cls = registry().get(dest_type) if isinstance(dest_type, str) else None
    dest_config = None
    if destination_cls is None and isinstance(dest_type, str):
        problems.append(
            f"{format_path(dpath + ('type',))}: unknown destination {dest_type!r} "
            f"(known: {', '.join(sorted(registry()))})"
        )
    elif destination_cls is not None:
        try:
            dest_config = destination_cls.Config.model_validate(dest_raw.get("config") or {})
        except ValidationError as err:
            problems.extend(_pydantic_problems(err, dpath + ("config",)))
    if problems or export is None:
        return None, problems
    data = export.data.model_copy(update={"transformations": transforms})
    destination = export.destination.model_copy(update={"config": dest_config})
    return export.model_copy(update={"data": data, "destination": destination}), []


def parse_config(
    raw: Any, *, env: Mapping[str, str] | None = None, base_dir: Path | None = None, with_exports: bool = True
) -> AppConfig:
    """Check a decoded config document and return typed objects, or raise ConfigError listing every problem.

    with_exports=False skips `log_exports` (the proxy needs none of the exports' credentials).
    """
    env = os.environ if env is None else env
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): expected an object with log_exports, client, providers, ..."])
    problems: list[str] = []
    exports_raw: list = []
    log_exports = raw.get("log_exports")
    rest = {k: v for k, v in raw.items() if k != "log_exports"}
    rest = substitute_env(rest, (), env, problems)
    if isinstance(log_exports, dict):
        exports_raw = log_exports.get("exports") or []
        if not isinstance(exports_raw, list):
            problems.append("log_exports.exports: expected a list of exports")
            exports_raw = []
        rest["log_exports"] = {k: v for k, v in log_exports.items() if k != "exports"}
    elif log_exports is not None:
        problems.append("log_exports: expected an object")
    try:
        app = AppConfig.model_validate(rest)
    except ValidationError as err:
        problems.extend(_pydantic_problems(err))
        app = None

    exports: list[ExportConfig] = []
    names: dict[str, int] = {}
    if with_exports and (app is None or app.log_exports.enabled):
        for i, entry in enumerate(exports_raw):
            path = ("log_exports", "exports", i)
            export, errs = _validate_export(entry, path, env)
            problems.extend(errs)
            if export is None:
                continue
            if export.name in names:
                problems.append(
                    f"{format_path(path + ('name',))}: {export.name!r} is already the name of exports[{names[export.name]}]"
                )
                continue
            names[export.name] = i
            exports.append(export)
    if problems:
        raise ConfigError(problems)
    assert app is not None
    app = app.model_copy(
        update={
            "log_exports": app.log_exports.model_copy(update={"exports": exports}),
            "base_dir": (base_dir or Path.cwd()).resolve(),
        }
    )
    problems = _shared_locations(app, names)
    if problems:
        raise ConfigError(problems)
    return app


def destination_context(app: AppConfig, export_name: str) -> DestinationContext:
    """What a destination is told of the application (it never sees the whole config)."""
    return DestinationContext(
        export=export_name, base_dir=app.base_dir, data_dir=app.data_dir, warehouse_path=app.warehouse_path
    )


def _shared_locations(app: AppConfig, index: dict[str, int]) -> list[str]:
    """Two exports that would write the same files or table would overwrite each other's partitions."""
    from bifrost_pipeline.destinations import destination_class

    seen: dict[str, str] = {}
    problems = []
    for export in app.exports:
        context = destination_context(app, export.name)
        key = destination_class(export.destination.type).location_key(export.destination.config, context)
        if key is None:
            continue
        key = key.replace("{export}", export.name)
        if key in seen:
            problems.append(
                f"log_exports.exports[{index[export.name]}].destination: writes where exports[{index[seen[key]]}] "
                f"({seen[key]!r}) writes; give each export its own prefix (e.g. with {{export}}) or table"
            )
        else:
            seen[key] = export.name
    return problems


def decode(text: str, source: str) -> Any:
    """Decode JSON or YAML text; a syntax error names the file, line and column."""
    if source.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError([f"line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}"], source) from None
    import yaml

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}invalid YAML: {getattr(err, 'problem', None) or err}"], source) from None


def config_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(
    path: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None, with_exports: bool = True
) -> AppConfig:
    """Load the config file (``path``, else $BIFROST_PIPELINE_CONFIG, else ./bifrost_pipeline.yaml)."""
    p = config_path(path)
    if not p.exists():
        raise ConfigError([f"no such file (set {CONFIG_ENV} or pass a path)"], str(p))
    raw = decode(p.read_text(), str(p))
    try:
        return parse_config(raw, env=env, base_dir=p.resolve().parent, with_exports=with_exports)
    except ConfigError as err:
        raise ConfigError(err.problems, str(p)) from None
