"""The Dagster code location: built from the config file, so one export entry = one asset + schedule.

Only assembles what each `defs/` module builds."""

from __future__ import annotations

import dagster as dg

from bifrost_pipeline.config import AppConfig, config_path, load_config
from bifrost_pipeline.defs.alerts import build_alert_defs
from bifrost_pipeline.defs.exports import build_export_defs
from bifrost_pipeline.defs.raw import build_raw_defs
from bifrost_pipeline.defs.resources import build_resources
from bifrost_pipeline.defs.retention import build_retention_defs
from bifrost_pipeline.defs.sensors import build_sensor_defs


def build_definitions(app: AppConfig, path: str) -> dg.Definitions:
    built = [build_raw_defs(app), *(build_export_defs(app, export) for export in app.exports)]
    jobs = {job.name: job for defs in built for job in defs.jobs or []}
    return dg.Definitions.merge(
        *built,
        build_sensor_defs(app, jobs),
        build_alert_defs(app),
        build_retention_defs(app),
        build_resources(path),
        # Every job is one step (a raw day, an export partition, retention): the default multiprocess
        # executor would start a second Python process per run for nothing (seconds of imports, twice the
        # memory of a run pod). Runs run in parallel with each other through the run queue instead.
        dg.Definitions(executor=dg.in_process_executor),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded when Dagster loads the code location, from $BIFROST_PIPELINE_CONFIG or ./bifrost_pipeline.yaml."""
    path = config_path().resolve()
    return build_definitions(load_config(path), str(path))
