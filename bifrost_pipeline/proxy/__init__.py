"""The ingestion proxy: an OpenAI-compatible logging proxy and the /v1/logs and /v1/traces intake.

It imports neither Dagster nor the dataframe engines (polars, duckdb, pyarrow): it shares only the record
definition (``schemas/`` via ``bifrost_pipeline.records``) and the landing-zone writer with the pipeline.
"""

from . import native

native.install()  # before any compiled module is imported: a stale one runs from source
