"""The warehouse template: what snowflake, bigquery, redshift, sql and duckdb share.

`Warehouse.write_partition` is the one table step of every warehouse:

    connect -> prepare (schema / dataset) -> for each dataset of the partition:
        table `table` (request_logs) or `table_<dataset>`: create it if missing, add the columns it lacks
        (a field added to the schema becomes a nullable column; old rows read NULL), then `load`: replace
        the rows of this export_partition atomically (a transaction, or one MERGE)

and turns every driver error into a `DestinationError` that names the export, the store and the step, never
carries a secret (`scrub`), and says whether a retry can help (`retryable`, from the exception's type or
error code). How a store spells types, quotes and folds names, lists a table's columns and adds a column is
its `Dialect`. A store implements only: `connect`, `load` (its fast path: PUT + COPY, load job + MERGE, COPY
FROM STDIN, ...), `driver_errors` and `retryable`; docs/warehouses.md says how to add one.

Every table is built from a `DatasetFile.columns` list ((name, arrow type string) in order), so request logs
and aggregated exports go through the same code: each column gets a portable *kind* here (`Column`) and
each dialect maps kinds to its own types.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bifrost_pipeline.destinations.base import (
    DatasetFile,
    Destination,
    DestinationContext,
    DestinationError,
    PartitionOutput,
    WriteResult,
)

PARTITION_COLUMN = "export_partition"  # added to warehouse tables: which export partition a row belongs to
SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")  # a name the store folds when it is not quoted


def table_for(table: str, dataset: str) -> str:
    """Warehouse table of a dataset: `table` holds request_logs, `table_<dataset>` every other dataset."""
    return table if dataset == "request_logs" else f"{table}_{dataset}"


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


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else text


def literal(value: str) -> str:
    """A SQL string literal (backslashes doubled too: Snowflake and Redshift read them as escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class Dialect:
    """How one store names and types columns. A store subclasses it and overrides what differs."""

    types: ClassVar[Mapping[str, str]]  # column kind -> type name, every kind but decimal
    decimal: ClassVar[str] = "DECIMAL({precision},{scale})"
    partition_type: ClassVar[str] = "VARCHAR"  # type of the export_partition column

    def fold(self, name: str) -> str:
        """The name as the store keeps it when written unquoted (Snowflake: upper case, Redshift: lower)."""
        return name

    def column_key(self, name: str) -> str:
        """What two column names share when the store takes them for the same column."""
        return self.fold(name)

    def quote(self, name: str) -> str:
        return '"' + self.fold(name).replace('"', '""') + '"'

    def type_of(self, c: Column) -> str:
        if c.kind == "decimal":
            return self.decimal.format(precision=c.precision or 38, scale=c.scale)
        return self.types[c.kind]


class SQLDialect(Dialect):
    """A store whose catalogue is read and changed with SQL (all but BigQuery, which uses its API)."""

    def create_table(self, qualified: str, cols: Sequence[Column], suffix: str = "") -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {qualified} ("
            + ", ".join(f"{self.quote(c.name)} {self.type_of(c)}" for c in cols)
            + f", {self.quote(PARTITION_COLUMN)} {self.partition_type} NOT NULL){suffix}"
        )

    def add_column(self, qualified: str, c: Column) -> str:
        return f"ALTER TABLE {qualified} ADD COLUMN {self.quote(c.name)} {self.type_of(c)}"

    def columns_query(self, schema: str, table: str) -> tuple[str, tuple]:
        """The query listing a table's column names (none when the table is missing), and its parameters."""
        return (
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (self.fold(schema), self.fold(table)),
        )


class FoldingDialect(SQLDialect):
    """A store that folds unquoted names (to `case`): plain names are folded, others kept as written."""

    case: ClassVar[str]  # "upper" or "lower"

    def fold(self, name: str) -> str:
        return getattr(name, self.case)() if SIMPLE.match(name) else name


class Warehouse(Destination):
    """A warehouse: each dataset lands in a table named from `config.table` (default: the export's name).

    `session` below is whatever `connect` returns (a DB-API connection, an SQLAlchemy connection, a client).
    """

    is_warehouse: ClassVar[bool] = True
    dialect: Dialect

    # --- what each store implements -------------------------------------------------------------------

    @abstractmethod
    def connect(self) -> Any:
        """An open session; `with self.failing("cannot connect"):` around the driver's call."""

    @abstractmethod
    def load(self, session: Any, table: str, cols: list[Column], f: DatasetFile, output: PartitionOutput) -> int:
        """Replace the rows of `output.partition_key` in `table` with the file's, atomically; rows loaded."""

    @abstractmethod
    def driver_errors(self) -> tuple[type[BaseException], ...]:
        """The exception types of the store's driver that `failing` turns into `DestinationError`s."""

    @abstractmethod
    def retryable(self, err: BaseException) -> bool:
        """Whether a retry can help, from the exception's type or error code (never its message text)."""

    @abstractmethod
    def execute(self, session: Any, sql: str, params: Sequence | Mapping = ()) -> list[tuple]:
        """Run one statement; its rows (empty for a statement without a result)."""

    @classmethod
    @abstractmethod
    def table_location(cls, config: Any, context: DestinationContext) -> str:
        """The configured table, fully qualified (server, database, schema), in the store's case rules."""

    # --- what a store may override ---------------------------------------------------------------------

    def close(self, session: Any) -> None:
        session.close()

    def prepare(self, session: Any) -> None:
        """Before the first table: make sure the schema (dataset) exists."""

    def qualified(self, table: str) -> str:
        """The table as written in SQL (with its schema)."""
        return f"{self.dialect.quote(self.config.schema_name)}.{self.dialect.quote(table)}"

    def table_ref(self, table: str) -> str:
        """The table as listed in `WriteResult.written`."""
        return f"{self.config.schema_name}.{table}"

    def ddl(self, session: Any):
        """Context around the table step's DDL (a store whose DDL must run outside a transaction)."""
        return nullcontext()

    def result_metadata(self) -> dict[str, Any]:
        """Added to the `WriteResult` (e.g. which load method ran)."""
        return {}

    def table_suffix(self, session: Any, cols: list[Column]) -> str:
        """Added after CREATE TABLE's column list (sort keys, partitioning)."""
        return ""

    # The three catalogue steps below use the store's `SQLDialect`; a store with an API overrides them.

    def column_names(self, session: Any, table: str) -> set[str]:
        """The table's columns as the store names them; empty when the table does not exist."""
        sql, params = self.dialect.columns_query(self.config.schema_name, table)
        return {r[0] for r in self.execute(session, sql, params)}

    def create_table(self, session: Any, table: str, cols: list[Column]) -> None:
        suffix = self.table_suffix(session, cols)
        self.execute(session, self.dialect.create_table(self.qualified(table), cols, suffix))

    def add_columns(self, session: Any, table: str, cols: list[Column]) -> None:
        for c in cols:
            self.execute(session, self.dialect.add_column(self.qualified(table), c))

    # --- the shared table step -------------------------------------------------------------------------

    @property
    def table(self) -> str:
        return self.config.table or self.export_name

    @classmethod
    def location_key(cls, config: Any, context: DestinationContext) -> str | None:
        # Without `table` the table is the export's own name, which no other export has.
        return cls.table_location(config, context) if config.table else None

    def write_partition(self, output: PartitionOutput) -> WriteResult:
        session = self.connect()
        rows: dict[str, int] = {}
        tables: list[str] = []
        try:
            self.prepare(session)
            for f in output.files:
                name = table_for(self.table, f.dataset)
                with self.failing(f"loading {f.dataset} into {self.dialect.fold(name)} failed"):
                    cols = columns_of(f)
                    self.ensure_table(session, name, cols)
                    rows[f.dataset] = self.load(session, name, cols, f, output)
                tables.append(self.table_ref(name))
        finally:
            self.close(session)
        return WriteResult(location=self.describe(), written=tables, rows=rows, metadata=self.result_metadata())

    def count_rows(self, output: PartitionOutput, result: WriteResult) -> dict[str, int]:
        """`count(*)` of each dataset's table where export_partition is this partition (0: no such table)."""
        session = self.connect()
        rows: dict[str, int] = {}
        try:
            for f in output.files:
                name = table_for(self.table, f.dataset)
                with self.failing(f"counting the rows of {f.dataset} in {self.dialect.fold(name)} failed"):
                    rows[f.dataset] = self.partition_rows(session, name, output.partition_key)
        finally:
            self.close(session)
        return rows

    def partition_rows(self, session: Any, table: str, partition_key: str) -> int:
        if not self.column_names(session, table):
            return 0
        placeholder, params = self.partition_param(partition_key)
        sql = (
            f"SELECT count(*) FROM {self.qualified(table)} "
            f"WHERE {self.dialect.quote(PARTITION_COLUMN)} = {placeholder}"
        )
        return int(self.execute(session, sql, params)[0][0])

    def partition_param(self, partition_key: str) -> tuple[str, Sequence | Mapping]:
        """The driver's placeholder for one parameter and the parameters to `execute` with it."""
        return "%s", (partition_key,)

    def ensure_table(self, session: Any, table: str, cols: list[Column]) -> None:
        """Create the table when it is missing, else add the columns it lacks (as nullable columns)."""
        with self.ddl(session):
            existing = {self.dialect.column_key(n) for n in self.column_names(session, table)}
            if not existing:
                self.create_table(session, table, cols)
                return
            missing = [c for c in cols if self.dialect.column_key(c.name) not in existing]
            if missing:
                self.add_columns(session, table, missing)

    # --- errors ----------------------------------------------------------------------------------------

    def failure(self, err: BaseException, doing: str) -> DestinationError:
        """A driver's exception as a `DestinationError` saying what was being done (`error` scrubs it)."""
        return self.error(f"{doing}: {self.message(err)}", retryable=self.retryable(err))

    def message(self, err: BaseException) -> str:
        """The part of a driver's exception worth showing (its first line)."""
        return first_line(err)

    @contextmanager
    def failing(self, doing: str) -> Iterator[None]:
        try:
            yield
        except DestinationError:
            raise
        except self.driver_errors() as err:
            raise self.failure(err, doing) from None
