"""Partitions definitions: one place, imported by assets, schedules and sensors."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from bifrost_pipeline.config import AppConfig, ExportConfig, Schedule
from bifrost_pipeline.windows import partition_window


def raw_partitions(app: AppConfig) -> dg.DailyPartitionsDefinition:
    # UTC days; end_offset=1 so today's partition exists and can be filled while segments land.
    return dg.DailyPartitionsDefinition(
        start_date=app.partitions_start.isoformat(), timezone="UTC", end_offset=1
    )


def export_partitions(app: AppConfig, export: ExportConfig) -> dg.TimeWindowPartitionsDefinition:
    """Windows that end at local midnight of the schedule's day, in the schedule's time zone."""
    s = export.schedule
    start = app.partitions_start.isoformat()
    if s.frequency == "daily":
        return dg.DailyPartitionsDefinition(start_date=start, timezone=s.timezone)
    if s.frequency == "weekly":
        return dg.WeeklyPartitionsDefinition(start_date=start, day_offset=s.weekday, timezone=s.timezone)
    return dg.MonthlyPartitionsDefinition(start_date=start, day_offset=int(s.day), timezone=s.timezone)


def overlapping_partitions(
    partitions: dg.TimeWindowPartitionsDefinition, schedule: Schedule, start: datetime, end: datetime
) -> list[str]:
    """Keys of the partitions whose window overlaps [start, end) (not only those inside it)."""
    # A window is at most a month long: widen the search by that, then keep the true overlaps.
    wide = dg.TimeWindow(start - timedelta(days=32), end + timedelta(days=32))
    out = []
    for key in partitions.get_partition_keys_in_time_window(wide):
        w_start, w_end = partition_window(schedule, key)
        if w_start < end and w_end > start:
            out.append(key)
    return out


def partitioned_check_spec(
    name: str, asset: dg.AssetKey | str, partitions: dg.PartitionsDefinition, *, description: str, blocking: bool = False
) -> dg.AssetCheckSpec:
    """A check with one result per partition of its asset: the UI shows each partition's result and code
    looks one up by partition key (defs/raw.failed_blocking_checks). A preview feature of Dagster 1.13,
    whose warning is silenced here, in one place."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, description=description, blocking=blocking, partitions_def=partitions
        )
