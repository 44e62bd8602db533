"""Landed segments of one UTC day -> validated records (raw_logs) + rejected lines (quarantine).

Streaming and bounded. The fast path scans every segment of the day with Polars' streaming NDJSON reader
against the typed read schema derived from ``schemas/``, evaluates the value rules derived from the same
schema as expressions, and sinks the valid rows to Parquet while the rejected rows (a few) are collected
with their reasons; only the segments that had rejected rows are read again, in Python, for their line
numbers and raw text. When the reader cannot take a segment whole (malformed JSON, a wrong type), that
segment is read in blocks of about BLOCK_BYTES cut at line ends, and a block that fails is bisected down
to the bad lines, so one bad line never costs its neighbours.

raw_logs of a day is a directory of Parquet parts, quarantine one Parquet file; both are written under
temporary names and renamed into place, so re-validating a day replaces it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from bifrost_pipeline import landing, records
from bifrost_pipeline.config import AppConfig

BLOCK_BYTES = 32 * 1024 * 1024
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"
RAW_COMPRESSION = ("zstd", 1)  # raw is an intermediate: cheap to write, fast to read
# Rows buffered per Parquet row group: large enough that readers and the pandera check pay little per
# group, small enough to bound memory (about 150 MB of records carrying content).
ROW_GROUP_ROWS = 100_000

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("day", pa.date32(), nullable=False),
        pa.field("segment", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),
        pa.field("validated_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


@dataclass
class DayResult:
    day: date
    segments: int = 0
    bytes_read: int = 0
    lines: int = 0
    valid_rows: int = 0
    quarantined_rows: int = 0
    blank_lines: int = 0
    reasons: Counter = field(default_factory=Counter)
    raw_path: Path | None = None
    quarantine_path: Path | None = None
    newest_segment_mtime: float | None = None

    @property
    def quarantine_share(self) -> float:
        total = self.valid_rows + self.quarantined_rows
        return self.quarantined_rows / total if total else 0.0


def raw_path(app: AppConfig, day: date) -> Path:
    """The day's raw_logs directory (Parquet parts; Polars reads the directory, DuckDB `<dir>/*.parquet`)."""
    return app.raw_dir / f"date={day.isoformat()}"


def quarantine_path(app: AppConfig, day: date) -> Path:
    return app.quarantine_dir / f"date={day.isoformat()}.parquet"


# --- rules derived from the schema ---------------------------------------------------------------------


def _value_text(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.String)


@cache
def _rule_exprs() -> tuple[pl.Expr, ...]:
    """One expression per rule: a message when the row breaks it, else null."""
    rules: list[pl.Expr] = []
    for f in records.fields():
        col = pl.col(f.name)
        if f.required:
            rules.append(pl.when(col.is_null()).then(pl.lit(f"{f.name}: required")))
        if f.kind == "timestamp":
            parsed = col.str.to_datetime(TIMESTAMP_FORMAT, time_zone="UTC", time_unit="us", strict=False)
            rules.append(
                pl.when(col.is_not_null() & parsed.is_null()).then(
                    pl.format("{}: {} is not an RFC 3339 date-time with a zone", pl.lit(f.name), col)
                )
            )
        if f.enum is not None:
            allowed = ", ".join(f.enum)
            rules.append(
                pl.when(col.is_not_null() & ~col.is_in(list(f.enum))).then(
                    pl.format("{}: {} is not one of {}", pl.lit(f.name), col, pl.lit(allowed))
                )
            )
        if f.minimum is not None:
            rules.append(
                pl.when(col < f.minimum).then(
                    pl.format("{}: {} is below the minimum {}", pl.lit(f.name), _value_text(f.name), pl.lit(f.minimum))
                )
            )
        if f.maximum is not None:
            rules.append(
                pl.when(col > f.maximum).then(
                    pl.format("{}: {} is above the maximum {}", pl.lit(f.name), _value_text(f.name), pl.lit(f.maximum))
                )
            )
        if f.min_length is not None:
            rules.append(
                pl.when(col.str.len_chars() < f.min_length).then(pl.lit(f"{f.name}: must not be empty"))
            )
        if f.kind == "json" and f.name == "metadata":
            rules.append(
                pl.when(col.is_not_null() & ~col.str.starts_with("{")).then(
                    pl.lit("metadata: expected an object of strings")
                )
            )
    return tuple(rules)


def _reason_expr(day: date) -> pl.Expr:
    """All broken rules of a row joined with '; ' ('' when the row is valid)."""
    ts = pl.col("timestamp").str.to_datetime(TIMESTAMP_FORMAT, time_zone="UTC", time_unit="us", strict=False)
    outside = pl.when(ts.dt.date() != pl.lit(day)).then(
        pl.format("timestamp: {} is outside the partition day {} (UTC)", pl.col("timestamp"), pl.lit(day.isoformat()))
    )
    return pl.concat_str([*_rule_exprs(), outside], separator="; ", ignore_nulls=True).alias(REASON)


def _typed_exprs() -> list[pl.Expr]:
    """Columns of a rule-checked frame cast to the validated record schema (timestamps parsed)."""
    schema = records.polars_schema()
    out = []
    for f in records.fields():
        if f.kind == "timestamp":
            out.append(pl.col(f.name).str.to_datetime(TIMESTAMP_FORMAT, time_zone="UTC", time_unit="us", strict=False))
        else:
            out.append(pl.col(f.name).cast(schema[f.name]))
    return out


REASON = "__reason"
INDEX = "__index"
SEGMENT = "__segment"


def _read(block: bytes) -> pl.DataFrame:
    return pl.read_ndjson(io.BytesIO(block), schema=records.polars_read_schema())


@cache
def _validator():
    import jsonschema

    cls = jsonschema.validators.validator_for(records.json_schema())
    return cls(records.json_schema())


def _reason_kind(reason: str) -> str:
    """The field (or 'malformed JSON', ...) a reason is about, for the run's metadata counts."""
    head = reason.split(":", 1)[0]
    return head.split(" at ")[0]


def _why_unreadable(line: bytes, reader_error: str) -> str:
    """A precise reason for a line the typed reader rejected."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not valid UTF-8 at byte {err.start}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return f"malformed JSON at column {err.colno}: {err.msg}"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    errors = sorted(_validator().iter_errors(value), key=lambda e: list(e.absolute_path))
    for err in errors:
        where = ".".join(str(p) for p in err.absolute_path) or "(record)"
        return f"{where}: {err.message}"
    return f"unreadable record: {reader_error}"


class _DayOutput:
    """The day's outputs under temporary names: Parquet parts of valid rows, one quarantine file."""

    def __init__(self, app: AppConfig, day: date):
        self.day = day
        self.final_raw = raw_path(app, day)
        self.final_quarantine = quarantine_path(app, day)
        for p in (self.final_raw, self.final_quarantine):
            p.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:10]
        self.tmp_raw = self.final_raw.with_name(f".{self.final_raw.name}.{token}.tmp")
        self.tmp_raw.mkdir()
        self.tmp_quarantine = self.final_quarantine.with_name(f".{self.final_quarantine.name}.{token}.tmp")
        self.quarantine_writer = pq.ParquetWriter(self.tmp_quarantine, QUARANTINE_SCHEMA, compression="zstd")
        self.validated_at = datetime.now(UTC)
        self.parts = 0

    def next_part(self) -> Path:
        path = self.tmp_raw / f"part-{self.parts:05d}.parquet"
        self.parts += 1
        return path

    def part_writer(self) -> _PartWriter:
        return _PartWriter(self.next_part())

    def quarantine(self, segment: str, rows: list[tuple[int, str, bytes]]) -> None:
        if not rows:
            return
        n = len(rows)
        table = pl.DataFrame(
            {
                "day": [self.day] * n,
                "segment": [segment] * n,
                "line": [r[0] for r in rows],
                "reason": [r[1] for r in rows],
                "raw": [r[2].decode("utf-8", "replace") for r in rows],
                "validated_at": [self.validated_at] * n,
            },
            schema={
                "day": pl.Date,
                "segment": pl.String,
                "line": pl.Int64,
                "reason": pl.String,
                "raw": pl.String,
                "validated_at": pl.Datetime("us", "UTC"),
            },
        ).to_arrow().cast(QUARANTINE_SCHEMA)
        self.quarantine_writer.write_table(table)

    def commit(self) -> None:
        self.quarantine_writer.close()
        if self.parts == 0:
            # an empty day still has a readable, typed raw partition
            pq.write_table(records.arrow_schema().empty_table(), self.next_part())
        old = None
        if self.final_raw.exists():
            old = self.final_raw.with_name(f".{self.final_raw.name}.{uuid.uuid4().hex[:10]}.old")
            os.replace(self.final_raw, old)
        os.replace(self.tmp_raw, self.final_raw)
        os.replace(self.tmp_quarantine, self.final_quarantine)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        try:
            self.quarantine_writer.close()
        except Exception:
            pass
        shutil.rmtree(self.tmp_raw, ignore_errors=True)
        self.tmp_quarantine.unlink(missing_ok=True)


class _PartWriter:
    """Valid rows of the block path, buffered into row groups of about ROW_GROUP_ROWS."""

    def __init__(self, path: Path):
        self.arrow_schema = records.arrow_schema()
        self.writer = pq.ParquetWriter(
            path, self.arrow_schema, compression=RAW_COMPRESSION[0], compression_level=RAW_COMPRESSION[1]
        )
        self.pending: list[pl.DataFrame] = []
        self.pending_rows = 0

    def write(self, df: pl.DataFrame) -> None:
        if df.height:
            self.pending.append(df)
            self.pending_rows += df.height
            if self.pending_rows >= ROW_GROUP_ROWS:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            table = pl.concat(self.pending, how="vertical", rechunk=False).to_arrow().cast(self.arrow_schema)
            self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
            self.pending, self.pending_rows = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _blocks(path: Path, block_bytes: int):
    """Yield (first line number, bytes) blocks of whole lines."""
    line_no = 1
    rest = b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(block_bytes)
            if not chunk:
                break
            data = rest + chunk if rest else chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
            yield line_no, block
            line_no += block.count(b"\n")
    if rest:
        yield line_no, rest + b"\n"


class _BlockValidator:
    """The careful path for one segment: blocks, then bisection down to the lines the reader refuses."""

    def __init__(self, out: _DayOutput, result: DayResult, segment_name: str):
        self.out, self.result, self.segment = out, result, segment_name
        self.writer = out.part_writer()

    def run(self, path: Path, block_bytes: int) -> None:
        try:
            for first_line, block in _blocks(path, block_bytes):
                self.block(first_line, block)
        finally:
            self.writer.close()

    def block(self, first_line: int, block: bytes) -> None:
        lines = block.split(b"\n")[:-1]
        numbered = [(first_line + i, ln) for i, ln in enumerate(lines) if ln.strip()]
        self.result.blank_lines += len(lines) - len(numbered)
        if numbered:
            self._bisect(numbered)

    def _bisect(self, numbered: list[tuple[int, bytes]]) -> None:
        try:
            df = _read(b"\n".join(ln for _, ln in numbered) + b"\n")
            if df.height == len(numbered):
                self._checked(df, numbered)
                return
            error = f"read {df.height} records from {len(numbered)} lines"
        except Exception as err:
            error = str(err)
        if len(numbered) == 1:
            n, ln = numbered[0]
            self.result.lines += 1
            self._quarantine([(n, _why_unreadable(ln, error), ln)])
            return
        mid = len(numbered) // 2
        self._bisect(numbered[:mid])
        self._bisect(numbered[mid:])

    def _checked(self, df: pl.DataFrame, numbered: list[tuple[int, bytes]]) -> None:
        self.result.lines += df.height
        checked = df.with_columns(_reason_expr(self.result.day))
        ok = checked[REASON] == ""
        self.writer.write(checked.filter(ok).select(_typed_exprs()))
        self.result.valid_rows += int(ok.sum())
        bad_idx = (~ok).arg_true().to_list()
        self._quarantine([(numbered[i][0], checked[REASON][i], numbered[i][1]) for i in bad_idx])

    def _quarantine(self, bad: list[tuple[int, str, bytes]]) -> None:
        for _, reason, _ in bad:
            self.result.reasons[_reason_kind(reason)] += 1
        self.result.quarantined_rows += len(bad)
        self.out.quarantine(self.segment, bad)


def _scan(paths: list[Path], day: date) -> pl.LazyFrame:
    return pl.scan_ndjson(
        paths, schema=records.polars_read_schema(), row_index_name=INDEX, include_file_paths=SEGMENT
    ).with_columns(_reason_expr(day))


def _fast(paths: list[Path], day: date, out: _DayOutput, work: Path) -> tuple[Path, pl.DataFrame] | None:
    """One streaming pass over `paths`: valid rows sunk to a part, rejected rows to `work`.

    Returns (rejected rows file, rows per file), or None when the reader refuses some line of some file
    (the caller then takes the careful path).
    """
    lf = _scan(paths, day)
    part = out.next_part()
    rejected_path = work / f"rejected-{out.parts:05d}.parquet"
    try:
        valid = lf.filter(pl.col(REASON) == "").select(_typed_exprs())
        rejected = lf.filter(pl.col(REASON) != "").select(SEGMENT, INDEX, REASON)
        counts = lf.group_by(SEGMENT).agg(pl.len().alias("rows"))
        pl.collect_all(
            [
                valid.sink_parquet(
                    part, compression=RAW_COMPRESSION[0], compression_level=RAW_COMPRESSION[1],
                    row_group_size=ROW_GROUP_ROWS, lazy=True,
                ),
                rejected.sink_parquet(rejected_path, lazy=True),
                counts.sink_parquet(work / "counts.parquet", lazy=True),
            ],
            engine="streaming",
        )
        return rejected_path, pl.read_parquet(work / "counts.parquet")
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError, pl.exceptions.InvalidOperationError):
        part.unlink(missing_ok=True)
        out.parts -= 1
        return None


def _rejected_lines(path: Path, wanted: dict[int, str]) -> list[tuple[int, str, bytes]]:
    """(line number, reason, raw line) of the records at the given 0-based record indexes of a file.

    The reader skips blank lines, so the n-th record is the n-th non-blank line.
    """
    out = []
    record = -1
    with open(path, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            record += 1
            if record in wanted:
                out.append((line_no, wanted[record], line.rstrip(b"\r\n")))
                if len(out) == len(wanted):
                    break
    return out


def validate_day(app: AppConfig, day: date, *, block_bytes: int = BLOCK_BYTES) -> DayResult:
    """Validate every complete landed segment of a UTC day into raw_logs and the quarantine."""
    result = DayResult(day=day)
    root = app.landing_dir
    if app.landing_is_remote:
        # an object-store landing zone: copy the day's segments (new ones only) next to us, then as usual
        landing.mirror_day(str(app.landing_root), day, root, app.landing.storage_options)
    segments = landing.list_segments(root, day)
    for seg in segments:
        result.segments += 1
        result.bytes_read += seg.size
        result.newest_segment_mtime = max(result.newest_segment_mtime or seg.mtime, seg.mtime)
    out = _DayOutput(app, day)
    work = out.tmp_raw.with_name(out.tmp_raw.name + ".work")
    work.mkdir()
    try:
        pending = [segments] if segments else []
        while pending:
            group = pending.pop(0)
            fast = _fast([s.path for s in group], day, out, work)
            if fast is not None:
                _account_fast(group, fast, result, out, root)
            elif len(group) > 1:
                # find the segment(s) the reader refuses: the others keep the fast path
                pending[:0] = [[s] for s in group]
            else:
                _BlockValidator(out, result, group[0].relative_to(root)).run(group[0].path, block_bytes)
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.raw_path = out.final_raw
    result.quarantine_path = out.final_quarantine
    return result


def _account_fast(group, fast, result: DayResult, out: _DayOutput, root: Path) -> None:
    rejected_path, counts = fast
    rows = dict(zip(counts[SEGMENT].to_list(), counts["rows"].to_list(), strict=True))
    rejected = pl.scan_parquet(rejected_path)
    n_rejected = rejected.select(pl.len()).collect().item()
    total = sum(rows.values())
    result.lines += total
    result.valid_rows += total - n_rejected
    if n_rejected == 0:
        return
    offset = 0
    for seg in group:  # the row index runs across the files in this order
        n = rows.get(str(seg.path), 0)
        # one segment's rejected rows at a time: memory stays bounded by a segment even on a bad day
        mine = rejected.filter(pl.col(SEGMENT) == str(seg.path)).select(INDEX, REASON).collect()
        if mine.height:
            wanted = {i - offset: r for i, r in zip(mine[INDEX].to_list(), mine[REASON].to_list(), strict=True)}
            bad = _rejected_lines(seg.path, wanted)
            for _, reason, _ in bad:
                result.reasons[_reason_kind(reason)] += 1
            result.quarantined_rows += len(bad)
            out.quarantine(seg.relative_to(root), bad)
        offset += n
