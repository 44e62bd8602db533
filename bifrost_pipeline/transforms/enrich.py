"""`enrich`: add constant fields, with the export-time placeholders filled."""

from __future__ import annotations

import re
from collections.abc import Mapping

import polars as pl

from bifrost_pipeline.config import Enrich

_PLACEHOLDER = re.compile(r"\$\{(EXPORT_TIMESTAMP|EXPORT_VERSION|EXPORT_NAME|EXPORT_PARTITION)\}")


def fill(value: str | int | float | bool, variables: Mapping[str, str]) -> str | int | float | bool:
    if not isinstance(value, str):
        return value
    return _PLACEHOLDER.sub(lambda m: variables[m.group(1)], value)


def enrich(lf: pl.LazyFrame, step: Enrich, variables: Mapping[str, str]) -> pl.LazyFrame:
    return lf.with_columns(pl.lit(fill(v, variables)).alias(name) for name, v in step.add_fields.items())
