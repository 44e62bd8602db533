"""Partition windows: exact in the schedule's time zone, and the same as Dagster's partitions."""

import pytest

from bifrost_pipeline.config import Schedule
from bifrost_pipeline.defs.partitions import export_partitions
from bifrost_pipeline.windows import partition_window, utc_days
from bifrost_pipeline_tests.helpers import make_app, utc


@pytest.mark.parametrize(
    "schedule, key, start, end",
    [
        (Schedule(frequency="daily"), "2024-03-10", utc(2024, 3, 10), utc(2024, 3, 11)),
        (Schedule(frequency="daily", timezone="America/New_York"), "2024-03-10", utc(2024, 3, 10, 5), utc(2024, 3, 11, 4)),
        (Schedule(frequency="weekly", day="sunday", timezone="Europe/Paris"), "2024-03-24", utc(2024, 3, 23, 23), utc(2024, 3, 30, 23)),
        (Schedule(frequency="weekly", day="sunday", timezone="Europe/Paris"), "2024-03-31", utc(2024, 3, 30, 23), utc(2024, 4, 6, 22)),
        (Schedule(frequency="monthly", day=1, timezone="UTC"), "2024-02-01", utc(2024, 2, 1), utc(2024, 3, 1)),
        (Schedule(frequency="monthly", day=15, timezone="Asia/Kolkata"), "2024-01-15", utc(2024, 1, 14, 18, 30), utc(2024, 2, 14, 18, 30)),
    ],
)
def test_windows_are_exact_in_the_time_zone_and_agree_with_dagster(tmp_path, schedule, key, start, end):
    w_start, w_end = partition_window(schedule, key)
    assert (w_start, w_end) == (start, end)
    app = make_app(tmp_path)
    entry_like = type("E", (), {"schedule": schedule})()
    window = export_partitions(app, entry_like).time_window_for_partition_key(key)
    assert (window.start, window.end) == (start, end)
    assert utc_days(start, end)[0] == start.date()
