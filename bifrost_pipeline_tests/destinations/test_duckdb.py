"""The `duckdb` destination while another process holds the warehouse file: it says it waits, and on what."""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bifrost_pipeline.destinations import duckdb as duckdb_destination
from bifrost_pipeline.destinations.base import DestinationError
from bifrost_pipeline.destinations.duckdb import DuckDBDestination
from bifrost_pipeline_tests.destinations import warehouse_data as wd
from bifrost_pipeline_tests.destinations.context import context

DAY = wd.DAYS[0]

HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])  # read-write, as an analyst's `duckdb.connect(path)` does
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process with a read-write connection to `path`, open for `seconds` (started when this returns)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def destination(path: Path, timeout_s: float, log: logging.Logger) -> DuckDBDestination:
    config = DuckDBDestination.Config(path=str(path), lock_timeout_s=timeout_s)
    return DuckDBDestination(config, dataclasses.replace(context("daily"), log=log))


@pytest.fixture
def run_log(caplog) -> logging.Logger:
    caplog.set_level(logging.INFO, logger="test.run")
    return logging.getLogger("test.run")


def test_a_load_says_it_waits_for_the_locked_file_then_fails_clearly(tmp_path, monkeypatch, caplog, run_log):
    monkeypatch.setattr(duckdb_destination, "LOCK_NOTICE_EVERY_S", 0.4)
    path = tmp_path / "warehouse.duckdb"
    holder = hold(path, 30)
    try:
        with pytest.raises(DestinationError) as failed:
            destination(path, timeout_s=2.0, log=run_log).write_partition(wd.day_partition("daily", DAY, tmp_path))
    finally:
        holder.kill()
        holder.wait()
    waiting = [r for r in caplog.records if r.name == "test.run"]
    assert len(waiting) >= 2  # at the start, then periodically
    assert all(r.levelno == logging.WARNING for r in waiting)
    # How long each line says it has waited: rising, within the timeout. (Not an exact second: on a busy
    # machine the first attempt to open the file alone can take over half a second.)
    so_far = [re.search(r"\((\d+)s of at most 2s so far\): another process holds it open", r.getMessage()) for r in waiting]
    assert all(so_far), [r.getMessage() for r in waiting]
    seconds = [int(m.group(1)) for m in so_far]
    assert seconds == sorted(seconds) and seconds[-1] <= 2, seconds
    first = waiting[0].getMessage()
    assert f"waiting for the DuckDB warehouse {path}" in first
    assert f"(PID {holder.pid})). DuckDB lets one process" in first  # DuckDB names the holder
    assert "query a copy of the file or the export's Parquet files (README, For analysts)" in first
    err = failed.value
    assert err.retryable
    assert str(err).startswith(f"export 'daily' -> duckdb:{path}#main.daily: cannot open the warehouse {path}: ")
    assert "another process held it for 2s (lock_timeout_s is 2; held by " in str(err)
    assert f"PID {holder.pid}" in str(err)


def test_the_load_goes_on_once_the_other_process_lets_go(tmp_path, caplog, run_log):
    path = tmp_path / "warehouse.duckdb"
    holder = hold(path, 1.0)
    try:
        written = destination(path, timeout_s=30, log=run_log).write_partition(wd.day_partition("daily", DAY, tmp_path))
    finally:
        holder.wait()
    assert written.written == ["warehouse.main.daily"]
    waiting = [r.getMessage() for r in caplog.records if r.name == "test.run"]
    assert len(waiting) == 1 and "waiting for the DuckDB warehouse" in waiting[0]


def test_without_a_lock_nothing_is_logged(tmp_path, caplog, run_log):
    destination(tmp_path / "w.duckdb", timeout_s=1, log=run_log).connect().close()
    assert not [r for r in caplog.records if r.name == "test.run"]
