"""The Dagster code location: built from the config file, so one export entry = one asset + schedule."""

from __future__ import annotations

import dagster as dg

from bifrost_pipeline.config import AppConfig, config_path, load_config
from bifrost_pipeline.defs.exports import build_export_asset, build_export_job_and_schedule
from bifrost_pipeline.defs.partitions import raw_partitions
from bifrost_pipeline.defs.raw import QUARANTINE, RAW, build_raw_assets, landing_spec
from bifrost_pipeline.defs.resources import PipelineConfig
from bifrost_pipeline.defs.sensors import RAW_JOB, build_landing_sensor, build_reexport_sensor


def build_definitions(app: AppConfig, path: str) -> dg.Definitions:
    raw_job = dg.define_asset_job(
        RAW_JOB, selection=dg.AssetSelection.assets(RAW, QUARANTINE), partitions_def=raw_partitions(app)
    )
    # Closes each UTC day even when no segment arrives after midnight (an empty day still gets its
    # partition, so the exports that cover it can run).
    raw_schedule = dg.build_schedule_from_partitioned_job(
        raw_job,
        name="raw_logs_daily_schedule",
        hour_of_day=0,
        minute_of_hour=10,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    assets: list = [landing_spec(app), build_raw_assets(app)]
    jobs = [raw_job]
    schedules = [raw_schedule]
    for export in app.exports:
        assets.append(build_export_asset(app, export))
        job, schedule = build_export_job_and_schedule(app, export)
        jobs.append(job)
        schedules.append(schedule)
    sensors = [build_landing_sensor(app)]
    if len(jobs) > 1:
        sensors.append(build_reexport_sensor(app, jobs[1:]))
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={"pipeline": PipelineConfig(config_path=str(path))},
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded when Dagster loads the code location, from $BIFROST_PIPELINE_CONFIG or ./bifrost_pipeline.yaml."""
    path = config_path().resolve()
    return build_definitions(load_config(path), str(path))
