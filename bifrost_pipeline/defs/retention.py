"""The retention job (compliance): daily, removes landed segments and raw_logs/quarantine days past their
retention, as decided by retention.py, and reports every removal (or would-be removal, in a dry run) in
the run's metadata and on the partitions it touched."""

# (No `from __future__ import annotations`: Dagster reads the op's annotations at definition time.)

from datetime import UTC, date, datetime

import dagster as dg

from bifrost_pipeline import landing, retention
from bifrost_pipeline.config import AppConfig
from bifrost_pipeline.defs.raw import LANDING, RAW, recorded_landing_state
from bifrost_pipeline.defs.resources import PipelineResource

RETENTION_JOB = "retention_job"


def latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> int | None:
    result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1)
    return result.records[0].storage_id if result.records else None


def export_blockers(instance: dg.DagsterInstance, app: AppConfig, day: date) -> list[str]:
    """The export partitions that overlap raw day `day` and were not materialized since its latest build."""
    raw_version = latest_storage_id(instance, RAW, day.isoformat()) or 0
    partitions = {}
    for export in app.exports:
        key = dg.AssetKey(export.asset_name)
        for partition in retention.covering_partitions(export.schedule, day, app.partitions_start):
            partitions[(export.name, partition)] = latest_storage_id(instance, key, partition)
    return retention.raw_blockers(raw_version, partitions)


def plan_retention(instance: dg.DagsterInstance, app: AppConfig, today: date) -> retention.Plan:
    root, options = app.landing_root, app.landing.storage_options
    return retention.plan(
        app,
        today,
        recorded=lambda day: recorded_landing_state(instance, day.isoformat()),
        segments=lambda day: landing.list_segments(root, day, options),
        landing_days=landing.days(root, options) if app.landing.retention_days is not None else [],
        blockers=lambda day: export_blockers(instance, app, day),
    )


def report(plan: retention.Plan, dry_run: bool) -> dict:
    """The run's metadata: totals per store, then every removal (paths, bytes) and every day kept, with why."""
    landed = [r for r in plan.removals if r.what == retention.LANDING]
    raw = [r for r in plan.removals if r.what == retention.RAW]
    return {
        "dry_run": dry_run,
        "landing_files": sum(len(r.paths) for r in landed),
        "landing_bytes": sum(r.bytes for r in landed),
        "raw_days": len(raw),
        "raw_bytes": sum(r.bytes for r in raw),
        ("would_remove" if dry_run else "removed"): dg.MetadataValue.json([r.report() for r in plan.removals]),
        "kept": dg.MetadataValue.json([k.report() for k in plan.kept]),
    }


@dg.op(out=dg.Out(dg.Nothing), description="Removes what is past landing.retention_days / pipeline.raw_retention_days.")
def apply_retention(context: dg.OpExecutionContext, pipeline: PipelineResource):
    app = pipeline.app()
    dry_run = app.pipeline.retention_dry_run
    today = datetime.now(UTC).date()  # days are UTC days, whatever the machine's time zone
    plan = plan_retention(context.instance, app, today)
    verb = "would remove" if dry_run else "removed"
    for removal in plan.removals:
        if not dry_run:
            retention.apply(app, removal)
            # on the partition's own history too, so the UI says why its files are gone
            context.log_event(
                dg.AssetObservation(
                    asset_key=LANDING if removal.what == retention.LANDING else RAW,
                    partition=removal.day.isoformat(),
                    metadata={"removed_by_retention": True, "files": len(removal.paths), "bytes": removal.bytes},
                )
            )
        context.log.info(f"retention {verb} {removal.what} {removal.day}: {len(removal.paths)} file(s), {removal.bytes} bytes")
    for kept in plan.kept:
        context.log.info(f"retention kept {kept.what} {kept.day}: {kept.reason}")
    return dg.Output(None, metadata=report(plan, dry_run))


def build_retention_defs(app: AppConfig) -> dg.Definitions:
    """The retention job and its daily schedule, when a retention is configured."""
    if app.landing.retention_days is None and app.pipeline.raw_retention_days is None:
        return dg.Definitions()

    @dg.job(name=RETENTION_JOB, description="Removes landed segments and raw days past their retention.")
    def retention_job():
        apply_retention()

    schedule = dg.ScheduleDefinition(
        name="retention_daily_schedule",
        job=retention_job,
        # after the raw_logs schedule (00:10) and the usual export times, before the working day
        cron_schedule="30 5 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return dg.Definitions(jobs=[retention_job], schedules=[schedule])

