"""What the UI shows of an export partition and of a raw day: each metadata entry's type and value."""

import hashlib
import hmac
from datetime import UTC, date, datetime

import dagster as dg
import pytest

from bifrost_pipeline.definitions import build_definitions
from bifrost_pipeline.defs.exports import location_metadata
from bifrost_pipeline.defs.raw import RAW, RAW_JOB, landing_state, recorded_landing_state
from bifrost_pipeline.destinations.s3 import S3Destination
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.helpers import HASH_KEY, land, record, write_config

LONG = "word " * 40  # 200 characters of content
EXPORTS = [
    {
        "name": "files",
        "schedule": {"frequency": "daily"},
        "destination": {"type": "local", "config": {"path": "out", "prefix": "{export}/{partition}/"}},
        "data": {
            "include": ["request_logs", "response_logs", "error_logs", "traces"],
            "transformations": [{"type": "anonymize", "fields": ["customer_id"], "method": "hash"}],
        },
    },
    {
        "name": "wh",
        "schedule": {"frequency": "daily"},
        "destination": {"type": "duckdb", "config": {}},
        "data": {"include": ["request_logs", "metrics"]},
    },
]


def hmac_hex(key: str, value: str) -> str:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def setup(tmp_path, monkeypatch):
    app, path = write_config(tmp_path, EXPORTS, monkeypatch)
    return app, build_definitions(app, str(path)), dg.DagsterInstance.ephemeral()


def materialize(defs, instance, job: str, key: str, node: str) -> dict[str, dg.MetadataValue]:
    result = defs.resolve_job_def(job).execute_in_process(partition_key=key, instance=instance)
    assert result.success
    (mat,) = [m for m in result.asset_materializations_for_node(node) if node != "validate_landed_day" or m.asset_key == RAW]
    return dict(mat.metadata)


@pytest.fixture
def day_exported(setup):
    """2024-01-15: three records (one an error), each with 200 characters of input content."""
    app, defs, instance = setup
    land(app, [
        record(request_id=f"r{i}", status="error" if i == 2 else "success", status_code=500 if i == 2 else 200,
               input_content=[{"role": "user", "content": LONG}])
        for i in range(3)
    ])
    materialize(defs, instance, RAW_JOB, "2024-01-15", "validate_landed_day")
    return setup


def test_row_count_is_the_records_exported_with_each_dataset_beside_it(day_exported):
    app, defs, instance = day_exported
    meta = materialize(defs, instance, "export_files_job", "2024-01-15", "export_files")
    # 3 records: request_logs 3 + response_logs 3 + error_logs 1 + traces 3 would have said 10
    assert meta["dagster/row_count"] == dg.IntMetadataValue(3)
    assert meta["empty"] == dg.BoolMetadataValue(False)
    folder = app.data_dir / "out" / "files" / "2024-01-15"
    names = {"request_logs": "request_logs.parquet", "response_logs": "response_logs.parquet",
             "error_logs": "error_logs.parquet", "traces": "traces.parquet"}
    rows = {"request_logs": 3, "response_logs": 3, "error_logs": 1, "traces": 3}
    for ds, n in rows.items():
        assert meta[f"rows/{ds}"] == dg.IntMetadataValue(n)
        assert meta[f"bytes/{ds}"] == dg.IntMetadataValue((folder / names[ds]).stat().st_size)
    table = meta["datasets"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [c.name for c in table.schema.columns] == ["dataset", "file", "rows", "bytes"]
    assert [(r.data["dataset"], r.data["file"], r.data["rows"], r.data["bytes"]) for r in table.records] == [
        (ds, names[ds], rows[ds], (folder / names[ds]).stat().st_size) for ds in rows
    ]
    assert meta["location"] == dg.MetadataValue.path(str(folder))
    assert "tables" not in meta and "note" not in meta


def test_window_and_export_time_are_timestamps(day_exported):
    _, defs, instance = day_exported
    before = datetime.now(UTC).timestamp()
    meta = materialize(defs, instance, "export_files_job", "2024-01-15", "export_files")
    assert meta["window_start"] == dg.MetadataValue.timestamp(datetime(2024, 1, 15, tzinfo=UTC))
    assert meta["window_end"] == dg.MetadataValue.timestamp(datetime(2024, 1, 16, tzinfo=UTC))
    assert isinstance(meta["exported_at"], dg.TimestampMetadataValue)
    assert before <= meta["exported_at"].value <= datetime.now(UTC).timestamp()


def test_the_preview_shows_request_logs_as_written_with_content_cut(day_exported):
    _, defs, instance = day_exported
    meta = materialize(defs, instance, "export_files_job", "2024-01-15", "export_files")
    preview = meta["preview"]
    assert isinstance(preview, dg.MarkdownMetadataValue)
    lines = preview.value.splitlines()
    assert lines[0] == "First 3 row(s) of `request_logs` as written (cells cut to 64 characters):"
    header, rule, *rows = lines[2:]
    assert header.startswith("| schema_version | timestamp | ended_at | request_id |")
    assert "output_content" not in header  # request_logs' own columns
    assert rule.startswith("|---|---|") and len(rows) == 3
    assert "cust_a" not in preview.value  # the hashed value, as written, never the raw one
    assert LONG not in preview.value and LONG.strip()[:20] in preview.value
    cells = [row.strip("| ").split(" | ") for row in rows]
    assert all(len(c) <= 64 for row in cells for c in row)
    assert cells[0][5] == hmac_hex(HASH_KEY, "cust_a")  # a 64-character id fits whole


def test_a_warehouse_export_names_its_tables_and_its_file(day_exported):
    app, defs, instance = day_exported
    meta = materialize(defs, instance, "export_wh_job", "2024-01-15", "export_wh")
    assert meta["dagster/row_count"] == dg.IntMetadataValue(3)
    assert meta["tables"] == dg.MetadataValue.json(["warehouse.main.wh", "warehouse.main.wh_metrics"])
    assert meta["location"] == dg.MetadataValue.path(str(app.warehouse_path))


def test_an_empty_day_is_visibly_empty(setup):
    app, defs, instance = setup
    materialize(defs, instance, RAW_JOB, "2024-01-16", "validate_landed_day")  # nothing landed that day
    meta = materialize(defs, instance, "export_files_job", "2024-01-16", "export_files")
    assert meta["dagster/row_count"] == dg.IntMetadataValue(0)
    assert meta["empty"] == dg.BoolMetadataValue(True)
    assert meta["note"] == dg.MetadataValue.text("no records in this window")
    assert meta["preview"] == dg.MetadataValue.md("No records in this window.")
    assert meta["rows/request_logs"] == dg.IntMetadataValue(0)


def test_the_newest_segment_time_is_a_timestamp_that_the_landing_rule_reads_back(setup):
    app, defs, instance = setup
    land(app, [record(request_id="a")])
    meta = materialize(defs, instance, RAW_JOB, "2024-01-15", "validate_landed_day")
    landed = landing_state(app, date(2024, 1, 15))
    assert meta["newest_segment_mtime"] == dg.MetadataValue.timestamp(landed.newest_mtime)
    assert recorded_landing_state(instance, "2024-01-15") == landed  # exactly, so nothing looks stale
    empty = materialize(defs, instance, RAW_JOB, "2024-01-16", "validate_landed_day")
    assert "newest_segment_mtime" not in empty and empty["segments"] == dg.IntMetadataValue(0)
    assert recorded_landing_state(instance, "2024-01-16") == landing_state(app, date(2024, 1, 16))


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (None, {
            "location": dg.MetadataValue.url("s3://logs/bifrost/e/2024-01-15/"),
            "console": dg.MetadataValue.url(
                "https://s3.console.aws.amazon.com/s3/buckets/logs?prefix=bifrost/e/2024-01-15/"
            ),
        }),
        # an emulator or another S3-compatible store has no AWS console page
        ("http://127.0.0.1:9000", {"location": dg.MetadataValue.url("s3://logs/bifrost/e/2024-01-15/")}),
    ],
)
def test_an_object_store_location_is_its_uri_and_the_console_page(endpoint, expected):
    config = S3Destination.Config.model_validate({"bucket": "logs", "endpoint_url": endpoint, "region": "us-east-1"})
    destination = S3Destination(config, context("e"))
    assert location_metadata(destination, "s3://logs/bifrost/e/2024-01-15/") == expected
