"""One asset, one job and one schedule per enabled entry of `log_exports.exports`."""

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import dagster as dg

from bifrost_pipeline.config import AppConfig, ExportConfig
from bifrost_pipeline.defs.freshness import export_freshness_policy
from bifrost_pipeline.defs.partitions import export_partitions, partitioned_check_spec
from bifrost_pipeline.defs.raw import (
    RAW,
    failed_blocking_checks,
    landing_state,
    landing_state_read,
    latest_raw_materialization,
    raw_schedule_due,
)
from bifrost_pipeline.defs.resources import PipelineResource
from bifrost_pipeline.destinations import destination_class
from bifrost_pipeline.destinations.base import Destination, DestinationError
from bifrost_pipeline.destinations.duckdb import DuckDBDestination
from bifrost_pipeline.destinations.local import LocalDestination
from bifrost_pipeline.destinations.object_store import ObjectStoreDestination
from bifrost_pipeline.exports import ExportRun, expected_rows, make_destination, run_export
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


# The daily raw schedule's run may start a little late or take a while: until this long after its tick, an
# export waits (retries) for a day it has not built yet instead of failing.
RAW_SCHEDULE_GRACE = timedelta(minutes=30)
CHECK_ROWS = "rows_at_destination_match"


def backfill_command(first: date, last: date, config_path: str | None) -> str:
    config = f" --config {config_path}" if config_path else ""
    return f"bifrost-pipeline backfill --from {first.isoformat()} --to {last.isoformat()}{config}"


def _check_numbers(evaluation: dg.AssetCheckEvaluation) -> str:
    numbers = [f"{k}={v.value}" for k, v in evaluation.metadata.items() if isinstance(v.value, int | float)]
    return f" ({', '.join(numbers)})" if numbers else ""


def check_raw_ready(
    instance: dg.DagsterInstance,
    app: AppConfig,
    days: list[date],
    export: str,
    *,
    config_path: str | None = None,
    now: datetime | None = None,
) -> None:
    """Fail when a raw_logs day the export reads is not ready.

    Retried (allow_retries) only when something will make the day ready by itself: segments newer than its
    materialization or a day never built that has segments (the landing sensor builds both), or a day whose
    daily raw schedule has not run yet. Not retried, with the command that fixes it: a day whose latest
    materialization failed a blocking check, or a day never built with nothing landed for it after its
    schedule's time (nothing will ever build it by itself).
    """
    now = now or datetime.now(UTC)
    waiting, unbuilt, blocked = [], [], []
    for day in days:
        record = latest_raw_materialization(instance, day.isoformat())
        landed = landing_state(app, day)
        if record is None:
            if landed.segments == 0 and now >= raw_schedule_due(day) + RAW_SCHEDULE_GRACE:
                unbuilt.append(day)
            else:
                waiting.append(f"raw_logs {day} has never been materialized")
            continue
        recorded = landing_state_read(record)
        if recorded is not None and landed.is_newer_than(recorded):
            waiting.append(
                f"raw_logs {day} is older than the landing zone (read {recorded.describe()}, now {landed.describe()})"
            )
        failed = failed_blocking_checks(instance, record)
        if failed:
            checks = ", ".join(e.check_name + _check_numbers(e) for e in failed)
            blocked.append((day, f"raw_logs {day} failed its blocking check(s) {checks} (run {record.run_id})"))
    prefix = f"export {export!r} cannot run: "
    if blocked:
        first, last = min(d for d, _ in blocked), max(d for d, _ in blocked)
        raise dg.Failure(
            description=prefix
            + "; ".join(text for _, text in blocked)
            + ". Look at the failed check's result in the UI and at the "
            f"day's quarantine ({app.quarantine_dir}), fix the landed data ({app.landing_root}), then "
            "re-materialize raw_logs for the day and re-run this export: "
            f"{backfill_command(first, last, config_path)}",
            allow_retries=False,
        )
    if unbuilt:
        raise dg.Failure(
            description=prefix
            + "; ".join(f"raw_logs {d} has never been materialized and nothing has landed for it" for d in unbuilt)
            + ". No sensor or schedule will build such a day; materialize it (empty days become empty "
            f"partitions), which also runs this export: {backfill_command(min(unbuilt), max(unbuilt), config_path)}",
            allow_retries=False,
        )
    if waiting:
        raise dg.Failure(
            description=prefix + "; ".join(waiting) + ". The landing sensor (or the daily raw_logs schedule) "
            "builds such days; this run is retried (pipeline.export_retries).",
            allow_retries=True,
        )


def completeness_check(
    app: AppConfig, export: ExportConfig, run: ExportRun, destination: Destination
) -> dg.AssetCheckResult:
    """Rows read back from the destination = rows selected from raw_logs for the window, per dataset."""
    expected = expected_rows(app, export, run.partition_key, run.rows)
    try:
        actual = destination.count_rows(run.output, run.written)
        problem = None
    except DestinationError as err:
        actual, problem = {}, str(err)
    datasets = {
        d: {"expected": expected[d], "at_destination": actual.get(d, 0), "missing": expected[d] - actual.get(d, 0)}
        for d in expected
    }
    mismatched = {d: n for d, n in datasets.items() if n["missing"] != 0}
    metadata = {"datasets": dg.MetadataValue.json(datasets)}
    if mismatched:
        metadata["mismatch"] = "; ".join(
            f"{d}: {n['at_destination']} at the destination, {n['expected']} expected" for d, n in mismatched.items()
        )
    if problem:
        metadata["error"] = problem
    return dg.AssetCheckResult(
        check_name=CHECK_ROWS, passed=not mismatched and problem is None, metadata=metadata
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
        check_specs=[
            partitioned_check_spec(
                CHECK_ROWS,
                export.asset_name,
                export_partitions(app, export),
                description=(
                    "Rows of each dataset read back from the destination (manifest + object sizes, or "
                    "count(*) of the partition) equal the rows selected from raw_logs for the window."
                ),
            )
        ],
    )
    def _export(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        app_cfg = pipeline.app()
        cfg = app_cfg.export(export.name)
        start, end = partition_window(cfg.schedule, context.partition_key)
        check_raw_ready(context.instance, app_cfg, utc_days(start, end), cfg.name, config_path=pipeline.config_path)
        # the run's logger: what the destination says while it works (e.g. waiting for a locked file) shows
        # in the run's log in the UI
        target = make_destination(app_cfg, cfg, log=context.log)
        try:
            run = run_export(app_cfg, cfg, context.partition_key, run_id=context.run_id, destination=target)
        except DestinationError as err:
            raise dg.Failure(description=str(err), allow_retries=err.retryable) from None
        if run.empty:
            context.log.info(f"{cfg.name} {context.partition_key}: no records in this window")
        else:
            context.log.info(f"{cfg.name} {context.partition_key}: {run.records} record(s) -> {run.written.location}")
        return dg.MaterializeResult(
            metadata=export_metadata(run, target), check_results=[completeness_check(app_cfg, cfg, run, target)]
        )

    return _export


# S3 and GCS consoles show a prefix in the browser; for a custom endpoint (an emulator, another
# S3-compatible store) there is no such page, and only the URI is given.
CONSOLES = {
    "s3": "https://s3.console.aws.amazon.com/s3/buckets/{bucket}?prefix={key}",
    "gs": "https://console.cloud.google.com/storage/browser/{bucket}/{key}",
}


def location_metadata(destination: Destination, location: str) -> dict[str, dg.MetadataValue]:
    """Where the partition is, as something to click: a local path, a store's URI, a console page."""
    if isinstance(destination, LocalDestination):
        return {"location": dg.MetadataValue.path(location)}
    if isinstance(destination, DuckDBDestination):
        return {"location": dg.MetadataValue.path(str(destination.path))}
    if isinstance(destination, ObjectStoreDestination):
        meta = {"location": dg.MetadataValue.url(location)}
        scheme, _, rest = location.partition("://")
        bucket, _, key = rest.partition("/")
        if scheme in CONSOLES and destination.endpoint() is None:
            meta["console"] = dg.MetadataValue.url(CONSOLES[scheme].format(bucket=bucket, key=key))
        return meta
    return {"location": dg.MetadataValue.text(location)}


DATASETS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("dataset", "string"),
        dg.TableColumn("file", "string"),
        dg.TableColumn("rows", "int"),
        dg.TableColumn("bytes", "int"),
    ]
)


def export_metadata(run: ExportRun, destination: Destination) -> dict[str, Any]:
    """What the UI shows of one export partition (README, "What a materialization shows").

    `dagster/row_count` is the records exported (exports.exported_records), not a sum over datasets that
    would count a record once per dataset; each dataset's rows and bytes are beside it, as a table and as
    plain numbers (`rows/<dataset>`, `bytes/<dataset>`) that the UI plots across partitions.
    """
    files = run.output.files
    meta: dict[str, Any] = {
        "dagster/row_count": run.records,
        "empty": run.empty,
        "window_start": dg.MetadataValue.timestamp(run.window_start),
        "window_end": dg.MetadataValue.timestamp(run.window_end),
        "exported_at": dg.MetadataValue.timestamp(run.output.exported_at),
        "raw_days": [d.isoformat() for d in run.raw_days],
        "datasets": dg.MetadataValue.table(
            records=[
                dg.TableRecord({"dataset": f.dataset, "file": f.file_name, "rows": f.rows, "bytes": f.bytes})
                for f in files
            ],
            schema=DATASETS_SCHEMA,
        ),
        **{f"rows/{f.dataset}": f.rows for f in files},
        **{f"bytes/{f.dataset}": f.bytes for f in files},
        **location_metadata(destination, run.written.location),
        "files": dg.MetadataValue.json(
            [{"name": f.file_name, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256} for f in files]
        ),
        "removed_stale": len(run.written.removed),
        "seconds": round(run.seconds, 3),
    }
    if destination.is_warehouse:
        meta["tables"] = dg.MetadataValue.json(run.written.written)
    if run.empty:
        meta["note"] = dg.MetadataValue.text("no records in this window")
    meta["preview"] = dg.MetadataValue.md(run.preview if not run.empty else "No records in this window.")
    return meta


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
