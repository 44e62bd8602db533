"""`duckdb`: the embedded warehouse analysts query (one table per dataset, typed from the schema)."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from bifrost_pipeline.destinations.base import (
    DatasetFile,
    DestinationConfig,
    DestinationContext,
    PartitionOutput,
)
from bifrost_pipeline.destinations.warehouse import PARTITION_COLUMN, Column, SQLDialect, Warehouse


class DuckDBDialect(SQLDialect):
    types = {
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

    def columns_query(self, schema: str, table: str) -> tuple[str, tuple]:
        return (
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            (schema, table),
        )


class DuckDBConfig(DestinationConfig):
    path: str | None = None  # default: the pipeline's warehouse (pipeline.warehouse)
    schema_name: str = Field("main", alias="schema")
    table: str | None = None  # default: the export's name


def database_path(config: DuckDBConfig, context: DestinationContext) -> Path:
    return context.resolve(config.path) if config.path else context.warehouse_path


class DuckDBDestination(Warehouse):
    kind = "duckdb"
    Config = DuckDBConfig
    config: DuckDBConfig
    dialect = DuckDBDialect()

    @property
    def path(self) -> Path:
        return database_path(self.config, self.context)

    @classmethod
    def table_location(cls, config, context) -> str:
        return f"duckdb:{database_path(config, context).resolve()}:{config.schema_name}.{config.table}".lower()

    def describe(self) -> str:
        return f"duckdb:{self.path}#{self.config.schema_name}.{self.table}"

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        import duckdb

        return (duckdb.Error,)

    def retryable(self, err: BaseException) -> bool:
        import duckdb

        # The file is busy or the disk refused a write; a conflicting transaction: all may pass.
        return isinstance(err, duckdb.IOException | duckdb.TransactionException)

    def connect(self):
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

    def execute(self, session, sql: str, params=()) -> list[tuple]:
        session.execute(sql, list(params))
        return session.fetchall() if session.description else []

    def partition_param(self, partition_key: str) -> tuple[str, list]:
        return "?", [partition_key]

    def prepare(self, session) -> None:
        with self.failing(f"cannot create schema {self.config.schema_name}"):
            self.execute(session, f"CREATE SCHEMA IF NOT EXISTS {self.dialect.quote(self.config.schema_name)}")

    def load(self, session, table: str, cols: list[Column], f: DatasetFile, output: PartitionOutput) -> int:
        q = self.dialect.quote
        qualified = self.qualified(table)
        select = ", ".join(
            f"CAST({q(c.name)} AS JSON) AS {q(c.name)}" if c.kind == "json" else q(c.name) for c in cols
        )
        session.execute("BEGIN TRANSACTION")
        try:
            session.execute(f"DELETE FROM {qualified} WHERE {q(PARTITION_COLUMN)} = ?", [output.partition_key])
            session.execute(
                f"INSERT INTO {qualified} BY NAME SELECT {select}, ? AS {q(PARTITION_COLUMN)} "
                f"FROM read_parquet(?)",
                [output.partition_key, str(f.parquet_path)],
            )
            session.execute("COMMIT")
        except Exception:
            session.execute("ROLLBACK")
            raise
        return f.rows
