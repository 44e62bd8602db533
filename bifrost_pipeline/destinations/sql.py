"""`sql`: any database SQLAlchemy reaches with a URL (PostgreSQL tested), one table per dataset.

Same semantics as the DuckDB warehouse: the table is created from the dataset's columns, a field added later
becomes a nullable column, and a partition is replaced in one transaction (DELETE its rows, load the new
ones). Loading is bulk and memory-bounded: the Parquet file is read a batch at a time; on PostgreSQL through
psycopg each batch goes through `COPY ... FROM STDIN` (CSV written by Arrow), elsewhere through executemany.
"""

from __future__ import annotations

import io
import json

from pydantic import Field, SecretStr, field_validator

from bifrost_pipeline.destinations.base import (
    PARTITION_COLUMN,
    DatasetFile,
    DestinationConfig,
    PartitionOutput,
    TableDestination,
    WriteResult,
    table_for,
)
from bifrost_pipeline.destinations.warehouse import Column, columns_of, first_line, iter_batches, scrub


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
            make_url(v.get_secret_value())
        except ArgumentError:
            raise ValueError(
                "expected an SQLAlchemy URL such as postgresql+psycopg://user:pass@host/db"
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


class SQLDestination(TableDestination):
    kind = "sql"
    Config = SQLConfig
    config: SQLConfig

    @classmethod
    def table_location(cls, config, app) -> str:
        return f"sql:{safe_url(config.url.get_secret_value())}#{config.schema_name or ''}.{config.table}"

    def describe(self) -> str:
        schema = f"{self.config.schema_name}." if self.config.schema_name else ""
        return f"sql:{safe_url(self.config.url.get_secret_value())}#{schema}{self.table}"

    # --- connection -------------------------------------------------------------------------------------

    def _secrets(self) -> list[str | None]:
        from sqlalchemy.engine import make_url

        url = make_url(self.config.url.get_secret_value())
        return [url.password if isinstance(url.password, str) else None, self.config.url.get_secret_value()]

    def _engine(self):
        import sqlalchemy as sa

        url = sa.engine.make_url(self.config.url.get_secret_value())
        connect_args = {}
        if url.get_backend_name() in ("postgresql", "redshift", "mysql"):
            connect_args["connect_timeout"] = self.config.connect_timeout
        try:
            return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        except Exception as err:  # missing driver, bad URL option
            raise self.error(f"cannot create the engine: {scrub(first_line(err), self._secrets())}") from None

    def _fail(self, err: BaseException, doing: str):
        import sqlalchemy.exc as sa_exc

        orig = getattr(err, "orig", None) or err
        message = scrub(first_line(orig), self._secrets())
        lower = message.lower()
        retryable = isinstance(
            err, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError
        ) and not any(
            s in lower for s in ("password", "authentication", "does not exist", "permission denied", "role")
        )
        return self.error(f"{doing}: {message}", retryable=retryable)

    # --- writing ----------------------------------------------------------------------------------------

    def write_partition(self, output: PartitionOutput) -> WriteResult:
        import sqlalchemy.exc as sa_exc

        engine = self._engine()
        # COPY runs on the driver's own connection: its errors are the driver's, not SQLAlchemy's.
        driver_error = getattr(engine.dialect.loaded_dbapi, "Error", sa_exc.DBAPIError)
        rows: dict[str, int] = {}
        tables: list[str] = []
        try:
            try:
                conn = engine.connect()
            except sa_exc.DBAPIError as err:
                raise self._fail(err, "cannot connect") from None
            with conn:
                for f in output.files:
                    name = table_for(self.table, f.dataset)
                    try:
                        rows[f.dataset] = self._load(conn, name, f, output.partition_key)
                    except (sa_exc.SQLAlchemyError, driver_error) as err:
                        raise self._fail(err, f"loading {f.dataset} into {name} failed") from None
                    tables.append(f"{self.config.schema_name}.{name}" if self.config.schema_name else name)
        finally:
            engine.dispose()
        return WriteResult(location=self.describe(), written=tables, rows=rows)

    def _ensure_table(self, conn, name: str, cols: list[Column]):
        import sqlalchemy as sa

        schema = self.config.schema_name
        insp = sa.inspect(conn)
        if schema and not insp.has_schema(schema):
            conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
            conn.commit()
            insp = sa.inspect(conn)
        meta = sa.MetaData()
        if not insp.has_table(name, schema=schema):
            table = sa.Table(
                name,
                meta,
                *(sa.Column(c.name, sa_type(c), nullable=True) for c in cols),
                sa.Column(PARTITION_COLUMN, sa.String(128), nullable=False),
                schema=schema,
            )
            sa.Index(f"ix_{name}_{PARTITION_COLUMN}"[:63], table.c[PARTITION_COLUMN])
            meta.create_all(conn, checkfirst=True)
            conn.commit()
            return table
        existing = {c["name"] for c in insp.get_columns(name, schema=schema)}
        quote = conn.dialect.identifier_preparer.quote
        qualified = (quote(schema) + "." if schema else "") + quote(name)
        # A field added to the schema becomes a new nullable column; old rows read NULL.
        for c in cols:
            if c.name not in existing:
                ddl = sa_type(c).compile(dialect=conn.dialect)
                conn.execute(sa.text(f"ALTER TABLE {qualified} ADD COLUMN {quote(c.name)} {ddl}"))
        conn.commit()
        return sa.Table(name, meta, autoload_with=conn, schema=schema)

    def _load(self, conn, name: str, f: DatasetFile, partition_key: str) -> int:
        import sqlalchemy as sa

        cols = columns_of(f)
        table = self._ensure_table(conn, name, cols)
        if conn.in_transaction():  # reflection auto-began one; DDL is done, start the load's own
            conn.commit()
        loaded = 0
        with conn.begin():
            conn.execute(sa.delete(table).where(table.c[PARTITION_COLUMN] == partition_key))
            driver = conn.dialect.driver
            if conn.dialect.name == "postgresql" and driver in ("psycopg", "psycopg2"):
                loaded = self._copy_postgres(conn, table, cols, f, partition_key)
            else:
                loaded = self._executemany(conn, table, cols, f, partition_key)
        return loaded

    def _copy_postgres(self, conn, table, cols: list[Column], f: DatasetFile, partition_key: str) -> int:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        quote = conn.dialect.identifier_preparer.quote
        qualified = (quote(table.schema) + "." if table.schema else "") + quote(table.name)
        names = ", ".join(quote(c.name) for c in cols) + ", " + quote(PARTITION_COLUMN)
        sql = f"COPY {qualified} ({names}) FROM STDIN WITH (FORMAT csv)"
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
