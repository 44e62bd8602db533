"""Materialize a range of days in order, in this process: raw_logs + quarantine for every UTC day
needed, then every export partition whose window overlaps the days and has ended.

Used by `bifrost-pipeline backfill` and the demo. (In a deployment, Dagster's own backfills from the UI or
`dagster job backfill` do the same through the daemon.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bifrost_pipeline.config import AppConfig, ExportConfig


def export_partitions_for_days(app: AppConfig, export: ExportConfig, days: list[date], now: datetime) -> list[str]:
    """Partitions of `export` whose window overlaps the given UTC days and has ended by `now`."""
    from bifrost_pipeline.defs.partitions import export_partitions, overlapping_partitions
    from bifrost_pipeline.windows import partition_window

    first = datetime(days[0].year, days[0].month, days[0].day, tzinfo=UTC)
    last = datetime(days[-1].year, days[-1].month, days[-1].day, tzinfo=UTC) + timedelta(days=1)
    keys = overlapping_partitions(export_partitions(app, export), export.schedule, first, last)
    return [k for k in keys if partition_window(export.schedule, k)[1] <= now]


def backfill(app: AppConfig, config_file: Path, days: list[date], *, say: Callable[[str], None] = print) -> bool:
    import dagster as dg

    from bifrost_pipeline.definitions import build_definitions
    from bifrost_pipeline.defs.raw import QUARANTINE, RAW, RAW_JOB
    from bifrost_pipeline.windows import partition_window, utc_days

    os.environ.setdefault("DAGSTER_HOME", str(config_file.parent))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    days = sorted(set(days))
    defs = build_definitions(app, str(config_file))
    instance = dg.DagsterInstance.get()
    now = datetime.now(UTC)
    plan = {e.name: export_partitions_for_days(app, e, days, now) for e in app.exports}
    raw_days = set(days)
    for e in app.exports:
        for key in plan[e.name]:
            raw_days.update(utc_days(*partition_window(e.schedule, key)))

    say(f"== Materializing raw_logs + quarantine for {len(raw_days)} UTC day(s) (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    job = defs.resolve_job_def(RAW_JOB)
    for day in sorted(raw_days):
        started = time.monotonic()
        result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False)
        if not result.success:
            say(f"   {day}: FAILED (see the run in the Dagster UI)")
            return False
        mats = {m.asset_key: m.metadata for m in result.asset_materializations_for_node("validate_landed_day")}
        say(
            f"   {day}: {mats[RAW]['valid_rows'].value} valid, {mats[QUARANTINE]['dagster/row_count'].value} "
            f"quarantined ({time.monotonic() - started:.1f}s)"
        )

    say("== Materializing the exports")
    for e in app.exports:
        job = defs.resolve_job_def(f"{e.asset_name}_job")
        for key in plan[e.name]:
            result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
            if not result.success:
                failure = next((ev for ev in result.all_events if ev.is_step_failure), None)
                say(f"   {e.name} {key}: FAILED {failure.step_failure_data.error.message if failure else ''}")
                return False
            meta = result.asset_materializations_for_node(e.asset_name)[0].metadata
            say(f"   {e.name} {key}: {meta['rows'].value} -> {meta['location'].value}")
        if not plan[e.name]:
            say(f"   {e.name}: no {e.schedule.frequency} window has ended within these days yet")
    return True
