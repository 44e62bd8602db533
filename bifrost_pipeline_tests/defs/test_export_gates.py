"""What stands between raw_logs and an export: the raw day's numbers and blocking checks, when an export
waits for a raw day or fails at once, and the completeness check of every export partition."""

import json
from datetime import UTC, date, datetime

import dagster as dg
import duckdb
import pytest

from bifrost_pipeline.definitions import build_definitions
from bifrost_pipeline.defs import raw as raw_defs
from bifrost_pipeline.defs.exports import CHECK_ROWS, check_raw_ready
from bifrost_pipeline.defs.raw import RAW, RAW_JOB
from bifrost_pipeline.destinations.duckdb import DuckDBDestination
from bifrost_pipeline.destinations.local import LocalDestination
from bifrost_pipeline.exports import make_destination
from bifrost_pipeline_tests.defs.test_definitions import EXPORTS
from bifrost_pipeline_tests.helpers import land, record, write_config

DAY = "2024-01-15"


@pytest.fixture
def setup(tmp_path, monkeypatch):
    app, path = write_config(tmp_path, EXPORTS, monkeypatch)
    return app, build_definitions(app, str(path)), dg.DagsterInstance.ephemeral(), str(path)


def run_raw(defs, instance, day=DAY, *, success=True):
    result = defs.resolve_job_def(RAW_JOB).execute_in_process(
        partition_key=day, instance=instance, raise_on_error=False
    )
    assert result.success is success
    return result


def run_export(defs, instance, name="daily_files", key=DAY):
    return defs.resolve_job_def(f"export_{name}_job").execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False
    )


def failure_message(result) -> str:
    failure = next(ev for ev in result.all_events if ev.is_step_failure)
    return failure.step_failure_data.error.message


def test_raw_metadata_counts_every_line_read_and_says_which_copy_wins(setup):
    app, defs, instance, _ = setup
    land(app, [record(request_id="a"), record(request_id="a"), record(request_id="a", model="changed"), b"", b"{"])
    result = run_raw(defs, instance)
    [mat] = [m for m in result.asset_materializations_for_node("validate_landed_day") if m.asset_key == RAW]
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["lines_read"] == 5
    assert (meta["valid_rows"], meta["quarantined_rows"], meta["blank_lines"]) == (1, 1, 1)
    assert (meta["duplicates_dropped"], meta["duplicates_differing"]) == (2, 1)
    assert meta["which_copy_wins"].startswith("the first landed")
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    accounted = checks["every_line_accounted_for"]
    assert accounted.passed and accounted.metadata["unaccounted_lines"].value == 0
    assert accounted.metadata["lines_read"].value == 5 and accounted.metadata["duplicates_dropped"].value == 2


def test_error_checks_are_blocking_and_the_quarantine_share_only_warns(setup):
    _, defs, _, _ = setup
    specs = {s.name: s for s in defs.resolve_assets_def(RAW).check_specs}
    assert {n for n, s in specs.items() if s.blocking} == {
        "every_line_accounted_for",
        "timestamps_in_partition",
        "conforms_to_schema",
        "unique_request_id",
    }
    assert not specs["quarantine_share_below_threshold"].blocking


def lose_a_line(monkeypatch):
    """validate_day as if one line read had gone nowhere (what the accounting check is there to catch)."""
    real = raw_defs.validate_day

    def losing(app, day):
        result = real(app, day)
        result.lines_read += 1
        return result

    monkeypatch.setattr(raw_defs, "validate_day", losing)


def test_an_export_does_not_run_on_a_day_that_failed_a_blocking_check(setup, monkeypatch):
    app, defs, instance, config_path = setup
    land(app, [record(request_id="a")])
    with monkeypatch.context() as patched:
        lose_a_line(patched)
        failed_raw = run_raw(defs, instance, success=False)  # the blocking check fails the raw run
    assert "every_line_accounted_for" in failure_message(failed_raw)

    export = run_export(defs, instance)
    assert not export.success
    message = failure_message(export)
    assert "raw_logs 2024-01-15 failed its blocking check(s) every_line_accounted_for (" in message
    assert "unaccounted_lines=1" in message and "quarantine" in message
    assert f"bifrost-pipeline backfill --from {DAY} --to {DAY} --config {config_path}" in message
    assert not (app.data_dir / "out" / "daily_files" / DAY).exists()  # nothing was exported
    with pytest.raises(dg.Failure) as err:
        check_raw_ready(instance, app, [date(2024, 1, 15)], "daily_files")
    assert err.value.allow_retries is False  # retrying cannot fix the data

    run_raw(defs, instance)  # fixed and re-materialized: the export runs
    assert run_export(defs, instance).success


def test_a_day_never_built_with_nothing_landed_fails_at_once_with_the_command(setup):
    app, _, instance, config_path = setup
    day = date(2024, 1, 15)
    later = datetime(2024, 2, 1, tzinfo=UTC)
    with pytest.raises(dg.Failure) as err:
        check_raw_ready(instance, app, [day, date(2024, 1, 16)], "weekly", config_path=config_path, now=later)
    assert err.value.allow_retries is False
    assert "raw_logs 2024-01-15 has never been materialized and nothing has landed for it" in err.value.description
    assert f"bifrost-pipeline backfill --from 2024-01-15 --to 2024-01-16 --config {config_path}" in (
        err.value.description
    )
    # the daily raw schedule has not closed the day yet (00:10 UTC the next day): wait for it
    with pytest.raises(dg.Failure) as err:
        check_raw_ready(instance, app, [day], "weekly", now=datetime(2024, 1, 16, 0, 5, tzinfo=UTC))
    assert err.value.allow_retries is True
    # segments landed: the landing sensor builds the day, so the export waits for it
    land(app, [record(request_id="a")])
    with pytest.raises(dg.Failure) as err:
        check_raw_ready(instance, app, [day], "weekly", now=later)
    assert err.value.allow_retries is True and "landing sensor" in err.value.description


def rows_check(result) -> dg.AssetCheckEvaluation:
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == CHECK_ROWS]
    return check


def test_every_export_partition_checks_the_rows_read_back_from_its_destination(setup):
    app, defs, instance, _ = setup
    land(app, [record(request_id=f"r{i}", status="error" if i < 2 else "success") for i in range(5)])
    for d in range(14, 22):
        run_raw(defs, instance, f"2024-01-{d:02d}")
    daily = rows_check(run_export(defs, instance))
    assert daily.passed
    assert daily.metadata["datasets"].value == {
        "request_logs": {"expected": 5, "at_destination": 5, "missing": 0},
        "error_logs": {"expected": 2, "at_destination": 2, "missing": 0},
    }
    weekly = rows_check(run_export(defs, instance, "paris_weekly"))
    assert weekly.passed and weekly.metadata["datasets"].value["metrics"]["at_destination"] >= 1


class FileLosingLocal(LocalDestination):
    """Writes the partition, then its error_logs file disappears (a lifecycle rule, a careless hand)."""

    def write_partition(self, output):
        result = super().write_partition(output)
        self.delete([self.prefix_for(output) + "error_logs.parquet"])
        return result


class RowLosingDuckDB(DuckDBDestination):
    """Loads the partition, then one row of it is gone."""

    def write_partition(self, output):
        result = super().write_partition(output)
        with duckdb.connect(str(self.path)) as con:
            con.execute(f"DELETE FROM {self.table}_metrics WHERE rowid = (SELECT min(rowid) FROM {self.table}_metrics)")
        return result


@pytest.mark.parametrize(
    "name, lossy, dataset, expected_at_destination",
    [("daily_files", FileLosingLocal, "error_logs", 0), ("paris_weekly", RowLosingDuckDB, "metrics", None)],
)
def test_a_destination_that_loses_rows_fails_the_check_with_the_numbers(
    setup, monkeypatch, name, lossy, dataset, expected_at_destination
):
    app, defs, instance, _ = setup
    land(app, [record(request_id="a", status="error"), record(request_id="b", model="gpt-4o-mini")])
    for d in range(14, 22):
        run_raw(defs, instance, f"2024-01-{d:02d}")

    def lossy_destination(app_cfg, export, log=None):
        real = make_destination(app_cfg, export, log)
        return lossy(real.config, real.context)

    monkeypatch.setattr("bifrost_pipeline.defs.exports.make_destination", lossy_destination)
    key = DAY if name == "daily_files" else "2024-01-15"
    check = rows_check(run_export(defs, instance, name, key))
    assert not check.passed
    numbers = json.loads(json.dumps(check.metadata["datasets"].value))[dataset]
    assert numbers["missing"] == 1
    assert numbers["at_destination"] == numbers["expected"] - 1
    if expected_at_destination is not None:
        assert numbers["at_destination"] == expected_at_destination
    assert f"{dataset}: {numbers['at_destination']} at the destination, {numbers['expected']} expected" in (
        check.metadata["mismatch"].value
    )


def test_the_cli_backfill_reports_dropped_duplicates_and_stops_on_a_failed_completeness_check(setup, monkeypatch):
    import io
    from pathlib import Path

    from bifrost_pipeline.backfill import backfill

    app, _, _, config_path = setup
    monkeypatch.setenv("DAGSTER_HOME", str(Path(config_path).parent / "dagster_home"))
    land(app, [record(request_id="a", status="error"), record(request_id="a", status="error")])

    def lossy_destination(app_cfg, export, log=None):
        real = make_destination(app_cfg, export, log)
        return FileLosingLocal(real.config, real.context) if export.name == "daily_files" else real

    monkeypatch.setattr("bifrost_pipeline.defs.exports.make_destination", lossy_destination)
    out = io.StringIO()
    assert backfill(app, Path(config_path), [date(2024, 1, 15)], out=out) is False
    text = out.getvalue()
    assert "1 valid, 0 quarantined, 1 duplicate(s) dropped" in text
    assert "CHECK FAILED: rows_at_destination_match (error_logs: 0 at the destination, 1 expected)" in text
