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
import mmap
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

import numpy as np
import orjson
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
# A quarantined line keeps at most this many bytes of its text (and its full length in raw_bytes): one
# 50 MB line must not make the quarantine a 50 MB cell.
RAW_CAP_BYTES = 64 * 1024
REASON_CAP_CHARS = 500
READER_MAX_DEPTH = 1024  # objects/arrays Polars' NDJSON reader (simd-json) takes nested in a line
BOM = b"\xef\xbb\xbf"

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("day", pa.date32(), nullable=False),
        pa.field("segment", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),  # the line, cut at RAW_CAP_BYTES
        pa.field("raw_bytes", pa.int64(), nullable=False),  # the line's whole length, without its line end
        pa.field("validated_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


@dataclass
class DayResult:
    """What validating one day did. Every line read is counted once:
    lines_read = valid_rows + quarantined_rows + duplicates + blank_lines."""

    day: date
    segments: int = 0
    bytes_read: int = 0
    lines: int = 0  # non-blank lines judged (records read), duplicates included
    valid_rows: int = 0  # rows in raw_logs: valid records, each request_id once
    quarantined_rows: int = 0
    blank_lines: int = 0
    reasons: Counter = field(default_factory=Counter)
    raw_path: Path | None = None
    quarantine_path: Path | None = None
    newest_segment_mtime: float | None = None
    lines_read: int = 0  # every line of every segment, blank ones and a last line without its newline too
    duplicates: int = 0  # valid copies of a request_id already kept (dropped from raw_logs)
    duplicates_differing: int = 0  # of those, copies whose content differed from the copy kept

    @property
    def unaccounted_lines(self) -> int:
        """Lines read that are neither valid, quarantined, a duplicate nor blank: 0 unless a line was lost."""
        return self.lines_read - (self.valid_rows + self.quarantined_rows + self.duplicates + self.blank_lines)

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


def _parsed_timestamp(col: pl.Expr) -> pl.Expr:
    """An RFC 3339 date-time column as UTC datetimes (null where it is not one). Upper-cased first: RFC 3339
    and the intake's check allow a lower-case ``t`` and ``z``, which the format does not match."""
    return col.str.to_uppercase().str.to_datetime(TIMESTAMP_FORMAT, time_zone="UTC", time_unit="us", strict=False)


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
            parsed = _parsed_timestamp(col)
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
        if f.json_type is not None:
            # The reader gives a nested value as its JSON text: an object starts with "{", an array with "[".
            opener, what = ("{", "an object") if f.json_type == "object" else ("[", "an array")
            rules.append(
                pl.when(col.is_not_null() & ~col.str.starts_with(opener)).then(
                    pl.lit(f"{f.name}: expected {what}" + (" of strings" if f.name == "metadata" else ""))
                )
            )
    return tuple(rules)


def _reason_expr(day: date) -> pl.Expr:
    """All broken rules of a row joined with '; ' ('' when the row is valid)."""
    ts = _parsed_timestamp(pl.col("timestamp"))
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
            out.append(_parsed_timestamp(pl.col(f.name)))
        else:
            out.append(pl.col(f.name).cast(schema[f.name]))
    return out


REASON = "__reason"
INDEX = "__index"
SEGMENT = "__segment"
DEDUP_ROW = "__row"


def _read(block: bytes) -> pl.DataFrame:
    return pl.read_ndjson(io.BytesIO(block), schema=records.polars_read_schema())


def _validator():
    return records.json_schema_validator(formats=False)


def _reason_kind(reason: str) -> str:
    """The field (or 'malformed JSON', ...) a reason is about, for the run's metadata counts."""
    head = reason.split(":", 1)[0]
    return head.split(" at ")[0]


def _why_unreadable(line: bytes, reader_error: str) -> str:
    """A reason in words for a line the typed reader refused (never raises: any line gets a reason)."""
    try:
        reason = _judge(line, reader_error)
    except Exception:  # RecursionError, MemoryError, ...: the judgement failed, the reader's words remain
        reason = None
    return _cap(reason or f"unreadable record: {_reader_words(reader_error)}", REASON_CAP_CHARS)


def _judge(line: bytes, reader_error: str) -> str | None:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not valid UTF-8 at byte {err.start + 1} (0x{line[err.start]:02x}): {err.reason}"
    depth = _DEPTH_ERROR.search(reader_error)
    if depth:
        return (
            f"nested too deep: more than {READER_MAX_DEPTH} levels of objects and arrays "
            f"(column {int(depth.group(1)) + 1})"
        )
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as err:
        return f"malformed JSON: {_json_words(text, err)}"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {_JSON_KINDS.get(type(value), type(value).__name__)}"
    try:
        errors = sorted(_validator().iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        return "nested too deep to check against the schema"
    for err in errors:
        where = ".".join(str(p) for p in err.absolute_path) or "(record)"
        return f"{where}: {_cap(err.message, 200)}"
    return None


_JSON_KINDS = {
    list: "list (a JSON array)",
    str: "str (a JSON string)",
    int: "int (a JSON number)",
    float: "float (a JSON number)",
    bool: "bool (true or false)",
    type(None): "null",
}
_DEPTH_ERROR = re.compile(r"DepthLimitExceeded at character (\d+)")
_NUMBER = re.compile(r"-?[0-9][0-9.eE+-]*")
_NOT_NUMBERS = ("-Infinity", "NaN", "Infinity")  # "-Infinity" first: orjson stops after its sign


def _json_words(text: str, err: orjson.JSONDecodeError) -> str:
    """orjson's complaint about `text`, said for a person, with the column (counted from 1) it is at."""
    pos, msg = err.pos, err.msg
    at = f"(column {pos + 1})"
    for token in _NOT_NUMBERS:
        start = pos - 1 if token.startswith("-") and msg == "no digit after sign" else pos
        if text.startswith(token, max(start, 0)):
            return f"{token} is not a JSON number (column {max(start, 0) + 1})"
    if "surrogate" in msg:
        return f"{text[pos:pos + 6]} is a lone UTF-16 surrogate escape, not a character {at}"
    if msg == "unexpected control character in string":
        return f"control character U+{ord(text[pos]):04X} inside a string must be escaped {at}"
    if msg == "unexpected end of data":
        return f"the line ends before the JSON value does {at}: a record cut short?"
    if msg == "unexpected content after document":
        return f"more than one JSON value on the line, or text after it {at}"
    if msg == "number is infinity when parsed as double":
        number = _NUMBER.match(text, pos)
        return f"{number.group() if number else 'a number'} is beyond the range of a double {at}"
    if msg.startswith("unexpected character") and pos < len(text):
        return f"{msg}, found {_character(text[pos])} {at}"
    return f"{msg} {at}"


def _character(ch: str) -> str:
    return repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"


# Polars' NDJSON reader errors -> words, for a line that Python reads fine but the reader refuses.
_READER_WORDS = (
    ("DepthLimitExceeded", "nested too deep for the reader"),
    ("InvalidUtf8", "not valid UTF-8"),
    ("InvalidNumber", "a number the reader cannot represent"),
    ("InvalidUnicodeCodepoint", "a \\u escape that is not a Unicode character"),
    ("TapeError", "malformed JSON"),
    ("Syntax", "malformed JSON"),
    ("expected to contain JSON object", "expected a JSON object"),
)
_CANNOT_PARSE = re.compile(r"cannot parse '(.{0,40}).*?' \(\w+\) as (\w+)")


def _strict_reason(line: bytes) -> str | None:
    """orjson's reason for a line the reader might garble (a lone surrogate), or None when orjson takes it."""
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError as err:
        return f"malformed JSON: {_json_words(line.decode('utf-8', 'replace'), err)}"
    return None


def _reader_words(reader_error: str) -> str:
    for marker, words in _READER_WORDS:
        if marker in reader_error:
            return words
    cannot = _CANNOT_PARSE.search(reader_error)
    if cannot:
        return f"the value {cannot.group(1)} does not fit its column type ({cannot.group(2)})"
    return f"the reader refused the line: {_cap(reader_error, 200)}"


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _DayOutput:
    """The day's outputs under temporary names: Parquet parts of valid rows, one quarantine file."""

    def __init__(self, final_raw: Path, final_quarantine: Path, day: date):
        self.day = day
        self.final_raw = final_raw
        self.final_quarantine = final_quarantine
        for p in (self.final_raw, self.final_quarantine):
            p.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:10]
        self.tmp_raw = self.final_raw.with_name(f".{self.final_raw.name}.{token}.tmp")
        self.tmp_raw.mkdir()
        self.tmp_quarantine = self.final_quarantine.with_name(f".{self.final_quarantine.name}.{token}.tmp")
        self.quarantine_writer = pq.ParquetWriter(self.tmp_quarantine, QUARANTINE_SCHEMA, compression="zstd")
        self.validated_at = datetime.now(UTC)
        self.parts = 0

    def part_paths(self) -> list[Path]:
        """The parts written so far, in the order they were written."""
        return [self.tmp_raw / f"part-{i:05d}.parquet" for i in range(self.parts)]

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
                "raw": [r[2][:RAW_CAP_BYTES].decode("utf-8", "replace") for r in rows],
                "raw_bytes": [len(r[2]) for r in rows],
                "validated_at": [self.validated_at] * n,
            },
            schema={
                "day": pl.Date,
                "segment": pl.String,
                "line": pl.Int64,
                "reason": pl.String,
                "raw": pl.String,
                "raw_bytes": pl.Int64,
                "validated_at": pl.Datetime("us", "UTC"),
            },
        ).to_arrow().cast(QUARANTINE_SCHEMA)
        self.quarantine_writer.write_table(table)

    def work_dir(self) -> Path:
        """A scratch directory beside the temporary outputs (rejected rows, DuckDB spill); the caller removes it."""
        work = self.tmp_raw.with_name(self.tmp_raw.name + ".work")
        work.mkdir()
        return work

    def commit(self, *, empty_part: bool = True) -> None:
        """Rename the outputs into place. `empty_part`: an output without rows still gets one empty typed
        part (a day must be readable); the stage of a split day leaves that to the day's combine step."""
        self.quarantine_writer.close()
        if self.parts == 0 and empty_part:
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
    """Yield (first line number, bytes) blocks of whole lines, each ending with a newline (one is added to a
    last line that has none). The file is mapped, so each byte is copied once, into its block."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            start, line_no = 0, 1
            while start < size:
                end = start + block_bytes
                cut = mm.rfind(b"\n", start, end) + 1 if end < size else size
                if cut <= start:  # a line longer than a block: the block is that line
                    cut = mm.find(b"\n", end) + 1 or size
                block = mm[start:cut]
                if not block.endswith(b"\n"):
                    block += b"\n"
                yield line_no, block
                line_no += block.count(b"\n")
                start = cut


def _line_text(line: bytes) -> bytes:
    """A line without its line end (LF or CRLF) and without a leading UTF-8 byte order mark."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line[3:] if line.startswith(BOM) else line


def _is_blank(line: bytes) -> bool:
    """Blank as the NDJSON reader sees it: only JSON whitespace (a line of other control bytes is not)."""
    return not line.strip(b" \t\r\n")


# A \\uD800-\\uDFFF escape that is not half of a pair. The reader turns such an escape into a NUL without a
# word, so a segment holding one takes the careful path, where orjson judges each suspect line exactly
# (this pattern may also match an escaped backslash followed by "ud800": orjson then clears the line).
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # one quick scan before the exact pattern


def _may_hold_lone_surrogate(data: bytes | mmap.mmap) -> bool:
    return _SURROGATE_ESCAPE.search(data) is not None and _LONE_SURROGATE.search(data) is not None


# One pass (every match starts with a newline, which keeps the regex engine's fast scan) finds both a
# newline followed by a blank line (an optional BOM, JSON whitespace, then the next line end) and a BOM at
# a line start.
_LINE_STARTS = re.compile(rb"\n(?:(?=(?:\xef\xbb\xbf)?[ \t\r]*\n)|\xef\xbb\xbf)")


def _scan_line_starts(data: mmap.mmap) -> tuple[int, bool]:
    """(blank lines after a newline, whether a line starts with a BOM), in one regex pass."""
    blank, bom = 0, False
    for m in _LINE_STARTS.finditer(data):
        if m.end() - m.start() == 1:  # the blank-line branch matches the newline alone
            blank += 1
            bom = bom or data[m.end() : m.end() + 3] == BOM
        else:
            bom = True
    return blank, bom


@dataclass
class _Survey:
    """What one pass over a segment's bytes tells before any parsing: its lines, and whether the fast path
    may take it."""

    lines: int = 0
    blank: int = 0
    careful: bool = False  # a BOM at a line start or a lone surrogate escape: the reader would refuse or garble


def _survey(path: Path) -> _Survey:
    """One read of the mapped file, no Python loop over lines (about 0.7 GB/s here)."""
    s = _Survey()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return s
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            last_start = mm.rfind(b"\n") + 1
            s.lines = _count_newlines(mm) + (last_start < size)
            first_end = mm.find(b"\n")
            # the regex counts each blank line after a newline; the first line and a last one without a
            # newline are looked at here
            s.blank, bom = _scan_line_starts(mm)
            s.blank += _is_blank(_line_text(mm[: first_end if first_end >= 0 else size]))
            if 0 < last_start < size:
                s.blank += _is_blank(_line_text(mm[last_start:]))
            s.careful = mm[:3] == BOM or bom or _may_hold_lone_surrogate(mm)
    return s


def _count_newlines(data: mmap.mmap, chunk: int = 1 << 24) -> int:
    view = np.frombuffer(data, dtype=np.uint8)
    try:
        return sum(int(np.count_nonzero(view[i : i + chunk] == 10)) for i in range(0, len(view), chunk))
    finally:
        del view  # the map cannot close while an array looks at it


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
        numbered, garbled = [], []
        for i, raw in enumerate(block.split(b"\n")[:-1]):
            line = _line_text(raw)
            if _is_blank(line):
                continue  # counted by the survey
            if _may_hold_lone_surrogate(line):
                reason = _strict_reason(line)
                if reason:
                    garbled.append((first_line + i, reason, line))
                    continue
            numbered.append((first_line + i, line))
        if garbled:
            self.result.lines += len(garbled)
            self._quarantine(garbled)
        if numbered:
            self._bisect(numbered)

    def _bisect(self, numbered: list[tuple[int, bytes]]) -> None:
        try:
            df = _read(b"\n".join(ln for _, ln in numbered) + b"\n")
            if df.height == len(numbered):
                self._checked(df, numbered)
                return
            error = f"read {df.height} records from {len(numbered)} lines"
        except (Exception, pl.exceptions.PanicException) as err:  # whatever the reader says, bisect on
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
            if _is_blank(line):
                continue
            record += 1
            if record in wanted:
                out.append((line_no, wanted[record], _line_text(line)))
                if len(out) == len(wanted):
                    break
    return out


def validate_day(app: AppConfig, day: date, *, block_bytes: int = BLOCK_BYTES) -> DayResult:
    """Validate every complete landed segment of a UTC day into raw_logs (each request_id once) and the
    quarantine. No line fails the day: whatever a line holds, it is valid, quarantined with a reason,
    a duplicate, or blank, and the result counts each (see DayResult.unaccounted_lines)."""
    segments = _landed_segments(app, day)
    return _build_day(
        app, day, lambda out, work, result: _validate_segments(
            segments, app.landing_dir, out, work, result, block_bytes
        )
    )


def _build_day(app: AppConfig, day: date, fill: Callable[[_DayOutput, Path, DayResult], None]) -> DayResult:
    """Fill the day's output (`fill`), deduplicate it, then publish raw_logs and the quarantine at once;
    on any failure nothing of the day changes."""
    result = DayResult(day=day)
    out = _DayOutput(raw_path(app, day), quarantine_path(app, day), day)
    work = out.work_dir()
    try:
        fill(out, work, result)
        _deduplicate_day(out, work, result, app.pipeline.duckdb_memory_limit)
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.raw_path = out.final_raw
    result.quarantine_path = out.final_quarantine
    return result


def _landed_segments(app: AppConfig, day: date) -> list[landing.Segment]:
    """The day's complete segments in landing order (hour, then name), on local disk."""
    if app.landing_is_remote:
        # an object-store landing zone: copy the day's segments (new ones only) next to us, then as usual
        return landing.mirror_day(str(app.landing_root), day, app.landing_dir, app.landing.storage_options)
    return landing.list_segments(app.landing_dir, day)


def _validate_segments(
    segments: list[landing.Segment], root: Path, out: _DayOutput, work: Path, result: DayResult, block_bytes: int
) -> None:
    """Validate `segments` (in landing order) into `out`'s parts and quarantine, counting into `result`;
    no deduplication. The parts come out in landing order."""
    careful: set[Path] = set()
    for seg in segments:
        result.segments += 1
        result.bytes_read += seg.size
        result.newest_segment_mtime = max(result.newest_segment_mtime or seg.mtime, seg.mtime)
        survey = _survey(seg.path)
        result.lines_read += survey.lines
        result.blank_lines += survey.blank
        if survey.careful:
            careful.add(seg.path)
    pending = _groups_in_landing_order(segments, careful)
    while pending:
        group = pending.pop(0)
        fast = None if group[0].path in careful else _fast([s.path for s in group], result.day, out, work)
        if fast is not None:
            _account_fast(group, fast, result, out, root)
        elif len(group) > 1:
            # find the segment(s) the reader refuses: the others keep the fast path
            pending[:0] = [[s] for s in group]
        else:
            _BlockValidator(out, result, group[0].relative_to(root)).run(group[0].path, block_bytes)


def _deduplicate_day(out: _DayOutput, work: Path, result: DayResult, memory_limit: str) -> None:
    result.duplicates, result.duplicates_differing = deduplicate(out.part_paths(), work, memory_limit)
    result.valid_rows -= result.duplicates


def _groups_in_landing_order(segments: list[landing.Segment], careful: set[Path]) -> list[list[landing.Segment]]:
    """Runs of segments the fast path may take together, and each careful segment alone, in landing order
    (so the parts they become are in landing order too, which deduplicate relies on)."""
    groups: list[list[landing.Segment]] = []
    for seg in segments:
        if seg.path in careful or not groups or groups[-1][0].path in careful:
            groups.append([seg])
        else:
            groups[-1].append(seg)
    return groups


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


# --- a day split by hour ------------------------------------------------------------------------------
#
# A day too big for one step: each of N steps validates the segments of a contiguous group of hours into
# its own stage (parts + quarantine + its counts), possibly in another process or pod; then one combine
# step takes the stages in hour order, deduplicates across the whole day and commits it exactly as
# validate_day does. Landing order is hour, then segment name, then line, and the hour groups are
# contiguous: the stages' parts in group order are in landing order, so "the first landed copy wins" is
# the same rule, and the day the same rows, as unsplit.

STAGE_RESULT = "result.json"
_STAGE_COUNTS = ("segments", "bytes_read", "lines", "valid_rows", "quarantined_rows", "blank_lines", "lines_read")


def hour_groups(n: int) -> list[range]:
    """The 24 UTC hours cut into `n` contiguous groups, as even as can be (earlier groups one hour longer)."""
    if not 1 <= n <= 24:
        raise ValueError(f"pipeline.hour_groups: {n} is not between 1 and 24")
    size, extra = divmod(24, n)
    groups, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        groups.append(range(start, end))
        start = end
    return groups


def hours_label(hours: range) -> str:
    """'hours_00_05': a name for a group of hours, fit for a Dagster op name and a directory."""
    return f"hours_{hours.start:02d}_{hours.stop - 1:02d}"


def split_stage_dir(app: AppConfig, day: date, run: str) -> Path:
    """Where the steps of one run of a split day stage their outputs: beside raw_logs (the same volume, so
    the combine step hard-links the parts instead of copying them), hidden from the day listings."""
    return app.raw_dir / ".split" / f"date={day.isoformat()}" / run


def validate_hours(
    app: AppConfig, day: date, hours: range, stage: Path, *, block_bytes: int = BLOCK_BYTES
) -> DayResult:
    """One step of a split day: validate the day's segments of `hours` into `stage` (no deduplication:
    that needs the whole day). Re-running it replaces the stage."""
    result = DayResult(day=day)
    segments = [s for s in _landed_segments(app, day) if s.hour in hours]
    stage.mkdir(parents=True, exist_ok=True)
    (stage / STAGE_RESULT).unlink(missing_ok=True)
    out = _DayOutput(stage / "raw", stage / "quarantine.parquet", day)
    work = out.work_dir()
    try:
        _validate_segments(segments, app.landing_dir, out, work, result, block_bytes)
        out.commit(empty_part=False)
    except BaseException:
        out.abort()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # written last: a stage without it is not done
    counts = {name: getattr(result, name) for name in _STAGE_COUNTS}
    counts |= {"reasons": dict(result.reasons), "newest_segment_mtime": result.newest_segment_mtime}
    tmp = stage / f".{STAGE_RESULT}.tmp"
    tmp.write_bytes(orjson.dumps(counts))
    os.replace(tmp, stage / STAGE_RESULT)
    return result


def combine_day(app: AppConfig, day: date, stages: list[Path]) -> DayResult:
    """The last step of a split day: the stages (in hour order) become the day's raw_logs and quarantine,
    deduplicated across the day and committed atomically; the result counts as validate_day's would.
    The stages are left in place (a failed combine can be retried); the caller removes them."""

    def absorb(out: _DayOutput, work: Path, result: DayResult) -> None:
        for stage in stages:
            _absorb_stage(stage, out, result)

    return _build_day(app, day, absorb)


def _absorb_stage(stage: Path, out: _DayOutput, result: DayResult) -> None:
    done = stage / STAGE_RESULT
    if not done.exists():
        raise FileNotFoundError(f"{stage}: no {STAGE_RESULT}; the step validating these hours has not finished")
    counts = orjson.loads(done.read_bytes())
    for name in _STAGE_COUNTS:
        setattr(result, name, getattr(result, name) + counts[name])
    result.reasons.update(counts["reasons"])
    mtimes = [m for m in (result.newest_segment_mtime, counts["newest_segment_mtime"]) if m is not None]
    result.newest_segment_mtime = max(mtimes, default=None)
    for part in sorted((stage / "raw").glob("part-*.parquet")):
        _link_or_copy(part, out.next_part())
    quarantined = pq.ParquetFile(stage / "quarantine.parquet")
    at_field = QUARANTINE_SCHEMA.field("validated_at")
    at_index = QUARANTINE_SCHEMA.get_field_index("validated_at")
    for batch in quarantined.iter_batches():
        # one validation time for the whole day, as unsplit
        at = pa.array([out.validated_at] * batch.num_rows, at_field.type)
        out.quarantine_writer.write_batch(batch.set_column(at_index, at_field, at))
    quarantined.close()


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link when the stage is on the same file system (deduplicate replaces a part it rewrites,
    so the stage's file is never changed), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


# --- deduplication ---------------------------------------------------------------------------------------


def deduplicate(parts: list[Path], work: Path, memory_limit: str) -> tuple[int, int]:
    """Keep one row per request_id in a day's Parquet parts; (copies dropped, how many of them differed).

    Which copy wins: the first in landing order, i.e. the segment that comes first (hour, then name) and
    within it the first line. Parts are written in that order and keep their rows in it, so the first
    (part, row) is that copy. The rule is deterministic: re-materializing a day keeps the same rows. Copies
    that differ in content (a sender that changed a record and resent it under the same request_id) are
    still one row, the first; they are counted apart so a person can look.

    Scope: one UTC day. A record lands in the day of its timestamp (a copy of it too), so a resent record
    always meets its first copy here; the same request_id on two days (two records that share an id) stays
    once in each day, and days are never compared, so re-materializing one day never depends on another.

    Bounded and cheap on a clean day: one DuckDB aggregate over the request_id column alone finds the ids
    seen twice (it spills to `work` beyond `memory_limit`). Only when there are some are the whole rows of
    the copies hashed and the parts that hold a dropped copy rewritten, row group by row group.
    """
    import duckdb

    if not parts:
        return 0, 0
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = {_sql_text(memory_limit)}")
        con.execute(f"SET temp_directory = {_sql_text(str(work / 'duckdb_tmp'))}")
        con.execute("SET preserve_insertion_order = false")
        ids = _rows_sql(parts, "request_id")
        con.execute(
            f"CREATE TEMP TABLE dup AS SELECT request_id, min(pos) AS first_pos FROM ({ids}) "
            "GROUP BY request_id HAVING count(*) > 1"
        )
        if con.execute("SELECT count(*) FROM dup").fetchone()[0] == 0:
            return 0, 0
        content = ", ".join(_sql_name(n) for n in records.field_names())
        hashed = _rows_sql(parts, f"request_id, hash(struct_pack({content})) AS h")
        con.execute(
            f"CREATE TEMP TABLE copies AS SELECT c.request_id, c.pos, c.h, c.pos = d.first_pos AS kept "
            f"FROM ({hashed}) c JOIN dup d USING (request_id)"
        )
        dropped, differing = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE c.h <> k.h) FROM copies c "
            "JOIN copies k ON k.request_id = c.request_id AND k.kept WHERE NOT c.kept"
        ).fetchone()
        touched = con.execute("SELECT DISTINCT pos >> 40 FROM copies WHERE NOT kept ORDER BY 1").fetchall()
        for (i,) in touched:
            # 8 bytes per dropped copy of this part: bounded by the duplicates, not by the day
            rows = con.execute(
                f"SELECT pos - ({int(i)}::BIGINT << 40) AS row FROM copies WHERE NOT kept AND pos >> 40 = {int(i)}"
            ).fetchnumpy()["row"]
            _drop_rows(parts[i], rows, work)
        return int(dropped), int(differing)
    finally:
        con.close()


def _rows_sql(parts: list[Path], columns: str) -> str:
    """Every row of the parts with `columns` and its landing position pos = (part index << 40) + row."""
    return " UNION ALL ".join(
        f"SELECT {columns}, ({i}::BIGINT << 40) + file_row_number AS pos "
        f"FROM read_parquet({_sql_text(str(p))}, file_row_number = true)"
        for i, p in enumerate(parts)
    )


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _drop_rows(part: Path, rows: np.ndarray, work: Path) -> None:
    """Rewrite a part without the rows at the given positions, streaming (Polars reads these parts several
    times faster than pyarrow here)."""
    tmp = work / f"dedup-{part.name}"
    drop = pl.Series(rows, dtype=pl.UInt32).implode()
    (
        pl.scan_parquet(part)
        .with_row_index(DEDUP_ROW)
        .filter(~pl.col(DEDUP_ROW).is_in(drop))
        .drop(DEDUP_ROW)
        .sink_parquet(
            tmp, compression=RAW_COMPRESSION[0], compression_level=RAW_COMPRESSION[1], row_group_size=ROW_GROUP_ROWS
        )
    )
    os.replace(tmp, part)
