"""`aggregate` and the `metrics` dataset: exact group-by statistics in bounded memory.

Polars does not stream exact quantiles (its memory grows with the day); DuckDB computes them spilling to
disk under a memory limit (PERF_NOTES). So the frame is streamed to a Parquet file and aggregated there.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

TIME_GROUP_EXPRS = {
    "date": lambda tz: pl.col("timestamp").dt.convert_time_zone(tz).dt.date().alias("date"),
    "hour": lambda tz: pl.col("timestamp").dt.convert_time_zone(tz).dt.truncate("1h").alias("hour"),
}

# metric name -> DuckDB expression over the grouped rows
METRIC_SQL = {
    "count": "count(*)",
    "total_requests": "count(*)",
    "error_count": "count(*) FILTER (WHERE status = 'error')",
    "avg_latency": "avg(latency_ms)",
    "p50_latency": "quantile_cont(latency_ms, 0.50)",
    "p95_latency": "quantile_cont(latency_ms, 0.95)",
    "p99_latency": "quantile_cont(latency_ms, 0.99)",
    # DuckDB sums integers into HUGEINT (a decimal(38, 0) in Parquet): BIGINT is what every store reads.
    "total_tokens": "sum(coalesce(total_tokens, coalesce(input_tokens, 0) + coalesce(output_tokens, 0)))::BIGINT",
    "input_tokens": "sum(input_tokens)::BIGINT",
    "output_tokens": "sum(output_tokens)::BIGINT",
    "total_cost": "sum(cost_usd)",
    "error_rate": "count(*) FILTER (WHERE status = 'error') / count(*)::DOUBLE",
}
METRIC_NEEDS = {
    "error_count": ["status"],
    "error_rate": ["status"],
    "avg_latency": ["latency_ms"],
    "p50_latency": ["latency_ms"],
    "p95_latency": ["latency_ms"],
    "p99_latency": ["latency_ms"],
    "total_tokens": ["total_tokens", "input_tokens", "output_tokens"],
    "input_tokens": ["input_tokens"],
    "output_tokens": ["output_tokens"],
    "total_cost": ["cost_usd"],
}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def aggregate(
    lf: pl.LazyFrame,
    group_by: list[str],
    metrics: list[str],
    *,
    timezone: str,
    work_dir: Path,
    memory_limit: str = "1GB",
) -> pl.LazyFrame:
    """Group `lf` by fields (and `date` / `hour` in `timezone`) and compute `metrics`; exact quantiles."""
    import duckdb

    schema = lf.collect_schema()
    missing = [g for g in group_by if g not in TIME_GROUP_EXPRS and g not in schema]
    for m in metrics:
        missing += [c for c in METRIC_NEEDS.get(m, []) if c not in schema]
    if missing:
        raise ValueError(
            "aggregate needs field(s) "
            + ", ".join(sorted(set(missing)))
            + " that an earlier transformation removed"
        )
    time_cols = [TIME_GROUP_EXPRS[g](timezone) for g in group_by if g in TIME_GROUP_EXPRS]
    needed = {g for g in group_by if g not in TIME_GROUP_EXPRS}
    for m in metrics:
        needed.update(METRIC_NEEDS.get(m, []))
    work_dir.mkdir(parents=True, exist_ok=True)
    source = work_dir / "aggregate_input.parquet"
    target = work_dir / "aggregate_output.parquet"
    lf.select([*sorted(needed), *time_cols]).sink_parquet(source, compression="zstd", compression_level=1)
    groups = ", ".join(_q(g) for g in group_by)
    select = ", ".join([*(_q(g) for g in group_by), *(f"{METRIC_SQL[m]} AS {_q(m)}" for m in metrics)])
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = '{work_dir / 'duckdb_tmp'}'")
        con.execute("SET preserve_insertion_order = false")
        con.execute(
            f"COPY (SELECT {select} FROM read_parquet(?) GROUP BY {groups} ORDER BY {groups}) "
            f"TO '{target}' (FORMAT parquet, COMPRESSION zstd)",
            [str(source)],
        )
    finally:
        con.close()
    source.unlink(missing_ok=True)
    return pl.scan_parquet(target)
