"""The whole config file (`AppConfig`), with its `landing` and `pipeline` sections and the paths they name."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from bifrost_pipeline.config.alerts import AlertsConfig
from bifrost_pipeline.config.base import Strict
from bifrost_pipeline.config.exports import ExportConfig, LogExports
from bifrost_pipeline.config.logserver import LogsConfig
from bifrost_pipeline.config.otel import OtelConfig
from bifrost_pipeline.config.proxy import ClientConfig, ProviderConfig, ProxyConfig
from bifrost_pipeline.destinations.base import DestinationContext


class LandingConfig(Strict):
    # A local directory, or an fsspec URL (s3://bucket/landing, gs://..., az://container/...) when the
    # proxy and the pipeline run on different machines.
    path: str = ".bifrost/landing"
    # For a URL: fsspec options of that store (credentials as ${VAR}), e.g. {endpoint_url: ..., key: ...}.
    storage_options: dict[str, Any] = Field(default_factory=dict)
    # For a URL: the local directory the proxy writes to before `bifrost-pipeline upload-landing` ships its
    # segments, and where the pipeline mirrors a day before validating it. Default <data_dir>/landing_local.
    local_path: str | None = None
    # Compliance: the retention job removes a day's segments once the day is older than this many days and
    # raw_logs has been built from them (see README, Operations). None: segments are kept forever.
    retention_days: Annotated[int, Field(ge=1)] | None = None


class PipelineConfig(Strict):
    data_dir: str = ".bifrost"
    # The first daily partition (UTC). Unset: the first day that has data (landed segments or a raw_logs
    # partition), else today: so a new install shows its own days, not a year of empty partitions. Set it
    # in production, where retention removes old days and the first partition should not move.
    start_date: date | None = None
    warehouse: str | None = None  # DuckDB file of the embedded warehouse; default <data_dir>/warehouse.duckdb
    quarantine_max_share: Annotated[float, Field(ge=0, le=1)] = 0.01
    duckdb_memory_limit: str = "1GB"
    sensor_interval_s: Annotated[int, Field(ge=5)] = 30
    # A failed export step (raw day missing or stale, store unreachable) is retried with backoff.
    export_retries: Annotated[int, Field(ge=0, le=20)] = 3
    export_retry_delay_s: Annotated[float, Field(ge=0)] = 30.0
    # Compliance: raw_logs and quarantine days older than this many days are removed by the retention job,
    # unless an export that has not yet run over them still needs them. None: kept forever.
    raw_retention_days: Annotated[int, Field(ge=1)] | None = None
    # The retention job only reports what it would remove (in its run's metadata) while this is true.
    retention_dry_run: bool = False
    # A day too big for one step: raw_logs validates each day in this many steps, each a contiguous group of
    # UTC hours, which Dagster's executor runs in parallel (processes, or pods with the k8s job executor),
    # then one step deduplicates across the day and commits it. 1: one step. Still one daily partition.
    hour_groups: Annotated[int, Field(ge=1, le=24)] = 1
    # How many of those steps one run executes at once (processes or pods); None: one per core with the
    # multiprocess executor, no limit with the k8s job executor.
    hour_group_concurrency: Annotated[int, Field(ge=1)] | None = None
    # Where a split day's steps run: "multiprocess" (processes of the run's machine or pod) or "k8s_job"
    # (a Kubernetes Job per step, dagster-k8s's k8s_job_executor, for a run launched by the K8sRunLauncher).
    hour_group_executor: Literal["multiprocess", "k8s_job"] = "multiprocess"


class AppConfig(Strict):
    log_exports: LogExports = Field(default_factory=LogExports)
    client: ClientConfig = Field(default_factory=ClientConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    landing: LandingConfig = Field(default_factory=LandingConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    otel: OtelConfig = Field(default_factory=OtelConfig)
    # Where relative paths are resolved from: the config file's directory.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @model_validator(mode="after")
    def _routes_name_configured_providers(self) -> AppConfig:
        """Fallbacks and virtual keys may only name configured providers (a typo would fail at 3 a.m.)."""
        known = set(self.providers)
        problems = [
            f"providers.{name}.fallbacks: {f!r} names no configured provider"
            for name, p in self.providers.items()
            for f in p.fallbacks
            if f.split("/", 1)[0] not in known
        ]
        problems += [
            f"proxy.virtual_keys[{i}].providers: {p!r} is not a configured provider"
            for i, vk in enumerate(self.proxy.virtual_keys)
            for p in vk.providers
            if p not in known
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def exports(self) -> list[ExportConfig]:
        """The enabled exports."""
        if not self.log_exports.enabled:
            return []
        return [e for e in self.log_exports.exports if e.enabled]

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

    @cached_property
    def partitions_start(self) -> date:
        """The first day of every partitioned asset: `pipeline.start_date`, else the first day with data.

        Computed once per loaded config (Dagster loads the code location anew to see new partitions)."""
        if self.pipeline.start_date is not None:
            return self.pipeline.start_date
        from bifrost_pipeline import landing
        from bifrost_pipeline.landing.layout import local_days

        # raw_logs keeps the landing zone's date=YYYY-MM-DD directory names
        found = landing.days(self.landing_root, self.landing.storage_options) + local_days(self.raw_dir)
        return min(found, default=datetime.now(UTC).date())

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

    def destination_context(self, export_name: str) -> DestinationContext:
        """What a destination is told of the application (it never sees the whole config)."""
        return DestinationContext(
            export=export_name, base_dir=self.base_dir, data_dir=self.data_dir, warehouse_path=self.warehouse_path
        )

    def export(self, name: str) -> ExportConfig:
        for e in self.exports:
            if e.name == name:
                return e
        raise KeyError(name)
