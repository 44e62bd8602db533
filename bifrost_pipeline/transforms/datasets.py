"""The datasets an export can `include`, each derived from the filtered canonical records.

- request_logs: every record, every field but the answer's content (`output_content`, `tool_calls`).
- response_logs: every record, every field but the request's content (`input_content`).
- error_logs: the records whose status is `error`, every field but those content fields.
- metrics: per hour (in the export's time zone), provider and model: requests, errors, error rate,
  latency (avg, exact p50/p95/p99), tokens and cost.
- traces: one OpenTelemetry-style span per record (GenAI semantic conventions in `attributes`).

The three record datasets share every non-content field, so filters and transformations mean the same on
each of them.
"""

from __future__ import annotations

import polars as pl

from bifrost_pipeline import records

METRICS_GROUP_BY = ["hour", "provider", "model"]
METRICS = [
    "total_requests",
    "error_count",
    "error_rate",
    "avg_latency",
    "p50_latency",
    "p95_latency",
    "p99_latency",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "total_cost",
]
# What a person wrote or the model answered. The other fields of schema version 2 (parameters, tool names
# and definitions, media sizes) describe the request without holding its content, so every dataset keeps them.
INPUT_CONTENT = ("input_content",)
OUTPUT_CONTENT = ("output_content", "tool_calls")
JSON_COLUMNS = ("attributes", *(f.name for f in records.fields() if f.kind == "json"))


def record_dataset(lf: pl.LazyFrame, dataset: str) -> pl.LazyFrame:
    names = records.field_names()
    if dataset == "request_logs":
        return lf.select([n for n in names if n not in OUTPUT_CONTENT])
    if dataset == "response_logs":
        return lf.select([n for n in names if n not in INPUT_CONTENT])
    if dataset == "error_logs":
        return lf.filter(pl.col("status") == "error").select(
            [n for n in names if n not in INPUT_CONTENT + OUTPUT_CONTENT]
        )
    raise ValueError(f"not a record dataset: {dataset}")


def traces(lf: pl.LazyFrame) -> pl.LazyFrame:
    """One span per record. A retry's span is a child of its first attempt, in the first attempt's trace."""
    end = pl.coalesce(
        pl.col("ended_at"), pl.col("timestamp") + pl.duration(milliseconds=pl.col("latency_ms"))
    )
    attributes = pl.struct(
        pl.col("request_type").alias("gen_ai.operation.name"),
        pl.col("provider").alias("gen_ai.provider.name"),
        pl.col("model").alias("gen_ai.request.model"),
        pl.col("input_tokens").alias("gen_ai.usage.input_tokens"),
        pl.col("output_tokens").alias("gen_ai.usage.output_tokens"),
        pl.col("cost_usd").alias("gen_ai.usage.cost"),
        pl.col("finish_reason").alias("gen_ai.response.finish_reason"),
        pl.col("request_id").alias("gen_ai.response.id"),
        pl.col("status_code").alias("http.response.status_code"),
        pl.col("endpoint").alias("url.path"),
        pl.col("error_type").alias("error.type"),
        pl.col("stream").alias("bifrost.stream"),
        pl.col("time_to_first_token_ms").alias("bifrost.time_to_first_token_ms"),
        pl.col("retries").alias("bifrost.retries"),
        pl.col("fallback_index").alias("bifrost.fallback_index"),
    ).struct.json_encode()
    return lf.select(
        pl.coalesce(pl.col("parent_request_id"), pl.col("request_id")).alias("trace_id"),
        pl.col("request_id").alias("span_id"),
        pl.col("parent_request_id").alias("parent_span_id"),
        (pl.col("request_type") + pl.lit(" ") + pl.col("model")).alias("name"),
        pl.col("timestamp").alias("start_time"),
        end.alias("end_time"),
        pl.col("latency_ms").alias("duration_ms"),
        pl.when(pl.col("status") == "error").then(pl.lit("ERROR")).otherwise(pl.lit("OK")).alias("status_code"),
        pl.col("error_message").alias("status_message"),
        pl.col("request_id"),
        pl.col("parent_request_id"),
        pl.col("customer_id"),
        pl.col("provider"),
        pl.col("model"),
        attributes.alias("attributes"),
    )
