"""Landed segments of one UTC day -> validated records (raw_logs) + rejected lines (quarantine).

Streaming and bounded: each segment is read in blocks of about BLOCK_BYTES cut at line ends; a block is
parsed by Polars' NDJSON reader against the typed read schema derived from ``schemas/``, then the value
rules derived from the same schema are evaluated as expressions. Valid rows are appended to one Parquet
file for the day, rejected lines to the day's quarantine file, each with its segment, line number, reason
and raw text. A block the reader cannot take whole (a malformed line, a wrong type, a blank line) is
retried in smaller pieces and finally line by line, so one bad line never costs its neighbours.

Both outputs are written under temporary names and renamed into place: re-validating a day replaces it.
"""

from __future__ import annotations

import io
import json
import os
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
    return app.raw_dir / f"date={day.isoformat()}.parquet"


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


def _reasons(df: pl.DataFrame, day: date) -> pl.Series:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    ts = pl.col("timestamp").str.to_datetime(TIMESTAMP_FORMAT, time_zone="UTC", time_unit="us", strict=False)
    outside = pl.when(ts.dt.date() != pl.lit(start.date())).then(
        pl.format("timestamp: {} is outside the partition day {} (UTC)", pl.col("timestamp"), pl.lit(day.isoformat()))
    )
    return df.select(
        pl.concat_str([*_rule_exprs(), outside], separator="; ", ignore_nulls=True).alias("reason")
    ).to_series()


def _typed(df: pl.DataFrame) -> pl.DataFrame:
    """Cast a rule-checked frame to the validated record schema (timestamps parsed)."""
    schema = records.polars_schema()
    exprs = []
    for f in records.fields():
        if f.kind == "timestamp":
            exprs.append(
                pl.col(f.name).str.to_datetime(TIMESTAMP_FORMAT, time_zone="UTC", time_unit="us", strict=False)
            )
        else:
            exprs.append(pl.col(f.name).cast(schema[f.name]))
    return df.select(exprs)


# --- reading ---------------------------------------------------------------------------------------------


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


class _DayWriter:
    """Appends valid rows and quarantined lines of one day to temp files; `commit` renames them in."""

    def __init__(self, app: AppConfig, day: date):
        self.day = day
        self.final_raw = raw_path(app, day)
        self.final_quarantine = quarantine_path(app, day)
        for p in (self.final_raw, self.final_quarantine):
            p.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:10]
        self.tmp_raw = self.final_raw.with_name(f".{self.final_raw.name}.{token}.tmp")
        self.tmp_quarantine = self.final_quarantine.with_name(f".{self.final_quarantine.name}.{token}.tmp")
        self.arrow_schema = records.arrow_schema()
        self.raw_writer = pq.ParquetWriter(
            self.tmp_raw,
            self.arrow_schema,
            compression=RAW_COMPRESSION[0],
            compression_level=RAW_COMPRESSION[1],
        )
        self.quarantine_writer = pq.ParquetWriter(self.tmp_quarantine, QUARANTINE_SCHEMA, compression="zstd")
        self.validated_at = datetime.now(UTC)
        self.pending: list[pl.DataFrame] = []
        self.pending_rows = 0

    def valid(self, df: pl.DataFrame) -> None:
        if df.height:
            self.pending.append(df)
            self.pending_rows += df.height
            if self.pending_rows >= ROW_GROUP_ROWS:
                self._flush()

    def _flush(self) -> None:
        if self.pending:
            table = pl.concat(self.pending, how="vertical", rechunk=False).to_arrow().cast(self.arrow_schema)
            self.raw_writer.write_table(table, row_group_size=max(table.num_rows, 1))
            self.pending, self.pending_rows = [], 0

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
            schema={"day": pl.Date, "segment": pl.String, "line": pl.Int64, "reason": pl.String,
                    "raw": pl.String, "validated_at": pl.Datetime("us", "UTC")},
        ).to_arrow().cast(QUARANTINE_SCHEMA)
        self.quarantine_writer.write_table(table)

    def commit(self) -> None:
        self._flush()
        self.raw_writer.close()
        self.quarantine_writer.close()
        os.replace(self.tmp_raw, self.final_raw)
        os.replace(self.tmp_quarantine, self.final_quarantine)

    def abort(self) -> None:
        for w in (self.raw_writer, self.quarantine_writer):
            try:
                w.close()
            except Exception:
                pass
        self.tmp_raw.unlink(missing_ok=True)
        self.tmp_quarantine.unlink(missing_ok=True)


def _blocks(path: Path, block_bytes: int):
    """Yield (first line number, bytes) blocks of whole lines."""
    line_no = 1
    rest = b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(block_bytes)
            if not chunk:
                break
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
            yield line_no, block
            line_no += block.count(b"\n")
    if rest:
        yield line_no, rest + b"\n"


class _SegmentValidator:
    def __init__(self, writer: _DayWriter, result: DayResult, segment_name: str):
        self.writer, self.result, self.segment = writer, result, segment_name

    def block(self, first_line: int, block: bytes) -> None:
        n_lines = block.count(b"\n")
        self.result.lines += n_lines
        try:
            df = _read(block)
        except Exception:
            df = None
        if df is not None and df.height == n_lines:
            self._checked(df, list(range(first_line, first_line + n_lines)), block=block, first_line=first_line)
            return
        self._piecewise(first_line, block.split(b"\n")[:n_lines])

    def _piecewise(self, first_line: int, lines: list[bytes]) -> None:
        """A block the reader refused: drop blank lines, then bisect until each bad line stands alone."""
        numbered = [(first_line + i, ln) for i, ln in enumerate(lines) if ln.strip()]
        self.result.blank_lines += len(lines) - len(numbered)
        if numbered:
            self._bisect(numbered)

    def _bisect(self, numbered: list[tuple[int, bytes]]) -> None:
        try:
            df = _read(b"\n".join(ln for _, ln in numbered) + b"\n")
            if df.height == len(numbered):
                self._checked(df, [n for n, _ in numbered], lines=dict(numbered))
                return
            error = f"read {df.height} records from {len(numbered)} lines"
        except Exception as err:
            error = str(err)
        if len(numbered) == 1:
            n, ln = numbered[0]
            self._quarantine([(n, _why_unreadable(ln, error), ln)])
            return
        mid = len(numbered) // 2
        self._bisect(numbered[:mid])
        self._bisect(numbered[mid:])

    def _checked(
        self,
        df: pl.DataFrame,
        line_numbers: list[int],
        *,
        block: bytes | None = None,
        first_line: int = 0,
        lines: dict[int, bytes] | None = None,
    ) -> None:
        reasons = _reasons(df, self.result.day)
        ok = reasons == ""
        if bool(ok.all()):
            self.writer.valid(_typed(df))
            self.result.valid_rows += df.height
            return
        self.writer.valid(_typed(df.filter(ok)))
        self.result.valid_rows += int(ok.sum())
        bad_idx = (~ok).arg_true().to_list()
        if lines is None:
            assert block is not None
            split = block.split(b"\n")
            lines = {first_line + i: split[i] for i in bad_idx}
        bad = [(line_numbers[i], reasons[i], lines[line_numbers[i]]) for i in bad_idx]
        self._quarantine(bad)

    def _quarantine(self, bad: list[tuple[int, str, bytes]]) -> None:
        for _, reason, _ in bad:
            self.result.reasons[_reason_kind(reason)] += 1
        self.result.quarantined_rows += len(bad)
        self.writer.quarantine(self.segment, bad)


def validate_day(app: AppConfig, day: date, *, block_bytes: int = BLOCK_BYTES) -> DayResult:
    """Validate every complete landed segment of a UTC day into raw_logs and the quarantine."""
    result = DayResult(day=day)
    root = app.landing_dir
    segments = landing.list_segments(root, day)
    writer = _DayWriter(app, day)
    try:
        for seg in segments:
            result.segments += 1
            result.bytes_read += seg.size
            mt = result.newest_segment_mtime
            result.newest_segment_mtime = seg.mtime if mt is None else max(mt, seg.mtime)
            validator = _SegmentValidator(writer, result, seg.relative_to(root))
            for first_line, block in _blocks(seg.path, block_bytes):
                validator.block(first_line, block)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    result.raw_path = writer.final_raw
    result.quarantine_path = writer.final_quarantine
    return result
