"""Sensors: new segments -> raw_logs; a re-materialized raw day -> the exports already made from it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from bifrost_pipeline import landing
from bifrost_pipeline.config import AppConfig, ExportConfig
from bifrost_pipeline.defs.exports import job_name
from bifrost_pipeline.defs.partitions import export_partitions, overlapping_partitions, raw_partitions
from bifrost_pipeline.defs.raw import RAW, RAW_JOB, landing_state, recorded_landing_state

if TYPE_CHECKING:
    # what dg.define_asset_job returns; Dagster does not export its type under a public name
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# How far back the landing sensor looks for days that changed: late segments older than this need a
# manual backfill (listing years of landing days every 30 s would not scale).
LOOKBACK_DAYS = 35
MAX_REQUESTS_PER_TICK = 50


def build_landing_sensor(app: AppConfig) -> dg.SensorDefinition:
    partitions = raw_partitions(app)

    @dg.sensor(
        name="landing_sensor",
        job_name=RAW_JOB,
        minimum_interval_seconds=app.pipeline.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Re-materializes raw_logs for every UTC day whose landed segments changed since it was built.",
    )
    def landing_sensor(context: dg.SensorEvaluationContext):
        requested: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
        valid_keys = set(partitions.get_partition_keys(dynamic_partitions_store=context.instance))
        today = datetime.now(UTC).date()  # partitions are UTC days, whatever the machine's time zone
        requests = []
        for day in landing.days(app.landing_root, app.landing.storage_options):
            key = day.isoformat()
            if day < today - timedelta(days=LOOKBACK_DAYS) or key not in valid_keys:
                continue
            state = landing_state(app, day)
            if state.segments == 0:
                continue
            recorded = recorded_landing_state(context.instance, key)
            if recorded is not None and not state.is_newer_than(recorded):
                continue
            seen = [state.segments, state.newest_mtime]
            if requested.get(key) == seen:
                continue  # already asked for this exact state; its run may still be going
            requested[key] = seen
            requests.append(
                dg.RunRequest(partition_key=key, run_key=f"raw:{key}:{state.segments}:{state.newest_mtime:.6f}")
            )
            if len(requests) >= MAX_REQUESTS_PER_TICK:
                break
        # keep the cursor small: forget days that fell out of the window
        cutoff = (today - timedelta(days=LOOKBACK_DAYS)).isoformat()
        requested = {k: v for k, v in requested.items() if k >= cutoff}
        if not requests:
            return dg.SkipReason("no landed day changed since its raw_logs materialization")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(requested))

    return landing_sensor


def build_reexport_sensor(app: AppConfig, export_jobs: list[UnresolvedAssetJobDefinition]) -> dg.SensorDefinition:
    exports = app.exports

    @dg.sensor(
        name="raw_logs_updated_sensor",
        jobs=export_jobs,
        minimum_interval_seconds=app.pipeline.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "When raw_logs of a day is re-materialized (late segments), re-runs the export partitions "
            "that were already exported from that day."
        ),
    )
    def raw_logs_updated_sensor(context: dg.SensorEvaluationContext):
        after = int(context.cursor) if context.cursor else None
        if after is None:
            # Start from now: only raw materializations from here on trigger re-exports.
            latest = context.instance.fetch_materializations(RAW, limit=1)
            cursor = latest.records[0].storage_id if latest.records else 0
            return dg.SensorResult(cursor=str(cursor))
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW, after_storage_id=after), limit=200, ascending=True
        )
        requests: dict[tuple, dg.RunRequest] = {}
        cursor = after
        for record in result.records:
            cursor = max(cursor, record.storage_id)
            day = date.fromisoformat(record.partition_key)
            for export in exports:
                for request in _reexports(context.instance, app, export, day, record):
                    # several raw days of one weekly window updated in one tick: one run for the window
                    requests[(request.job_name, request.partition_key)] = request
        return dg.SensorResult(run_requests=list(requests.values()), cursor=str(cursor))

    return raw_logs_updated_sensor


def _reexports(
    instance: dg.DagsterInstance, app: AppConfig, export: ExportConfig, day: date, raw_record: dg.EventLogRecord
) -> list[dg.RunRequest]:
    partitions = export_partitions(app, export)
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    window = dg.TimeWindow(day_start, day_start + timedelta(days=1))
    out = []
    key = dg.AssetKey(export.asset_name)
    for partition in overlapping_partitions(partitions, export.schedule, window.start, window.end):
        done = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        )
        if not done.records or done.records[0].storage_id > raw_record.storage_id:
            continue  # never exported (its schedule will), or already exported from this raw version
        out.append(
            dg.RunRequest(
                job_name=job_name(export),
                partition_key=partition,
                run_key=f"reexport:{export.name}:{partition}:{raw_record.storage_id}",
            )
        )
    return out


def build_sensor_defs(app: AppConfig, jobs: Mapping[str, UnresolvedAssetJobDefinition]) -> dg.Definitions:
    """Both sensors, given the code location's jobs by name (the re-export sensor takes each export's job;
    the landing sensor names the raw job)."""
    sensors = [build_landing_sensor(app)]
    if app.exports:
        sensors.append(build_reexport_sensor(app, [jobs[job_name(e)] for e in app.exports]))
    return dg.Definitions(sensors=sensors)
