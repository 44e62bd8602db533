"""raw_logs of a day split by hour (pipeline.hour_groups): one daily partition, several steps, the same day."""

from datetime import date

import dagster as dg
import polars as pl
import pytest
import yaml

from bifrost_pipeline import validation
from bifrost_pipeline.config import load_config
from bifrost_pipeline.definitions import build_definitions
from bifrost_pipeline.defs.raw import BLOCKING_CHECKS, QUARANTINE, RAW, RAW_JOB
from bifrost_pipeline_tests.helpers import HASH_KEY
from bifrost_pipeline_tests.test_validation import land_hostile_day

DAY = date(2024, 1, 15)


def configure(tmp_path, monkeypatch, **pipeline):
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", HASH_KEY)
    path = tmp_path / f"bifrost_pipeline-{pipeline.get('hour_groups', 1)}.yaml"
    path.write_text(yaml.safe_dump({
        "landing": {"path": "landing"},
        "pipeline": {"data_dir": "data", "start_date": "2024-01-01", **pipeline},
    }))
    app = load_config(path)
    return app, build_definitions(app, str(path)), path


def materialized(result) -> tuple[dict, dict]:
    """(asset key -> metadata values, check name -> (passed, metadata values)) of a raw_logs run."""
    mats = {
        e.asset_key: {k: v.value for k, v in e.step_materialization_data.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }
    checks = {
        c.check_name: (c.passed, {k: v.value for k, v in c.metadata.items()})
        for c in result.get_asset_check_evaluations()
    }
    return mats, checks


def test_a_split_day_materializes_and_checks_exactly_as_the_unsplit_day(tmp_path, monkeypatch):
    app, whole_defs, _ = configure(tmp_path, monkeypatch)
    _, split_defs, _ = configure(tmp_path, monkeypatch, hour_groups=3)
    land_hostile_day(app)
    instance = dg.DagsterInstance.ephemeral()

    whole = whole_defs.resolve_job_def(RAW_JOB).execute_in_process(partition_key=DAY.isoformat(), instance=instance)
    want_rows = pl.read_parquet(validation.raw_path(app, DAY))
    want_quarantine = pl.read_parquet(validation.quarantine_path(app, DAY)).drop("validated_at")
    split = split_defs.resolve_job_def(RAW_JOB).execute_in_process(partition_key=DAY.isoformat(), instance=instance)

    assert whole.success and split.success
    assert materialized(split) == materialized(whole)
    mats, checks = materialized(split)
    assert mats[RAW]["duplicates_dropped"] == 7 and mats[QUARANTINE]["dagster/row_count"] == 4
    assert all(checks[name][0] for name in BLOCKING_CHECKS)
    assert pl.read_parquet(validation.raw_path(app, DAY)).equals(want_rows)
    assert pl.read_parquet(validation.quarantine_path(app, DAY)).drop("validated_at").equals(want_quarantine)
    steps = {e.step_key for e in split.all_node_events if e.step_key}
    assert steps == {
        "validate_landed_day.validate_hours_00_07", "validate_landed_day.validate_hours_08_15",
        "validate_landed_day.validate_hours_16_23", "validate_landed_day.combine_validated_day",
    }
    assert not any((app.raw_dir / ".split" / f"date={DAY}").iterdir())  # the run's stages are gone
    # one partition to the user: the latest materialization of the day is the split run's
    latest = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=RAW, asset_partitions=[DAY.isoformat()]), limit=1)
    assert latest.records[0].run_id == split.run_id


def test_the_hour_steps_run_in_parallel_processes_under_the_multiprocess_executor(tmp_path, monkeypatch):
    """As `dagster dev` runs the job: a reconstructable code location, a persistent instance, each step in
    its own process (up to pipeline.hour_group_concurrency at once)."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    app, defs, path = configure(tmp_path, monkeypatch, hour_groups=2, hour_group_concurrency=2)
    assert defs.resolve_job_def(RAW_JOB).executor_def.name == "multiprocess"
    land_hostile_day(app)
    monkeypatch.setenv("BIFROST_PIPELINE_CONFIG", str(path))
    recon = ReconstructableRepository.for_module("bifrost_pipeline.definitions", "defs").get_reconstructable_job(RAW_JOB)
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        result = dg.execute_job(recon, instance=instance, tags={"dagster/partition": DAY.isoformat()})
        assert result.success
        pids = {
            e.step_key: e.pid for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START
        }
    assert len(pids) == 3 and len(set(pids.values())) == 3  # two hour steps and the combine step
    assert sorted(pl.read_parquet(validation.raw_path(app, DAY))["request_id"]) == list("abcdefghij")


def test_a_split_day_runs_its_steps_in_parallel_by_default_and_on_kubernetes_in_pods(tmp_path, monkeypatch):
    _, defs, _ = configure(tmp_path, monkeypatch, hour_groups=4)  # no concurrency given: one per core
    executor = defs.resolve_job_def(RAW_JOB).executor_def
    assert executor.name == "multiprocess"
    _, defs, _ = configure(tmp_path, monkeypatch, hour_groups=1)
    assert defs.resolve_job_def(RAW_JOB).executor_def.name == "in_process"
    _, defs, _ = configure(tmp_path, monkeypatch, hour_groups=4, hour_group_executor="k8s_job", hour_group_concurrency=3)
    assert defs.resolve_job_def(RAW_JOB).executor_def.name == "k8s"
    with pytest.raises(Exception, match="hour_group_executor"):
        configure(tmp_path, monkeypatch, hour_groups=4, hour_group_executor="celery")


def test_hour_groups_out_of_range_are_refused(tmp_path, monkeypatch):
    with pytest.raises(Exception, match="hour_groups"):
        configure(tmp_path, monkeypatch, hour_groups=25)
