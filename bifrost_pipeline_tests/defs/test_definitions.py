import json
import os
import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from bifrost_pipeline.config import load_config
from bifrost_pipeline.definitions import build_definitions
from bifrost_pipeline.defs.raw import QUARANTINE, RAW, RAW_JOB
from bifrost_pipeline.defs.sensors import LOOKBACK_DAYS
from bifrost_pipeline_tests.helpers import HASH_KEY, land, record, write_config

EXPORTS = [
    {
        "name": "daily_files",
        "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
        "destination": {"type": "local", "config": {"path": "out", "prefix": "{export}/{partition}/"}},
        "data": {
            "include": ["request_logs", "error_logs"],
            "transformations": [{"type": "anonymize", "fields": ["customer_id"], "method": "hash"}],
        },
    },
    {
        "name": "paris_weekly",
        "schedule": {"frequency": "weekly", "day": "monday", "time": "03:00", "timezone": "Europe/Paris"},
        "destination": {"type": "duckdb", "config": {"table": "weekly"}},
        "data": {"include": ["metrics"]},
    },
]


@pytest.fixture
def setup(tmp_path, monkeypatch):
    app, path = write_config(tmp_path, EXPORTS, monkeypatch)
    defs = build_definitions(app, str(path))
    return app, defs, dg.DagsterInstance.ephemeral()


def test_the_whole_code_location_loads_with_one_asset_and_schedule_per_export(setup):
    app, defs, _ = setup
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"landing_zone", "raw_logs", "quarantine", "export_daily_files", "export_paris_weekly"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("export_daily_files")).parent_keys} == {"raw_logs"}
    assert graph.get(RAW).parent_keys == {dg.AssetKey("landing_zone")}
    names = {s.name for s in defs.schedules}
    assert names == {"raw_logs_daily_schedule", "export_daily_files_schedule", "export_paris_weekly_schedule"}
    assert {s.name for s in defs.sensors} == {"landing_sensor", "raw_logs_updated_sensor"}


def test_the_repository_config_loads(monkeypatch):
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", HASH_KEY)
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    path = os.path.join(root, "bifrost_pipeline.yaml")
    dg.Definitions.validate_loadable(build_definitions(load_config(path), path))


def materialize_day(defs, instance, day: str):
    result = defs.resolve_job_def(RAW_JOB).execute_in_process(partition_key=day, instance=instance)
    assert result.success
    return result


def test_raw_materialization_metadata_and_checks(setup):
    app, defs, instance = setup
    land(app, [record(request_id="a"), record(request_id="a"), b"not json"])
    result = materialize_day(defs, instance, "2024-01-15")
    mats = {m.asset_key: m for m in result.asset_materializations_for_node("validate_landed_day")}
    assert mats[RAW].metadata["valid_rows"].value == 1  # "a" landed twice is kept once
    assert mats[QUARANTINE].metadata["dagster/row_count"].value == 1
    assert json.loads(json.dumps(mats[QUARANTINE].metadata["reasons"].value)) == {"malformed JSON": 1}
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["unique_request_id"].passed is True  # deduplicated
    assert checks["timestamps_in_partition"].passed is True
    assert checks["conforms_to_schema"].passed is True
    assert checks["quarantine_share_below_threshold"].passed is False  # 1 of 3 > 1 %


def test_export_runs_after_raw_and_refuses_stale_raw(setup):
    app, defs, instance = setup
    land(app, [record(request_id="a")])
    export_job = defs.resolve_job_def("export_daily_files_job")
    # raw not materialized yet: the export fails with a message naming the day
    failed = export_job.execute_in_process(partition_key="2024-01-15", instance=instance, raise_on_error=False)
    assert not failed.success
    assert "raw_logs 2024-01-15 has never been materialized" in str(failed.all_events)
    materialize_day(defs, instance, "2024-01-15")
    ok = export_job.execute_in_process(partition_key="2024-01-15", instance=instance)
    meta = ok.asset_materializations_for_node("export_daily_files")[0].metadata
    assert (meta["rows/request_logs"].value, meta["rows/error_logs"].value) == (1, 0)
    # a segment lands late: the raw day is stale until it is re-materialized
    land(app, [record(request_id="late")])
    stale = export_job.execute_in_process(partition_key="2024-01-15", instance=instance, raise_on_error=False)
    assert not stale.success and "is older than the landing zone" in str(stale.all_events)


def test_paris_weekly_reads_the_utc_days_its_window_covers(setup):
    app, defs, instance = setup
    # week of Monday 2024-01-15 00:00 Paris = 2024-01-14 23:00 UTC .. 2024-01-21 23:00 UTC
    land(app, [record(request_id="in", timestamp="2024-01-14T23:30:00Z")])
    land(app, [record(request_id="out", timestamp="2024-01-14T22:30:00Z")])
    for d in range(14, 22):
        materialize_day(defs, instance, f"2024-01-{d:02d}")
    job = defs.resolve_job_def("export_paris_weekly_job")
    res = job.execute_in_process(partition_key="2024-01-15", instance=instance)
    meta = res.asset_materializations_for_node("export_paris_weekly")[0].metadata
    assert meta["raw_days"].value == [f"2024-01-{d:02d}" for d in range(14, 22)]
    import duckdb

    con = duckdb.connect(str(app.warehouse_path))
    assert con.execute("SELECT sum(total_requests) FROM weekly_metrics").fetchone()[0] == 1
    con.close()


def test_landing_sensor_requests_changed_days_once(setup):
    app, defs, instance = setup
    sensor = defs.resolve_sensor_def("landing_sensor")
    today = datetime.now(UTC).date()
    land(app, [record(request_id="x", timestamp=f"{today.isoformat()}T00:00:01Z")])
    with dg.build_sensor_context(instance=instance, definitions=defs) as ctx:
        first = sensor.evaluate_tick(ctx)
    assert [r.partition_key for r in first.run_requests] == [today.isoformat()]
    with dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs) as ctx:
        assert sensor.evaluate_tick(ctx).run_requests == []  # same state: not asked twice
    materialize_day(defs, instance, today.isoformat())
    with dg.build_sensor_context(instance=instance, definitions=defs) as ctx:
        assert sensor.evaluate_tick(ctx).run_requests == []  # raw is up to date
    land(app, [record(request_id="y", timestamp=f"{today.isoformat()}T01:00:00Z")])
    with dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs) as ctx:
        again = sensor.evaluate_tick(ctx)
    assert [r.partition_key for r in again.run_requests] == [today.isoformat()]
    assert again.run_requests[0].run_key != first.run_requests[0].run_key


@pytest.fixture
def local_date_is_not_the_utc_date(monkeypatch):
    """Puts this process in a time zone where today's local date is not the UTC date (whatever the hour)."""
    # Etc/GMT-14 is UTC+14: a day ahead from 10:00 UTC; Etc/GMT+12 is UTC-12: a day behind until 12:00 UTC.
    zone = "Etc/GMT-14" if datetime.now(UTC).hour >= 12 else "Etc/GMT+12"
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    assert date.today() != datetime.now(UTC).date()
    yield
    monkeypatch.undo()
    time.tzset()


def test_landing_sensor_looks_back_from_the_utc_date_on_any_machine(setup, local_date_is_not_the_utc_date):
    app, defs, instance = setup
    sensor = defs.resolve_sensor_def("landing_sensor")
    oldest = datetime.now(UTC).date() - timedelta(days=LOOKBACK_DAYS)  # the last day still looked at
    for day in (oldest, oldest - timedelta(days=1)):
        land(app, [record(request_id=f"r{day}", timestamp=f"{day.isoformat()}T12:00:00Z")])
    with dg.build_sensor_context(instance=instance, definitions=defs) as ctx:
        tick = sensor.evaluate_tick(ctx)
    assert [r.partition_key for r in tick.run_requests] == [oldest.isoformat()]


def test_reexport_sensor_reruns_exports_made_from_an_older_raw(setup):
    app, defs, instance = setup
    sensor = defs.resolve_sensor_def("raw_logs_updated_sensor")
    land(app, [record(request_id="a")])
    with dg.build_sensor_context(instance=instance, definitions=defs) as ctx:
        cursor = sensor.evaluate_tick(ctx).cursor  # starts from now
    materialize_day(defs, instance, "2024-01-15")
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as ctx:
        tick = sensor.evaluate_tick(ctx)
    assert tick.run_requests == []  # nothing was exported yet: schedules do first exports
    defs.resolve_job_def("export_daily_files_job").execute_in_process(partition_key="2024-01-15", instance=instance)
    land(app, [record(request_id="late")])
    materialize_day(defs, instance, "2024-01-15")
    with dg.build_sensor_context(instance=instance, cursor=tick.cursor, definitions=defs) as ctx:
        tick2 = sensor.evaluate_tick(ctx)
    assert [(r.job_name, r.partition_key) for r in tick2.run_requests] == [("export_daily_files_job", "2024-01-15")]
    defs.resolve_job_def("export_daily_files_job").execute_in_process(partition_key="2024-01-15", instance=instance)
    out = pl.read_parquet(app.data_dir / "out" / "daily_files" / "2024-01-15" / "request_logs.parquet")
    assert out.height == 2
