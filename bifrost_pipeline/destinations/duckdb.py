"""`duckdb`: the embedded warehouse analysts query (one table per dataset, typed from the schema)."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from bifrost_pipeline.destinations.base import (
    PARTITION_COLUMN,
    DatasetFile,
    DestinationConfig,
    PartitionOutput,
    TableDestination,
    WriteResult,
    table_for,
)
from bifrost_pipeline.destinations.warehouse import Column, columns_of

_TYPES = {
    "string": "VARCHAR",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "date": "DATE",
    "timestamptz": "TIMESTAMPTZ",
    "timestamp": "TIMESTAMP",
    "json": "JSON",
}


def duckdb_type(column: Column) -> str:
    if column.kind == "decimal":
        return f"DECIMAL({column.precision}, {column.scale})"
    return _TYPES[column.kind]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBConfig(DestinationConfig):
    path: str | None = None  # default: the pipeline's warehouse (pipeline.warehouse)
    schema_name: str = Field("main", alias="schema")
    table: str | None = None  # default: the export's name


class DuckDBDestination(TableDestination):
    kind = "duckdb"
    Config = DuckDBConfig
    config: DuckDBConfig

    @property
    def path(self) -> Path:
        return self.app.resolve(self.config.path) if self.config.path else self.app.warehouse_path

    @classmethod
    def table_location(cls, config, app) -> str:
        path = app.resolve(config.path) if config.path else app.warehouse_path
        return f"duckdb:{path.resolve()}:{config.schema_name}.{config.table}".lower()

    def describe(self) -> str:
        return f"duckdb:{self.path}#{self.config.schema_name}.{self.table}"

    def _connect(self):
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Another run may hold the file (DuckDB allows one writing process): wait for it, boundedly.
        deadline = time.monotonic() + 120
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.IOException as err:
                if "lock" not in str(err).lower() or time.monotonic() > deadline:
                    raise self.error(f"cannot open the warehouse: {err}", retryable=True) from None
                time.sleep(0.5)

    def write_partition(self, output: PartitionOutput) -> WriteResult:
        con = self._connect()
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.config.schema_name)}")
            rows = {}
            tables = []
            for f in output.files:
                name = table_for(self.table, f.dataset)
                self._load(con, name, f, output.partition_key)
                rows[f.dataset] = f.rows
                tables.append(f"{self.config.schema_name}.{name}")
        finally:
            con.close()
        return WriteResult(location=self.describe(), written=tables, rows=rows)

    def _load(self, con, table: str, f: DatasetFile, partition_key: str) -> None:
        qualified = f"{quote(self.config.schema_name)}.{quote(table)}"
        wanted = [(c.name, duckdb_type(c)) for c in columns_of(f)]
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {qualified} ("
            + ", ".join(f"{quote(n)} {t}" for n, t in wanted)
            + f", {quote(PARTITION_COLUMN)} VARCHAR NOT NULL)"
        )
        existing = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
                [self.config.schema_name, table],
            ).fetchall()
        }
        # A field added to the schema becomes a new nullable column; old rows read NULL.
        for n, t in wanted:
            if n not in existing:
                con.execute(f"ALTER TABLE {qualified} ADD COLUMN {quote(n)} {t}")
        select = ", ".join(
            f"CAST({quote(n)} AS {t}) AS {quote(n)}" if t == "JSON" else quote(n) for n, t in wanted
        )
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"DELETE FROM {qualified} WHERE {quote(PARTITION_COLUMN)} = ?", [partition_key])
            con.execute(
                f"INSERT INTO {qualified} BY NAME SELECT {select}, ? AS {quote(PARTITION_COLUMN)} "
                f"FROM read_parquet(?)",
                [partition_key, str(f.parquet_path)],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
