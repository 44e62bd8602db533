"""landing_zone (external) -> raw_logs + quarantine, one UTC day per partition, with their checks, job and
daily schedule."""

from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from bifrost_pipeline import landing
from bifrost_pipeline.config import AppConfig
from bifrost_pipeline.defs.partitions import partitioned_check_spec, raw_partitions
from bifrost_pipeline.defs.resources import PipelineResource
from bifrost_pipeline.landing import LandingState
from bifrost_pipeline.raw_checks import raw_day_stats, schema_failures
from bifrost_pipeline.validation import DayResult, validate_day

if TYPE_CHECKING:
    # what dg.define_asset_job and build_schedule_from_partitioned_job return for asset jobs; Dagster does
    # not export these types under a public name. (No `from __future__ import annotations` in this module:
    # Dagster reads the asset functions' annotations at definition time.)
    from dagster._core.definitions.partitions.partitioned_schedule import (
        UnresolvedPartitionedAssetScheduleDefinition,
    )
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

LANDING = dg.AssetKey("landing_zone")
RAW = dg.AssetKey("raw_logs")
QUARANTINE = dg.AssetKey("quarantine")
RAW_JOB = "raw_logs_job"

CHECK_ACCOUNTED = "every_line_accounted_for"
CHECK_UNIQUE = "unique_request_id"
CHECK_IN_PARTITION = "timestamps_in_partition"
CHECK_SCHEMA = "conforms_to_schema"
CHECK_QUARANTINE = "quarantine_share_below_threshold"
# ERROR-severity checks are blocking: a failure fails the raw_logs run, and no export reads the day
# until a re-materialization passes them (defs/exports.check_raw_ready). The quarantine share only warns.
BLOCKING_CHECKS = (CHECK_ACCOUNTED, CHECK_IN_PARTITION, CHECK_SCHEMA, CHECK_UNIQUE)

# raw_logs_daily_schedule closes day D at D+1 00:10 UTC.
RAW_SCHEDULE_AT = time(0, 10)
WHICH_COPY_WINS = (
    "the first landed: earliest segment (hour, then name), then earliest line; later copies of a "
    "request_id on the same UTC day are dropped"
)


def landing_spec(app: AppConfig) -> dg.AssetSpec:
    return dg.AssetSpec(
        LANDING,
        description=(
            "NDJSON segments landed by the ingestion proxy or intake endpoints, under "
            "date=YYYY-MM-DD/hour=HH/ (UTC). Written elsewhere; the pipeline only reads it."
        ),
        group_name="ingest",
        partitions_def=raw_partitions(app),
        metadata={"path": dg.MetadataValue.path(str(app.landing_root))},
        kinds={"file"},
    )


def day_metadata(result: DayResult) -> dict:
    """The raw_logs partition's own numbers: every line read and where it went."""
    return {
        "segments": result.segments,
        "bytes_read": result.bytes_read,
        "lines_read": result.lines_read,
        "valid_rows": result.valid_rows,
        "quarantined_rows": result.quarantined_rows,
        "blank_lines": result.blank_lines,
        "duplicates_dropped": result.duplicates,
        "duplicates_differing": result.duplicates_differing,
        "which_copy_wins": WHICH_COPY_WINS,
        "quarantine_share": float(round(result.quarantine_share, 6)),
        # a timestamp in the UI; its value (epoch seconds, exactly as listed) is what recorded_landing_state
        # reads back. A day without segments has none.
        **(
            {"newest_segment_mtime": dg.MetadataValue.timestamp(float(result.newest_segment_mtime))}
            if result.newest_segment_mtime
            else {}
        ),
    }


def accounting_check(result: DayResult) -> dg.AssetCheckResult:
    """valid + quarantined + duplicates + blank = lines read: no line was lost between landing and raw_logs."""
    return dg.AssetCheckResult(
        asset_key=RAW,
        check_name=CHECK_ACCOUNTED,
        passed=result.unaccounted_lines == 0,
        metadata={
            "lines_read": result.lines_read,
            "valid_rows": result.valid_rows,
            "quarantined_rows": result.quarantined_rows,
            "duplicates_dropped": result.duplicates,
            "blank_lines": result.blank_lines,
            "unaccounted_lines": result.unaccounted_lines,
        },
    )


def _checks(app: AppConfig, day: date, result: DayResult) -> list[dg.AssetCheckResult]:
    stats = raw_day_stats(result.raw_path, day)
    failures = schema_failures(result.raw_path)
    share = result.quarantine_share
    limit = app.pipeline.quarantine_max_share
    return [
        accounting_check(result),
        dg.AssetCheckResult(
            asset_key=RAW,
            check_name=CHECK_UNIQUE,
            passed=stats.duplicate_request_ids == 0,
            metadata={"duplicate_rows": stats.duplicate_request_ids},
        ),
        dg.AssetCheckResult(
            asset_key=RAW,
            check_name=CHECK_IN_PARTITION,
            passed=stats.rows_outside_day == 0,
            metadata={"rows_outside_day": stats.rows_outside_day},
        ),
        dg.AssetCheckResult(
            asset_key=RAW,
            check_name=CHECK_SCHEMA,
            passed=not failures,
            metadata={"failures": dg.MetadataValue.json(failures)},
        ),
        dg.AssetCheckResult(
            asset_key=RAW,
            check_name=CHECK_QUARANTINE,
            passed=share <= limit,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"quarantine_share": float(round(share, 6)), "threshold": float(limit)},
        ),
    ]


def check_specs(partitions: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    """The raw_logs checks, partitioned like raw_logs: each day keeps its own result, which the UI shows per
    partition and an export looks up by day (`failed_blocking_checks`)."""
    descriptions = {
        CHECK_ACCOUNTED: "Every line read is valid, quarantined, a dropped duplicate or blank.",
        CHECK_UNIQUE: "No request_id twice within the day.",
        CHECK_IN_PARTITION: "Every timestamp is inside the day.",
        CHECK_SCHEMA: "Rows conform to the pandera schema of schemas/.",
        CHECK_QUARANTINE: "Quarantined share of the day's records is under pipeline.quarantine_max_share.",
    }
    return [
        partitioned_check_spec(
            name,
            RAW,
            partitions,
            description=text
            + (" Blocking: no export reads the day while it fails." if name in BLOCKING_CHECKS else ""),
            blocking=name in BLOCKING_CHECKS,
        )
        for name, text in descriptions.items()
    ]


def build_raw_assets(app: AppConfig) -> dg.AssetsDefinition:
    partitions = raw_partitions(app)

    @dg.multi_asset(
        name="validate_landed_day",
        specs=[
            dg.AssetSpec(
                RAW,
                deps=[LANDING],
                description=(
                    "Every landed record of one UTC day that passed validation against schemas/, "
                    "typed (a directory of Parquet parts per day)."
                ),
                group_name="pipeline",
                kinds={"parquet", "polars"},
            ),
            dg.AssetSpec(
                QUARANTINE,
                deps=[LANDING],
                description="Landed lines that failed validation: segment, line, reason and the raw text.",
                group_name="pipeline",
                kinds={"parquet"},
            ),
        ],
        check_specs=check_specs(partitions),
        partitions_def=partitions,
        op_tags={"bifrost/stage": "validate"},
    )
    def validate_landed_day(context: dg.AssetExecutionContext, pipeline: PipelineResource):
        app_cfg = pipeline.app()
        day = date.fromisoformat(context.partition_key)
        result = validate_day(app_cfg, day)
        context.log.info(
            f"{day}: {result.lines_read} line(s) read from {result.segments} segment(s): {result.valid_rows} "
            f"valid, {result.quarantined_rows} quarantined, {result.duplicates} duplicate(s) dropped "
            f"({result.duplicates_differing} differing), {result.blank_lines} blank"
        )
        meta = day_metadata(result)
        yield dg.MaterializeResult(
            asset_key=RAW,
            metadata={
                **meta,
                "dagster/row_count": result.valid_rows,
                "path": dg.MetadataValue.path(str(result.raw_path)),
            },
        )
        yield dg.MaterializeResult(
            asset_key=QUARANTINE,
            metadata={
                "dagster/row_count": result.quarantined_rows,
                "reasons": dg.MetadataValue.json(dict(result.reasons.most_common(50))),
                "path": dg.MetadataValue.path(str(result.quarantine_path)),
            },
        )
        yield from _checks(app_cfg, day, result)

    return validate_landed_day


def build_raw_job(app: AppConfig) -> "UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        RAW_JOB, selection=dg.AssetSelection.assets(RAW, QUARANTINE), partitions_def=raw_partitions(app)
    )


def build_raw_schedule(raw_job: "UnresolvedAssetJobDefinition") -> "UnresolvedPartitionedAssetScheduleDefinition":
    # Closes each UTC day even when no segment arrives after midnight (an empty day still gets its
    # partition, so the exports that cover it can run).
    return dg.build_schedule_from_partitioned_job(
        raw_job,
        name="raw_logs_daily_schedule",
        hour_of_day=RAW_SCHEDULE_AT.hour,
        minute_of_hour=RAW_SCHEDULE_AT.minute,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )


def build_raw_defs(app: AppConfig) -> dg.Definitions:
    """The landing zone (external), raw_logs + quarantine with their checks, their job and daily schedule."""
    job = build_raw_job(app)
    return dg.Definitions(
        assets=[landing_spec(app), build_raw_assets(app)], jobs=[job], schedules=[build_raw_schedule(job)]
    )


def latest_raw_materialization(instance: dg.DagsterInstance, day: str) -> dg.EventLogRecord | None:
    """The latest raw_logs materialization of `day` (None: never built)."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW, asset_partitions=[day]), limit=1
    )
    return result.records[0] if result.records else None


def landing_state_read(record: dg.EventLogRecord) -> LandingState | None:
    """The landing state a raw_logs materialization had read, from its metadata (None: not recorded)."""
    meta = record.asset_materialization.metadata
    segments = meta.get("segments")
    newest = meta.get("newest_segment_mtime")
    if segments is None or (newest is None and int(segments.value) > 0):
        return None
    return LandingState(int(segments.value), float(newest.value) if newest is not None else 0.0)


def recorded_landing_state(instance: dg.DagsterInstance, day: str) -> LandingState | None:
    """The landing state that the latest raw_logs materialization of `day` had read (None: never built)."""
    record = latest_raw_materialization(instance, day)
    return landing_state_read(record) if record else None


def failed_blocking_checks(instance: dg.DagsterInstance, record: dg.EventLogRecord) -> list[dg.AssetCheckEvaluation]:
    """The blocking checks of raw_logs that failed on this materialization (its partition's latest result)."""
    from dagster._core.event_api import PartitionKeyFilter  # the storage's partition filter, not re-exported
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    keys = [dg.AssetCheckKey(RAW, name) for name in BLOCKING_CHECKS]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=record.partition_key)
    )
    failed = []
    for key in keys:
        execution = latest.get(key)
        if execution is None or execution.status != AssetCheckExecutionRecordStatus.FAILED:
            continue
        evaluation = execution.evaluation
        target = evaluation.target_materialization_data if evaluation else None
        # a result of an older materialization says nothing about this one
        of_this = target.storage_id == record.storage_id if target else execution.run_id == record.run_id
        if evaluation is not None and of_this:
            failed.append(evaluation)
    return failed


def raw_schedule_due(day: date) -> datetime:
    """When raw_logs_daily_schedule materializes `day` (UTC)."""
    return datetime.combine(day + timedelta(days=1), RAW_SCHEDULE_AT, tzinfo=UTC)


def landing_state(app: AppConfig, day: date) -> LandingState:
    """What the landing zone holds for `day` now."""
    return LandingState.of(landing.list_segments(app.landing_root, day, app.landing.storage_options))
