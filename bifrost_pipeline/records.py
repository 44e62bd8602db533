"""The canonical log record, derived from `schemas/log_record.schema.json`.

The JSON Schema is the single source of truth. Everything else that knows the record's shape (the Arrow and
Polars schemas, the rule expressions used on the hot path, the pandera schema of the asset checks, the
Parquet message text in `schemas/`) is generated here from it, so adding a field is one edit to that file.

This module imports only the standard library at import time: the proxy shares it and must start fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypedDict

SCHEMA_VERSION = "2"  # what the proxy writes; version 1 records stay valid (the enum holds both)


class _RecordRequired(TypedDict):
    """The keys `required` by the JSON Schema (the base of `LogRecord`)."""

    schema_version: str
    timestamp: str
    request_id: str
    customer_id: str
    provider: str
    model: str
    endpoint: str
    method: str
    request_type: str
    stream: bool
    status: str
    status_code: int
    latency_ms: int


# total=False on a subclass, not NotRequired[...]: with postponed annotations Python 3.11 does not see
# NotRequired inside a TypedDict body.
class LogRecord(_RecordRequired, total=False):
    """The record as a Python type, for the code that builds one (the proxy, the OTLP intake).

    It restates `schemas/log_record.schema.json` for type checkers only: a test compares its keys, which of
    them are required, and their types with the JSON Schema, so the schema stays the one definition.
    Timestamps are RFC 3339 text here; JSON-valued fields are JSON text when the schema types them as
    strings (`input_content`, `request_params`, ...) and plain lists or dicts otherwise (`metadata`,
    `tool_calls`, `attempts`, ...): either way they become JSON text columns.
    """

    ended_at: str | None
    parent_request_id: str | None
    user_id: str | None
    team_id: str | None
    virtual_key_id: str | None
    error_type: str | None
    error_message: str | None
    finish_reason: str | None
    retries: int | None
    fallback_index: int | None
    time_to_first_token_ms: int | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    metadata: dict[str, str] | None
    input_content: str | None
    output_content: str | None
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    stop: list[str] | None
    seed: int | None
    n: int | None
    presence_penalty: float | None
    frequency_penalty: float | None
    response_format_type: str | None
    tool_choice: str | None
    parallel_tool_calls: bool | None
    reasoning_effort: str | None
    request_params: str | None
    tool_names: list[str] | None
    tool_definitions: str | None
    tool_call_names: list[str] | None
    tool_calls: list[dict[str, str | None]] | None
    tool_call_count: int | None
    input_images: list[dict[str, Any]] | None
    input_audio_format: str | None
    input_audio_bytes: int | None
    input_audio_seconds: float | None
    output_audio_format: str | None
    output_audio_bytes: int | None
    image_size: str | None
    image_quality: str | None
    output_image_count: int | None
    video_id: str | None
    video_size: str | None
    video_seconds: float | None
    request_bytes: int | None
    response_bytes: int | None
    trace_id: str | None
    span_id: str | None
    attempts: list[dict[str, Any]] | None


def schemas_dir() -> Path:
    override = os.environ.get("BIFROST_PIPELINE_SCHEMAS")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "schemas"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # string | timestamp | int32 | double | bool | json
    required: bool
    enum: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    description: str = ""
    json_type: str | None = None  # a JSON-valued field held as a value: "object" or "array" (else None)

    @property
    def nullable(self) -> bool:
        return not self.required


def _kind(prop: dict[str, Any]) -> str:
    if "x-parquet" in prop:
        return {"timestamp": "timestamp", "int32": "int32", "double": "double", "json": "json"}[
            prop["x-parquet"]
        ]
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    main = [t for t in types if t != "null"][0]
    return {
        "string": "string", "boolean": "bool", "integer": "int64", "number": "double", "object": "json", "array": "json"
    }[main]


def _json_type(prop: dict[str, Any]) -> str | None:
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    held = [t for t in types if t in ("object", "array")]
    return held[0] if held else None


@cache
def json_schema() -> dict[str, Any]:
    return json.loads((schemas_dir() / "log_record.schema.json").read_text())


def strict_validator(schema: dict[str, Any], *, formats: bool = True):
    """A jsonschema validator of ``schema`` with one stricter word than JSON Schema's: an ``integer`` is
    written as one (``100``, not ``100.0`` or ``1e2``). JSON Schema counts ``1.0`` as an integer, but the
    Parquet column of an integer field is an integer column and the day's reader takes no fraction or
    exponent there: such a record would be accepted at intake and quarantined later. Imported on first use:
    the proxy starts without jsonschema."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    strict = cls.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    cls = jsonschema.validators.extend(cls, type_checker=strict)
    return cls(schema, format_checker=cls.FORMAT_CHECKER if formats else None)


@cache
def json_schema_validator(*, formats: bool = True):
    """The record's ``strict_validator``: the intake's reference check and the quarantine's reasons."""
    return strict_validator(json_schema(), formats=formats)


@cache
def fields() -> tuple[FieldSpec, ...]:
    schema = json_schema()
    required = set(schema["required"])
    out = []
    for name, prop in schema["properties"].items():
        out.append(
            FieldSpec(
                name=name,
                kind=_kind(prop),
                required=name in required,
                enum=tuple(prop["enum"]) if "enum" in prop else None,
                minimum=prop.get("minimum"),
                maximum=prop.get("maximum"),
                min_length=prop.get("minLength"),
                description=prop.get("description", ""),
                json_type=_json_type(prop),
            )
        )
    return tuple(out)


def field_names() -> list[str]:
    return [f.name for f in fields()]


def field(name: str) -> FieldSpec:
    for f in fields():
        if f.name == name:
            return f
    raise KeyError(name)


# --- engine-side derivations (imported lazily: the proxy never calls these) ---------------------------


def arrow_schema():
    """Arrow schema of a validated record: what raw_logs Parquet files and warehouse tables hold."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "json": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "double": pa.float64(),
        "bool": pa.bool_(),
    }
    return pa.schema(
        [
            pa.field(
                f.name,
                types[f.kind],
                nullable=f.nullable,
                metadata={"json": "true"} if f.kind == "json" else None,
            )
            for f in fields()
        ]
    )


def polars_schema() -> dict:
    """Polars dtypes of a validated record."""
    import polars as pl

    types = {
        "string": pl.String,
        "json": pl.String,
        "timestamp": pl.Datetime("us", "UTC"),
        "int32": pl.Int32,
        "int64": pl.Int64,
        "double": pl.Float64,
        "bool": pl.Boolean,
    }
    return {f.name: types[f.kind] for f in fields()}


def polars_read_schema() -> dict:
    """Dtypes for reading landed NDJSON.

    Timestamps are read as text and parsed afterwards: Polars' NDJSON reader is about 4x slower per column
    with a Datetime in the read schema (PERF_NOTES), and a bad timestamp then becomes a per-record reason
    instead of a failed read. JSON-valued fields are read as their JSON text.
    """
    import polars as pl

    schema = polars_schema()
    return {name: (pl.String if f.kind == "timestamp" else schema[name]) for name, f in zip(schema, fields(), strict=True)}


def parquet_message() -> str:
    """The Parquet schema of a record in the message notation of the Parquet docs."""
    physical = {
        "string": "binary {name} (UTF8)",
        "json": "binary {name} (JSON)",
        "timestamp": "int64 {name} (TIMESTAMP(MICROS,true))",
        "int32": "int32 {name}",
        "int64": "int64 {name}",
        "double": "double {name}",
        "bool": "boolean {name}",
    }
    lines = ["message log_record {"]
    for f in fields():
        rep = "required" if f.required else "optional"
        lines.append(f"  {rep} {physical[f.kind].format(name=f.name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def pandera_schema():
    """A pandera DataFrameSchema of a validated record (used by the raw_logs asset checks)."""
    import pandera.polars as pa

    columns = {}
    for f, (name, dtype) in zip(fields(), polars_schema().items(), strict=True):
        checks = []
        if f.enum is not None:
            checks.append(pa.Check.isin(list(f.enum)))
        if f.minimum is not None:
            checks.append(pa.Check.ge(f.minimum))
        if f.maximum is not None:
            checks.append(pa.Check.le(f.maximum))
        if f.min_length is not None:
            checks.append(pa.Check.str_length(min_value=f.min_length))
        columns[name] = pa.Column(dtype, checks=checks, nullable=f.nullable, required=True)
    return pa.DataFrameSchema(columns, strict=True, name="log_record")
