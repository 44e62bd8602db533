"""landing_zone (external) -> raw_logs + quarantine, one UTC day per partition, with their checks, job and
daily schedule."""

import shutil
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from bifrost_pipeline import landing
from bifrost_pipeline.config import AppConfig
from bifrost_pipeline.defs.partitions import partitioned_check_spec, raw_partitions
from bifrost_pipeline.defs.resources import PipelineResource
from bifrost_pipeline.landing import LandingState
from bifrost_pipeline.raw_checks import raw_day_stats, schema_failures
from bifrost_pipeline.validation import (
    DayResult,
    combine_day,
    hour_groups,
    hours_label,
    split_stage_dir,
    validate_day,
    validate_hours,
)

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
RAW_NODE = "validate_landed_day"  # the op (or graph, when a day is split by hour) that materializes raw_logs

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


def day_checks(app: AppConfig, day: date, result: DayResult) -> list[dg.AssetCheckResult]:
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


RAW_DESCRIPTION = (
    "Every landed record of one UTC day that passed validation against schemas/, typed (a directory of "
    "Parquet parts per day)."
)
QUARANTINE_DESCRIPTION = "Landed lines that failed validation: segment, line, reason and the raw text."
RAW_KINDS = {"parquet", "polars"}


def build_raw_assets(app: AppConfig) -> dg.AssetsDefinition:
    """raw_logs + quarantine of a day: one step (validate_day), or with `pipeline.hour_groups` > 1 a graph
    of one step per group of hours and a step that combines them (build_split_raw_assets)."""
    if app.pipeline.hour_groups > 1:
        return build_split_raw_assets(app)
    partitions = raw_partitions(app)

    @dg.multi_asset(
        name=RAW_NODE,
        specs=[
            dg.AssetSpec(
                RAW, deps=[LANDING], description=RAW_DESCRIPTION, group_name="pipeline", kinds=RAW_KINDS
            ),
            dg.AssetSpec(
                QUARANTINE, deps=[LANDING], description=QUARANTINE_DESCRIPTION, group_name="pipeline",
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
        context.log.info(day_summary(result))
        yield dg.MaterializeResult(asset_key=RAW, metadata=raw_metadata(result))
        yield dg.MaterializeResult(asset_key=QUARANTINE, metadata=quarantine_metadata(result))
        yield from day_checks(app_cfg, day, result)

    return validate_landed_day


def build_split_raw_assets(app: AppConfig) -> dg.AssetsDefinition:
    """The same two assets and checks as one graph: a step per group of hours (validation.validate_hours),
    in parallel, then `combine_validated_day` (validation.combine_day), which writes the day and reports
    its materializations and checks exactly as the single step does.

    The steps hand nothing to each other through an IO manager: each stages its hours under
    validation.split_stage_dir, keyed by the run's root run id (a re-execution from failure finds the
    stages of the steps that succeeded before), and the combine step reads them there. So a step may run in
    another process or pod, as long as raw_logs is on a volume they all mount."""
    partitions = raw_partitions(app)
    specs = check_specs(partitions)
    groups = hour_groups(app.pipeline.hour_groups)
    hour_ops = [_hour_group_op(hours) for hours in groups]
    combine = _combine_op(groups, specs)

    @dg.graph_multi_asset(
        name=RAW_NODE,
        ins={"landing_zone": dg.AssetIn(LANDING, dagster_type=dg.Nothing)},
        outs={
            "raw_logs": dg.AssetOut(key=RAW, description=RAW_DESCRIPTION, group_name="pipeline", kinds=RAW_KINDS,
                                    dagster_type=dg.Nothing),
            "quarantine": dg.AssetOut(key=QUARANTINE, description=QUARANTINE_DESCRIPTION, group_name="pipeline",
                                      kinds={"parquet"}, dagster_type=dg.Nothing),
        },
        check_specs=specs,
        partitions_def=partitions,
    )
    def validate_landed_day(landing_zone):
        staged = {hours_label(hours): op(landing_zone) for hours, op in zip(groups, hour_ops, strict=True)}
        return combine(**staged)._asdict()

    return validate_landed_day


def _stage_root(context: dg.OpExecutionContext, app: AppConfig) -> Path:
    return split_stage_dir(app, date.fromisoformat(context.partition_key), context.run.root_run_id or context.run_id)


def _hour_group_op(hours: range) -> dg.OpDefinition:
    label = hours_label(hours)

    @dg.op(
        name=f"validate_{label}",
        ins={"landing_zone": dg.In(dg.Nothing)},
        out=dg.Out(dg.Nothing),
        tags={"bifrost/stage": "validate"},
    )
    def validate_hour_group(context: dg.OpExecutionContext, pipeline: PipelineResource) -> None:
        app_cfg = pipeline.app()
        day = date.fromisoformat(context.partition_key)
        result = validate_hours(app_cfg, day, hours, _stage_root(context, app_cfg) / label)
        context.log.info(
            f"{day} hours {hours.start:02d}-{hours.stop - 1:02d}: {result.lines_read} line(s) read from "
            f"{result.segments} segment(s): {result.valid_rows} valid (before deduplication across the day), "
            f"{result.quarantined_rows} quarantined, {result.blank_lines} blank"
        )

    return validate_hour_group


def _combine_op(groups: list[range], specs: list[dg.AssetCheckSpec]) -> dg.OpDefinition:
    labels = [hours_label(hours) for hours in groups]
    outs = {"raw_logs": dg.Out(dg.Nothing), "quarantine": dg.Out(dg.Nothing)}
    outs |= {spec.get_python_identifier(): dg.Out(dg.Nothing) for spec in specs}

    @dg.op(name="combine_validated_day", ins={label: dg.In(dg.Nothing) for label in labels}, out=outs)
    def combine_validated_day(context: dg.OpExecutionContext, pipeline: PipelineResource):
        app_cfg = pipeline.app()
        day = date.fromisoformat(context.partition_key)
        stage_root = _stage_root(context, app_cfg)
        result = combine_day(app_cfg, day, [stage_root / label for label in labels])
        shutil.rmtree(stage_root, ignore_errors=True)
        context.log.info(day_summary(result))
        yield dg.Output(None, "raw_logs", metadata=raw_metadata(result))
        yield dg.Output(None, "quarantine", metadata=quarantine_metadata(result))
        yield from day_checks(app_cfg, day, result)

    return combine_validated_day


def day_summary(result: DayResult) -> str:
    return (
        f"{result.day}: {result.lines_read} line(s) read from {result.segments} segment(s): {result.valid_rows} "
        f"valid, {result.quarantined_rows} quarantined, {result.duplicates} duplicate(s) dropped "
        f"({result.duplicates_differing} differing), {result.blank_lines} blank"
    )


def raw_metadata(result: DayResult) -> dict:
    return {
        **day_metadata(result),
        "dagster/row_count": result.valid_rows,
        "path": dg.MetadataValue.path(str(result.raw_path)),
    }


def quarantine_metadata(result: DayResult) -> dict:
    return {
        "dagster/row_count": result.quarantined_rows,
        "reasons": dg.MetadataValue.json(dict(result.reasons.most_common(50))),
        "path": dg.MetadataValue.path(str(result.quarantine_path)),
    }


def split_day_executor(app: AppConfig) -> "dg.ExecutorDefinition | None":
    """The executor of a day split by hour: its steps in parallel, as many at once as
    pipeline.hour_group_concurrency says. None for a day in one step (the code location's in-process
    executor: no second process per run)."""
    if app.pipeline.hour_groups == 1:
        return None
    concurrency = app.pipeline.hour_group_concurrency
    if app.pipeline.hour_group_executor == "k8s_job":
        from dagster_k8s import k8s_job_executor  # extra "deploy"

        return k8s_job_executor.configured({"max_concurrent": concurrency}) if concurrency else k8s_job_executor
    # Steps start as new interpreters (spawn, Dagster's default): a forkserver saved 1.6 s of 23 in
    # bench/split_day_bench.py at 300K records, within its noise, and a fork after Polars has started its
    # thread pool would hang the step.
    return dg.multiprocess_executor.configured({"max_concurrent": concurrency})


def build_raw_job(app: AppConfig) -> "UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        RAW_JOB,
        selection=dg.AssetSelection.assets(RAW, QUARANTINE),
        partitions_def=raw_partitions(app),
        executor_def=split_day_executor(app),
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
