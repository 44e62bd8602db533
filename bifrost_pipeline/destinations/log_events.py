"""What the log-forwarding destinations (datadog_logs, splunk_hec, cloudwatch_logs) share.

Each exported row becomes one structured event of the same shape on every backend:

    {"bifrost": {"export", "partition", "dataset", "run_id"[, "truncated"]}, "record": {...the row...}}

The row sits under `record` rather than at the top so its fields never collide with a backend's reserved
attributes (Datadog takes `timestamp`, `date`, `status`, `host`, `service` and `trace_id` at the top level
as the log's own date, level, host...). JSON columns (`metadata`, `input_content`, ...) are sent as JSON
objects, not as strings holding JSON.

Rows are read from the staged Parquet copy of each dataset in bounded batches and sent in payloads that
respect the backend's documented limits, so memory stays bounded by one read batch plus one payload.

Oversized events: the content fields (`input_content`, `output_content`, `metadata`, `attributes`) are cut
until the event fits, biggest first, each ending in a visible marker, and `bifrost.truncated` lists the cut
fields with their size in bytes as they would have been sent (compact JSON). Splitting was rejected: half a JSON event is not queryable, and a
backend would index the halves as two requests. An event that still does not fit without its content
fields is an error naming its request_id, never dropped.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import orjson

from bifrost_pipeline.destinations.base import DatasetFile, Destination, PartitionOutput, WriteResult

EVENT_TIME_COLUMNS = ("timestamp", "start_time", "hour")  # records, traces, metrics (in that order)
CONTENT_FIELDS = ("input_content", "output_content", "metadata", "attributes")
ROWS_PER_READ = 1000


@dataclass
class Event:
    time: datetime  # the row's own time (its first EVENT_TIME_COLUMNS present), else the window start
    body: dict[str, Any]
    request_id: str | None


@dataclass
class Encoded:
    """An event in the backend's wire form (after truncation), `data` counting toward the payload size."""

    event: Event
    data: bytes


class EventTooLarge(ValueError):
    pass


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def to_json(value: Any) -> bytes:
    """Compact JSON; timestamps as RFC 3339 in UTC with a Z (naive ones are UTC, as the pipeline writes them)."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def _parse_json_column(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value  # not JSON after all (an enrich step may have replaced it): keep the text


def _utc(value: datetime | date) -> datetime:
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def read_events(output: PartitionOutput, file: DatasetFile, rows_per_read: int = ROWS_PER_READ) -> Iterator[Event]:
    """Every row of `file`'s Parquet copy as an `Event`, `rows_per_read` rows in memory at a time."""
    import pyarrow.parquet as pq

    envelope = {
        "export": output.export,
        "partition": output.partition_key,
        "dataset": file.dataset,
        "run_id": output.run_id,
    }
    with pq.ParquetFile(file.parquet_path) as pf:
        names = pf.schema_arrow.names
        time_column = next((c for c in EVENT_TIME_COLUMNS if c in names), None)
        for batch in pf.iter_batches(batch_size=rows_per_read):
            for row in batch.to_pylist():
                for name in file.json_columns:
                    if name in row:
                        row[name] = _parse_json_column(row[name])
                when = row.get(time_column) if time_column else None
                yield Event(
                    time=_utc(when) if when is not None else output.window_start.astimezone(UTC),
                    body={"bifrost": dict(envelope), "record": row},
                    request_id=row.get("request_id"),
                )


def oldest_event_time(output: PartitionOutput, file: DatasetFile) -> datetime | None:
    """The earliest event time of a dataset (reading only its time column); None without rows."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with pq.ParquetFile(file.parquet_path) as pf:
        column = next((c for c in EVENT_TIME_COLUMNS if c in pf.schema_arrow.names), None)
        lows = [] if column is None else [
            pc.min(b.column(0)).as_py() for b in pf.iter_batches(batch_size=65536, columns=[column])
        ]
    if column is None:
        return output.window_start.astimezone(UTC) if file.rows else None
    lows = [low for low in lows if low is not None]
    return min(_utc(low) for low in lows) if lows else None


def _cut(text: str, keep: int, total: int) -> str:
    kept = text.encode()[:keep].decode("utf-8", errors="ignore")
    return f"{kept}...[truncated by bifrost: {len(kept.encode())} of {total} bytes kept]"


def fit(event: Event, limit: int, encode: Callable[[Event], bytes]) -> bytes:
    """`encode(event)` within `limit` bytes, cutting content fields if needed (see the module's docstring)."""
    data = encode(event)
    if len(data) <= limit:
        return data
    record = event.body["record"]
    present = [f for f in CONTENT_FIELDS if record.get(f) is not None]
    truncated: dict[str, int] = {}
    event.body["bifrost"]["truncated"] = truncated
    for name in sorted(present, key=lambda f: -len(to_json(record[f]))):
        value = record[name]
        text = value if isinstance(value, str) else to_json(value).decode()
        total = len(text.encode())
        truncated[name] = total
        keep = total
        # A cut string can encode longer than the object it was (quotes are escaped): cut until it fits.
        while keep > 0:
            record[name] = _cut(text, keep, total)
            data = encode(event)
            excess = len(data) - limit
            if excess <= 0:
                return data
            keep = max(0, keep - excess)
        record[name] = _cut(text, 0, total)
    data = encode(event)
    if len(data) > limit:
        raise EventTooLarge(
            f"the event of request_id {event.request_id!r} is {len(data)} bytes even with its content fields "
            f"cut, over the limit of {limit} bytes per event"
        )
    return data


def batches(
    items: Iterable[Encoded],
    *,
    max_count: int,
    max_bytes: int,
    item_overhead: int = 0,
    payload_overhead: int = 0,
    max_span: timedelta | None = None,
) -> Iterator[list[Encoded]]:
    """Group items into payloads of at most `max_count` items and `max_bytes` bytes (each item's data plus
    `item_overhead`, plus `payload_overhead` per payload) whose event times span at most `max_span`."""
    batch: list[Encoded] = []
    used = payload_overhead
    for item in items:
        size = len(item.data) + item_overhead
        too_long = max_span is not None and batch and item.event.time - batch[0].event.time > max_span
        if batch and (len(batch) >= max_count or used + size > max_bytes or too_long):
            yield batch
            batch, used = [], payload_overhead
        batch.append(item)
        used += size
    if batch:
        yield batch


class EventDestination(Destination):
    """A destination that sends each row as one event, in payloads within the backend's limits.

    Subclasses give the limits, the wire form of one event (`encode`) and how a payload is sent
    (`send_batch`, answering how many events the service acknowledged); `prepare_dataset` and
    `events_of` are hooks (CloudWatch replaces the dataset's log stream and sends in time order).
    """

    max_batch_events: ClassVar[int]
    item_overhead: ClassVar[int] = 0
    payload_overhead: ClassVar[int] = 0
    max_batch_span: ClassVar[timedelta | None] = None

    @property
    @abstractmethod
    def max_batch_bytes(self) -> int: ...

    @property
    @abstractmethod
    def max_event_bytes(self) -> int: ...

    @abstractmethod
    def encode(self, event: Event) -> bytes:
        """The event as the backend receives it (what counts toward its size limits)."""

    @abstractmethod
    def send_batch(self, output: PartitionOutput, file: DatasetFile, batch: list[Encoded]) -> int:
        """Send one payload; the number of events the service acknowledged. Raise on any failure."""

    def prepare_dataset(self, output: PartitionOutput, file: DatasetFile) -> None:
        """Before a dataset's first payload."""

    def events_of(self, output: PartitionOutput, file: DatasetFile) -> Iterator[Event]:
        return read_events(output, file)

    def target_of(self, output: PartitionOutput, file: DatasetFile) -> str:
        """Where a dataset's events go, for the WriteResult (no secret)."""
        return self.describe()

    def _encoded(self, output: PartitionOutput, file: DatasetFile, truncated: list[str]) -> Iterator[Encoded]:
        for event in self.events_of(output, file):
            try:
                data = fit(event, self.max_event_bytes, self.encode)
            except EventTooLarge as err:
                raise self.error(f"partition {output.partition_key}, dataset {file.dataset}: {err}") from None
            if "truncated" in event.body["bifrost"]:
                truncated.append(event.request_id or "?")
            yield Encoded(event, data)

    def write_partition(self, output: PartitionOutput) -> WriteResult:
        acknowledged: dict[str, int] = {}
        truncated: list[str] = []
        payloads = 0
        for file in output.files:
            self.prepare_dataset(output, file)
            sent = 0
            for batch in batches(
                self._encoded(output, file, truncated),
                max_count=self.max_batch_events,
                max_bytes=self.max_batch_bytes,
                item_overhead=self.item_overhead,
                payload_overhead=self.payload_overhead,
                max_span=self.max_batch_span,
            ):
                sent += self.send_batch(output, file, batch)
                payloads += 1
            acknowledged[file.dataset] = sent
            if sent != file.rows:
                raise self.error(
                    f"partition {output.partition_key}, dataset {file.dataset}: the service acknowledged "
                    f"{sent} of {file.rows} events"
                )
        return WriteResult(
            location=self.describe(),
            written=[self.target_of(output, f) for f in output.files],
            rows=dict(acknowledged),
            metadata={
                "acknowledged": acknowledged,
                "payloads": payloads,
                "truncated_events": len(truncated),
                "truncated_request_ids": truncated[:20],
            },
        )

    def count_rows(self, output: PartitionOutput, result: WriteResult) -> dict[str, int]:
        """Rows per dataset as the service reported them: the events it acknowledged (2xx) while writing.

        Datadog and Splunk cannot be queried back with the credentials an export holds (an intake key or
        a HEC token only writes), so this is what they said they received, not what they indexed.
        """
        return dict(result.metadata.get("acknowledged", {}))
