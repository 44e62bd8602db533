import hashlib
import hmac
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from pydantic import SecretStr

from bifrost_pipeline import records
from bifrost_pipeline.config import Anonymize, Enrich, Filters
from bifrost_pipeline.transforms import datasets
from bifrost_pipeline.transforms.aggregate import aggregate
from bifrost_pipeline.transforms.anonymize import REDACTED, anonymize
from bifrost_pipeline.transforms.enrich import enrich
from bifrost_pipeline.transforms.filters import filter_records
from bifrost_pipeline_tests.helpers import utc

WINDOW_END = utc(2024, 1, 16)


def frame(rows: list[dict]) -> pl.LazyFrame:
    schema = records.polars_schema()
    full = [{name: r.get(name) for name in schema} for r in rows]
    return pl.DataFrame(full, schema=schema).lazy()


def row(i: int, **kw) -> dict:
    base = {
        "schema_version": "1",
        "timestamp": utc(2024, 1, 15, i % 24, 0),
        "request_id": f"req_{i}",
        "customer_id": f"cust_{i % 3}",
        "provider": ["openai", "anthropic"][i % 2],
        "model": ["gpt-4o", "claude-3-haiku"][i % 2],
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "request_type": "chat",
        "stream": False,
        "status": "error" if i % 5 == 0 else "success",
        "status_code": 500 if i % 5 == 0 else 200,
        "latency_ms": 100 + 37 * i,
        "input_tokens": 10 + i,
        "output_tokens": 2 * i,
        "total_tokens": 10 + 3 * i,
        "cost_usd": 0.001 * i,
    }
    base.update(kw)
    return base


ROWS = [row(i) for i in range(40)]


def ids(lf: pl.LazyFrame) -> list[str]:
    return sorted(lf.collect()["request_id"].to_list())


@pytest.mark.parametrize(
    "filters, keep",
    [
        (Filters(providers=["anthropic"]), lambda r: r["provider"] == "anthropic"),
        (Filters(models=["gpt-4o"]), lambda r: r["model"] == "gpt-4o"),
        (Filters(status_codes=[500]), lambda r: r["status_code"] == 500),
        (Filters(customers=["cust_1", "cust_2"]), lambda r: r["customer_id"] in ("cust_1", "cust_2")),
        (Filters(min_latency_ms=500), lambda r: r["latency_ms"] >= 500),
        (Filters(max_latency_ms=500), lambda r: r["latency_ms"] <= 500),
        (Filters(has_errors=True), lambda r: r["status"] == "error"),
        (Filters(has_errors=False), lambda r: r["status"] == "success"),
        (
            Filters(date_range={"start": "2024-01-15T06:00:00+01:00", "end": "2024-01-15T07:00:00Z"}),
            lambda r: utc(2024, 1, 15, 5) <= r["timestamp"] <= utc(2024, 1, 15, 7),
        ),
        (Filters(providers=["openai"], min_latency_ms=400), lambda r: r["provider"] == "openai" and r["latency_ms"] >= 400),
    ],
)
def test_each_filter(filters, keep):
    expected = sorted(r["request_id"] for r in ROWS if keep(r))
    assert expected and len(expected) < len(ROWS)
    assert ids(filter_records(frame(ROWS), filters, WINDOW_END)) == expected


@pytest.mark.parametrize("name, days", [("last_24_hours", 1), ("last_7_days", 7), ("last_30_days", 30)])
def test_relative_date_ranges_end_at_the_window_end(name, days):
    rows = [row(0, request_id="inside", timestamp=WINDOW_END - timedelta(days=days) + timedelta(seconds=1)),
            row(1, request_id="before", timestamp=WINDOW_END - timedelta(days=days, seconds=1))]
    assert ids(filter_records(frame(rows), Filters(date_range=name), WINDOW_END)) == ["inside"]


def test_aggregate_metrics_match_a_hand_computation(tmp_path):
    out = aggregate(
        frame(ROWS),
        ["provider", "date"],
        ["count", "total_requests", "error_count", "avg_latency", "p50_latency", "p95_latency", "p99_latency",
         "total_tokens", "input_tokens", "output_tokens", "total_cost", "error_rate"],
        timezone="UTC",
        work_dir=tmp_path,
    ).collect().sort("provider")
    assert out.height == 2
    for r in out.iter_rows(named=True):
        group = [x for x in ROWS if x["provider"] == r["provider"]]
        lat = np.array([x["latency_ms"] for x in group], dtype=float)
        assert r["count"] == r["total_requests"] == len(group)
        assert r["error_count"] == sum(x["status"] == "error" for x in group)
        assert r["avg_latency"] == pytest.approx(lat.mean())
        for q in (50, 95, 99):
            assert r[f"p{q}_latency"] == pytest.approx(np.percentile(lat, q))  # exact, linear interpolation
        assert r["total_tokens"] == sum(x["total_tokens"] for x in group)
        assert r["input_tokens"] == sum(x["input_tokens"] for x in group)
        assert r["output_tokens"] == sum(x["output_tokens"] for x in group)
        assert r["total_cost"] == pytest.approx(sum(x["cost_usd"] for x in group))
        assert r["error_rate"] == pytest.approx(r["error_count"] / len(group))
        assert str(r["date"]) == "2024-01-15"


def test_aggregate_date_and_hour_follow_the_export_time_zone(tmp_path):
    rows = [row(0, timestamp=utc(2024, 1, 15, 23, 30)), row(1, timestamp=utc(2024, 1, 16, 0, 30))]
    out = aggregate(frame(rows), ["date", "hour"], ["count"], timezone="America/New_York", work_dir=tmp_path).collect()
    assert sorted(str(d) for d in out["date"]) == ["2024-01-15", "2024-01-15"]  # 18:30 and 19:30 in New York
    # 18:00 and 19:00 in New York, as instants
    assert sorted(out["hour"].to_list()) == [utc(2024, 1, 15, 23), utc(2024, 1, 16, 0)]
    assert out["count"].sum() == 2 and out.height == 2


def test_aggregate_total_tokens_falls_back_to_input_plus_output(tmp_path):
    rows = [row(1, total_tokens=None, input_tokens=5, output_tokens=7)]
    out = aggregate(frame(rows), ["model"], ["total_tokens"], timezone="UTC", work_dir=tmp_path).collect()
    assert out["total_tokens"].to_list() == [12]


def test_hash_is_hmac_sha256_with_the_secret_key():
    step = Anonymize(type="anonymize", fields=["customer_id", "status_code"], method="hash", key=SecretStr("k3y"))
    out = anonymize(frame(ROWS[:3]), step).collect()
    for original, hashed in zip(ROWS[:3], out.iter_rows(named=True), strict=True):
        assert hashed["customer_id"] == hmac.new(b"k3y", original["customer_id"].encode(), hashlib.sha256).hexdigest()
        assert hashed["status_code"] == hmac.new(b"k3y", str(original["status_code"]).encode(), hashlib.sha256).hexdigest()
    # stable across runs, different under another key, not the plain SHA-256 of the value
    again = anonymize(frame(ROWS[:3]), step).collect()
    assert again["customer_id"].to_list() == out["customer_id"].to_list()
    other = anonymize(frame(ROWS[:3]), step.model_copy(update={"key": SecretStr("other")})).collect()
    assert other["customer_id"][0] != out["customer_id"][0]
    assert out["customer_id"][0] != hashlib.sha256(b"cust_0").hexdigest()


def test_redact_and_drop():
    lf = frame([row(1, user_id="u1"), row(2)])
    redacted = anonymize(lf, Anonymize(type="anonymize", fields=["user_id", "latency_ms"], method="redact")).collect()
    assert redacted["user_id"].to_list() == [REDACTED, None]
    assert redacted["latency_ms"].null_count() == 2
    dropped = anonymize(lf, Anonymize(type="anonymize", fields=["user_id", "cost_usd"], method="drop")).collect()
    assert "user_id" not in dropped.columns and "cost_usd" not in dropped.columns
    # a field already gone is skipped, not an error
    assert anonymize(lf.drop("user_id"), Anonymize(type="anonymize", fields=["user_id"], method="drop")).collect().height == 2


def test_enrich_fills_export_placeholders_and_keeps_literal_types():
    step = Enrich(type="enrich", add_fields={"at": "${EXPORT_TIMESTAMP}", "v": "v=${EXPORT_VERSION}", "n": 3, "b": True})
    out = enrich(frame(ROWS[:2]), step, {"EXPORT_TIMESTAMP": "2024-01-16T02:00:00Z", "EXPORT_VERSION": "9",
                                          "EXPORT_NAME": "e", "EXPORT_PARTITION": "p"}).collect()
    assert out["at"].to_list() == ["2024-01-16T02:00:00Z"] * 2
    assert out["v"][0] == "v=9" and out["n"][0] == 3 and out["b"][0] is True


def test_record_datasets_and_traces():
    rows = [row(1), row(5, parent_request_id="req_1", request_id="req_1_retry")]
    lf = frame(rows)
    assert "output_content" not in datasets.record_dataset(lf, "request_logs").collect_schema()
    assert "input_content" not in datasets.record_dataset(lf, "response_logs").collect_schema()
    errors = datasets.record_dataset(lf, "error_logs").collect()
    assert errors["request_id"].to_list() == ["req_1_retry"]
    spans = datasets.traces(lf).collect().sort("span_id")
    assert spans["trace_id"].to_list() == ["req_1", "req_1"]
    assert spans["parent_span_id"].to_list() == [None, "req_1"]
    assert spans["status_code"].to_list() == ["OK", "ERROR"]
    import json

    attrs = json.loads(spans["attributes"][0])
    assert attrs["gen_ai.provider.name"] == "anthropic" and attrs["gen_ai.usage.input_tokens"] == 11
    assert spans["end_time"][0] == rows[0]["timestamp"] + timedelta(milliseconds=rows[0]["latency_ms"])
