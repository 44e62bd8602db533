"""`data.filters` of an export: a predicate on the canonical records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from bifrost_pipeline.config import DATE_RANGES, DateRange, Filters


def filter_records(lf: pl.LazyFrame, filters: Filters, window_end: datetime) -> pl.LazyFrame:
    """Keep the records that pass every configured filter (filters combine with AND)."""
    conditions: list[pl.Expr] = []
    ts = pl.col("timestamp")
    if isinstance(filters.date_range, str):
        # Relative ranges end where the partition's window ends, so a backfill exports what the
        # scheduled run would have exported.
        conditions.append(ts >= window_end - timedelta(days=DATE_RANGES[filters.date_range]))
    elif isinstance(filters.date_range, DateRange):
        if filters.date_range.start is not None:
            conditions.append(ts >= filters.date_range.start.astimezone(UTC))
        if filters.date_range.end is not None:
            conditions.append(ts <= filters.date_range.end.astimezone(UTC))
    if filters.providers is not None:
        conditions.append(pl.col("provider").is_in(filters.providers))
    if filters.models is not None:
        conditions.append(pl.col("model").is_in(filters.models))
    if filters.status_codes is not None:
        conditions.append(pl.col("status_code").is_in(filters.status_codes))
    if filters.customers is not None:
        conditions.append(pl.col("customer_id").is_in(filters.customers))
    if filters.min_latency_ms is not None:
        conditions.append(pl.col("latency_ms") >= filters.min_latency_ms)
    if filters.max_latency_ms is not None:
        conditions.append(pl.col("latency_ms") <= filters.max_latency_ms)
    if filters.has_errors is not None:
        is_error = pl.col("status") == "error"
        conditions.append(is_error if filters.has_errors else ~is_error)
    if not conditions:
        return lf
    return lf.filter(pl.all_horizontal(conditions))
