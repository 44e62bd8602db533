"""Data checks of a written raw_logs day, as plain results: what the asset checks of defs/raw.py report.

Pure functions over the day's Parquet parts (polars, pyarrow and pandera; no Dagster), next to the
validation step that wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from bifrost_pipeline import records

MAX_SCHEMA_FAILURES = 20  # enough to see what is wrong without flooding the check's metadata


@dataclass(frozen=True)
class RawDayStats:
    rows: int
    duplicate_request_ids: int  # rows whose request_id an earlier row of the day already had
    rows_outside_day: int  # rows whose timestamp is not in the day (UTC)


def raw_day_stats(raw_path: Path, day: date) -> RawDayStats:
    """Uniqueness and in-partition counts of a raw_logs day, in one scan of its Parquet parts."""
    stats = pl.scan_parquet(raw_path).select(
        pl.len().alias("rows"),
        pl.col("request_id").n_unique().alias("unique_ids"),
        (pl.col("timestamp").dt.date() != pl.lit(day)).sum().alias("outside"),
    ).collect()
    rows, unique_ids, outside = stats.row(0)
    return RawDayStats(rows=int(rows), duplicate_request_ids=int(rows - unique_ids), rows_outside_day=int(outside))


def schema_failures(raw_path: Path, limit: int = MAX_SCHEMA_FAILURES) -> list[dict[str, str]]:
    """Rows that break the pandera schema derived from schemas/, as failure cases (at most `limit`).

    Read row group by row group, so a large day is never held in memory whole."""
    import pandera.errors  # pandera is slow to import and only the checks need it

    schema = records.pandera_schema()
    failures: list[dict[str, str]] = []
    for part in sorted(raw_path.glob("*.parquet")):
        pf = pq.ParquetFile(part)
        for i in range(pf.num_row_groups):
            frame = pl.from_arrow(pf.read_row_group(i))
            try:
                schema.validate(frame, lazy=True)
            except pandera.errors.SchemaErrors as err:
                cases = err.failure_cases.head(limit).to_dicts()
                failures.extend({k: str(v) for k, v in c.items()} for c in cases)
            if len(failures) >= limit:
                return failures[:limit]
    return failures
