import json

import pyarrow as pa
import pytest

from bifrost_pipeline import records

SEED_FIELDS = {
    # the 12-field Parquet schema of Bifrost's log export docs: name -> (required, physical type)
    "timestamp": (True, "int64"),
    "request_id": (True, "binary"),
    "customer_id": (True, "binary"),
    "provider": (True, "binary"),
    "model": (True, "binary"),
    "endpoint": (True, "binary"),
    "method": (True, "binary"),
    "status_code": (True, "int32"),
    "latency_ms": (True, "int32"),
    "input_tokens": (False, "int32"),
    "output_tokens": (False, "int32"),
    "cost_usd": (False, "double"),
}


def test_parquet_schema_file_is_generated_from_the_json_schema():
    committed = (records.schemas_dir() / "log_record.parquet.txt").read_text()
    assert committed == records.parquet_message(), "run `bifrost-pipeline schema > schemas/log_record.parquet.txt`"


@pytest.mark.parametrize("name", sorted(SEED_FIELDS))
def test_superset_of_the_seed_parquet_schema(name):
    required, physical = SEED_FIELDS[name]
    line = next(ln.strip() for ln in records.parquet_message().splitlines() if f" {name} " in f" {ln.strip()} ".replace(";", " ").replace("(", " "))
    assert line.startswith("required" if required else "optional")
    assert f" {physical} {name}" in line


def test_fields_gateways_produce_are_there():
    names = set(records.field_names())
    for wanted in (
        "schema_version", "ended_at", "request_type", "stream", "status", "error_type", "error_message",
        "finish_reason", "retries", "fallback_index", "total_tokens", "cached_tokens", "reasoning_tokens",
        "time_to_first_token_ms", "user_id", "team_id", "virtual_key_id", "metadata", "input_content",
        "output_content", "parent_request_id",
    ):
        assert wanted in names
    assert set(records.field("request_type").enum) == {
        "chat", "text_completion", "responses", "embeddings", "speech", "transcription", "image", "video"
    }


def test_arrow_and_pandera_follow_the_json_schema():
    schema = json.loads((records.schemas_dir() / "log_record.schema.json").read_text())
    arrow = records.arrow_schema()
    assert arrow.names == list(schema["properties"])
    assert arrow.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert not arrow.field("request_id").nullable and arrow.field("cost_usd").nullable
    pandera_schema = records.pandera_schema()
    assert list(pandera_schema.columns) == list(schema["properties"])
    assert pandera_schema.columns["status_code"].checks  # min/max came from the JSON Schema


def test_proxy_side_module_imports_no_engine():
    import subprocess
    import sys

    code = (
        "import sys, bifrost_pipeline.records, bifrost_pipeline.landing;"
        "print(sorted(m for m in ('polars','pyarrow','duckdb','dagster') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_log_record_type_matches_the_json_schema():
    import types
    import typing

    schema = records.json_schema()
    hints = typing.get_type_hints(records.LogRecord)
    assert set(hints) == set(schema["properties"]), "LogRecord's keys differ from the schema's properties"
    assert records.LogRecord.__required_keys__ == set(schema["required"])
    json_types = {
        "string": str, "integer": int, "number": float, "boolean": bool, "object": dict, "array": list,
        "null": type(None),
    }
    for name, prop in schema["properties"].items():
        declared = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        hint = hints[name]
        parts = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        found = {typing.get_origin(p) or p for p in parts}
        assert found == {json_types[t] for t in declared}, f"LogRecord.{name}: {hint} vs schema type {declared}"
