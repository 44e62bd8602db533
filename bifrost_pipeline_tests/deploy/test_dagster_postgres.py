"""The Dagster instance of deploy/dagster-postgres.yaml on a real PostgreSQL 15, run by the real daemon.

One daemon (`dagster-daemon run` on the repository's workspace.yaml) serves, against the same database:
a schedule tick (raw_logs_daily_schedule, its start moved back a day so its last tick is due), a sensor
tick (landing_sensor sees a freshly landed day), a 30-day raw_logs backfill and a 3-day backfill of a DuckDB
export, both submitted with `dagster job backfill`. The queue must run raw days in parallel (up to
max_concurrent_runs) while the export's runs, tagged bifrost/warehouse=duckdb, never overlap.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INSTANCE_CONFIG = ROOT / "deploy" / "dagster-postgres.yaml"
WORKSPACE = ROOT / "workspace.yaml"
VENV_BIN = Path(sys.executable).parent

BACKFILL_DAYS = 30
EXPORT_DAYS = 3
EXPORT = "wh"
RECORDS_PER_DAY = 5
# For everything the daemon runs (35 runs): about 2 minutes on an idle 2-core machine, many more when the
# machine is shared (each run is a process that imports Dagster and the code location).
DEADLINE_S = 900


def _write_pipeline_config(path: Path, start: date) -> None:
    config = {
        "landing": {"path": "landing"},
        "pipeline": {"data_dir": "data", "start_date": start.isoformat(), "sensor_interval_s": 5},
        "log_exports": {
            "enabled": True,
            "exports": [
                {
                    "name": EXPORT,
                    "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
                    "destination": {"type": "duckdb", "config": {"table": "request_logs"}},
                    "data": {"format": "parquet", "include": ["request_logs"]},
                }
            ],
        },
    }
    path.write_text(yaml.safe_dump(config))


def _land_days(config: Path, days: list[date]) -> None:
    from bifrost_pipeline.config import load_config
    from bifrost_pipeline_tests.helpers import land, record

    app = load_config(config)
    for day in days:
        stamp = f"{day.isoformat()}T10:30:00Z"
        land(app, [record(timestamp=stamp, request_id=f"{day}-{i}") for i in range(RECORDS_PER_DAY)])


def _backdate_schedule(instance, name: str, start: datetime) -> None:
    """Store the schedule's state as if the daemon had run it since `start`: its last due tick fires now."""
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        ScheduleInstigatorData,
    )
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(WORKSPACE)])) as process:
        request = process.create_request_context()
        (entry,) = request.get_code_location_entries().values()
        assert entry.code_location is not None, f"code location failed to load: {entry.load_error}"
        (repository,) = entry.code_location.get_repositories().values()
        schedule = repository.get_schedule(name)
        instance.add_instigator_state(
            InstigatorState(
                schedule.get_remote_origin(),
                InstigatorType.SCHEDULE,
                InstigatorStatus.DECLARED_IN_CODE,
                ScheduleInstigatorData(schedule.cron_schedule, start.timestamp()),
            )
        )


def _backfill(env: dict[str, str], job: str, first: date, last: date) -> str:
    """Submit a backfill with Dagster's CLI (it queues the runs; the daemon runs them); returns its id."""
    cmd = [str(VENV_BIN / "dagster"), "job", "backfill", "-w", str(WORKSPACE), "-j", job]
    cmd += ["--from", first.isoformat(), "--to", last.isoformat(), "--noprompt"]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    found = re.search(r"Launched backfill job `([^`]+)`", done.stdout)
    assert done.returncode == 0 and found, f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    return found.group(1)


def _runs(instance, **tags: str) -> list:
    from dagster import RunsFilter

    return list(instance.get_run_records(RunsFilter(tags=tags)))


def _failure_text(instance, record) -> str:
    from dagster import DagsterEventType

    events = instance.all_logs(record.dagster_run.run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE})
    return "; ".join(str(e.dagster_event.event_specific_data) for e in events if e.dagster_event)[:2000]


def _wait(what: str, ready: Callable[[], bool], daemon_log: Path, deadline: float) -> None:
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; daemon log:\n{daemon_log.read_text()[-4000:]}")
        time.sleep(1)


def _finished(instance, count: int, **tags: str) -> Callable[[], bool]:
    from dagster import DagsterRunStatus

    def check() -> bool:
        records = _runs(instance, **tags)
        failed = [r for r in records if r.dagster_run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)]
        if failed:
            pytest.fail(f"run {failed[0].dagster_run.run_id} ({tags}) failed: {_failure_text(instance, failed[0])}")
        return sum(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in records) >= count

    return check


def _max_overlap(records) -> int:
    """The most runs that were executing at one instant (from their start and end times)."""
    edges = sorted([(r.start_time, 1) for r in records] + [(r.end_time, -1) for r in records])
    running = peak = 0
    for _, step in edges:  # at equal times an end (-1) sorts before a start (+1)
        running += step
        peak = max(peak, running)
    return peak


@pytest.fixture
def pg_instance_env(postgres_server, tmp_path, monkeypatch) -> dict[str, str]:
    """DAGSTER_HOME holding deploy/dagster-postgres.yaml as is, its database, and the env it reads."""
    database = postgres_server.create_database("dagster_deploy_test")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_CONFIG.read_text())
    env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(postgres_server.port),
        "DAGSTER_PG_USER": postgres_server.user,
        "DAGSTER_PG_PASSWORD": postgres_server.password,
        "DAGSTER_PG_DB": database,
        "BIFROST_PIPELINE_CONFIG": str(tmp_path / "bifrost_pipeline.yaml"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def daemon(pg_instance_env, tmp_path):
    log = tmp_path / "daemon.log"
    holder: dict[str, subprocess.Popen] = {}

    def start() -> Path:
        with log.open("wb") as out:
            holder["proc"] = subprocess.Popen(
                [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
                env=pg_instance_env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its code server and run processes go with it
            )
        return log

    yield start
    proc = holder.get("proc")
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Code servers that Dagster started in a session of their own outlive a daemon that did not stop
    # cleanly: end each process that runs on this test's DAGSTER_HOME, by its PID.
    for pid in _processes_with_env("DAGSTER_HOME", pg_instance_env["DAGSTER_HOME"]):
        os.kill(pid, signal.SIGKILL)


def _processes_with_env(name: str, value: str) -> list[int]:
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@pytest.mark.timeout(DEADLINE_S + 300)
def test_daemon_on_postgres_runs_schedule_sensor_and_parallel_backfill(pg_instance_env, daemon, tmp_path):
    from dagster import AssetKey, DagsterInstance

    from bifrost_pipeline.defs.raw import RAW, RAW_JOB

    today = datetime.now(UTC).date()
    # Backfilled days lie beyond the landing sensor's look-back (35 days), so only the backfill runs them;
    # the sensor sees the one day landed two days ago.
    backfill = [today - timedelta(days=66 - i) for i in range(BACKFILL_DAYS)]
    exported = [today - timedelta(days=70 - i) for i in range(EXPORT_DAYS)]
    sensed = today - timedelta(days=2)
    config = Path(pg_instance_env["BIFROST_PIPELINE_CONFIG"])
    _write_pipeline_config(config, start=today - timedelta(days=75))
    _land_days(config, [*exported, *backfill, sensed])

    instance = DagsterInstance.get()  # creates the schema in PostgreSQL
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    max_runs = instance.run_coordinator.get_run_queue_config().max_concurrent_runs

    # The export's raw days exist before its backfill is queued, so its runs can start at once.
    from bifrost_pipeline.config import load_config
    from bifrost_pipeline.definitions import build_definitions

    defs = build_definitions(load_config(config), str(config))
    for day in exported:
        assert defs.get_job_def(RAW_JOB).execute_in_process(partition_key=day.isoformat(), instance=instance).success
    _backdate_schedule(instance, "raw_logs_daily_schedule", datetime.now(UTC) - timedelta(hours=24, minutes=30))

    log = daemon()  # it loads the code location while the backfills are submitted
    deadline = time.monotonic() + DEADLINE_S
    # Exports first in the queue: each then waits only for the previous one (the per-warehouse limit),
    # while raw days fill the other slots.
    export_job = f"export_{EXPORT}_job"
    export_backfill = _backfill(pg_instance_env, export_job, exported[0], exported[-1])
    raw_backfill = _backfill(pg_instance_env, RAW_JOB, backfill[0], backfill[-1])

    _wait("the raw_logs backfill", _finished(instance, BACKFILL_DAYS, **{"dagster/backfill": raw_backfill}), log, deadline)
    _wait("the export backfill", _finished(instance, EXPORT_DAYS, **{"dagster/backfill": export_backfill}), log, deadline)
    _wait("the landing sensor's run", _finished(instance, 1, **{"dagster/sensor_name": "landing_sensor"}), log, deadline)
    _wait("the schedule's run", _finished(instance, 1, **{"dagster/schedule_name": "raw_logs_daily_schedule"}), log, deadline)

    materialized = instance.get_materialized_partitions(RAW)
    assert {d.isoformat() for d in [*backfill, *exported, sensed]} <= materialized
    assert {d.isoformat() for d in exported} <= instance.get_materialized_partitions(AssetKey(f"export_{EXPORT}"))
    (sensor_run,) = _runs(instance, **{"dagster/sensor_name": "landing_sensor"})
    assert sensor_run.dagster_run.tags["dagster/partition"] == sensed.isoformat()

    raw_runs = _runs(instance, **{"dagster/backfill": raw_backfill})
    export_runs = _runs(instance, **{"dagster/backfill": export_backfill})
    assert len(raw_runs) == BACKFILL_DAYS and len(export_runs) == EXPORT_DAYS
    assert all(r.dagster_run.tags.get("bifrost/warehouse") == "duckdb" for r in export_runs)
    everything = _runs(instance)
    assert 2 <= _max_overlap(raw_runs), "the backfill's runs never ran in parallel"
    assert _max_overlap(everything) <= max_runs, f"more than max_concurrent_runs={max_runs} at once"
    assert _max_overlap(export_runs) == 1, "two runs of one warehouse ran at once"
    assert _max_overlap(export_runs + raw_runs) >= 2, "the export runs held back the raw days"
