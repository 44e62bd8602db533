"""`sql`: any database SQLAlchemy reaches with a URL (PostgreSQL tested), one table per dataset.

Same semantics as the DuckDB warehouse: the table is created from the dataset's columns, a field added later
becomes a nullable column, and a partition is replaced in one transaction (DELETE its rows, load the new
ones). Loading is bulk and memory-bounded: the Parquet file is read a batch at a time; on PostgreSQL through
psycopg each batch goes through `COPY ... FROM STDIN` (CSV written by Arrow), elsewhere through executemany.
"""

from __future__ import annotations

import io
import json
from contextlib import contextmanager
from functools import cached_property

from pydantic import Field, SecretStr, field_validator

from bifrost_pipeline.destinations.base import DatasetFile, DestinationConfig, PartitionOutput
from bifrost_pipeline.destinations.warehouse import (
    PARTITION_COLUMN,
    Column,
    SQLDialect,
    Warehouse,
    first_line,
    iter_batches,
)

# SQLSTATE classes a retry can get past: connection exception, transaction rollback (serialization failure,
# deadlock), insufficient resources, operator intervention (shutdown, statement timeout), system error.
TRANSIENT_SQLSTATE_CLASSES = {"08", "40", "53", "57", "58"}
# MySQL error numbers a retry cannot get past: access denied (to the server or the database), unknown database.
MYSQL_FINAL = {1044, 1045, 1049, 1698}


class SQLConfig(DestinationConfig):
    url: SecretStr  # e.g. ${WAREHOUSE_URL} = postgresql+psycopg://user:pass@host:5432/db
    schema_name: str | None = Field(None, alias="schema")  # default: the connection's default schema
    table: str | None = None  # default: the export's name
    batch_rows: int = Field(100_000, ge=1_000)  # rows read from Parquet and sent per batch
    connect_timeout: int = Field(15, ge=1)

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(v.get_secret_value())
        except ArgumentError:
            raise ValueError(
                "expected an SQLAlchemy URL such as postgresql+psycopg://user:pass@host/db"
            ) from None
        # The scheme names a database and a driver: check both now, not at the first run. Only the scheme is
        # quoted (the rest of the URL may hold a password).
        try:
            dialect = url.get_dialect()
        except Exception:
            raise ValueError(
                f"unknown database scheme {url.drivername!r}: expected an SQLAlchemy dialect such as "
                "postgresql+psycopg, mysql+pymysql, mssql+pyodbc, sqlite"
            ) from None
        try:
            dialect.import_dbapi()
        except ImportError as err:
            raise ValueError(
                f"the driver of {url.drivername!r} is not installed ({err.name or err}): install it, or name "
                "an installed driver (postgresql+psycopg is in the `cloud` extra)"
            ) from None
        return v


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def sa_type(c: Column):
    """SQLAlchemy type of a column kind (PostgreSQL gets JSONB for JSON columns)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    if c.kind == "json":
        return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    return {
        "string": sa.Text(),
        "int32": sa.Integer(),
        "int64": sa.BigInteger(),
        "double": sa.Float(precision=53),
        "bool": sa.Boolean(),
        "date": sa.Date(),
        "timestamptz": sa.DateTime(timezone=True),
        "timestamp": sa.DateTime(),
        "decimal": sa.Numeric(c.precision or 38, c.scale),
    }[c.kind]


class SQLAlchemyDialect(SQLDialect):
    """The dialect of the URL's database, as SQLAlchemy spells types and quotes names for it."""

    def __init__(self, sa_dialect):
        self.sa = sa_dialect

    def quote(self, name: str) -> str:
        return self.sa.identifier_preparer.quote(name)

    def type_of(self, c: Column) -> str:
        return sa_type(c).compile(dialect=self.sa)


class SQLDestination(Warehouse):
    kind = "sql"
    Config = SQLConfig
    config: SQLConfig

    @classmethod
    def table_location(cls, config, context) -> str:
        return f"sql:{safe_url(config.url.get_secret_value())}#{config.schema_name or ''}.{config.table}"

    def describe(self) -> str:
        schema = f"{self.config.schema_name}." if self.config.schema_name else ""
        return f"sql:{safe_url(self.config.url.get_secret_value())}#{schema}{self.table}"

    def qualified(self, table: str) -> str:
        q = self.dialect.quote
        return (q(self.config.schema_name) + "." if self.config.schema_name else "") + q(table)

    def table_ref(self, table: str) -> str:
        return f"{self.config.schema_name}.{table}" if self.config.schema_name else table

    # --- connection -------------------------------------------------------------------------------------

    def secrets(self) -> list:
        from sqlalchemy.engine import make_url

        url = make_url(self.config.url.get_secret_value())
        return [url.password if isinstance(url.password, str) else None, self.config.url]

    @cached_property
    def dialect(self) -> SQLAlchemyDialect:
        from sqlalchemy.engine import make_url

        try:
            dialect_cls = make_url(self.config.url.get_secret_value()).get_dialect()
            return SQLAlchemyDialect(dialect_cls(dbapi=dialect_cls.import_dbapi()))
        except Exception as err:  # missing driver, unknown dialect
            raise self.error(f"cannot create the engine: {self.message(err)}") from None

    def connect(self):
        import sqlalchemy as sa

        url = sa.engine.make_url(self.config.url.get_secret_value())
        connect_args = {}
        if url.get_backend_name() in ("postgresql", "redshift", "mysql"):
            connect_args["connect_timeout"] = self.config.connect_timeout
        self.driver_errors()  # loads the driver first: a missing one is named
        try:
            engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        except Exception as err:  # a bad URL option
            raise self.error(f"cannot create the engine: {self.message(err)}") from None
        try:
            with self.failing("cannot connect"):
                return engine.connect()
        except BaseException:
            engine.dispose()
            raise

    def close(self, session) -> None:
        session.close()
        session.engine.dispose()

    def execute(self, session, sql: str, params=()) -> list[tuple]:
        import sqlalchemy as sa

        result = session.execute(sa.text(sql), dict(params) if params else None)
        return [tuple(r) for r in result] if result.returns_rows else []

    def partition_param(self, partition_key: str) -> tuple[str, dict]:
        return ":partition", {"partition": partition_key}

    def message(self, err: BaseException) -> str:
        return first_line(getattr(err, "orig", None) or err)

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        import sqlalchemy.exc as sa_exc

        # COPY runs on the driver's own connection: its errors are the driver's, not SQLAlchemy's.
        return (sa_exc.SQLAlchemyError, getattr(self.dialect.sa.loaded_dbapi, "Error", sa_exc.DBAPIError))

    def retryable(self, err: BaseException) -> bool:
        import sqlalchemy.exc as sa_exc

        if isinstance(err, sa_exc.TimeoutError):  # no connection free in the pool
            return True
        orig = getattr(err, "orig", None) or err
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)  # psycopg 3 / psycopg2
        if sqlstate:
            return str(sqlstate)[:2] in TRANSIENT_SQLSTATE_CLASSES
        code = orig.args[0] if orig.args else None
        if isinstance(code, int) and code in MYSQL_FINAL:
            return False
        dbapi = self.dialect.sa.loaded_dbapi
        if not isinstance(orig, dbapi.OperationalError | dbapi.InterfaceError):
            return False
        # libpq reports no SQLSTATE when a connection is refused. If the server had already taken our
        # password, it answered and said no (wrong password, no such database): a retry would be refused too.
        pgconn = getattr(orig, "pgconn", None)
        return not (pgconn is not None and pgconn.used_password)

    # --- the table step, through SQLAlchemy's inspector (portable across the URL's databases) ------------

    def prepare(self, session) -> None:
        import sqlalchemy as sa

        schema = self.config.schema_name
        with self.failing(f"cannot use schema {schema}"):
            if schema and not sa.inspect(session).has_schema(schema):
                session.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
                session.commit()

    @contextmanager
    def ddl(self, session):
        yield
        session.commit()

    def column_names(self, session, table: str) -> set[str]:
        import sqlalchemy as sa

        insp = sa.inspect(session)
        if not insp.has_table(table, schema=self.config.schema_name):
            return set()
        return {c["name"] for c in insp.get_columns(table, schema=self.config.schema_name)}

    def create_table(self, session, table: str, cols: list[Column]) -> None:
        import sqlalchemy as sa

        meta = sa.MetaData()
        spec = sa.Table(
            table,
            meta,
            *(sa.Column(c.name, sa_type(c), nullable=True) for c in cols),
            sa.Column(PARTITION_COLUMN, sa.String(128), nullable=False),
            schema=self.config.schema_name,
        )
        sa.Index(f"ix_{table}_{PARTITION_COLUMN}"[:63], spec.c[PARTITION_COLUMN])
        meta.create_all(session, checkfirst=True)

    # --- loading ----------------------------------------------------------------------------------------

    def load(self, session, table: str, cols: list[Column], f: DatasetFile, output: PartitionOutput) -> int:
        import sqlalchemy as sa

        reflected = sa.Table(table, sa.MetaData(), autoload_with=session, schema=self.config.schema_name)
        if session.in_transaction():  # reflection auto-began one; DDL is done, start the load's own
            session.commit()
        partition_key = output.partition_key
        with session.begin():
            session.execute(sa.delete(reflected).where(reflected.c[PARTITION_COLUMN] == partition_key))
            if session.dialect.name == "postgresql" and session.dialect.driver in ("psycopg", "psycopg2"):
                return self._copy_postgres(session, reflected, cols, f, partition_key)
            return self._executemany(session, reflected, cols, f, partition_key)

    def _copy_postgres(self, conn, table, cols: list[Column], f: DatasetFile, partition_key: str) -> int:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        quote = self.dialect.quote
        names = ", ".join(quote(c.name) for c in cols) + ", " + quote(PARTITION_COLUMN)
        sql = f"COPY {self.qualified(table.name)} ({names}) FROM STDIN WITH (FORMAT csv)"
        dbapi = conn.connection.driver_connection
        options = pacsv.WriteOptions(include_header=False, batch_size=8192)
        loaded = 0
        with dbapi.cursor() as cur:
            copy_cm = cur.copy(sql) if conn.dialect.driver == "psycopg" else None
            copy = copy_cm.__enter__() if copy_cm is not None else None
            try:
                for batch in iter_batches(f.parquet_path, self.config.batch_rows, [c.name for c in cols]):
                    batch = batch.append_column(PARTITION_COLUMN, pa.array([partition_key] * batch.num_rows))
                    buf = io.BytesIO()
                    pacsv.write_csv(batch, buf, options)
                    if copy is not None:
                        copy.write(buf.getbuffer())
                    else:  # psycopg2: one COPY per batch, still inside the same transaction
                        buf.seek(0)
                        cur.copy_expert(sql, buf)
                    loaded += batch.num_rows
            except BaseException as err:
                if copy_cm is not None:
                    copy_cm.__exit__(type(err), err, err.__traceback__)
                raise
            if copy_cm is not None:
                copy_cm.__exit__(None, None, None)
        return loaded

    def _executemany(self, conn, table, cols: list[Column], f: DatasetFile, partition_key: str) -> int:
        json_cols = [c.name for c in cols if c.kind == "json"]
        loaded = 0
        for batch in iter_batches(
            f.parquet_path, min(self.config.batch_rows, 20_000), [c.name for c in cols]
        ):
            records = batch.to_pylist()
            for r in records:
                r[PARTITION_COLUMN] = partition_key
                for name in json_cols:  # JSON text in Parquet -> a value for the JSON type to encode
                    if r[name] is not None:
                        r[name] = json.loads(r[name])
            conn.execute(table.insert(), records)
            loaded += len(records)
        return loaded
