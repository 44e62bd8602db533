"""The raw_logs data checks as plain functions (the Dagster asset checks report these)."""

from datetime import UTC, date, datetime

import polars as pl

from bifrost_pipeline.raw_checks import raw_day_stats, schema_failures

DAY = date(2024, 1, 15)


def _write_day(tmp_path, ids, stamps):
    day_dir = tmp_path / "date=2024-01-15"
    day_dir.mkdir()
    pl.DataFrame({"request_id": ids, "timestamp": stamps}).write_parquet(day_dir / "part-0.parquet")
    return day_dir


def test_stats_count_repeated_ids_and_rows_outside_the_day(tmp_path):
    inside, outside = datetime(2024, 1, 15, 23, 59, tzinfo=UTC), datetime(2024, 1, 16, tzinfo=UTC)
    path = _write_day(tmp_path, ["a", "a", "a", "b"], [inside, inside, inside, outside])
    assert raw_day_stats(path, DAY).__dict__ == {"rows": 4, "duplicate_request_ids": 2, "rows_outside_day": 1}


def test_schema_failures_name_what_breaks_the_schema_and_stop_at_the_limit(tmp_path):
    path = _write_day(tmp_path, ["a"], [datetime(2024, 1, 15, tzinfo=UTC)])  # most record columns missing
    failures = schema_failures(path, limit=3)
    assert len(failures) == 3 and all(f["check"] == "column_in_dataframe" for f in failures)
