"""Record schema version 2 through the pipeline: a raw day written before it (version 1, without its columns)
and a day of version 2 records in one export, into the DuckDB warehouse, where an analyst query over the new
columns works."""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl

from bifrost_pipeline import records, validation
from bifrost_pipeline.exports import run_export
from bifrost_pipeline.validation import raw_path
from bifrost_pipeline_tests.helpers import land, make_app, record
from bifrost_pipeline_tests.test_readme_queries import readme_queries

V1_DAY, V2_DAY = date(2024, 1, 15), date(2024, 1, 16)
V2_FIELDS = [f.name for f in records.fields()][records.field_names().index("output_content") + 1 :]


def v2_record(request_id: str, model: str, calls: list[str], **over) -> dict:
    fields = dict(
        schema_version="2",
        timestamp="2024-01-16T02:00:00Z",
        ended_at="2024-01-16T02:00:01Z",
        request_id=request_id,
        model=model,
        temperature=0.2,
        max_tokens=64,
        stop=["END"],
        tool_names=["get_weather", "search"],
        tool_definitions='[{"type": "function", "function": {"name": "get_weather"}}]',
        tool_call_names=calls,
        tool_calls=[{"id": f"c{i}", "name": n, "arguments": "{}"} for i, n in enumerate(calls)],
        tool_call_count=len(calls),
        input_images=[{"media_type": "image/png", "bytes": 120}],
        request_bytes=321,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        attempts=[{"provider": "openai", "model": model, "key_name": "k1", "status_code": 200,
                   "error_type": None, "error_message": None, "latency_ms": 40}],
    )
    return record(**{**fields, **over})


def test_a_version_1_day_and_a_version_2_day_in_one_export_to_duckdb(tmp_path):
    entry = {
        "name": "warehouse",
        # New York's 2024-01-15 is 05:00 UTC on the 15th to 05:00 UTC on the 16th: both raw days.
        "schedule": {"frequency": "daily", "timezone": "America/New_York"},
        "destination": {"type": "duckdb", "config": {"table": "request_logs"}},
        "data": {"include": ["request_logs", "error_logs"]},
    }
    app = make_app(tmp_path, [entry])
    land(app, [record(request_id="old-1"), record(request_id="old-2", status="error", status_code=500)])
    validation.validate_day(app, V1_DAY)
    # The day as an earlier version wrote it: without the columns of schema version 2.
    parts = sorted(raw_path(app, V1_DAY).glob("*.parquet"))
    assert parts
    for part in parts:
        pl.read_parquet(part).drop(V2_FIELDS).write_parquet(part)
    land(app, [
        v2_record("new-1", "gpt-4o", ["get_weather", "search"]),
        v2_record("new-2", "gpt-4o", ["get_weather"]),
        v2_record("new-3", "claude-3-haiku", ["get_weather"], provider="anthropic"),
        v2_record("new-4", "claude-3-haiku", [], status="error", status_code=500),
    ])
    result = validation.validate_day(app, V2_DAY)
    assert result.quarantined_rows == 0

    run = run_export(app, app.exports[0], "2024-01-15")
    assert run.rows == {"request_logs": 6, "error_logs": 2}
    con = duckdb.connect(str(app.warehouse_path), read_only=True)
    try:
        rows = con.sql(
            "SELECT request_id, schema_version, temperature, tool_call_count, request_bytes, trace_id "
            "FROM request_logs ORDER BY request_id"
        ).fetchall()
        assert rows[:2] == [("new-1", "2", 0.2, 2, 321, "4bf92f3577b34da6a3ce929d0e0e4736"),
                            ("new-2", "2", 0.2, 1, 321, "4bf92f3577b34da6a3ce929d0e0e4736")]
        assert rows[4:] == [("old-1", "1", None, None, None, None), ("old-2", "1", None, None, None, None)]
        columns = {r[0] for r in con.sql("DESCRIBE request_logs").fetchall()}
        assert "tool_calls" not in columns and "output_content" not in columns  # answer content
        assert {"tool_call_names", "attempts", "input_images", "request_params"} <= columns
        error_columns = {r[0] for r in con.sql("DESCRIBE request_logs_error_logs").fetchall()}
        assert "tool_calls" not in error_columns and "input_content" not in error_columns
        latency = con.sql(
            "SELECT json_extract(attempts, '$[0].latency_ms')::INT FROM request_logs WHERE request_id = 'new-1'"
        ).fetchall()
        assert latency == [(40,)]

        usage = con.sql(readme_queries()["tool_usage_by_model"]).fetchall()
        assert usage == [
            ("claude-3-haiku", "get_weather", 1, 1),
            ("gpt-4o", "get_weather", 2, 2),
            ("gpt-4o", "search", 1, 1),
        ]
    finally:
        con.close()


def test_a_tool_calls_value_that_is_not_an_array_is_quarantined(tmp_path):
    app = make_app(tmp_path)
    land(app, [v2_record("bad", "gpt-4o", ["x"], tool_calls="not a list"), v2_record("good", "gpt-4o", ["x"])])
    result = validation.validate_day(app, V2_DAY)
    assert (result.valid_rows, result.quarantined_rows) == (1, 1)
    assert result.reasons["tool_calls"] == 1
