"""raw_logs_updated_sensor starts no duplicate of an export partition that other work is about to run."""

import io
import json
import time
from datetime import date

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from bifrost_pipeline import backfill_plans
from bifrost_pipeline.backfill import backfill
from bifrost_pipeline.definitions import build_definitions
from bifrost_pipeline.defs.raw import RAW_JOB
from bifrost_pipeline_tests.helpers import land, record, write_config

DAY = "2024-01-15"
JOB = "export_daily_files_job"
EXPORTS = [{
    "name": "daily_files",
    "schedule": {"frequency": "daily"},
    "destination": {"type": "local", "config": {"path": "out"}},
    "data": {"include": ["request_logs"]},
}]


@pytest.fixture
def setup(tmp_path, monkeypatch):
    app, path = write_config(tmp_path, EXPORTS, monkeypatch)
    with dg.instance_for_test() as instance:
        yield app, path, build_definitions(app, str(path)), instance


def run(defs, instance, job: str, key: str) -> None:
    assert defs.resolve_job_def(job).execute_in_process(partition_key=key, instance=instance).success


def tick(defs, instance, cursor: str | None):
    sensor = defs.resolve_sensor_def("raw_logs_updated_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as ctx:
        return sensor.evaluate_tick(ctx)


@pytest.fixture
def raw_rebuilt(setup):
    """DAY exported, then rebuilt from a late segment: the sensor would re-export it. The cursor before."""
    app, _, defs, instance = setup
    land(app, [record(request_id="a")])
    run(defs, instance, RAW_JOB, DAY)
    run(defs, instance, JOB, DAY)
    cursor = tick(defs, instance, None).cursor  # starts from now
    land(app, [record(request_id="late")])
    run(defs, instance, RAW_JOB, DAY)
    return cursor


def queued_run(job: str, key: str) -> dg.DagsterRun:
    """A run as the queued run coordinator files it, before the daemon launches it (a queued run must
    say where its code is; these tests have no code server, and nothing launches it)."""
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__)), "__repository__"),
        job,
    )
    return dg.DagsterRun(
        job_name=job, status=dg.DagsterRunStatus.QUEUED, tags={"dagster/partition": key}, remote_job_origin=origin
    )


def requested(result) -> list[tuple[str, str]]:
    return [(r.job_name, r.partition_key) for r in result.run_requests]


def test_without_other_work_the_partition_is_re_exported(setup, raw_rebuilt):
    _, _, defs, instance = setup
    assert requested(tick(defs, instance, raw_rebuilt)) == [(JOB, DAY)]


def test_a_queued_run_of_the_partition_blocks(setup, raw_rebuilt):
    _, _, defs, instance = setup
    instance.add_run(queued_run(JOB, DAY))
    result = tick(defs, instance, raw_rebuilt)
    assert requested(result) == []
    assert int(result.cursor) > int(raw_rebuilt)  # done with: the queued run will read the new raw day


def test_a_started_run_makes_the_sensor_wait_for_it(setup, raw_rebuilt):
    _, _, defs, instance = setup
    started = instance.create_run_for_job(
        defs.resolve_job_def(JOB), status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": DAY}
    )
    result = tick(defs, instance, raw_rebuilt)
    assert requested(result) == [] and result.cursor == raw_rebuilt  # it may have read the old raw day
    instance.report_run_canceled(started)
    assert requested(tick(defs, instance, raw_rebuilt)) == [(JOB, DAY)]


def test_an_in_process_backfill_plan_blocks_while_its_heartbeat_is_fresh(setup, raw_rebuilt):
    _, _, defs, instance = setup
    with backfill_plans.announced(instance, [(JOB, DAY)]):
        assert requested(tick(defs, instance, raw_rebuilt)) == []
    assert backfill_plans.planned(instance) == set()  # cleared at the end
    assert requested(tick(defs, instance, raw_rebuilt)) == [(JOB, DAY)]


def test_a_stale_plan_does_not_block(setup, raw_rebuilt):
    _, _, defs, instance = setup
    dead = {"dead": {"heartbeat": time.time() - backfill_plans.STALE_AFTER_S - 1, "exports": [[JOB, DAY]]}}
    instance.daemon_cursor_storage.set_cursor_values({backfill_plans.KEY: json.dumps(dead)})
    assert requested(tick(defs, instance, raw_rebuilt)) == [(JOB, DAY)]


def test_a_dagster_backfill_that_has_yet_to_run_the_partition_blocks(setup, raw_rebuilt):
    _, _, defs, instance = setup
    instance.add_backfill(
        PartitionBackfill.from_asset_partitions(
            backfill_id="bf1", asset_graph=defs.resolve_asset_graph(), partition_names=[DAY],
            asset_selection=[dg.AssetKey("export_daily_files")], backfill_timestamp=time.time(), tags={},
            dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None,
        )
    )
    assert requested(tick(defs, instance, raw_rebuilt)) == []
    (bf,) = instance.get_backfills()
    instance.update_backfill(bf.with_status(BulkActionStatus.COMPLETED_SUCCESS))
    assert requested(tick(defs, instance, raw_rebuilt)) == [(JOB, DAY)]


def test_the_cli_backfill_tags_its_runs_and_announces_its_plan_until_the_end(setup, monkeypatch):
    app, path, _, _ = setup
    monkeypatch.setenv("DAGSTER_HOME", str(path.parent))
    land(app, [record(request_id="a")])
    seen = []
    done = backfill_plans.Plan.done

    def spy(plan, job, key):
        seen.append(backfill_plans.planned(plan.instance))  # before this run's partition is dropped
        done(plan, job, key)

    monkeypatch.setattr(backfill_plans.Plan, "done", spy)
    assert backfill(app, path, [date(2024, 1, 15)], out=io.StringIO())
    assert seen == [{(JOB, DAY)}]
    instance = dg.DagsterInstance.get()
    runs = instance.get_runs()
    assert {r.job_name for r in runs} == {RAW_JOB, JOB}
    assert len({r.tags.get(backfill_plans.TAG) for r in runs}) == 1 and None not in {
        r.tags.get(backfill_plans.TAG) for r in runs
    }
    assert backfill_plans.planned(instance) == set()
