"""`cloudwatch_logs`: every exported row as one event in a CloudWatch Logs log stream, through boto3.

One log stream per partition and dataset (named by `stream`, default `{export}/{partition}/{dataset}`).
A re-run replaces it: the stream is deleted and created again before the partition's events go in, so a
partition is never in CloudWatch twice (readers may see it empty or partly written while a run is in
progress: CloudWatch has no atomic swap).

PutLogEvents limits (API reference, checked 2026-11): at most 10,000 events and 1,048,576 bytes per call,
counting each message in UTF-8 plus 26 bytes per event; an event up to 1 MB (older references and some
partitions say 256 KB: lower `max_event_bytes` there); events in chronological order within a call (so
each dataset is sorted by time first, on disk, with DuckDB); a call spanning at most 24 hours (older
references; kept, it costs nothing); no event more than 14 days old or older than the group's retention,
which CloudWatch would reject while accepting the rest. With `timestamp: record` (the default) a partition
holding such rows fails before its stream is touched; `timestamp: sent` dates events at sending time.
Events CloudWatch reports as rejected fail the partition, naming their request_ids.

Retries: botocore's "standard" mode (throttling, 5xx, connection errors; exponential backoff with jitter)
up to `max_attempts` per call.
"""

from __future__ import annotations

import dataclasses
import shutil
import string
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from bifrost_pipeline.destinations.aws import AwsCredentials, aws_client
from bifrost_pipeline.destinations.base import (
    DatasetFile,
    DestinationConfig,
    DestinationError,
    PartitionOutput,
    WriteResult,
    none_if_empty,
)
from bifrost_pipeline.destinations.log_events import (
    EVENT_TIME_COLUMNS,
    Encoded,
    Event,
    EventDestination,
    oldest_event_time,
    read_events,
    to_json,
)
from bifrost_pipeline.destinations.object_store import check_endpoint, short

MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_AGE = timedelta(days=14)
STREAM_FIELDS = ("export", "partition", "dataset", "year", "month", "day", "hour")
SORT_MEMORY_LIMIT = "256MB"  # DuckDB spills the time sort to disk beyond this
_RETRYABLE = {"ThrottlingException", "ServiceUnavailableException", "LimitExceededException", "InternalFailure"}


def check_stream_template(value: str) -> str:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError as err:
        raise ValueError(f"invalid stream template {value!r}: {err}") from None
    unknown = names - set(STREAM_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{sorted(unknown)[0]}}} in stream (known: "
            + ", ".join("{" + f + "}" for f in STREAM_FIELDS) + ")"
        )
    if not {"partition", "dataset"} <= names:
        raise ValueError(
            "stream must contain {partition} and {dataset}: each partition's dataset has its own stream, "
            f"which a re-run replaces; got {value!r}"
        )
    return value


class CloudWatchLogsConfig(DestinationConfig):
    log_group: str
    stream: str = "{export}/{partition}/{dataset}"
    region: str | None = None
    endpoint_url: str | None = None  # emulators (moto) or a VPC endpoint
    # Without credentials boto3's default chain applies: AWS_* variables, ~/.aws, web identity (EKS),
    # ECS task role, EC2 instance role.
    credentials: AwsCredentials | None = None
    # Off by default: a platform team usually owns the group (retention, KMS key) in its IaC.
    create_log_group: bool = False
    timestamp: Literal["record", "sent"] = "record"
    max_event_bytes: int = Field(MAX_BATCH_BYTES - EVENT_OVERHEAD, ge=1024, le=MAX_BATCH_BYTES - EVENT_OVERHEAD)
    max_attempts: int = Field(5, ge=1, le=20)
    connect_timeout: float = Field(10, gt=0)
    read_timeout: float = Field(60, gt=0)

    _endpoint = field_validator("endpoint_url")(classmethod(lambda cls, v: check_endpoint(v)))
    _stream = field_validator("stream")(classmethod(lambda cls, v: check_stream_template(v)))

    @field_validator("log_group")
    @classmethod
    def _group(cls, v: str) -> str:
        if not v or len(v) > 512 or any(c in v for c in " :*"):
            raise ValueError(f"log_group must be 1-512 characters without spaces, ':' or '*', got {v!r}")
        return v

    _empty_credentials = field_validator("credentials", mode="before")(classmethod(lambda cls, v: none_if_empty(v)))


class CloudWatchLogsDestination(EventDestination):
    kind = "cloudwatch_logs"
    Config = CloudWatchLogsConfig
    config: CloudWatchLogsConfig
    max_batch_events = MAX_BATCH_EVENTS
    max_batch_bytes = MAX_BATCH_BYTES
    item_overhead = EVENT_OVERHEAD
    max_batch_span = timedelta(hours=24)

    _sent_at: datetime | None = None

    @property
    def max_event_bytes(self) -> int:
        return self.config.max_event_bytes

    @classmethod
    def location_key(cls, config, context) -> str:
        return f"cloudwatch:{config.endpoint_url or config.region or 'default'}/{config.log_group}/{config.stream}"

    def describe(self) -> str:
        cfg = self.config
        where = f"cloudwatch logs {cfg.log_group} (region {cfg.region or 'default'})"
        return f"{where} (endpoint {cfg.endpoint_url})" if cfg.endpoint_url else where

    def secrets(self) -> list[SecretStr | str | None]:
        cr = self.config.credentials
        return [cr.secret_access_key, cr.session_token] if cr else []

    def stream_name(self, output: PartitionOutput, dataset: str) -> str:
        start = output.window_start
        name = self.config.stream.format(
            export=output.export, partition=output.partition_key, dataset=dataset,
            year=f"{start:%Y}", month=f"{start:%m}", day=f"{start:%d}", hour=f"{start:%H}",
        )
        # ':' and '*' are not allowed in a stream name (an hourly partition key holds a ':').
        return name.replace(":", "-").replace("*", "-")[:512]

    def target_of(self, output: PartitionOutput, file: DatasetFile) -> str:
        return f"cloudwatch://{self.config.log_group}/{self.stream_name(output, file.dataset)}"

    @cached_property
    def client(self):
        with self.calls("creating the CloudWatch Logs client"):
            return aws_client("logs", self.config)

    # --- writing ------------------------------------------------------------------------------------------

    def write_partition(self, output: PartitionOutput) -> WriteResult:
        self._ensure_group()
        self._sent_at = datetime.now(UTC)
        if self.config.timestamp == "record":
            self._check_age(output)
        return super().write_partition(output)

    def _ensure_group(self) -> None:
        name = self.config.log_group
        with self.calls(f"looking up log group {name}"):
            groups = self.client.describe_log_groups(logGroupNamePrefix=name).get("logGroups", [])
        if any(g["logGroupName"] == name for g in groups):
            return
        if not self.config.create_log_group:
            raise self.error(f"log group {name!r} does not exist (create it, or set create_log_group: true)")
        with self.calls(f"creating log group {name}"):
            try:
                self.client.create_log_group(logGroupName=name)
            except self.client.exceptions.ResourceAlreadyExistsException:
                pass  # created by a concurrent run

    def _retention(self) -> timedelta | None:
        name = self.config.log_group
        with self.calls(f"reading the retention of log group {name}"):
            groups = self.client.describe_log_groups(logGroupNamePrefix=name).get("logGroups", [])
        days = next((g.get("retentionInDays") for g in groups if g["logGroupName"] == name), None)
        return timedelta(days=days) if days else None

    def _check_age(self, output: PartitionOutput) -> None:
        retention = self._retention()
        allowed = min(MAX_AGE, retention) if retention else MAX_AGE
        # A margin of one hour: the partition must still be accepted when its last call goes out.
        limit = self._sent_at - allowed + timedelta(hours=1)
        for file in output.files:
            oldest = oldest_event_time(output, file)
            if oldest is not None and oldest < limit:
                raise self.error(
                    f"partition {output.partition_key}, dataset {file.dataset}: rows from "
                    f"{oldest:%Y-%m-%d %H:%M} UTC are older than CloudWatch accepts ({allowed.days} days: "
                    f"{'the group retention' if retention and retention < MAX_AGE else 'the PutLogEvents limit'}); "
                    "nothing was sent. Use `timestamp: sent` to date events at sending time"
                )

    def prepare_dataset(self, output: PartitionOutput, file: DatasetFile) -> None:
        group, stream = self.config.log_group, self.stream_name(output, file.dataset)
        with self.calls(f"replacing log stream {stream}"):
            try:
                self.client.delete_log_stream(logGroupName=group, logStreamName=stream)
            except self.client.exceptions.ResourceNotFoundException:
                pass  # the partition's first run
            self.client.create_log_stream(logGroupName=group, logStreamName=stream)

    def events_of(self, output: PartitionOutput, file: DatasetFile) -> Iterator[Event]:
        if self.config.timestamp == "sent":
            for event in read_events(output, file):
                event.time = self._sent_at
                yield event
            return
        with _sorted_by_time(file) as ordered:
            yield from read_events(output, ordered)

    def encode(self, event: Event) -> bytes:
        return to_json(event.body)

    def send_batch(self, output: PartitionOutput, file: DatasetFile, batch: list[Encoded]) -> int:
        stream = self.stream_name(output, file.dataset)
        events = [{"timestamp": int(e.event.time.timestamp() * 1000), "message": e.data.decode()} for e in batch]
        with self.calls(f"partition {output.partition_key}: putting {len(events)} events into {stream}"):
            reply = self.client.put_log_events(
                logGroupName=self.config.log_group, logStreamName=stream, logEvents=events
            )
        rejected = reply.get("rejectedLogEventsInfo") or {}
        if rejected:
            ids = _rejected_ids(batch, rejected)
            raise self.error(
                f"partition {output.partition_key}, dataset {file.dataset}: CloudWatch rejected {len(ids)} of "
                f"{len(batch)} events ({', '.join(sorted(rejected))}), request_ids {', '.join(ids[:5])}"
                + (" ..." if len(ids) > 5 else "")
            )
        return len(batch)

    # --- reading back -------------------------------------------------------------------------------------

    def count_rows(self, output: PartitionOutput, result: WriteResult) -> dict[str, int]:
        """Events per dataset as CloudWatch holds them, read back from each dataset's stream."""
        return {f.dataset: self._count_stream(self.stream_name(output, f.dataset)) for f in output.files}

    def _count_stream(self, stream: str) -> int:
        count, token = 0, None
        while True:
            kwargs = {"nextToken": token} if token else {}
            with self.calls(f"reading back log stream {stream}"):
                page = self.client.get_log_events(
                    logGroupName=self.config.log_group, logStreamName=stream, startFromHead=True, **kwargs
                )
            count += len(page["events"])
            # The stream's end: the same forward token comes back.
            if page.get("nextForwardToken") in (None, token):
                return count
            token = page["nextForwardToken"]

    # --- errors -------------------------------------------------------------------------------------------


    def translate(self, err: Exception, action: str) -> DestinationError:
        from botocore import exceptions as bx

        cfg = self.config
        if isinstance(err, bx.NoCredentialsError | bx.PartialCredentialsError):
            return self.error(
                f"{action}: no AWS credentials found. Set credentials.access_key_id and "
                "credentials.secret_access_key, or provide the default chain (AWS_* environment variables, "
                "~/.aws profile, web identity, ECS task role or EC2 instance role)"
            )
        if isinstance(err, bx.NoRegionError):
            return self.error(f"{action}: no AWS region: set `region` (or AWS_REGION)")
        if isinstance(err, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError):
            where = cfg.endpoint_url or f"the CloudWatch Logs endpoint of region {cfg.region or 'default'}"
            return self.error(f"{action}: cannot reach {where}: {short(err)}", retryable=True)
        if isinstance(err, bx.ClientError):
            code = err.response.get("Error", {}).get("Code", "")
            message = err.response.get("Error", {}).get("Message", "")
            if code in ("AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"):
                return self.error(
                    f"{action}: access denied ({code}). The credentials need logs:DescribeLogGroups, "
                    "logs:CreateLogStream, logs:DeleteLogStream, logs:PutLogEvents and logs:GetLogEvents on "
                    f"the log group (and logs:CreateLogGroup with create_log_group): {short(message)}"
                )
            if code == "ResourceNotFoundException":
                return self.error(f"{action}: {short(message) or 'not found'} (log group {cfg.log_group!r})")
            return self.error(
                f"{action} failed: {code}: {short(message)}"
                + (f" after {cfg.max_attempts} attempt(s)" if code in _RETRYABLE else ""),
                retryable=code in _RETRYABLE,
            )
        return self.error(f"{action} failed: {type(err).__name__}: {short(err)}")


def _rejected_ids(batch: list[Encoded], info: dict[str, int]) -> list[str]:
    """The request_ids of the events CloudWatch's rejectedLogEventsInfo points at (indexes into the batch)."""
    too_new = info.get("tooNewLogEventStartIndex", len(batch))
    too_old = info.get("tooOldLogEventEndIndex", -1)
    expired = info.get("expiredLogEventEndIndex", -1)
    last_old = max(too_old, expired)
    return [
        e.event.request_id or f"#{i}" for i, e in enumerate(batch) if i <= last_old or i >= too_new
    ]


@contextmanager
def _sorted_by_time(file: DatasetFile) -> Iterator[DatasetFile]:
    """`file` with its Parquet copy sorted by event time (DuckDB sorts on disk past its memory limit)."""
    import duckdb
    import pyarrow.parquet as pq

    names = pq.read_schema(file.parquet_path).names
    column = next((c for c in EVENT_TIME_COLUMNS if c in names), None)
    if column is None:
        yield file
        return
    target = file.parquet_path.with_name(f".{file.dataset}.by-time.parquet")
    spill = file.parquet_path.with_name(f".{file.dataset}.sort-spill")
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{SORT_MEMORY_LIMIT}'")
        con.execute("SET temp_directory = ?", [str(spill)])
        con.execute("SET preserve_insertion_order = true")
        con.execute(
            f"COPY (SELECT * FROM read_parquet({_literal(file.parquet_path)}) ORDER BY \"{column}\" NULLS FIRST) "
            f"TO {_literal(target)} (FORMAT parquet)"
        )
    finally:
        con.close()
    try:
        yield dataclasses.replace(file, parquet_path=target)
    finally:
        target.unlink(missing_ok=True)
        shutil.rmtree(spill, ignore_errors=True)


def _literal(path: Path) -> str:
    """A path as an SQL string literal (COPY takes no parameter for its paths)."""
    return "'" + str(path).replace("'", "''") + "'"
