"""Each export's freshness policy, derived from its schedule: the window that ended most recently must be
exported by the schedule's time plus `alerts.freshness_grace_minutes`, in the schedule's time zone.

Dagster's freshness daemon (part of `dagster dev` and `dagster-daemon`) evaluates the policy: the UI
shows the export as fresh or stale, and a change of state is an event that defs/alerts.py posts.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from bifrost_pipeline.config import AppConfig, ExportConfig, Schedule

MINUTES_PER_DAY = 24 * 60


def freshness_deadline(schedule: Schedule, grace_minutes: int) -> tuple[str, timedelta]:
    """The cron (in the schedule's time zone) by which the latest window must be exported, and how far
    back from it a materialization counts: the schedule's time plus the grace (maybe on the next day)."""
    days, minutes = divmod(schedule.hour * 60 + schedule.minute + grace_minutes, MINUTES_PER_DAY)
    hour, minute = divmod(minutes, 60)
    if schedule.frequency == "daily":
        return f"{minute} {hour} * * *", timedelta(days=1)
    if schedule.frequency == "weekly":
        return f"{minute} {hour} * * {(schedule.weekday + days) % 7}", timedelta(days=7)
    day = int(schedule.day) + days
    if day > 28:
        # cron's 29th does not exist every February: end of the 28th instead (only when the grace of a
        # schedule on the 28th runs past midnight)
        day, hour, minute = 28, 23, 59
    # Dagster wants the look-back no longer than the cron's shortest interval: February's 28 days
    return f"{minute} {hour} {day} * *", timedelta(days=28)


def export_freshness_policy(app: AppConfig, export: ExportConfig) -> dg.FreshnessPolicy:
    """Fresh when the export materialized in the period that ends at its latest deadline."""
    cron, period = freshness_deadline(export.schedule, app.alerts.freshness_grace_minutes)
    return dg.FreshnessPolicy.cron(deadline_cron=cron, lower_bound_delta=period, timezone=export.schedule.timezone)
