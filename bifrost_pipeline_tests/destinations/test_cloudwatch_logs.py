"""`cloudwatch_logs` against moto_server's CloudWatch Logs (boto3 over HTTP, as against AWS).

moto rejects out-of-order events and events older than 14 days as CloudWatch does, but not oversized
calls: every PutLogEvents call is recorded here and checked against the documented limits.
"""

from __future__ import annotations

import itertools

import boto3
import orjson
import pytest
from pydantic import ValidationError

from bifrost_pipeline.destinations.base import DestinationError
from bifrost_pipeline.destinations.cloudwatch_logs import CloudWatchLogsConfig, CloudWatchLogsDestination
from bifrost_pipeline_tests.destinations import log_event_data as data
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.emulators.object_stores import MOTO_KEY, MOTO_REGION

pytestmark = pytest.mark.usefixtures("no_cloud_metadata")
_groups = itertools.count()


def raw_client(url: str):
    return boto3.client(
        "logs", endpoint_url=url, region_name=MOTO_REGION, aws_access_key_id=MOTO_KEY, aws_secret_access_key=MOTO_KEY
    )


@pytest.fixture
def group(moto_logs) -> str:
    name = f"/bifrost/test-{next(_groups)}"
    raw_client(moto_logs.url).create_log_group(logGroupName=name)
    return name


def make(url: str, group: str, **overrides) -> CloudWatchLogsDestination:
    raw = {
        "log_group": group,
        "region": MOTO_REGION,
        "endpoint_url": url,
        "credentials": {"access_key_id": MOTO_KEY, "secret_access_key": MOTO_KEY},
        **overrides,
    }
    return CloudWatchLogsDestination(CloudWatchLogsConfig.model_validate(raw), context("fwd"))


def record_calls(dest: CloudWatchLogsDestination) -> list[list[dict]]:
    calls: list[list[dict]] = []
    dest.client.meta.events.register(
        "provide-client-params.logs.PutLogEvents", lambda params, **kw: calls.append(params["logEvents"])
    )
    return calls


def stream_events(url: str, group: str, stream: str) -> list[dict]:
    client, out, token = raw_client(url), [], None
    while True:
        page = client.get_log_events(
            logGroupName=group, logStreamName=stream, startFromHead=True, **({"nextToken": token} if token else {})
        )
        out += page["events"]
        if page["nextForwardToken"] == token:
            return out
        token = page["nextForwardToken"]


def check_limits(calls: list[list[dict]]) -> None:
    for events in calls:
        assert len(events) <= 10_000
        assert sum(len(e["message"].encode()) + 26 for e in events) <= 1_048_576
        stamps = [e["timestamp"] for e in events]
        assert stamps == sorted(stamps) and stamps[-1] - stamps[0] <= 24 * 3600 * 1000


def test_rows_go_in_time_order_one_stream_per_partition_and_dataset(moto_logs, group, tmp_path):
    rows = data.recent_rows(12_000)  # out of time order on purpose
    out = data.output(rows, tmp_path)
    dest = make(moto_logs.url, group)
    calls = record_calls(dest)
    result = dest.write_partition(out)
    check_limits(calls)
    # a row is about 900 bytes: the 1,048,576 bytes fill a call before its 10,000 events (see test_log_events)
    assert sum(len(c) for c in calls) == 12_000
    assert all(sum(len(e["message"].encode()) + 26 for e in c) > 1_040_000 for c in calls[:-1])
    stream = f"fwd/{out.partition_key.replace(':', '-')}/request_logs"
    assert result.written == [f"cloudwatch://{group}/{stream}"]
    events = stream_events(moto_logs.url, group, stream)
    assert len(events) == 12_000
    first = orjson.loads(events[0]["message"])
    assert first["bifrost"] == {"export": "fwd", "partition": out.partition_key, "dataset": "request_logs", "run_id": "run-1"}
    by_id = {r["request_id"]: r for r in rows}
    assert events[0]["timestamp"] == int(by_id[first["record"]["request_id"]]["timestamp"].timestamp() * 1000)
    assert dest.count_rows(out, result) == {"request_logs": 12_000}


def test_batches_respect_the_byte_limit_and_big_events_are_cut(moto_logs, group, tmp_path):
    rows = data.recent_rows(300, content_bytes=8_000)
    rows[5]["input_content"] = '{"messages": [{"role": "user", "content": "' + "q" * 40_000 + '"}]}'
    dest = make(moto_logs.url, group, max_event_bytes=20_000)
    calls = record_calls(dest)
    result = dest.write_partition(data.output(rows, tmp_path))
    assert len(calls) >= 3
    check_limits(calls)
    assert all(len(e["message"].encode()) <= 20_000 for c in calls for e in c)
    assert result.metadata["truncated_request_ids"] == [rows[5]["request_id"]]


def test_a_rerun_replaces_the_stream(moto_logs, group, tmp_path):
    out = data.output(data.recent_rows(50), tmp_path / "a", run_id="run-1")
    dest = make(moto_logs.url, group)
    dest.write_partition(out)
    again = data.output(data.recent_rows(30), tmp_path / "b", run_id="run-2")
    result = make(moto_logs.url, group).write_partition(again)
    assert dest.count_rows(again, result) == {"request_logs": 30}
    (stream,) = [s.removeprefix(f"cloudwatch://{group}/") for s in result.written]
    runs = {orjson.loads(e["message"])["bifrost"]["run_id"] for e in stream_events(moto_logs.url, group, stream)}
    assert runs == {"run-2"}


def test_rows_older_than_14_days_fail_before_the_stream_is_touched(moto_logs, group, tmp_path):
    fresh = data.output(data.recent_rows(10), tmp_path / "fresh")
    make(moto_logs.url, group).write_partition(fresh)
    stale = data.output(data.recent_rows(10, hours_ago=15 * 24), tmp_path / "stale")
    with pytest.raises(DestinationError, match="older than CloudWatch accepts \\(14 days: the PutLogEvents limit\\)"):
        make(moto_logs.url, group).write_partition(stale)
    # `timestamp: sent` dates them at sending time instead (the rows keep their own time in record.timestamp)
    result = make(moto_logs.url, group, timestamp="sent").write_partition(stale)
    assert result.rows == {"request_logs": 10}


def test_the_group_retention_is_the_limit_when_shorter(moto_logs, group, tmp_path):
    raw_client(moto_logs.url).put_retention_policy(logGroupName=group, retentionInDays=1)
    old = data.output(data.recent_rows(10, hours_ago=30), tmp_path)
    with pytest.raises(DestinationError, match="1 days: the group retention"):
        make(moto_logs.url, group).write_partition(old)


def test_a_missing_group_is_named_or_created(moto_logs, tmp_path):
    out = data.output(data.recent_rows(5), tmp_path)
    with pytest.raises(DestinationError) as err:
        make(moto_logs.url, "/bifrost/absent").write_partition(out)
    assert str(err.value).startswith("export 'fwd' -> cloudwatch logs /bifrost/absent (region us-east-1)")
    assert "does not exist (create it, or set create_log_group: true)" in str(err.value)
    assert make(moto_logs.url, "/bifrost/created", create_log_group=True).write_partition(out).rows == {"request_logs": 5}


def test_stream_template_and_config_checks():
    with pytest.raises(ValidationError, match="must contain \\{partition\\} and \\{dataset\\}"):
        CloudWatchLogsConfig.model_validate({"log_group": "g", "stream": "{export}"})
    with pytest.raises(ValidationError, match="unknown placeholder \\{table\\}"):
        CloudWatchLogsConfig.model_validate({"log_group": "g", "stream": "{table}/{partition}/{dataset}"})
    with pytest.raises(ValidationError, match="log_group"):
        CloudWatchLogsConfig.model_validate({"log_group": "a:b"})
    cfg = CloudWatchLogsConfig.model_validate({"log_group": "g", "credentials": {"access_key_id": "", "secret_access_key": ""}})
    assert cfg.credentials is None  # empty ${AWS_*} falls back to the default chain
