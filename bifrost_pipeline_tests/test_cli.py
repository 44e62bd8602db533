"""The `bifrost-pipeline` command as a user runs it."""

import subprocess
import sys
from pathlib import Path

import pytest

from bifrost_pipeline.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "bifrost_pipeline.cli", *args], capture_output=True, text=True, env=env, check=False
    )


def test_validate_config_prints_each_export(monkeypatch, capsys, tmp_path):
    import yaml

    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", "k")
    shipped = yaml.safe_load((ROOT / "bifrost_pipeline.yaml").read_text())
    shipped["pipeline"]["start_date"] = "2026-01-01"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(shipped))
    assert main(["validate-config", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert "export daily_local_export" in out and "asset:       export_daily_local_export" in out
    assert "every sunday at 03:00 Europe/Paris" in out
    assert "data:        request_logs, response_logs, error_logs, traces as parquet, gzip-compressed" in out
    # Every frequency says where its partitions start, not only daily.
    assert (
        "partitions:  weekly windows in Europe/Paris, the first 2026-01-04 00:00 CET to 2026-01-11 00:00 CET "
        "(partitions from 2026-01-01 (pipeline.start_date))"
    ) in out
    assert "note:" not in out  # the key comes from the environment


def test_without_start_date_partitions_start_at_the_first_day_with_data(tmp_path, capsys):
    from datetime import UTC, date, datetime

    from bifrost_pipeline.config import load_config

    config = tmp_path / "c.yaml"
    config.write_text("log_exports: {exports: []}\npipeline: {data_dir: data}\nlanding: {path: landing}\n")
    assert load_config(config).partitions_start == datetime.now(UTC).date()  # no data yet: today
    (tmp_path / "landing" / "date=2026-03-04" / "hour=10").mkdir(parents=True)
    (tmp_path / "data" / "raw_logs" / "date=2026-03-02").mkdir(parents=True)  # raw kept, segments gone
    assert load_config(config).partitions_start == date(2026, 3, 2)
    assert main(["validate-config", str(config)]) == 0
    assert "daily UTC partitions from 2026-03-02 (the first day with data" in capsys.readouterr().out


def test_validate_config_says_uncompressed_and_when_partitions_start(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        "log_exports:\n  exports:\n    - name: m\n      schedule: {frequency: monthly, day: 3}\n"
        "      destination: {type: local, config: {}}\n      data: {format: csv}\n"
        "pipeline: {start_date: '2026-02-10'}\n"
    )
    assert main(["validate-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "data:        request_logs as csv, uncompressed" in out
    assert "monthly windows in UTC, the first 2026-03-03 00:00 UTC to 2026-04-03 00:00 UTC" in out


def test_the_shipped_config_hashes_with_the_environment_key_else_says_it_uses_the_demo_key(monkeypatch, capsys):
    from bifrost_pipeline.config import load_config
    from bifrost_pipeline.demo import DEMO_KEY

    config = ROOT / "bifrost_pipeline.yaml"
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", "my-secret")
    (step,) = [t for t in load_config(config).exports[0].data.transformations if t.type == "anonymize"]
    assert step.key.get_secret_value() == "my-secret"

    monkeypatch.delenv("BIFROST_ANONYMIZE_KEY")
    (step,) = [t for t in load_config(config).exports[0].data.transformations if t.type == "anonymize"]
    assert step.key.get_secret_value() == DEMO_KEY
    assert main(["validate-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "note: BIFROST_ANONYMIZE_KEY is not set: the ids of daily_local_export are hashed with the demo key" in out
    assert DEMO_KEY not in out


def test_validate_config_lists_every_error_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "log_exports:\n  exports:\n    - name: x\n      schedule: {frequency: weekly, day: sundy}\n"
        "      destination: {type: local, config: {}}\n      data: {format: xml}\nclient: {colour: red}\n"
    )
    assert main(["validate-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "log_exports.exports[0].schedule.day: expected a weekday name, got 'sundy'" in err
    assert "log_exports.exports[0].data.format: Input should be 'parquet', 'json' or 'csv'" in err
    assert "client.colour: unknown key" in err


def test_backfill_rejects_bad_dates(monkeypatch, capsys):
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", "k")
    config = str(ROOT / "bifrost_pipeline.yaml")
    assert main(["backfill", "--from", "2024-13-01", "--to", "2024-01-02", "--config", config]) == 2
    assert "--from/--to: expected dates as YYYY-MM-DD" in capsys.readouterr().err
    assert main(["backfill", "--from", "2024-01-03", "--to", "2024-01-02", "--config", config]) == 2


@pytest.mark.parametrize("args", [["--help"], ["proxy", "--help"]])
def test_help(args):
    assert run_cli(*args).returncode == 0


def test_a_backfill_at_the_start_date_plans_only_real_partitions(monkeypatch):
    # Dagster lists the weekly window that contains start_date (2025-12-28..2026-01-04) though it is no
    # partition; running it failed with an unknown partition key.
    from datetime import UTC, date, datetime

    from bifrost_pipeline.backfill import export_partitions_for_days
    from bifrost_pipeline.config import load_config

    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", "k")
    app = load_config(ROOT / "bifrost_pipeline.yaml")
    app = app.model_copy(update={"pipeline": app.pipeline.model_copy(update={"start_date": date(2026, 1, 1)})})
    now = datetime(2026, 2, 1, tzinfo=UTC)
    plan = {e.name: export_partitions_for_days(app, e, [date(2026, 1, 1), date(2026, 1, 5)], now) for e in app.exports}
    assert plan["daily_local_export"] == [f"2026-01-0{d}" for d in range(1, 6)]
    assert plan["weekly_cost_report"] == ["2026-01-04"]


def test_a_backfill_says_which_days_have_no_partition(tmp_path, monkeypatch):
    import io
    from datetime import date

    from bifrost_pipeline.backfill import backfill
    from bifrost_pipeline.config import load_config

    config = tmp_path / "c.yaml"
    config.write_text("log_exports: {exports: []}\npipeline: {start_date: '2026-01-01', data_dir: .}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    out = io.StringIO()
    assert backfill(load_config(config), config, [date(2025, 12, 30), date(2025, 12, 31), date(2026, 1, 1)], out=out)
    text = out.getvalue()
    assert "skipped 2 day(s) outside raw_logs' partitions (2026-01-01 to today): 2025-12-30..2025-12-31" in text
    assert "[1/1] 2026-01-01 " in text and "== done in" in text


def test_a_backfill_says_when_a_weekly_window_widens_its_days(tmp_path, monkeypatch):
    import io
    from datetime import date

    from bifrost_pipeline.backfill import backfill
    from bifrost_pipeline.config import load_config

    config = tmp_path / "c.yaml"
    config.write_text(
        "log_exports:\n  exports:\n    - name: weekly\n      schedule: {frequency: weekly, day: sunday}\n"
        "      destination: {type: local, config: {}}\n"
        "pipeline: {start_date: '2026-01-01', data_dir: .}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    out = io.StringIO()
    # 2026-01-13 and -14 are in the week 2026-01-11..2026-01-18 (UTC): its export reads all seven days
    assert backfill(load_config(config), config, [date(2026, 1, 13), date(2026, 1, 14)], out=out)
    text = out.getvalue()
    assert "== raw_logs + quarantine: 7 UTC day(s)" in text
    assert "widened to 2026-01-11..2026-01-17: 5 more day(s) that the export partitions overlapping your " \
        "days also read (weekly 2026-01-11)" in text


def test_backfill_days_may_be_relative_to_the_utc_date():
    from datetime import UTC, date, datetime, timedelta

    from bifrost_pipeline.cli import utc_day

    today = datetime.now(UTC).date()
    assert [utc_day(t) for t in ("today", "yesterday", "today-7", "2026-01-02")] == [
        today, today - timedelta(days=1), today - timedelta(days=7), date(2026, 1, 2)
    ]
    with pytest.raises(ValueError):
        utc_day("tomorrow")
