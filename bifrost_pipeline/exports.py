"""One export partition: validated records of its window -> filters -> datasets -> transformations ->
files in the export's format (staged locally) -> the destination.

Everything streams: Polars sinks (or DuckDB for aggregates) write the files without holding the window
in memory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from bifrost_pipeline import __version__, records
from bifrost_pipeline.config import (
    RECORD_DATASETS,
    Aggregate,
    Anonymize,
    AppConfig,
    Enrich,
    ExportConfig,
)
from bifrost_pipeline.destinations import destination_class
from bifrost_pipeline.destinations.base import (
    DatasetFile,
    Destination,
    PartitionOutput,
    WriteResult,
    sha256_file,
)
from bifrost_pipeline.preview import preview
from bifrost_pipeline.transforms import datasets as ds
from bifrost_pipeline.transforms.aggregate import aggregate
from bifrost_pipeline.transforms.anonymize import anonymize
from bifrost_pipeline.transforms.enrich import enrich
from bifrost_pipeline.transforms.filters import filter_records
from bifrost_pipeline.validation import raw_path
from bifrost_pipeline.windows import partition_window, utc_days

EXPORT_VERSION = f"{__version__}+schema.{records.SCHEMA_VERSION}"
EXTENSIONS = {"parquet": "parquet", "json": "ndjson", "csv": "csv"}
SUFFIXES = {"none": "", "gzip": ".gz", "zstd": ".zst", "snappy": ""}
# gzip level 6: pyarrow's default 9 costs about 3x the time for about 2% smaller files (PERF_NOTES).
LEVELS = {"gzip": 6, "zstd": 3}
TEXT_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"


class MissingRawData(RuntimeError):
    pass


# --- staging ----------------------------------------------------------------------------------------------


def file_name(dataset: str, fmt: str, codec: str) -> str:
    return f"{dataset}.{EXTENSIONS[fmt]}{SUFFIXES[codec] if fmt != 'parquet' else ''}"


def _parquet_codec(codec: str) -> tuple[str, int | None]:
    return ("uncompressed" if codec == "none" else codec), LEVELS.get(codec)


def _text_ready(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Timestamps as RFC 3339 text in UTC (as in Bifrost's JSON and CSV formats)."""
    schema = lf.collect_schema()
    return lf.with_columns(
        pl.col(n).dt.convert_time_zone("UTC").dt.strftime(TEXT_TIMESTAMP_FORMAT)
        for n, t in schema.items()
        if isinstance(t, pl.Datetime)
    )


def stage_dataset(lf: pl.LazyFrame, dataset: str, fmt: str, codec: str, work_dir: Path) -> DatasetFile:
    """Write one dataset as a file in the export's format (and a Parquet copy for warehouses)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    name = file_name(dataset, fmt, codec)
    if fmt == "parquet":
        parquet = work_dir / name
        compression, level = _parquet_codec(codec)
        lf.sink_parquet(parquet, compression=compression, compression_level=level)
        path = parquet
    else:
        parquet = work_dir / f".{dataset}.load.parquet"
        lf.sink_parquet(parquet, compression="zstd", compression_level=1)
        path = work_dir / name
        text = _text_ready(pl.scan_parquet(parquet))
        compression = "uncompressed" if codec == "none" else codec
        if fmt == "json":
            text.sink_ndjson(path, compression=compression, compression_level=LEVELS.get(codec), check_extension=False)
        else:
            text.sink_csv(path, compression=compression, compression_level=LEVELS.get(codec), check_extension=False)
    meta = pq.read_metadata(parquet)
    arrow_schema = meta.schema.to_arrow_schema()
    return DatasetFile(
        dataset=dataset,
        path=path,
        file_name=name,
        rows=meta.num_rows,
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
        parquet_path=parquet,
        columns=tuple((f.name, str(f.type)) for f in arrow_schema),
        json_columns=tuple(c for c in ds.JSON_COLUMNS if c in arrow_schema.names),
    )


# --- the export itself ------------------------------------------------------------------------------------


@dataclass
class ExportRun:
    export: str
    partition_key: str
    window_start: datetime
    window_end: datetime
    raw_days: list[date]
    output: PartitionOutput
    written: WriteResult
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)  # per dataset
    records: int = 0  # see `exported_records`
    preview: str = ""  # a few rows of the first dataset as written (Markdown)

    @property
    def empty(self) -> bool:
        return self.records == 0


def scan_raw(paths: list[Path]) -> pl.LazyFrame:
    """raw_logs days as one frame of the current record schema: a day written under an earlier schema
    version lacks the newer fields, which read as nulls."""
    return pl.scan_parquet(paths, schema=records.polars_schema(), missing_columns="insert")


def _with_missing_fields(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Put back (as nulls) record fields an earlier `drop` removed, for datasets derived from records."""
    schema = lf.collect_schema()
    return lf.with_columns(
        pl.lit(None, dtype=t).alias(n) for n, t in records.polars_schema().items() if n not in schema
    )


def build_dataset(
    records_lf: pl.LazyFrame,
    dataset: str,
    export: ExportConfig,
    variables: dict[str, str],
    work_dir: Path,
    memory_limit: str,
) -> pl.LazyFrame:
    tz = export.schedule.timezone
    steps = export.data.transformations
    if dataset in RECORD_DATASETS:
        lf = ds.record_dataset(records_lf, dataset)
        for i, step in enumerate(steps):
            if isinstance(step, Aggregate):
                lf = aggregate(
                    lf, step.group_by, step.metrics, timezone=tz, work_dir=work_dir / f"{dataset}.agg{i}",
                    memory_limit=memory_limit,
                )
            elif isinstance(step, Anonymize):
                lf = anonymize(lf, step)
            elif isinstance(step, Enrich):
                lf = enrich(lf, step, variables)
        return lf
    # metrics and traces have their own shape: ids are anonymized on the records they are derived from,
    # then enrich adds its fields. (An aggregate step is for the record datasets.)
    lf = records_lf
    for step in steps:
        if isinstance(step, Anonymize):
            lf = anonymize(lf, step)
    lf = _with_missing_fields(lf)
    if dataset == "metrics":
        lf = aggregate(
            lf, ds.METRICS_GROUP_BY, ds.METRICS, timezone=tz, work_dir=work_dir / "metrics.agg",
            memory_limit=memory_limit,
        )
    else:
        lf = ds.traces(lf)
    for step in steps:
        if isinstance(step, Enrich):
            lf = enrich(lf, step, variables)
    return lf


def exported_records(records_lf: pl.LazyFrame, export: ExportConfig, files: list[DatasetFile]) -> int:
    """How many records a partition exported: the log records of its window that passed the export's
    filters, which every dataset was built from (the base of `dagster/row_count`).

    A dataset is not that count in general: error_logs keeps the errors only, metrics and an aggregate step
    group records, and the datasets together hold each record several times. When request_logs or
    response_logs was written one row per record (no aggregate step) its row count is the answer; otherwise
    the filtered records are counted (a scan of the filter columns only).
    """
    if not any(isinstance(step, Aggregate) for step in export.data.transformations):
        for f in files:
            if f.dataset in ("request_logs", "response_logs"):
                return f.rows
    return int(records_lf.select(pl.len()).collect().item())


def first_preview(files: list[DatasetFile]) -> str:
    """request_logs' first rows, or the first dataset's when request_logs is not exported."""
    chosen = next((f for f in files if f.dataset == "request_logs"), files[0] if files else None)
    return preview(chosen.dataset, chosen.parquet_path) if chosen else ""


def select_records(app: AppConfig, export: ExportConfig, partition_key: str) -> pl.LazyFrame:
    """The raw_logs records one export partition reads: its window's UTC days, cut to the window, filtered.

    The one selection of an export: the export builds its datasets from it, and its completeness check
    counts from it again (`expected_rows`)."""
    start, end = partition_window(export.schedule, partition_key)
    days = utc_days(start, end)
    missing = [d for d in days if not raw_path(app, d).exists()]
    if missing:
        raise MissingRawData(
            f"export {export.name!r} partition {partition_key} needs raw_logs for "
            + ", ".join(d.isoformat() for d in missing)
            + " (UTC days); materialize those raw_logs partitions first"
        )
    lf = scan_raw([raw_path(app, d) for d in days])
    start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
    lf = lf.filter((pl.col("timestamp") >= start_utc) & (pl.col("timestamp") < end_utc))
    return filter_records(lf, export.data.filters, end_utc)


def expected_rows(app: AppConfig, export: ExportConfig, partition_key: str, staged: dict[str, int]) -> dict[str, int]:
    """How many rows each dataset of the partition must have at its destination.

    Datasets of one row per record (request_logs, response_logs, traces; error_logs per error record) are
    counted again from raw_logs with the export's own selection, in one lazy scan, independently of the
    files the export staged. Datasets whose rows are computed (metrics, and any dataset under an
    `aggregate` step) have no count to compare with but their staged file's: `staged` gives those.
    """
    aggregated = any(isinstance(step, Aggregate) for step in export.data.transformations)
    per_record = [d for d in export.data.include if d != "metrics" and not (aggregated and d in RECORD_DATASETS)]
    counts: dict[str, int] = {}
    if per_record:
        records_n, errors_n = (
            select_records(app, export, partition_key)
            .select(pl.len(), (pl.col("status") == "error").sum())
            .collect()
            .row(0)
        )
        counts = {d: int(errors_n if d == "error_logs" else records_n) for d in per_record}
    return {d: counts[d] if d in counts else staged[d] for d in export.data.include}


def run_export(
    app: AppConfig,
    export: ExportConfig,
    partition_key: str,
    *,
    run_id: str | None = None,
    exported_at: datetime | None = None,
    destination: Destination | None = None,
) -> ExportRun:
    """Materialize one partition of one export and publish it to its destination (default: the export's,
    made by `make_destination`)."""
    began = time.monotonic()
    run_id = run_id or uuid.uuid4().hex
    exported_at = exported_at or datetime.now(UTC)
    start, end = partition_window(export.schedule, partition_key)
    days = utc_days(start, end)
    lf = select_records(app, export, partition_key)
    variables = {
        "EXPORT_TIMESTAMP": exported_at.isoformat().replace("+00:00", "Z"),
        "EXPORT_VERSION": EXPORT_VERSION,
        "EXPORT_NAME": export.name,
        "EXPORT_PARTITION": partition_key,
    }
    work_dir = app.staging_dir / export.name / partition_key / run_id
    try:
        files = []
        for dataset in export.data.include:
            frame = build_dataset(
                lf, dataset, export, variables, work_dir / "work", app.pipeline.duckdb_memory_limit
            )
            files.append(stage_dataset(frame, dataset, export.data.format, export.data.codec, work_dir))
        records_count = exported_records(lf, export, files)
        shown = first_preview(files)  # read before the staging directory goes
        output = PartitionOutput(
            export=export.name,
            partition_key=partition_key,
            window_start=start,
            window_end=end,
            format=export.data.format,
            compression=export.data.codec,
            files=tuple(files),
            exported_at=exported_at,
            run_id=run_id,
        )
        if destination is None:
            destination = make_destination(app, export)
        written = destination.write_partition(output)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        _prune_empty(work_dir.parent, stop=app.staging_dir)
    return ExportRun(
        export=export.name,
        partition_key=partition_key,
        window_start=start,
        window_end=end,
        raw_days=days,
        output=output,
        written=written,
        seconds=time.monotonic() - began,
        rows={f.dataset: f.rows for f in files},
        records=records_count,
        preview=shown,
    )


def make_destination(app: AppConfig, export: ExportConfig, log: logging.Logger | None = None) -> Destination:
    """The export's destination; `log` (e.g. a Dagster run's logger) gets what it says while it works."""
    cls = destination_class(export.destination.type)
    context = app.destination_context(export.name)
    if log is not None:
        context = dataclasses.replace(context, log=log)
    return cls(export.destination.config, context)


def _prune_empty(path: Path, stop: Path) -> None:
    while path != stop and path.is_relative_to(stop):
        try:
            os.rmdir(path)
        except OSError:
            return
        path = path.parent
