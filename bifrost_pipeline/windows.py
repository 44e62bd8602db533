"""Partition windows of the exports: which span of time a partition key stands for, and which UTC days
(raw_logs partitions) that span reads. Pure date arithmetic (no polars, no Dagster): the export step,
the Dagster partitions and the command line all ask it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from bifrost_pipeline.config import Schedule


def _local_midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=tz)


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    return date(d.year + y, m + 1, d.day)


def partition_window(schedule: Schedule, partition_key: str) -> tuple[datetime, datetime]:
    """[start, end) of a partition, in the schedule's time zone (keys are the window's first local day).

    daily: one local day. weekly: seven local days starting on the schedule's weekday. monthly: from the
    schedule's day of one month to the same day of the next. The run at the schedule's time exports the
    window that ended most recently (see defs/exports.py).
    """
    tz = ZoneInfo(schedule.timezone)
    first = date.fromisoformat(partition_key)
    if schedule.frequency == "daily":
        last = first + timedelta(days=1)
    elif schedule.frequency == "weekly":
        last = first + timedelta(days=7)
    else:
        last = _add_months(first, 1)
    return _local_midnight(first, tz), _local_midnight(last, tz)


def utc_days(start: datetime, end: datetime) -> list[date]:
    """The UTC days (raw_logs partitions) that overlap [start, end)."""
    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
