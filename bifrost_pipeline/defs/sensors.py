"""Sensors: new segments -> raw_logs; a re-materialized raw day -> the exports already made from it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

# Dagster exports neither the backfill status enum nor the run status groups under a public name.
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

from bifrost_pipeline import backfill_plans, landing
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
# runs that have not started: they will read the raw day as it is when they do
WAITING = frozenset({dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING})
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
        if not result.records:
            return dg.SensorResult(cursor=str(after))
        busy = Busy.of(context.instance, context.repository_def.asset_graph, exports)
        requests: dict[tuple, dg.RunRequest] = {}
        cursor = after
        for record in result.records:
            day = date.fromisoformat(record.partition_key)
            wanted = [r for e in exports for r in _reexports(context.instance, app, e, day, record)]
            if any((r.job_name, r.partition_key) in busy.running for r in wanted):
                # A run of that partition is under way and may have read the raw day before this version:
                # look again (from this record on) once it is over.
                break
            for request in wanted:
                if (request.job_name, request.partition_key) not in busy.coming:
                    # several raw days of one weekly window updated in one tick: one run for the window
                    requests[(request.job_name, request.partition_key)] = request
            cursor = record.storage_id
        return dg.SensorResult(run_requests=list(requests.values()), cursor=str(cursor))

    return raw_logs_updated_sensor


@dataclass(frozen=True)
class Busy:
    """Export partitions (job name, partition key) that other work is about to run, or is running.

    `coming`: a queued run, a Dagster backfill that has not yet requested it, a `bifrost-pipeline
    backfill` that has it in its plan (backfill_plans). Each starts after the raw day was rebuilt, so it
    reads the new version: requesting one more run would duplicate it. `running`: a run that has started,
    perhaps before the raw day changed; the sensor waits for it to end, then decides.
    """

    coming: frozenset[tuple[str, str]]
    running: frozenset[tuple[str, str]]

    @classmethod
    def of(cls, instance: dg.DagsterInstance, asset_graph, exports: list[ExportConfig]) -> Busy:
        jobs = {job_name(e) for e in exports}
        coming: set[tuple[str, str]] = set(backfill_plans.planned(instance))
        running: set[tuple[str, str]] = set()
        for run in instance.get_runs(dg.RunsFilter(statuses=NOT_FINISHED_STATUSES)):
            key = (run.job_name, run.tags.get("dagster/partition"))
            if run.job_name in jobs and key[1]:
                (coming if run.status in WAITING else running).add(key)
        coming |= _backfill_targets(instance, asset_graph, {dg.AssetKey(e.asset_name): job_name(e) for e in exports})
        return cls(frozenset(coming), frozenset(running))


def _backfill_targets(
    instance: dg.DagsterInstance, asset_graph, job_of_asset: Mapping[dg.AssetKey, str]
) -> set[tuple[str, str]]:
    """Export partitions that a running Dagster backfill (UI or `dagster job backfill`) has yet to request."""
    out: set[tuple[str, str]] = set()
    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED):
        if backfill.is_asset_backfill:
            data = backfill.get_asset_backfill_data(asset_graph)
            for ap in (data.target_subset - data.requested_subset).iterate_asset_partitions():
                if ap.asset_key in job_of_asset and ap.partition_key:
                    out.add((job_of_asset[ap.asset_key], ap.partition_key))
        elif backfill.job_name in job_of_asset.values() and backfill.partition_names:
            submitted = {
                r.tags.get("dagster/partition")
                for r in instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
            }
            out.update((backfill.job_name, k) for k in backfill.partition_names if k not in submitted)
    return out


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
        if not done.records or _read_after(instance, done.records[0], raw_record):
            continue  # never exported (its schedule will), or already exported from this raw version
        out.append(
            dg.RunRequest(
                job_name=job_name(export),
                partition_key=partition,
                run_key=f"reexport:{export.name}:{partition}:{raw_record.storage_id}",
            )
        )
    return out


def _read_after(instance: dg.DagsterInstance, export_record: dg.EventLogRecord, raw_record: dg.EventLogRecord) -> bool:
    """Whether the export's materialization was made by a run that started after `raw_record`: one that
    started before may have read the previous version of the day though it finished later."""
    if export_record.storage_id < raw_record.storage_id:
        return False
    run = instance.get_run_record_by_id(export_record.run_id)
    started = run.start_time if run is not None else None
    return started is None or started >= raw_record.timestamp


def build_sensor_defs(app: AppConfig, jobs: Mapping[str, UnresolvedAssetJobDefinition]) -> dg.Definitions:
    """Both sensors, given the code location's jobs by name (the re-export sensor takes each export's job;
    the landing sensor names the raw job)."""
    sensors = [build_landing_sensor(app)]
    if app.exports:
        sensors.append(build_reexport_sensor(app, [jobs[job_name(e)] for e in app.exports]))
    return dg.Definitions(sensors=sensors)
