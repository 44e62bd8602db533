"""`datadog_logs` against a local Logs intake that checks every request as Datadog documents it."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from bifrost_pipeline.destinations.base import DestinationError
from bifrost_pipeline.destinations.datadog_logs import DatadogLogsConfig, DatadogLogsDestination
from bifrost_pipeline_tests.destinations import log_event_data as data
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.emulators.log_services import DD_MAX_LOG, DD_MAX_PAYLOAD


def make(intake, **overrides) -> DatadogLogsDestination:
    raw = {
        "api_key": intake.api_key,
        "intake_url": intake.url,
        "service": "llm-gateway",
        "source": "bifrost",
        "tags": ["env:test", "team:platform"],
        "hostname": "exporter-1",
        "backoff_seconds": 0,
        **overrides,
    }
    return DatadogLogsDestination(DatadogLogsConfig.model_validate(raw), context("fwd"))


def test_every_row_arrives_as_one_structured_log_in_batches_of_1000(datadog_intake, tmp_path):
    rows = data.recent_rows(2500)
    out = data.output(rows, tmp_path)
    dest = make(datadog_intake)
    result = dest.write_partition(out)
    assert datadog_intake.violations == []
    assert [p["count"] for p in datadog_intake.payloads] == [1000, 1000, 500]
    assert {p["encoding"] for p in datadog_intake.payloads} == {"gzip"}
    logs = datadog_intake.accepted
    assert sorted(log["record"]["request_id"] for log in logs) == sorted(r["request_id"] for r in rows)
    first = logs[0]
    assert first["ddsource"] == "bifrost" and first["service"] == "llm-gateway"
    assert first["ddtags"] == "env:test,team:platform" and first["hostname"] == "exporter-1"
    assert first["bifrost"] == {"export": "fwd", "partition": out.partition_key, "dataset": "request_logs", "run_id": "run-1"}
    assert first["message"].startswith("request_logs request_id=req_")
    # JSON columns arrive as objects, the record's own time stays under `record` (the log is dated on receipt)
    assert isinstance(first["record"]["input_content"], dict) and "timestamp" not in first
    assert first["record"]["timestamp"].endswith("Z")
    assert result.rows == {"request_logs": 2500}
    assert dest.count_rows(out, result) == {"request_logs": 2500}


def test_payloads_stay_under_5_mb_and_an_oversized_log_is_cut_visibly(datadog_intake, tmp_path):
    rows = data.recent_rows(300, content_bytes=40_000)
    rows[7]["input_content"] = '{"messages": [{"role": "user", "content": "' + "y" * 1_500_000 + '"}]}'
    out = data.output(rows, tmp_path)
    result = make(datadog_intake).write_partition(out)
    assert datadog_intake.violations == []
    assert len(datadog_intake.payloads) >= 3
    assert all(p["bytes"] <= DD_MAX_PAYLOAD for p in datadog_intake.payloads)
    (big,) = [log for log in datadog_intake.accepted if log["record"]["request_id"] == rows[7]["request_id"]]
    # the field's size as it would have been sent (compact JSON)
    assert big["bifrost"]["truncated"] == {"input_content": len(orjson.dumps(orjson.loads(rows[7]["input_content"])))}
    assert "[truncated by bifrost:" in big["record"]["input_content"]
    assert DD_MAX_LOG - 5000 < len(orjson.dumps(big)) <= DD_MAX_LOG  # cut to the limit, not far below
    assert result.metadata["truncated_events"] == 1 and result.rows == {"request_logs": 300}


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_are_retried_then_succeed(datadog_intake, tmp_path, status):
    out = data.output(data.recent_rows(10), tmp_path)
    datadog_intake.fail_next(status, times=2)
    result = make(datadog_intake, max_attempts=3).write_partition(out)
    assert datadog_intake.requests == 3 and len(datadog_intake.accepted) == 10
    assert result.rows == {"request_logs": 10}


def test_retries_give_up_with_a_retryable_error_naming_export_and_store(datadog_intake, tmp_path):
    out = data.output(data.recent_rows(10), tmp_path)
    datadog_intake.fail_next(503, times=5)
    with pytest.raises(DestinationError) as err:
        make(datadog_intake, max_attempts=3).write_partition(out)
    assert datadog_intake.requests == 3 and err.value.retryable
    assert "export 'fwd' -> datadog logs http://127.0.0.1" in str(err.value)
    assert "answered 503 after 3 attempt(s)" in str(err.value)


@pytest.mark.parametrize("status, said", [(400, "malformed"), (413, "5000000 bytes")])
def test_refused_payloads_fail_the_partition_and_are_not_retried(datadog_intake, tmp_path, status, said):
    out = data.output(data.recent_rows(10), tmp_path)
    datadog_intake.fail_next(status)
    with pytest.raises(DestinationError) as err:
        make(datadog_intake).write_partition(out)
    assert datadog_intake.requests == 1 and not err.value.retryable
    assert f"answered {status} to 10 logs" in str(err.value) and said in str(err.value)
    assert datadog_intake.accepted == []


def test_a_wrong_api_key_is_403_and_never_printed(datadog_intake, tmp_path):
    out = data.output(data.recent_rows(3), tmp_path)
    with pytest.raises(DestinationError) as err:
        make(datadog_intake, api_key="wrong-key-abcdef").write_partition(out)
    assert "answered 403" in str(err.value) and "check api_key and site" in str(err.value)
    assert "wrong-key-abcdef" not in str(err.value)
    assert datadog_intake.violations == ["403: invalid API key"]


def test_record_timestamps_date_the_logs_and_too_old_rows_fail_before_sending(datadog_intake, tmp_path):
    rows = data.recent_rows(5, hours_ago=2)
    make(datadog_intake, timestamp="record").write_partition(data.output(rows, tmp_path / "recent"))
    stamps = {log["record"]["request_id"]: log["timestamp"] for log in datadog_intake.accepted}
    assert stamps == {r["request_id"]: int(r["timestamp"].timestamp() * 1000) for r in rows}
    old = data.output(data.recent_rows(5, hours_ago=20), tmp_path / "old")
    before = datadog_intake.requests
    with pytest.raises(DestinationError, match="older than the 18 h Datadog accepts"):
        make(datadog_intake, timestamp="record").write_partition(old)
    assert datadog_intake.requests == before


def test_config_is_checked_at_load():
    with pytest.raises(ValidationError, match="api_key is empty"):
        DatadogLogsConfig.model_validate({"api_key": " "})
    with pytest.raises(ValidationError, match="site"):
        DatadogLogsConfig.model_validate({"api_key": "k" * 32, "site": "datadoghq.org"})
    with pytest.raises(ValidationError, match="no comma"):
        DatadogLogsConfig.model_validate({"api_key": "k" * 32, "tags": ["a,b"]})
    cfg = DatadogLogsConfig.model_validate({"api_key": "k" * 32, "site": "datadoghq.eu"})
    dest = DatadogLogsDestination(cfg, context("fwd"))
    assert dest.describe() == "datadog logs https://http-intake.logs.datadoghq.eu (service bifrost)"
    assert dest.api.api_client.configuration.server_variables["site"] == "datadoghq.eu"
