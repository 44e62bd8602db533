"""Pipeline benchmark: landing -> raw_logs -> one full export, beside a plain Polars script.

    python bench/pipeline_bench.py                 # 1M records (about 1.5 GB of NDJSON with content)
    python bench/pipeline_bench.py --records 10M   # the 10M day (about 15 GB on disk)

Both sides read the same landed segments of one UTC day and write gzip Parquet of the same export:
status-code filter, HMAC-SHA256 of customer_id and request_id, two enrich fields. The pipeline also
validates every record (quarantining bad lines) and writes the raw_logs partition on the way; the baseline
does only the conversion. Each side runs in its own process; we print records/s, wall time and peak RSS
of each, and the ratio. Targets (issue #2): pipeline >= 0.7x the baseline's throughput; peak RSS < 1.5 GB
on the 10M day.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
DAY = date(2026, 1, 15)
HASH_KEY = "bench-key"
STATUS_CODES = [200, 400, 401, 403, 404, 429, 500, 503]


def parse_count(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("KM")) * mult)


def land(root: Path, n: int, segment_bytes: int = 64 * 1024 * 1024) -> tuple[int, int]:
    """Land n records: a seeded base day, copied with unique request ids (generation is not timed)."""
    import orjson

    from bifrost_pipeline import landing, sample

    base_n = min(n, 20_000)
    base = [orjson.dumps(r) for r in sample.generate_day(DAY, base_n, seed=11)]
    written = total_bytes = 0
    copy = 0
    pending: list[bytes] = []
    pending_bytes = 0
    hour = 0
    while written < n:
        tag = b'"request_id":"req_c%d_' % copy
        for line in base:
            if written >= n:
                break
            line = line.replace(b'"request_id":"req_', tag, 1).replace(b'"parent_request_id":"req_', b'"parent_request_id":"req_c%d_' % copy, 1)
            pending.append(line)
            pending_bytes += len(line) + 1
            written += 1
            if pending_bytes >= segment_bytes:
                landing.write_segment(root, pending, _hour(hour), source="bench")
                total_bytes += pending_bytes
                pending, pending_bytes, hour = [], 0, (hour + 1) % 24
        copy += 1
    if pending:
        landing.write_segment(root, pending, _hour(hour), source="bench")
        total_bytes += pending_bytes
    return written, total_bytes


def _hour(h: int):
    from datetime import UTC, datetime

    return datetime(DAY.year, DAY.month, DAY.day, h, tzinfo=UTC)


EXPORT = {
    "name": "bench_export",
    "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
    "destination": {"type": "local", "config": {"path": "exports", "prefix": "{export}/{partition}/"}},
    "data": {
        "format": "parquet",
        "compression": "gzip",
        "include": ["request_logs"],
        "filters": {"date_range": "last_24_hours", "status_codes": STATUS_CODES},
        "transformations": [
            {"type": "anonymize", "fields": ["customer_id", "request_id"], "method": "hash"},
            {"type": "enrich", "add_fields": {"export_timestamp": "${EXPORT_TIMESTAMP}", "export_version": "${EXPORT_VERSION}"}},
        ],
    },
}


def run_pipeline(work: Path) -> dict:
    from bifrost_pipeline import validation
    from bifrost_pipeline.config import parse_config
    from bifrost_pipeline.exports import run_export

    app = parse_config(
        {"landing": {"path": "landing"}, "pipeline": {"data_dir": "data"}, "log_exports": {"exports": [EXPORT]}},
        env={"BIFROST_ANONYMIZE_KEY": HASH_KEY},
        base_dir=work,
    )
    t0 = time.perf_counter()
    day = validation.validate_day(app, DAY)
    t1 = time.perf_counter()
    run = run_export(app, app.exports[0], DAY.isoformat())
    t2 = time.perf_counter()
    return {
        "valid": day.valid_rows,
        "quarantined": day.quarantined_rows,
        "exported": run.rows["request_logs"],
        "validate_s": t1 - t0,
        "export_s": t2 - t1,
        "seconds": t2 - t0,
    }


def run_baseline(work: Path) -> dict:
    """The same conversion as a plain Polars script: no validation, no raw partition, no manifest."""
    from datetime import UTC, datetime, timedelta

    import polars as pl
    import polars_hash  # noqa: F401

    from bifrost_pipeline import records

    t0 = time.perf_counter()
    files = sorted(str(p) for p in (work / "landing" / f"date={DAY}").glob("hour=*/*.ndjson"))
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    lf = pl.scan_ndjson(files, schema=records.polars_read_schema())
    lf = lf.with_columns(
        pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", time_zone="UTC", time_unit="us")
        for c in ("timestamp", "ended_at")
    )
    lf = lf.filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < end) & pl.col("status_code").is_in(STATUS_CODES))
    lf = lf.drop("output_content").with_columns(
        pl.col("customer_id").chash.hmac_sha256(key=HASH_KEY),
        pl.col("request_id").chash.hmac_sha256(key=HASH_KEY),
        pl.lit(datetime.now(UTC).isoformat()).alias("export_timestamp"),
        pl.lit("baseline").alias("export_version"),
    )
    out = work / "baseline.parquet"
    lf.sink_parquet(out, compression="gzip", compression_level=6)
    rows = pl.scan_parquet(out).select(pl.len()).collect().item()
    return {"exported": rows, "seconds": time.perf_counter() - t0}


def child(side: str, work: Path) -> None:
    import resource

    result = run_pipeline(work) if side == "pipeline" else run_baseline(work)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(side: str, work: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", side, "--work", str(work)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default="1M", help="records in the day, e.g. 200K, 1M, 10M")
    parser.add_argument("--work", type=Path, default=HERE / "out" / "pipeline")
    parser.add_argument("--keep", action="store_true", help="keep the landed day for another run")
    parser.add_argument("--child", choices=["pipeline", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    if args.child:
        child(args.child, args.work)
        return

    n = parse_count(args.records)
    work = args.work
    marker = work / f"landed-{n}.json"
    if not marker.exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        t = time.perf_counter()
        written, size = land(work / "landing", n)
        marker.write_text(json.dumps({"records": written, "bytes": size}))
        print(f"landed {written:,} records, {size / 1e9:.2f} GB NDJSON in {time.perf_counter() - t:.0f}s (not timed)")
    landed = json.loads(marker.read_text())
    shutil.rmtree(work / "data", ignore_errors=True)
    (work / "baseline.parquet").unlink(missing_ok=True)

    base = measure("baseline", work)
    pipe = measure("pipeline", work)
    assert pipe["exported"] == base["exported"], (pipe, base)
    recs = landed["records"]
    ratio = (recs / pipe["seconds"]) / (recs / base["seconds"])
    print(f"\n{recs:,} records, {landed['bytes'] / 1e9:.2f} GB NDJSON, {os.cpu_count()} cores")
    print(f"{'':28}{'records/s':>12}{'seconds':>10}{'peak RSS MB':>14}")
    print(f"{'baseline (plain Polars)':28}{recs / base['seconds']:>12,.0f}{base['seconds']:>10.1f}{base['peak_rss_mb']:>14,.0f}")
    print(f"{'pipeline (validate+export)':28}{recs / pipe['seconds']:>12,.0f}{pipe['seconds']:>10.1f}{pipe['peak_rss_mb']:>14,.0f}")
    print(f"{'  of which validate':28}{'':>12}{pipe['validate_s']:>10.1f}")
    print(f"{'  of which export':28}{'':>12}{pipe['export_s']:>10.1f}")
    print(f"\nthroughput ratio pipeline/baseline: {ratio:.2f}x (target >= 0.70)")
    print(f"peak RSS pipeline: {pipe['peak_rss_mb']:,.0f} MB (target < 1,500 MB on the 10M day)")
    print(f"rows exported: {pipe['exported']:,} (both sides), quarantined: {pipe['quarantined']}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
