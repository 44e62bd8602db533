"""Alert sensors, posting to `alerts.webhooks`: failed runs, failed checks, and exports that turned stale
(their freshness policy, defs/freshness.py, failed).

One post per run: a failed run's post lists the checks that failed in it, and the check sensor only looks
at runs that succeeded, so a failing (blocking or not) check in a failed run is not posted twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from bifrost_pipeline.alerts import Alert, FailedCheck, send, truncate
from bifrost_pipeline.config import AppConfig
from bifrost_pipeline.defs.freshness import freshness_deadline

MAX_EVENTS_PER_TICK = 100


# --- alerts from runs -----------------------------------------------------------------------------------------


def run_url(app: AppConfig, run_id: str) -> str:
    return f"{app.alerts.ui_base_url}/runs/{run_id}"


def run_partition(run: dg.DagsterRun) -> str | None:
    tags = run.tags
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    return f"{start}...{end}" if start and end else None


def run_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str, ...]:
    """The assets the run set out to materialize (known even when it failed before any was written)."""
    keys = set(run.asset_selection or ())
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED):
        keys.add(entry.dagster_event.asset_key)
    return tuple(sorted(k.to_user_string() for k in keys))


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> tuple[FailedCheck, ...]:
    out = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        out.append(
            FailedCheck(
                asset=evaluation.asset_key.to_user_string(),
                name=evaluation.check_name,
                severity=evaluation.severity.value,
                description=evaluation.description or "",
            )
        )
    return tuple(out)


def error_message(error) -> str:
    """The root cause of a step's error (a retried step's own error says only "Exceeded max_retries")."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def run_failure_alert(app: AppConfig, context: dg.RunFailureSensorContext) -> Alert:
    run = context.dagster_run
    errors = []
    for event in context.get_step_failure_events():
        error = event.event_specific_data.error
        errors.append(f"{event.step_key}: {error_message(error) if error else event.message}")
    assets = run_assets(context.instance, run)
    partition = run_partition(run)
    return Alert(
        kind="run_failure",
        summary=f"Run failed: {', '.join(assets) or run.job_name}" + (f" [{partition}]" if partition else ""),
        job=run.job_name,
        run_id=run.run_id,
        url=run_url(app, run.run_id),
        assets=assets,
        partition=partition,
        error=truncate("\n".join(errors) or context.failure_event.message or "run failed"),
        checks=failed_checks(context.instance, run.run_id),
    )


def check_failure_alert(app: AppConfig, run: dg.DagsterRun, checks: tuple[FailedCheck, ...]) -> Alert:
    names = ", ".join(sorted({f"{c.asset} {c.name}" for c in checks}))
    partition = run_partition(run)
    return Alert(
        kind="check_failure",
        summary=f"Check failed: {names}" + (f" [{partition}]" if partition else ""),
        job=run.job_name,
        run_id=run.run_id,
        url=run_url(app, run.run_id),
        assets=tuple(sorted({c.asset for c in checks})),
        partition=partition,
        checks=checks,
    )


def build_alert_sensors(app: AppConfig) -> list[dg.SensorDefinition]:
    webhooks = app.alerts.webhooks

    @dg.run_failure_sensor(
        name="alert_on_run_failure",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts every failed run (export, partition, error, link) to alerts.webhooks.",
    )
    def alert_on_run_failure(context: dg.RunFailureSensorContext):
        send(webhooks, run_failure_alert(app, context), context.log)

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name="alert_on_check_failure",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Posts the failed checks (stale exports included) of every run that succeeded to alerts.webhooks "
            "(a failed run's post already lists its failed checks)."
        ),
    )
    def alert_on_check_failure(context: dg.RunStatusSensorContext):
        checks = failed_checks(context.instance, context.dagster_run.run_id)
        if checks:
            send(webhooks, check_failure_alert(app, context.dagster_run, checks), context.log)

    return [alert_on_run_failure, alert_on_check_failure]


def stale_alert(app: AppConfig, asset: dg.AssetKey, since: float) -> Alert:
    export = next(e for e in app.exports if e.asset_name == asset.to_user_string())
    cron, _ = freshness_deadline(export.schedule, app.alerts.freshness_grace_minutes)
    name = asset.to_user_string()
    return Alert(
        kind="stale",
        summary=f"Export stale: {name} missed its deadline",
        job=f"{name}_job",
        run_id=None,
        url=f"{app.alerts.ui_base_url}/assets/{'/'.join(asset.path)}",
        assets=(name,),
        error=(
            f"{export.name} ({export.schedule.frequency} at {export.schedule.time} {export.schedule.timezone}) "
            f"has not exported its latest window by its deadline (cron {cron!r}, {export.schedule.timezone}); "
            f"stale since {datetime.fromtimestamp(since, UTC).isoformat(timespec='seconds')}"
        ),
    )


def build_stale_sensor(app: AppConfig) -> dg.SensorDefinition:
    exports = {dg.AssetKey(e.asset_name) for e in app.exports}

    @dg.sensor(
        name="alert_on_stale_export",
        minimum_interval_seconds=app.pipeline.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts an export whose freshness policy turned to FAIL (stale) to alerts.webhooks.",
    )
    def alert_on_stale_export(context: dg.SensorEvaluationContext):
        changes = dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.FRESHNESS_STATE_CHANGE,
            after_cursor=int(context.cursor) if context.cursor else None,
        )
        if context.cursor is None:
            # Start from now: a state that changed before the sensor existed is already in the UI.
            latest = context.instance.get_event_records(changes, limit=1)
            return dg.SensorResult(cursor=str(latest[0].storage_id if latest else 0))
        records = context.instance.get_event_records(changes, limit=MAX_EVENTS_PER_TICK, ascending=True)
        for record in records:
            change = record.event_log_entry.dagster_event.event_specific_data
            # new_state is a FreshnessState, a str enum that Dagster does not export
            if change.key in exports and change.new_state == "FAIL":
                send(app.alerts.webhooks, stale_alert(app, change.key, change.state_change_timestamp), context.log)
        cursor = records[-1].storage_id if records else int(context.cursor)
        return dg.SensorResult(cursor=str(cursor))

    return alert_on_stale_export


def build_alert_defs(app: AppConfig) -> dg.Definitions:
    """The alert sensors, when `alerts.webhooks` names somewhere to post."""
    if not app.alerts.webhooks:
        return dg.Definitions()
    sensors = build_alert_sensors(app)
    if app.exports:
        sensors.append(build_stale_sensor(app))
    return dg.Definitions(sensors=sensors)
