"""`splunk_hec` against a local HTTP Event Collector that checks every request as Splunk documents it,
and end to end through run_export."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bifrost_pipeline import validation
from bifrost_pipeline.config import parse_config
from bifrost_pipeline.destinations.base import DestinationError
from bifrost_pipeline.destinations.splunk_hec import SplunkHecConfig, SplunkHecDestination
from bifrost_pipeline.exports import run_export
from bifrost_pipeline_tests.destinations import log_event_data as data
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.helpers import DAY, land, record, utc


def make(hec, **overrides) -> SplunkHecDestination:
    raw = {"url": hec.url, "token": hec.token, "index": "llm", "host": "exporter-1", "backoff_seconds": 0, **overrides}
    return SplunkHecDestination(SplunkHecConfig.model_validate(raw), context("fwd"))


def test_events_arrive_in_payloads_within_batch_bytes_with_the_record_time(splunk_hec, tmp_path):
    rows = data.recent_rows(400)
    out = data.output(rows, tmp_path)
    dest = make(splunk_hec, batch_bytes=100_000)
    result = dest.write_partition(out)
    assert splunk_hec.violations == []
    assert len(splunk_hec.payloads) > 3 and all(p["bytes"] <= 100_000 for p in splunk_hec.payloads)
    assert {p["encoding"] for p in splunk_hec.payloads} == {"gzip"}
    by_id = {e["event"]["record"]["request_id"]: e for e in splunk_hec.accepted}
    assert set(by_id) == {r["request_id"] for r in rows}
    row = rows[0]
    event = by_id[row["request_id"]]
    assert event["time"] == round(row["timestamp"].timestamp(), 3)
    assert (event["index"], event["sourcetype"], event["source"], event["host"]) == ("llm", "_json", "bifrost", "exporter-1")
    assert event["event"]["bifrost"]["run_id"] == "run-1" and event["event"]["bifrost"]["partition"] == out.partition_key
    assert dest.count_rows(out, result) == {"request_logs": 400}


def test_uncompressed_bodies_and_oversized_events_cut_to_max_event_bytes(splunk_hec, tmp_path):
    rows = data.recent_rows(20)
    rows[3]["output_content"] = '{"text": "' + "z" * 50_000 + '"}'
    result = make(splunk_hec, gzip=False, max_event_bytes=20_000).write_partition(data.output(rows, tmp_path))
    assert {p["encoding"] for p in splunk_hec.payloads} == {None}
    (big,) = [e for e in splunk_hec.accepted if "truncated" in e["event"]["bifrost"]]
    assert big["event"]["record"]["request_id"] == rows[3]["request_id"]
    assert big["event"]["record"]["output_content"].endswith("bytes kept]")
    assert result.metadata["truncated_request_ids"] == [rows[3]["request_id"]]


@pytest.mark.parametrize("status", [429, 503, 500])
def test_busy_and_throttled_answers_are_retried_then_succeed(splunk_hec, tmp_path, status):
    splunk_hec.fail_next(status, times=2)
    result = make(splunk_hec, max_attempts=4).write_partition(data.output(data.recent_rows(5), tmp_path))
    assert splunk_hec.requests == 3 and result.rows == {"request_logs": 5}


def test_an_index_the_token_may_not_write_is_a_named_400(splunk_hec, tmp_path):
    with pytest.raises(DestinationError) as err:
        make(splunk_hec, index="secret").write_partition(data.output(data.recent_rows(5), tmp_path))
    msg = str(err.value)
    assert msg.startswith("export 'fwd' -> splunk HEC http://127.0.0.1")
    assert "HEC answered 400 to 5 events: Incorrect index (code 7)" in msg and not err.value.retryable
    assert splunk_hec.accepted == []


def test_an_invalid_token_is_403_and_never_printed(splunk_hec, tmp_path):
    with pytest.raises(DestinationError) as err:
        make(splunk_hec, token="not-the-token-123").write_partition(data.output(data.recent_rows(5), tmp_path))
    assert "HEC answered 403 to 5 events: Invalid token (code 4)" in str(err.value)
    assert "not-the-token-123" not in str(err.value)


def test_a_body_above_max_content_length_is_a_named_413(splunk_hec, tmp_path):
    splunk_hec.max_content_length = 50_000
    with pytest.raises(DestinationError, match="answered 413 .* lower batch_bytes"):
        make(splunk_hec, gzip=False, batch_bytes=200_000).write_partition(data.output(data.recent_rows(300), tmp_path))
    assert splunk_hec.requests == 1


def test_tls_is_verified_by_default_and_ca_file_is_the_bundle(tmp_path, splunk_hec):
    assert make(splunk_hec).session.verify is True
    dest = make(splunk_hec, ca_file="certs/ca.pem")
    assert dest.session.verify == str(dest.context.base_dir / "certs" / "ca.pem")
    with pytest.raises(ValidationError, match="ca_file is for verifying TLS"):
        SplunkHecConfig.model_validate({"url": "https://h:8088", "token": "t" * 8, "verify_tls": False, "ca_file": "x"})
    with pytest.raises(ValidationError, match="without /services/collector/event"):
        SplunkHecConfig.model_validate({"url": "https://h:8088/services/collector/event", "token": "t" * 8})


def test_end_to_end_through_run_export(splunk_hec, tmp_path):
    entry = {
        "name": "to_splunk",
        "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
        "destination": {
            "type": "splunk_hec",
            "config": {"url": splunk_hec.url, "token": "${SPLUNK_HEC_TOKEN}", "index": "main", "backoff_seconds": 0},
        },
        "data": {"format": "json", "include": ["request_logs", "metrics"]},
    }
    raw = {
        "landing": {"path": "landing"},
        "pipeline": {"data_dir": "data", "start_date": "2024-01-01"},
        "log_exports": {"enabled": True, "exports": [entry]},
    }
    app = parse_config(raw, env={"SPLUNK_HEC_TOKEN": splunk_hec.token}, base_dir=tmp_path)
    rows = [record(request_id=f"r{i}", timestamp=f"2024-01-15T{i:02d}:15:00Z") for i in range(12)]
    land(app, rows, when=utc(2024, 1, 15, 0))
    validation.validate_day(app, DAY)
    run = run_export(app, app.exports[0], "2024-01-15")
    assert splunk_hec.violations == []
    assert run.written.rows == run.rows and run.rows["request_logs"] == 12
    ids = {e["event"]["record"]["request_id"] for e in splunk_hec.accepted if e["event"]["bifrost"]["dataset"] == "request_logs"}
    assert ids == {f"r{i}" for i in range(12)}
    metrics = [e for e in splunk_hec.accepted if e["event"]["bifrost"]["dataset"] == "metrics"]
    assert len(metrics) == run.rows["metrics"] and all(e["event"]["bifrost"]["export"] == "to_splunk" for e in metrics)
