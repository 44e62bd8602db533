"""The shared pieces of the forwarding destinations: batching, truncation, the event shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from bifrost_pipeline.destinations.log_events import (
    Encoded,
    Event,
    EventTooLarge,
    batches,
    fit,
    read_events,
    to_json,
)
from bifrost_pipeline_tests.destinations import log_event_data as data

T0 = datetime(2024, 1, 15, tzinfo=UTC)


def items(sizes: list[int], step: timedelta = timedelta(seconds=1)) -> list[Encoded]:
    return [Encoded(Event(T0 + i * step, {}, f"r{i}"), b"x" * n) for i, n in enumerate(sizes)]


def test_batches_cut_on_count_bytes_with_overheads_and_time_span():
    assert [len(b) for b in batches(items([1] * 25), max_count=10, max_bytes=10**6)] == [10, 10, 5]
    # 26 bytes overhead per item: 4 items of 100 bytes = 504 > 500
    assert [len(b) for b in batches(items([100] * 7), max_count=99, max_bytes=500, item_overhead=26)] == [3, 3, 1]
    # the payload's own overhead counts too: [ ] around 3 items of 3 bytes with commas
    assert [len(b) for b in batches(items([3] * 3), max_count=9, max_bytes=13, item_overhead=1, payload_overhead=2)] == [2, 1]
    hours = items([1] * 5, step=timedelta(hours=10))
    assert [len(b) for b in batches(hours, max_count=99, max_bytes=99, max_span=timedelta(hours=24))] == [3, 2]


def test_fit_cuts_the_biggest_content_field_first_and_says_so():
    record = {"request_id": "r1", "input_content": {"m": "a" * 5000}, "output_content": "b" * 2000, "model": "m"}
    event = Event(T0, {"bifrost": {"export": "e"}, "record": record}, "r1")
    out = fit(event, 3000, lambda e: to_json(e.body))
    assert len(out) <= 3000
    body = orjson.loads(out)
    assert set(body["bifrost"]["truncated"]) == {"input_content"}
    assert body["record"]["output_content"] == "b" * 2000 and body["record"]["model"] == "m"
    tiny = Event(T0, {"bifrost": {}, "record": {"request_id": "r2", "model": "m" * 500}}, "r2")
    with pytest.raises(EventTooLarge, match="request_id 'r2'"):
        fit(tiny, 100, lambda e: to_json(e.body))


def test_events_carry_the_envelope_and_json_columns_as_objects(tmp_path):
    rows = data.recent_rows(3)
    out = data.output(rows, tmp_path)
    events = list(read_events(out, out.files[0], rows_per_read=2))
    assert [e.request_id for e in events] == [r["request_id"] for r in rows]
    assert events[0].body["bifrost"] == {"export": "fwd", "partition": out.partition_key, "dataset": "request_logs", "run_id": "run-1"}
    assert events[0].body["record"]["input_content"] == {"messages": [{"role": "user", "content": "hi 1"}]}
    assert events[0].time == rows[0]["timestamp"]
