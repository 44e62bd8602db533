"""`duckdb`: the embedded warehouse analysts query (one table per dataset, typed from the schema)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from pydantic import Field

from bifrost_pipeline.destinations.base import (
    DatasetFile,
    DestinationConfig,
    DestinationContext,
    PartitionOutput,
)
from bifrost_pipeline.destinations.warehouse import (
    PARTITION_COLUMN,
    Column,
    SQLDialect,
    Warehouse,
    first_line,
)

LOCK_NOTICE_EVERY_S = 10.0  # while a load waits for the warehouse file, a log line this often


def holder(err: BaseException) -> str:
    """Who holds the file, as DuckDB's lock error says (`held in <program> (PID n)`), else its first line."""
    m = re.search(r"lock is held in (.+?\(PID \d+\))", str(err))
    return f"held by {m.group(1)}" if m else first_line(err)


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
    # How long a load waits for another process (an analyst's connection) to release the file.
    lock_timeout_s: float = Field(120.0, gt=0)


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

    def table_ref(self, table: str) -> str:
        # DuckDB names an attached file's catalog after the file's stem: `warehouse.main.request_logs`.
        return f"{self.path.stem}.{self.config.schema_name}.{table}"

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
        # Another process may hold the file (DuckDB lets one process open it for writing, and any open
        # connection, even a read-only one, keeps a writer out): wait for it, boundedly, and say so.
        began = time.monotonic()
        said = None  # when the last "waiting" line was logged
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.IOException as err:
                waited = time.monotonic() - began
                if "lock" not in str(err).lower():
                    raise self.error(f"cannot open the warehouse {self.path}: {err}", retryable=True) from None
                if waited >= self.config.lock_timeout_s:
                    raise self.error(self._lock_timeout_message(waited, err), retryable=True) from None
                if said is None or time.monotonic() - said >= LOCK_NOTICE_EVERY_S:
                    self.context.log.warning(self._waiting_message(waited, err))
                    said = time.monotonic()
                time.sleep(0.5)

    def _waiting_message(self, waited: float, err: BaseException) -> str:
        return (
            f"export {self.export_name!r}: waiting for the DuckDB warehouse {self.path} "
            f"({waited:.0f}s of at most {self.config.lock_timeout_s:g}s so far): another process holds it "
            f"open ({holder(err)}). DuckDB lets one process open the file while it writes; an "
            "analyst's connection, even read-only, keeps the load out. To read without blocking loads, "
            "query a copy of the file or the export's Parquet files (README, For analysts)."
        )

    def _lock_timeout_message(self, waited: float, err: BaseException) -> str:
        return (
            f"cannot open the warehouse {self.path}: another process held it for {waited:.0f}s "
            f"(lock_timeout_s is {self.config.lock_timeout_s:g}; {holder(err)}). Close that connection "
            "(an analyst's session, a second pipeline) and retry; analysts can query a copy of the file "
            "instead (README, For analysts)"
        )

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
