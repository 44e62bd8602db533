"""Warehouse load benchmark: one million request records into each warehouse's local server.

    python bench/warehouse_bench.py

Runs the million-row load tests of bifrost_pipeline_tests/destinations (they start fakesnow,
local-bigquery and PostgreSQL on loopback, load the same one-million-row Parquet partition and check every
row arrived) and prints how long each load took, beside the embedded DuckDB destination loading the same
file in this process: the baseline of a bulk load on this machine. Issue #5's target: a million rows in
seconds against the local servers, not minutes (row-by-row inserts take many minutes).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = "million_row_partition or hundred_thousand_rows or s3_staging"


def duckdb_baseline() -> float:
    sys.path.insert(0, str(ROOT))
    from bifrost_pipeline.config import AppConfig
    from bifrost_pipeline.destinations.duckdb import DuckDBDestination
    from bifrost_pipeline_tests.destinations import warehouse_data as wd

    with tempfile.TemporaryDirectory() as tmp:
        output = wd.million_partition("big", Path(tmp))
        app = AppConfig(pipeline={"data_dir": tmp})
        dest = DuckDBDestination(DuckDBDestination.Config(), app.destination_context("big"))
        started = time.perf_counter()
        dest.write_partition(output)
        return time.perf_counter() - started


def main() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-k", CASES,
         "bifrost_pipeline_tests/destinations"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    timings = re.findall(r"([a-z]+/[^:\n]+): ([\d,]+ (?:rows|MB)) in ([\d.]+)s$", proc.stdout, re.M)
    if proc.returncode != 0 or not timings:
        print(proc.stdout[-4000:], proc.stderr[-2000:])
        raise SystemExit("the load tests failed")
    baseline = duckdb_baseline()
    print(f"{'destination / server':34}{'load':>18}{'seconds':>10}{'rows/s':>14}")
    print(f"{'duckdb (embedded, baseline)':34}{'1,000,000 rows':>18}{baseline:>10.1f}{1e6 / baseline:>14,.0f}")
    for name, what, seconds in timings:
        n = int(what.split()[0].replace(",", ""))
        rate = f"{n / float(seconds):>14,.0f}" if what.endswith("rows") else f"{n / float(seconds):>11,.0f} MB/s"
        print(f"{name:34}{what:>18}{float(seconds):>10.1f}{rate}")
    print("\nTarget (issue #5): a million rows in seconds, not minutes; every row is checked by the tests.")


if __name__ == "__main__":
    main()
