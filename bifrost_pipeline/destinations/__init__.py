"""Destinations: one module per store, registered here by their config `type`."""

from __future__ import annotations

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
}


@cache
def registry() -> dict[str, type[Destination]]:
    out = {}
    for kind, target in _MODULES.items():
        module, _, cls = target.partition(":")
        out[kind] = getattr(import_module(module), cls)
    return out


def destination_class(kind: str) -> type[Destination]:
    return registry()[kind]
