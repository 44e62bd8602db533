"""One asset, one job and one schedule per enabled entry of `log_exports.exports`."""

from datetime import date
from typing import TYPE_CHECKING

import dagster as dg

from bifrost_pipeline.config import AppConfig, ExportConfig
from bifrost_pipeline.defs.freshness import export_freshness_policy
from bifrost_pipeline.defs.partitions import export_partitions
from bifrost_pipeline.defs.raw import RAW, landing_state, recorded_landing_state
from bifrost_pipeline.defs.resources import PipelineResource
from bifrost_pipeline.destinations import destination_class
from bifrost_pipeline.destinations.base import DestinationError
from bifrost_pipeline.exports import make_destination, run_export
from bifrost_pipeline.windows import partition_window, utc_days

if TYPE_CHECKING:
    # what dg.define_asset_job and build_schedule_from_partitioned_job return for asset jobs; Dagster does
    # not export these types under a public name. (No `from __future__ import annotations` in this module:
    # Dagster reads the asset functions' annotations at definition time.)
    from dagster._core.definitions.partitions.partitioned_schedule import (
        UnresolvedPartitionedAssetScheduleDefinition,
    )
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def job_name(export: ExportConfig) -> str:
    return f"{export.asset_name}_job"


def warehouse_tags(export: ExportConfig) -> dict[str, str]:
    """`bifrost/warehouse: <type>` for a warehouse export: the instance's QueuedRunCoordinator lets one run
    per value run at a time (dagster.yaml, deploy/). It must be a run tag (set on the job, so schedules,
    sensors and `dagster job backfill` runs carry it): the run queue never sees op tags."""
    kind = export.destination.type
    return {"bifrost/warehouse": kind} if destination_class(kind).is_warehouse else {}


def check_raw_ready(instance: dg.DagsterInstance, app: AppConfig, days: list[date], export: str) -> None:
    """Fail (to be retried) when a raw_logs day is missing or older than what has landed for it."""
    problems = []
    for day in days:
        recorded = recorded_landing_state(instance, day.isoformat())
        landed = landing_state(app, day)
        if recorded is None:
            problems.append(f"raw_logs {day} has never been materialized")
        elif landed.is_newer_than(recorded):
            problems.append(
                f"raw_logs {day} is older than the landing zone (read {recorded.describe()}, "
                f"now {landed.describe()})"
            )
    if problems:
        raise dg.Failure(
            description=f"export {export!r} cannot run yet: " + "; ".join(problems)
            + ". The landing sensor re-materializes such days; or materialize them by hand.",
            allow_retries=True,
        )


def raw_mapping(export: ExportConfig) -> dg.PartitionMapping:
    """How an export partition depends on raw_logs days.

    Dagster maps time windows only between partitions of the same time zone. raw_logs days are UTC, so an
    export in another zone declares a dependency on raw_logs as a whole; which UTC days a partition reads
    is computed from its window (exports.utc_days) and checked before it runs.
    """
    if export.schedule.timezone == "UTC":
        return dg.TimeWindowPartitionMapping()
    return dg.AllPartitionMapping()


def build_export_asset(app: AppConfig, export: ExportConfig) -> dg.AssetsDefinition:
    kind = export.destination.type
    destination = make_destination(app, export)

    @dg.asset(
        name=export.asset_name,
        deps=[dg.AssetDep(RAW, partition_mapping=raw_mapping(export))],
        partitions_def=export_partitions(app, export),
        group_name="exports",
        description=(
            f"Export {export.name!r}: {', '.join(export.data.include)} as {export.data.format} "
            f"({export.data.codec}) to {destination.describe()}, {export.schedule.frequency} "
            f"at {export.schedule.time} {export.schedule.timezone}."
        ),
        kinds={kind, export.data.format},
        # Retries help with a stale or missing raw day (the landing sensor refreshes it) and flaky stores.
        retry_policy=dg.RetryPolicy(
            max_retries=app.pipeline.export_retries,
            delay=app.pipeline.export_retry_delay_s,
            backoff=dg.Backoff.EXPONENTIAL,
        ),
        op_tags=warehouse_tags(export),
        freshness_policy=export_freshness_policy(app, export),
        metadata={"destination": destination.describe(), "format": export.data.format},
    )
    def _export(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        app_cfg = pipeline.app()
        cfg = app_cfg.export(export.name)
        start, end = partition_window(cfg.schedule, context.partition_key)
        check_raw_ready(context.instance, app_cfg, utc_days(start, end), cfg.name)
        try:
            run = run_export(app_cfg, cfg, context.partition_key, run_id=context.run_id)
        except DestinationError as err:
            raise dg.Failure(description=str(err), allow_retries=err.retryable) from None
        context.log.info(f"{cfg.name} {context.partition_key}: {run.rows} -> {run.written.location}")
        return dg.MaterializeResult(
            metadata={
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
                "raw_days": [d.isoformat() for d in run.raw_days],
                "rows": dg.MetadataValue.json(run.rows),
                "dagster/row_count": sum(run.rows.values()),
                "location": run.written.location,
                "files": dg.MetadataValue.json(
                    [{"name": f.file_name, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256} for f in run.output.files]
                ),
                "removed_stale": len(run.written.removed),
                "seconds": round(run.seconds, 3),
            }
        )

    return _export


def build_export_job_and_schedule(
    app: AppConfig, export: ExportConfig
) -> tuple["UnresolvedAssetJobDefinition", "UnresolvedPartitionedAssetScheduleDefinition"]:
    job = dg.define_asset_job(
        job_name(export),
        selection=dg.AssetSelection.assets(export.asset_name),
        partitions_def=export_partitions(app, export),
        tags=warehouse_tags(export),
    )
    s = export.schedule
    schedule = dg.build_schedule_from_partitioned_job(
        job,
        name=f"{export.asset_name}_schedule",
        hour_of_day=s.hour,
        minute_of_hour=s.minute,
        day_of_week=s.weekday if s.frequency == "weekly" else None,
        day_of_month=int(s.day) if s.frequency == "monthly" else None,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"{s.frequency} at {s.time} {s.timezone}: exports the window that ended most recently.",
    )
    return job, schedule


def build_export_defs(app: AppConfig, export: ExportConfig) -> dg.Definitions:
    """One export entry: its asset, its job and its schedule."""
    job, schedule = build_export_job_and_schedule(app, export)
    return dg.Definitions(assets=[build_export_asset(app, export)], jobs=[job], schedules=[schedule])
