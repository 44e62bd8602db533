import gzip
import hashlib
import io
import json
from datetime import date

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bifrost_pipeline import validation
from bifrost_pipeline.defs.partitions import export_partitions
from bifrost_pipeline.exports import MissingRawData, run_export
from bifrost_pipeline_tests.helpers import DAY, land, make_app, record, utc

FORMATS = [
    ("parquet", c) for c in ("none", "gzip", "zstd", "snappy")
] + [("json", c) for c in ("none", "gzip", "zstd")] + [("csv", c) for c in ("none", "gzip", "zstd")]


def export_entry(name="e", fmt="parquet", codec=None, include=("request_logs",), prefix="{export}/{year}/{month}/{day}/", **data):
    d = {"format": fmt, "include": list(include), **data}
    if codec:
        d["compression"] = codec
    return {
        "name": name,
        "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
        "destination": {"type": "local", "config": {"path": "out", "prefix": prefix}},
        "data": d,
    }


def seeded(tmp_path, exports, n=12):
    app = make_app(tmp_path, exports)
    rows = [record(request_id=f"r{i}", timestamp=f"2024-01-15T{i:02d}:15:00Z", latency_ms=100 * i,
                   status="error" if i % 4 == 0 else "success", status_code=500 if i % 4 == 0 else 200)
            for i in range(n)]
    land(app, rows, when=utc(2024, 1, 15, 0))
    validation.validate_day(app, DAY)
    return app


def decompress(data: bytes, codec: str) -> bytes:
    if codec == "gzip":
        return gzip.decompress(data)
    if codec == "zstd":
        return pa.input_stream(pa.py_buffer(data), compression="zstd").read()
    return data


@pytest.mark.parametrize("fmt, codec", FORMATS)
def test_every_format_and_compression_reads_back(tmp_path, fmt, codec):
    app = seeded(tmp_path, [export_entry(fmt=fmt, codec=codec)])
    run = run_export(app, app.exports[0], "2024-01-15")
    folder = tmp_path / "data" / "out" / "e" / "2024" / "01" / "15"
    (f,) = run.output.files
    path = folder / f.file_name
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == f.sha256 and len(data) == f.bytes
    if fmt == "parquet":
        table = pq.read_table(path)
        expected_codec = {"none": "UNCOMPRESSED"}.get(codec, codec.upper())
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == expected_codec
        frame = pl.from_arrow(table)
    elif fmt == "json":
        frame = pl.read_ndjson(io.BytesIO(decompress(data, codec)))
    else:
        frame = pl.read_csv(io.BytesIO(decompress(data, codec)))
    assert frame.height == 12
    assert sorted(frame["request_id"].to_list()) == sorted(f"r{i}" for i in range(12))
    if fmt != "parquet":
        assert frame["timestamp"][0].endswith("Z")  # RFC 3339 text, as in Bifrost's JSON/CSV formats
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert manifest["files"] == [{"dataset": "request_logs", "name": f.file_name, "rows": 12, "bytes": f.bytes, "sha256": f.sha256}]


def test_rematerializing_replaces_exactly_and_removes_stale_files(tmp_path):
    both = export_entry(include=("request_logs", "error_logs"))
    app = seeded(tmp_path, [both])
    folder = tmp_path / "data" / "out" / "e" / "2024" / "01" / "15"
    run_export(app, app.exports[0], "2024-01-15")
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(first) == {"request_logs.parquet", "error_logs.parquet", "_manifest.json"}
    run_export(app, app.exports[0], "2024-01-15")
    again = pl.read_parquet(folder / "request_logs.parquet")
    assert again.height == 12 and again["request_id"].n_unique() == 12
    # the entry now exports one dataset: the other file of the earlier run is removed
    narrower = make_app(tmp_path, [export_entry(include=("request_logs",))])
    run = run_export(narrower, narrower.exports[0], "2024-01-15")
    assert sorted(p.name for p in folder.iterdir()) == ["_manifest.json", "request_logs.parquet"]
    assert run.written.removed == [str(folder / "error_logs.parquet")]
    assert not list(folder.glob(".*")), "no temporary file is left behind"


def test_filters_and_transforms_in_an_export(tmp_path):
    entry = export_entry(
        include=("request_logs", "metrics", "traces"),
        filters={"min_latency_ms": 300},
        transformations=[
            {"type": "anonymize", "fields": ["request_id"], "method": "hash"},
            {"type": "enrich", "add_fields": {"exported": "${EXPORT_PARTITION}"}},
        ],
    )
    app = seeded(tmp_path, [entry])
    run = run_export(app, app.exports[0], "2024-01-15")
    assert run.rows["request_logs"] == 9 and run.rows["traces"] == 9
    folder = tmp_path / "data" / "out" / "e" / "2024" / "01" / "15"
    logs = pl.read_parquet(folder / "request_logs.parquet")
    assert all(len(x) == 64 for x in logs["request_id"]) and set(logs["exported"]) == {"2024-01-15"}
    traces = pl.read_parquet(folder / "traces.parquet")
    assert set(traces["span_id"]) == set(logs["request_id"])  # ids hashed before the spans were derived
    metrics = pl.read_parquet(folder / "metrics.parquet")
    assert metrics["total_requests"].sum() == 9 and set(metrics["exported"]) == {"2024-01-15"}


def test_missing_raw_days_are_named(tmp_path):
    app = make_app(tmp_path, [export_entry()])
    with pytest.raises(MissingRawData, match="needs raw_logs for 2024-01-15"):
        run_export(app, app.exports[0], "2024-01-15")


def test_a_time_zone_window_reads_two_utc_days_exactly(tmp_path):
    entry = export_entry()
    entry["schedule"]["timezone"] = "America/New_York"
    app = make_app(tmp_path, [entry])
    land(app, [record(request_id="before", timestamp="2024-01-15T04:59:59Z")])
    land(app, [record(request_id="first", timestamp="2024-01-15T05:00:00Z")])
    land(app, [record(request_id="last", timestamp="2024-01-16T04:59:59Z", ended_at=None)])
    land(app, [record(request_id="after", timestamp="2024-01-16T05:00:00Z", ended_at=None)])
    validation.validate_day(app, date(2024, 1, 15))
    validation.validate_day(app, date(2024, 1, 16))
    run = run_export(app, app.exports[0], "2024-01-15")
    assert run.raw_days == [date(2024, 1, 15), date(2024, 1, 16)]
    out = pl.read_parquet(tmp_path / "data" / "out" / "e" / "2024" / "01" / "15" / "request_logs.parquet")
    assert sorted(out["request_id"]) == ["first", "last"]


def test_schedule_ticks_request_the_window_that_just_ended(tmp_path):
    from bifrost_pipeline.defs.exports import build_export_job_and_schedule

    weekly = export_entry(name="w")
    weekly["schedule"] = {"frequency": "weekly", "day": "sunday", "time": "03:00", "timezone": "Europe/Paris"}
    monthly = export_entry(name="m")
    monthly["schedule"] = {"frequency": "monthly", "day": 1, "time": "04:00", "timezone": "UTC"}
    daily = export_entry(name="d")
    daily["schedule"] = {"frequency": "daily", "time": "02:30", "timezone": "America/New_York"}
    app = make_app(tmp_path, [weekly, monthly, daily])
    expected = {
        "w": ("0 3 * * 0", "Europe/Paris", utc(2024, 3, 24, 2), "2024-03-17"),
        "m": ("0 4 1 * *", "UTC", utc(2024, 3, 1, 4), "2024-02-01"),
        "d": ("30 2 * * *", "America/New_York", utc(2024, 3, 12, 6, 30), "2024-03-11"),
    }
    for export in app.exports:
        job, schedule = build_export_job_and_schedule(app, export)
        cron, tz, tick, key = expected[export.name]
        defs = dg.Definitions(
            assets=[dg.AssetSpec(export.asset_name, partitions_def=export_partitions(app, export))],
            jobs=[job],
            schedules=[schedule],
        )
        resolved = defs.resolve_schedule_def(schedule.name)
        assert resolved.cron_schedule == cron and resolved.execution_timezone == tz
        with dg.build_schedule_context(scheduled_execution_time=tick) as ctx:
            (request,) = resolved.evaluate_tick(ctx).run_requests
        assert request.partition_key == key


def test_duckdb_destination_types_replaces_and_evolves(tmp_path):
    entry = export_entry(include=("request_logs", "metrics"))
    entry["destination"] = {"type": "duckdb", "config": {"table": "logs"}}
    app = seeded(tmp_path, [entry])
    run_export(app, app.exports[0], "2024-01-15")
    run_export(app, app.exports[0], "2024-01-15")
    con = duckdb.connect(str(app.warehouse_path))
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'logs'").fetchall())
    assert types["timestamp"] == "TIMESTAMP WITH TIME ZONE" and types["latency_ms"] == "INTEGER"
    assert types["cost_usd"] == "DOUBLE" and types["metadata"] == "JSON" and types["stream"] == "BOOLEAN"
    assert con.execute("SELECT count(*) FROM logs").fetchone()[0] == 12
    assert con.execute("SELECT metadata->>'x-tenant-id' FROM logs LIMIT 1").fetchone()[0] == "acme"
    assert con.execute("SELECT sum(total_requests) FROM logs_metrics").fetchone()[0] == 12
    con.close()
    # a field added later becomes a new nullable column; the partition is still replaced, not appended
    enriched = export_entry(include=("request_logs",), transformations=[{"type": "enrich", "add_fields": {"region": "eu"}}])
    enriched["destination"] = entry["destination"]
    app2 = make_app(tmp_path, [enriched])
    run_export(app2, app2.exports[0], "2024-01-15")
    con = duckdb.connect(str(app.warehouse_path))
    assert con.execute("SELECT count(*), count(region) FROM logs").fetchone() == (12, 12)
    con.close()
