from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
import yaml

from bifrost_pipeline import landing
from bifrost_pipeline.config import Schedule, load_config
from bifrost_pipeline.definitions import build_definitions
from bifrost_pipeline.defs.partitions import export_partitions, overlapping_partitions
from bifrost_pipeline.defs.raw import RAW_JOB
from bifrost_pipeline.defs.retention import RETENTION_JOB
from bifrost_pipeline.retention import covering_partitions
from bifrost_pipeline.validation import quarantine_path, raw_path
from bifrost_pipeline_tests.helpers import HASH_KEY, land, record

TODAY = datetime.now(UTC).date()
DAILY = {
    "name": "daily_files",
    "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
    "destination": {"type": "local", "config": {"path": "out", "prefix": "{export}/{partition}/"}},
    "data": {"include": ["request_logs"]},
}
WEEKLY = {
    "name": "paris_weekly",
    "schedule": {"frequency": "weekly", "day": "monday", "time": "03:00", "timezone": "Europe/Paris"},
    "destination": {"type": "local", "config": {"path": "out", "prefix": "{export}/{partition}/"}},
    "data": {"include": ["request_logs"]},
}


def ago(n: int) -> date:
    return TODAY - timedelta(days=n)


def make(tmp_path, monkeypatch, exports, dry_run=False):
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", HASH_KEY)
    path = tmp_path / "bifrost_pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "log_exports": {"exports": exports},
                "landing": {"path": "landing", "retention_days": 3},
                "pipeline": {
                    "data_dir": "data",
                    "start_date": ago(60).isoformat(),
                    "export_retries": 0,
                    "raw_retention_days": 3,
                    "retention_dry_run": dry_run,
                },
            }
        )
    )
    app = load_config(path)
    return app, build_definitions(app, str(path)), dg.DagsterInstance.ephemeral()


def land_day(app, day: date, request_id: str):
    return land(app, [record(request_id=request_id, timestamp=f"{day.isoformat()}T10:00:00Z")])


def run(defs, instance, job: str, partition: str | None = None):
    result = defs.resolve_job_def(job).execute_in_process(partition_key=partition, instance=instance)
    assert result.success
    return result


def retention_metadata(result) -> dict:
    [output] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    return {k: v.value for k, v in output.step_output_data.metadata.items()}


@pytest.fixture
def daily_setup(tmp_path, monkeypatch):
    """Days 10, 9, 8 and 1 days ago landed; what happened to each is what retention must respect."""
    app, defs, instance = make(tmp_path, monkeypatch, [DAILY])
    for n in (10, 9, 8, 1):
        land_day(app, ago(n), f"r{n}")
    for n in (10, 9, 1):
        run(defs, instance, RAW_JOB, ago(n).isoformat())
    for n in (10, 9):
        run(defs, instance, "export_daily_files_job", ago(n).isoformat())
    land_day(app, ago(9), "late")  # landed after raw_logs read day -9
    run(defs, instance, RAW_JOB, ago(9).isoformat())  # raw -9 rebuilt: its export is now older than it
    land_day(app, ago(9), "later")  # and one more raw_logs has not read
    return app, defs, instance


def test_retention_removes_only_what_was_read_and_exported(daily_setup):
    app, defs, instance = daily_setup
    segments_before = {n: landing.list_segments(app.landing_root, ago(n)) for n in (10, 9, 8, 1)}
    result = run(defs, instance, RETENTION_JOB)
    meta = retention_metadata(result)
    removed = {(r["what"], r["day"]) for r in meta["removed"]}
    assert removed == {("landing_zone", ago(10).isoformat()), ("raw_logs", ago(10).isoformat())}
    kept = {(k["what"], k["day"]): k["reason"] for k in meta["kept"]}
    assert "landed after raw_logs read" in kept[("landing_zone", ago(9).isoformat())]
    assert "never materialized" in kept[("landing_zone", ago(8).isoformat())]
    assert f"daily_files {ago(9).isoformat()} (exported before raw_logs was rebuilt)" in kept[
        ("raw_logs", ago(9).isoformat())
    ]
    assert len(kept) == 3  # day -1 is inside the retention: not even considered
    # the files: exactly those of day -10 are gone
    assert landing.list_segments(app.landing_root, ago(10)) == []
    assert not (app.landing_dir / f"date={ago(10).isoformat()}").exists()
    assert not raw_path(app, ago(10)).exists() and not quarantine_path(app, ago(10)).exists()
    for n in (9, 8, 1):
        assert landing.list_segments(app.landing_root, ago(n)) == segments_before[n]
    assert raw_path(app, ago(9)).exists() and raw_path(app, ago(1)).exists()
    [landing_removal] = [r for r in meta["removed"] if r["what"] == "landing_zone"]
    assert landing_removal["paths"] == [str(s.path) for s in segments_before[10]]
    assert meta["landing_files"] == 1 and meta["landing_bytes"] == segments_before[10][0].size
    assert meta["raw_days"] == 1 and meta["raw_bytes"] > 0 and meta["dry_run"] is False
    # the removals are on the partitions' history too
    for key in ("raw_logs", "landing_zone"):
        records = instance.fetch_observations(dg.AssetKey(key), limit=10).records
        assert [r.partition_key for r in records] == [ago(10).isoformat()]


def test_an_emptied_landing_day_does_not_make_raw_logs_stale(daily_setup):
    from bifrost_pipeline.defs.exports import check_raw_ready

    app, defs, instance = daily_setup
    run(defs, instance, RETENTION_JOB)
    # raw_logs of day -10 read segments that are gone now: it is not older than the (empty) landing day,
    # and the landing sensor does not rebuild it (empty)
    check_raw_ready(instance, app, [ago(10)], "daily_files")
    sensor = defs.resolve_sensor_def("landing_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs) as ctx:
        keys = [r.partition_key for r in sensor.evaluate_tick(ctx).run_requests]
    assert ago(10).isoformat() not in keys


def test_dry_run_removes_nothing_and_reports_the_same(tmp_path, monkeypatch):
    app, defs, instance = make(tmp_path, monkeypatch, [DAILY], dry_run=True)
    land_day(app, ago(10), "a")
    run(defs, instance, RAW_JOB, ago(10).isoformat())
    run(defs, instance, "export_daily_files_job", ago(10).isoformat())
    meta = retention_metadata(run(defs, instance, RETENTION_JOB))
    assert meta["dry_run"] is True and "removed" not in meta
    assert {(r["what"], r["day"]) for r in meta["would_remove"]} == {
        ("landing_zone", ago(10).isoformat()),
        ("raw_logs", ago(10).isoformat()),
    }
    assert landing.list_segments(app.landing_root, ago(10)) and raw_path(app, ago(10)).exists()


def test_a_raw_day_of_an_unexported_weekly_window_is_kept(tmp_path, monkeypatch):
    app, defs, instance = make(tmp_path, monkeypatch, [WEEKLY])
    land_day(app, ago(10), "a")
    run(defs, instance, RAW_JOB, ago(10).isoformat())
    meta = retention_metadata(run(defs, instance, RETENTION_JOB))
    [week] = covering_partitions(Schedule(**WEEKLY["schedule"]), ago(10), ago(60))
    assert [(r["what"], r["day"]) for r in meta["removed"]] == [("landing_zone", ago(10).isoformat())]
    [kept] = meta["kept"]
    assert kept["what"] == "raw_logs" and f"paris_weekly {week} (never exported)" in kept["reason"]
    assert raw_path(app, ago(10)).exists()


def test_no_retention_no_job(tmp_path, monkeypatch):
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", HASH_KEY)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"log_exports": {"exports": [DAILY]}}))
    defs = build_definitions(load_config(path), str(path))
    assert RETENTION_JOB not in {j.name for j in defs.jobs}


@pytest.mark.parametrize(
    "schedule",
    [
        {"frequency": "daily", "timezone": "UTC"},
        {"frequency": "daily", "timezone": "Pacific/Kiritimati"},
        {"frequency": "daily", "timezone": "America/Los_Angeles"},
        {"frequency": "weekly", "day": "sunday", "timezone": "Europe/Paris"},
        {"frequency": "weekly", "day": "wednesday", "timezone": "Pacific/Auckland"},
        {"frequency": "monthly", "day": 1, "timezone": "Asia/Tokyo"},
        {"frequency": "monthly", "day": 15, "timezone": "America/New_York"},
    ],
)
def test_covering_partitions_agree_with_dagsters_windows(tmp_path, schedule):
    from bifrost_pipeline_tests.helpers import make_app

    export = {**DAILY, "schedule": {**schedule, "time": "03:00"}}
    app = make_app(tmp_path, [export])
    partitions = export_partitions(app, app.exports[0])
    s = app.exports[0].schedule
    day = date(2024, 2, 20)
    for _ in range(60):  # across the 2024 DST changes and month ends
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        expected = overlapping_partitions(partitions, s, start, start + timedelta(days=1))
        assert covering_partitions(s, day, app.pipeline.start_date) == expected, day
        day += timedelta(days=3)


def test_a_remote_landing_zone_and_its_local_mirror_are_cleaned(tmp_path, monkeypatch):
    import uuid

    import fsspec

    root = f"memory://retention-{uuid.uuid4().hex[:8]}/landing"
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", HASH_KEY)
    path = tmp_path / "bifrost_pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "log_exports": {"exports": [DAILY]},
                "landing": {"path": root, "retention_days": 3},
                "pipeline": {"data_dir": "data", "start_date": ago(60).isoformat(), "export_retries": 0},
            }
        )
    )
    app = load_config(path)
    defs, instance = build_definitions(app, str(path)), dg.DagsterInstance.ephemeral()
    for n in (10, 9):
        land_day(app, ago(n), f"r{n}")
    landing.upload_segments(app.landing_dir, root)
    run(defs, instance, RAW_JOB, ago(10).isoformat())  # mirrors day -10 into the local side, then reads it
    meta = retention_metadata(run(defs, instance, RETENTION_JOB))
    [removal] = meta["removed"]
    assert removal["day"] == ago(10).isoformat() and removal["paths"][0].startswith("memory://")
    assert [k["day"] for k in meta["kept"]] == [ago(9).isoformat()]  # never materialized
    assert landing.list_segments(root, ago(10)) == [] and len(landing.list_segments(root, ago(9))) == 1
    assert not (app.landing_dir / f"date={ago(10).isoformat()}").exists()
    fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True)
