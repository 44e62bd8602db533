"""Destinations: one module per store, registered here by their config `type`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from importlib import import_module

from bifrost_pipeline.destinations.base import Destination

# type -> "module:Class". A destination module imports its store's client library inside its methods,
# not at the top, so loading a config never needs the client of a store it does not use.
_MODULES = {
    "local": "bifrost_pipeline.destinations.local:LocalDestination",
    "duckdb": "bifrost_pipeline.destinations.duckdb:DuckDBDestination",
    "sql": "bifrost_pipeline.destinations.sql:SQLDestination",
    "snowflake": "bifrost_pipeline.destinations.snowflake:SnowflakeDestination",
    "bigquery": "bifrost_pipeline.destinations.bigquery:BigQueryDestination",
    "redshift": "bifrost_pipeline.destinations.redshift:RedshiftDestination",
    "s3": "bifrost_pipeline.destinations.s3:S3Destination",
    "gcs": "bifrost_pipeline.destinations.gcs:GCSDestination",
    "azure_blob": "bifrost_pipeline.destinations.azure_blob:AzureBlobDestination",
    "datadog_logs": "bifrost_pipeline.destinations.datadog_logs:DatadogLogsDestination",
    "splunk_hec": "bifrost_pipeline.destinations.splunk_hec:SplunkHecDestination",
    "cloudwatch_logs": "bifrost_pipeline.destinations.cloudwatch_logs:CloudWatchLogsDestination",
}


@cache
def destination_class(kind: str) -> type[Destination]:
    """The class of `kind`, importing its module (only this one); KeyError for an unknown kind."""
    module, _, cls = _MODULES[kind].partition(":")
    return getattr(import_module(module), cls)


class _Registry(Mapping[str, type[Destination]]):
    """type -> Destination class; listing the kinds imports nothing, looking one up imports its module.

    So loading a config imports the modules of the destinations its exports use, not all of them.
    """

    def __getitem__(self, kind: str) -> type[Destination]:
        return destination_class(kind)

    def __contains__(self, kind: object) -> bool:
        return kind in _MODULES

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


_REGISTRY = _Registry()


def registry() -> Mapping[str, type[Destination]]:
    return _REGISTRY
