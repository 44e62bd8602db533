"""Partitions for the forwarding destinations: recent request logs (CloudWatch refuses rows older than
14 days), a large one for the batch limits, and one with an oversized request body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bifrost_pipeline.destinations.base import PartitionOutput
from bifrost_pipeline_tests.destinations import warehouse_data as wd


def recent_rows(n: int, *, hours_ago: float = 3, content_bytes: int = 0, shuffle: bool = True) -> list[dict]:
    """`n` request records spread over the hour that started `hours_ago` hours ago (out of time order
    when `shuffle`), each with a request body of about `content_bytes` bytes."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=hours_ago)
    template = wd.day_records(wd.DAYS[0])
    rows = []
    for i in range(n):
        row = dict(template[i % len(template)])
        at = start + timedelta(milliseconds=(3_600_000 * i) // max(n, 1))
        row.update(timestamp=at, ended_at=at + timedelta(seconds=1), request_id=f"req_{i:06d}")
        if content_bytes:
            row["input_content"] = '{"messages": [{"role": "user", "content": "' + "x" * content_bytes + '"}]}'
        rows.append(row)
    if shuffle:  # a deterministic disorder: CloudWatch needs time order within a call
        rows = rows[1::2] + rows[0::2]
    return rows


def output(rows: list[dict], work: Path, *, export: str = "fwd", run_id: str = "run-1") -> PartitionOutput:
    start = min(r["timestamp"] for r in rows).replace(minute=0, second=0, microsecond=0)
    table = wd.records_table(rows)
    out = wd.partition(export, f"{start:%Y-%m-%d-%H}:00", [wd.dataset_file(table, "request_logs", work)], run_id)
    from dataclasses import replace

    return replace(out, window_start=start, window_end=start + timedelta(hours=1))
