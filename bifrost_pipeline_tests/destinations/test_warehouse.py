"""The warehouse template without a server: the table step each dialect issues, retryable classification by
exception type or error code, the one secret scrubber, and which destinations are warehouses."""

from __future__ import annotations

import ast
from pathlib import Path

import duckdb
from pydantic import SecretStr

from bifrost_pipeline.destinations import registry
from bifrost_pipeline.destinations.base import scrub
from bifrost_pipeline.destinations.duckdb import DuckDBDestination
from bifrost_pipeline.destinations.redshift import RedshiftDestination
from bifrost_pipeline.destinations.snowflake import SnowflakeDestination
from bifrost_pipeline.destinations.sql import SQLAlchemyDialect, SQLDestination
from bifrost_pipeline.destinations.warehouse import Column, Warehouse
from bifrost_pipeline_tests.destinations import warehouse_data as wd
from bifrost_pipeline_tests.destinations.context import context

DESTINATIONS = Path(__file__).resolve().parents[2] / "bifrost_pipeline" / "destinations"
COLS = [Column("timestamp", "timestamptz"), Column("model", "string"), Column("cost_usd", "double")]


class FakeSession:
    """Enough of a DB-API connection for the table step (Redshift switches autocommit around its DDL)."""

    autocommit = False

    def rollback(self) -> None:
        pass


def recording(cls: type[Warehouse], existing: list[str], version: str = "PostgreSQL 15"):
    """`cls` with `execute` recording statements and answering the column query with `existing`."""

    class Recording(cls):
        statements: list[str]

        def execute(self, session, sql, params=()):
            if sql.upper().startswith("SELECT COLUMN_NAME"):
                return [(name,) for name in existing]
            if sql == "SELECT version()":
                return [(version,)]
            self.statements.append(sql)
            return []

    return Recording


def snowflake(existing: list[str]):
    config = SnowflakeDestination.Config.model_validate(
        {"account": "acme", "database": "logs", "credentials": {"username": "u", "password": "pw-1"}}
    )
    dest = recording(SnowflakeDestination, existing)(config, context("daily"))
    dest.statements = []
    return dest


def redshift(existing: list[str], version: str = "PostgreSQL 15"):
    config = RedshiftDestination.Config.model_validate(
        {"cluster": "c", "database": "dev", "credentials": {"username": "u", "password": "pw-1"}}
    )
    dest = recording(RedshiftDestination, existing, version)(config, context("daily"))
    dest.statements = []
    return dest


def duck(existing: list[str]):
    dest = recording(DuckDBDestination, existing)(DuckDBDestination.Config(), context("daily"))
    dest.statements = []
    return dest


def test_add_missing_columns_issues_each_dialects_alter_table():
    sf = snowflake(["TIMESTAMP", "MODEL", "EXPORT_PARTITION"])
    sf.ensure_table(FakeSession(), "request_logs", COLS)
    assert sf.statements == ['ALTER TABLE "LOGS"."PUBLIC"."REQUEST_LOGS" ADD COLUMN "COST_USD" FLOAT']

    rs = redshift(["timestamp", "model", "export_partition"])
    rs.ensure_table(FakeSession(), "request_logs", COLS)
    assert rs.statements == ['ALTER TABLE "public"."request_logs" ADD COLUMN "cost_usd" DOUBLE PRECISION']

    dd = duck(["timestamp", "model", "export_partition"])
    dd.ensure_table(FakeSession(), "request_logs", COLS)
    assert dd.statements == ['ALTER TABLE "main"."request_logs" ADD COLUMN "cost_usd" DOUBLE']


def test_case_folding_decides_which_columns_already_exist():
    # Snowflake keeps plain names upper-cased, Redshift lower-cased: the same column in another case is no gap.
    sf = snowflake(["timestamp", "Model", "COST_USD"])
    sf.ensure_table(FakeSession(), "request_logs", COLS)
    assert sf.statements == []
    rs = redshift(["timestamp", "model", "cost_usd"])
    rs.ensure_table(FakeSession(), "Request_Logs", [Column("Cost_USD", "double")])
    assert rs.statements == []
    # DuckDB compares names as written (as the store did before the template).
    dd = duck(["timestamp"])
    dd.ensure_table(FakeSession(), "request_logs", [Column("Timestamp", "timestamptz")])
    assert dd.statements == ['ALTER TABLE "main"."request_logs" ADD COLUMN "Timestamp" TIMESTAMPTZ']


def test_a_missing_table_is_created_with_the_partition_column():
    sf = snowflake([])
    sf.ensure_table(FakeSession(), "request_logs", [Column("total", "decimal", 38, 2), Column("meta", "json")])
    assert sf.statements == [
        'CREATE TABLE IF NOT EXISTS "LOGS"."PUBLIC"."REQUEST_LOGS" ("TOTAL" NUMBER(38,2), "META" VARIANT, '
        '"EXPORT_PARTITION" VARCHAR NOT NULL)'
    ]
    # On Redshift itself (not the PostgreSQL stand-in) the table gets its sort key.
    rs = redshift([], version="PostgreSQL 8.0.2 on i686-pc-linux-gnu, Redshift 1.0.77467")
    rs.ensure_table(FakeSession(), "request_logs", COLS[:1])
    assert rs.statements == [
        'CREATE TABLE IF NOT EXISTS "public"."request_logs" ("timestamp" TIMESTAMPTZ, '
        '"export_partition" VARCHAR(128) NOT NULL) COMPOUND SORTKEY ("export_partition", "timestamp")'
    ]


def test_the_sql_dialect_is_the_urls_database_as_sqlalchemy_spells_it():
    from sqlalchemy.dialects import postgresql, sqlite

    pg = SQLAlchemyDialect(postgresql.dialect())
    assert pg.add_column("logs.request_logs", Column("metadata", "json")) == (
        "ALTER TABLE logs.request_logs ADD COLUMN metadata JSONB"
    )
    assert pg.add_column("t", Column("select", "timestamptz")) == 'ALTER TABLE t ADD COLUMN "select" TIMESTAMP WITH TIME ZONE'
    lite = SQLAlchemyDialect(sqlite.dialect())
    assert lite.add_column("t", Column("metadata", "json")) == "ALTER TABLE t ADD COLUMN metadata JSON"


def test_duckdb_adds_a_new_field_as_a_nullable_column(tmp_path):
    dest = DuckDBDestination(DuckDBDestination.Config(path=str(tmp_path / "w.duckdb")), context("daily"))
    dest.write_partition(wd.day_partition("daily", wd.DAYS[0], tmp_path))
    result = dest.write_partition(wd.day_partition("daily", wd.DAYS[1], tmp_path, with_region=True))
    assert result.written == ["w.main.daily"] and result.rows == {"request_logs": 10}
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        rows = con.execute(
            "SELECT export_partition, count(*), count(region) FROM main.daily GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [(wd.DAYS[0], 10, 0), (wd.DAYS[1], 10, 10)]


def test_retryable_is_decided_by_error_code_not_message_text():
    import snowflake.connector.errors as sf_errors

    sf = snowflake([])
    # The text mentions a password, but the code says a request failed on the way: worth a retry.
    assert sf.retryable(sf_errors.OperationalError(msg="Incorrect username or password", errno=250003))
    assert not sf.retryable(sf_errors.DatabaseError(msg="login refused", errno=390100, sqlstate="08001"))
    assert not sf.retryable(sf_errors.ProgrammingError(msg="no such object", errno=2003, sqlstate="02000"))
    assert not sf.retryable(sf_errors.ProgrammingError(msg="syntax error", errno=1003, sqlstate="42000"))

    import redshift_connector

    rs = redshift([])
    assert rs.retryable(redshift_connector.InterfaceError("communication error"))
    assert not rs.retryable(redshift_connector.ProgrammingError({"C": "28P01", "M": "password authentication failed"}))
    assert not rs.retryable(redshift_connector.ProgrammingError({"C": "3D000", "M": "database does not exist"}))
    assert rs.retryable(redshift_connector.ProgrammingError({"C": "40001", "M": "password: serialization"}))


def test_sql_and_bigquery_and_duckdb_retryable_by_exception_type_or_sqlstate():
    import psycopg
    import sqlalchemy.exc as sa_exc
    from google.api_core import exceptions as gexc

    from bifrost_pipeline.destinations.bigquery import BigQueryDestination

    sql = SQLDestination(SQLDestination.Config(url="postgresql+psycopg://u:pw@127.0.0.1/db"), context("daily"))

    def wrapped(orig: Exception) -> sa_exc.DBAPIError:
        return sa_exc.OperationalError("SELECT 1", {}, orig)

    assert sql.retryable(wrapped(psycopg.errors.SerializationFailure("could not serialize")))
    assert sql.retryable(wrapped(psycopg.errors.AdminShutdown("terminating connection")))
    assert not sql.retryable(wrapped(psycopg.errors.InvalidPassword("password authentication failed")))
    assert not sql.retryable(psycopg.errors.NumericValueOutOfRange("out of range"))  # raised by COPY directly
    assert sql.retryable(sa_exc.TimeoutError("QueuePool limit reached"))
    assert sql.retryable(wrapped(psycopg.OperationalError("connection refused")))  # never reached a server

    bq = BigQueryDestination(BigQueryDestination.Config(project_id="p", dataset="d"), context("daily"))
    assert bq.retryable(gexc.ServiceUnavailable("try later")) and bq.retryable(ConnectionError())
    assert not bq.retryable(gexc.Forbidden("access denied")) and not bq.retryable(gexc.NotFound("no dataset"))

    dd = DuckDBDestination(DuckDBDestination.Config(), context("daily"))
    assert dd.retryable(duckdb.IOException("disk full")) and not dd.retryable(duckdb.CatalogException("no table"))


def test_failure_names_the_step_and_hides_secrets():
    import snowflake.connector.errors as sf_errors

    err = snowflake([]).failure(sf_errors.OperationalError(msg="login as u:pw-1 failed", errno=250001), "cannot connect")
    assert str(err) == "export 'daily' -> snowflake:acme/logs.PUBLIC.daily: cannot connect: 250001: login as u:*** failed"
    assert err.retryable


def test_one_scrubber_for_secrets_urls_and_signatures():
    text = "pw=abc key=s3cr3t-value https://user:pass@host/x?sig=abcd&x-amz-signature=ffff&keep=1"
    out = scrub(text, [SecretStr("s3cr3t-value"), "abc", None, "ab", ""])
    assert out == "pw=*** key=*** https://***@host/x?sig=***&x-amz-signature=***&keep=1"


def test_warehouses_are_known_by_their_class():
    kinds = {kind for kind, cls in registry().items() if cls.is_warehouse}
    assert kinds == {kind for kind, cls in registry().items() if issubclass(cls, Warehouse)}
    assert kinds == {"duckdb", "snowflake", "bigquery", "redshift", "sql"}


def test_destinations_do_not_import_the_application_config():
    for path in DESTINATIONS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("bifrost_pipeline.config") for n in names), path.name
