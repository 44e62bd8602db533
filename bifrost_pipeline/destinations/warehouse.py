"""Shared pieces of the SQL warehouse destinations (snowflake, bigquery, redshift, sql).

Every warehouse table is built from a `DatasetFile.columns` list ((name, arrow type string) in order), so
request logs and aggregated exports go through the same code. Each column gets a portable *kind* here and
each warehouse maps kinds to its own types. Tables get one more column, `export_partition`, and a partition
is replaced by deleting its rows and loading the new ones atomically (transaction or single MERGE).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bifrost_pipeline.destinations.base import PARTITION_COLUMN, DatasetFile

__all__ = ["PARTITION_COLUMN", "Column", "columns_of", "iter_batches", "scrub", "first_line"]

_INTS32 = {"int8", "int16", "int32", "uint8", "uint16"}
_INTS64 = {"int64", "uint32", "uint64"}
_FLOATS = {"halffloat", "float", "double", "float16", "float32", "float64"}
_STRINGS = {"string", "large_string", "string_view", "utf8", "large_utf8"}
_DECIMAL = re.compile(r"decimal(?:32|64|128|256)?\((\d+),\s*(-?\d+)\)")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # string | int32 | int64 | double | bool | date | timestamptz | timestamp | decimal | json
    precision: int = 0
    scale: int = 0


def column_kind(arrow_type: str, json_column: bool = False) -> Column:
    """The portable kind of an arrow type string as pyarrow prints it (`timestamp[us, tz=UTC]`, ...)."""
    t = arrow_type.strip()
    if json_column:
        return Column("", "json")
    if t.startswith("timestamp["):
        return Column("", "timestamptz" if "tz=" in t else "timestamp")
    if t.startswith("date32") or t.startswith("date64"):
        return Column("", "date")
    m = _DECIMAL.fullmatch(t)
    if m:
        # Warehouses cap precision at 38; sums of int32 come out of DuckDB as decimal128(38, 0).
        return Column("", "decimal", min(int(m.group(1)), 38), max(int(m.group(2)), 0))
    if t in _INTS32:
        return Column("", "int32")
    if t in _INTS64:
        return Column("", "int64")
    if t in _FLOATS:
        return Column("", "double")
    if t in ("bool", "boolean"):
        return Column("", "bool")
    return Column("", "string")  # strings, and anything exotic, as text


def columns_of(f: DatasetFile) -> list[Column]:
    out = []
    for name, arrow_type in f.columns:
        c = column_kind(arrow_type, name in f.json_columns)
        out.append(Column(name, c.kind, c.precision, c.scale))
    return out


def iter_batches(path: Path, batch_rows: int, columns: list[str] | None = None) -> Iterator:
    """Record batches of a Parquet file, a bounded number of rows at a time (memory stays flat)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    try:
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
    finally:
        pf.close()


def scrub(message: str, secrets: Iterable[str | None]) -> str:
    """Remove secret values from a message (a driver may echo a connection string)."""
    for s in secrets:
        if s and len(s) >= 3:
            message = message.replace(s, "***")
    return message


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else text
