"""The configuration file: parsed, checked and typed once, at the edge.

One file, in the spirit of Bifrost's ``config.json`` (JSON or YAML): ``log_exports`` (the log export
format of Bifrost's docs), ``client`` (logging headers, required headers, Prometheus labels, content
logging), ``providers`` and ``proxy`` (the ingestion proxy), ``landing`` (where segments land),
``pipeline`` (where the pipeline keeps its data, and how long), ``alerts`` (webhooks, freshness grace),
``logs`` (the log server) and ``otel`` (OTLP traces and metrics sent out by the proxy).
Its path comes from ``BIFROST_PIPELINE_CONFIG``, default ``bifrost_pipeline.yaml`` in the working directory.

- ``loading``: decoding, ``${VAR}`` substitution, checking, and reporting every problem with its path;
- ``exports``: the ``log_exports`` section (schedule, filters, transformations, data, destination);
- ``proxy``: ``client``, ``providers`` and ``proxy``;
- ``alerts``: the ``alerts`` section (webhooks, the UI's address, the freshness grace);
- ``logserver``: the ``logs`` section (the log server: address, API keys, live stream bounds);
- ``otel``: the ``otel`` section (the proxy's OTLP export: collector, headers, TLS, content, batching);
- ``app``: ``landing``, ``pipeline`` and ``AppConfig``, the whole file with the paths it names.

Import from here (``from bifrost_pipeline.config import AppConfig``); the modules are the layout.
"""

from bifrost_pipeline.config.alerts import WEBHOOK_FORMATS, AlertsConfig, Webhook
from bifrost_pipeline.config.app import AppConfig, LandingConfig, PipelineConfig
from bifrost_pipeline.config.base import Strict
from bifrost_pipeline.config.exports import (
    AGGREGATE_METRICS,
    COMPRESSIONS,
    DATASETS,
    DATE_RANGES,
    FORMATS,
    RECORD_DATASETS,
    TIME_GROUPS,
    TRANSFORMATION_TYPES,
    WEEKDAYS,
    Aggregate,
    Anonymize,
    DataConfig,
    DateRange,
    DestinationSpec,
    Enrich,
    ExportConfig,
    Filters,
    LoadContext,
    LogExports,
    Schedule,
    Transformation,
)
from bifrost_pipeline.config.loading import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    EXPORT_VARIABLES,
    ConfigError,
    config_path,
    decode,
    format_path,
    load_config,
    parse_config,
    substitute_env,
)
from bifrost_pipeline.config.logserver import LogsApiKey, LogsConfig
from bifrost_pipeline.config.otel import OtelConfig, OtelMetricsConfig, OtelTracesConfig
from bifrost_pipeline.config.proxy import ClientConfig, ModelPrice, ProviderConfig, ProxyConfig

__all__ = [
    "AGGREGATE_METRICS",
    "COMPRESSIONS",
    "CONFIG_ENV",
    "DATASETS",
    "DATE_RANGES",
    "DEFAULT_CONFIG_PATH",
    "EXPORT_VARIABLES",
    "FORMATS",
    "RECORD_DATASETS",
    "TIME_GROUPS",
    "TRANSFORMATION_TYPES",
    "WEBHOOK_FORMATS",
    "WEEKDAYS",
    "Aggregate",
    "AlertsConfig",
    "Anonymize",
    "AppConfig",
    "ClientConfig",
    "ConfigError",
    "DataConfig",
    "DateRange",
    "DestinationSpec",
    "Enrich",
    "ExportConfig",
    "Filters",
    "LandingConfig",
    "LoadContext",
    "LogExports",
    "LogsApiKey",
    "LogsConfig",
    "ModelPrice",
    "OtelConfig",
    "OtelMetricsConfig",
    "OtelTracesConfig",
    "PipelineConfig",
    "ProviderConfig",
    "ProxyConfig",
    "Schedule",
    "Strict",
    "Transformation",
    "Webhook",
    "config_path",
    "decode",
    "format_path",
    "load_config",
    "parse_config",
    "substitute_env",
]
