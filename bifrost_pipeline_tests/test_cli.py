"""The `bifrost-pipeline` command as a user runs it."""

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from bifrost_pipeline.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "bifrost_pipeline.cli", *args], capture_output=True, text=True, env=env, check=False
    )


def test_validate_config_prints_each_export(monkeypatch, capsys):
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", "k")
    assert main(["validate-config", str(ROOT / "bifrost_pipeline.yaml")]) == 0
    out = capsys.readouterr().out
    assert "export daily_local_export" in out and "asset:       export_daily_local_export" in out
    assert "every sunday at 03:00 Europe/Paris" in out


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


def test_the_demo_runs_end_to_end(tmp_path, monkeypatch, capsys):
    config = tmp_path / "bifrost_pipeline.yaml"
    shutil.copy(ROOT / "bifrost_pipeline.yaml", config)
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("BIFROST_ANONYMIZE_KEY", raising=False)
    from bifrost_pipeline.demo import run_demo

    assert run_demo(config=str(config), days=1, records_per_day=300, proxy_requests=5) == 0
    out = capsys.readouterr().out
    assert "record(s) landed by the proxy" in out and "Analyst query" in out
    con = duckdb.connect(str(tmp_path / ".bifrost" / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM request_logs").fetchone()[0] >= 290
    finally:
        con.close()
    assert list((tmp_path / ".bifrost" / "exports" / "daily-exports").rglob("_manifest.json"))


@pytest.mark.parametrize("args", [["--help"], ["proxy", "--help"]])
def test_help(args):
    assert run_cli(*args).returncode == 0
