"""`snowflake`: PUT the partition's Parquet file to the table's stage, COPY INTO the table.

One table per dataset (`table`, `table_<dataset>`), typed from the dataset's columns: TIMESTAMP_TZ for
timestamps, NUMBER for integers, FLOAT for doubles, BOOLEAN, DATE, VARIANT for JSON text columns. Names are
upper-cased (Snowflake's unquoted form) so analysts write `select customer_id from request_logs`.

A partition is replaced in one transaction: DELETE its rows, COPY INTO from the staged file (a COPY
transformation selects each Parquet field, casts it and parses JSON), COMMIT. The file goes under a path
unique to the run, so Snowflake's load history never skips a reload of the same partition.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from bifrost_pipeline.destinations.base import DatasetFile, DestinationConfig, PartitionOutput
from bifrost_pipeline.destinations.warehouse import (
    PARTITION_COLUMN,
    SIMPLE,
    Column,
    FoldingDialect,
    Warehouse,
    first_line,
    literal,
)

# Error codes after which a retry cannot help: the login was refused (the 390xxx range), the database,
# schema or table does not exist or is not granted (002003, 002043); SQLSTATE classes 28 (authorization)
# and 42 (syntax or access rule violation).
LOGIN_REFUSED = range(390000, 391000)
NOT_FOUND = {2003, 2043}
FINAL_SQLSTATE_CLASSES = {"28", "42"}


class SnowflakeCredentials(DestinationConfig):
    username: str
    password: SecretStr | None = None
    # Key-pair authentication: the PEM text (e.g. from ${SNOWFLAKE_PRIVATE_KEY}) or a file, and its passphrase.
    private_key: SecretStr | None = None
    private_key_path: str | None = None
    private_key_passphrase: SecretStr | None = None
    # OAuth: an access token (authenticator "oauth").
    token: SecretStr | None = None

    @model_validator(mode="after")
    def _one_method(self) -> SnowflakeCredentials:
        given = [
            n
            for n in ("password", "private_key", "private_key_path", "token")
            if getattr(self, n) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of password, private_key, private_key_path or token"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class SnowflakeConfig(DestinationConfig):
    account: str  # "xy12345.eu-west-1", "myorg-myaccount" or "<account>.snowflakecomputing.com"
    database: str
    schema_name: str = Field("PUBLIC", alias="schema")
    table: str | None = None  # default: the export's name
    warehouse: str | None = None
    role: str | None = None
    credentials: SnowflakeCredentials
    # Only for an emulator or a private endpoint: where the connector connects instead of <account>'s host.
    host: str | None = None
    port: int | None = None
    protocol: str = "https"
    login_timeout: int = Field(30, ge=1)

    @field_validator("table")
    @classmethod
    def _table(cls, v: str | None) -> str | None:
        if v is not None and not SIMPLE.match(v):
            raise ValueError("expected a plain identifier (letters, digits, _ and $), e.g. request_logs")
        return v

    @property
    def account_identifier(self) -> str:
        acct = re.sub(r"^https?://", "", self.account.strip()).rstrip("/")
        return re.sub(r"\.snowflakecomputing\.com$", "", acct, flags=re.I)


class SnowflakeDialect(FoldingDialect):
    """Plain names upper-cased (so unquoted references match), others kept quoted."""

    case = "upper"
    decimal = "NUMBER({precision},{scale})"
    types = {
        "string": "VARCHAR",
        "int32": "INTEGER",
        "int64": "BIGINT",
        "double": "FLOAT",
        "bool": "BOOLEAN",
        "date": "DATE",
        "timestamptz": "TIMESTAMP_TZ",
        "timestamp": "TIMESTAMP_NTZ",
        "json": "VARIANT",
    }

    def columns_query(self, schema: str, table: str) -> tuple[str, tuple]:
        # The session's database (USE DATABASE in `prepare`) holds the INFORMATION_SCHEMA read here.
        return (
            "SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS "
            "WHERE UPPER(TABLE_SCHEMA) = UPPER(%s) AND UPPER(TABLE_NAME) = UPPER(%s)",
            (schema, table),
        )


DIALECT = SnowflakeDialect()


def select_expr(c: Column) -> str:
    """How the COPY transformation reads one Parquet field ($1 is the row as a VARIANT)."""
    field = "$1:" + '"' + c.name.replace('"', '""') + '"'
    if c.kind == "json":
        return f"PARSE_JSON({field}::VARCHAR)"
    return f"{field}::{DIALECT.type_of(c)}"


class SnowflakeDestination(Warehouse):
    kind = "snowflake"
    Config = SnowflakeConfig
    config: SnowflakeConfig
    dialect = DIALECT

    @classmethod
    def table_location(cls, config, context) -> str:
        return f"snowflake:{config.account_identifier}/{config.database}.{config.schema_name}.{config.table}".upper()

    def describe(self) -> str:
        c = self.config
        return f"snowflake:{c.account_identifier}/{c.database}.{c.schema_name}.{self.table}"

    def table_ref(self, table: str) -> str:
        return f"{self.config.database}.{self.config.schema_name}.{table}".upper()

    def qualified(self, table: str) -> str:
        q = self.dialect.quote
        return f"{q(self.config.database)}.{q(self.config.schema_name)}.{q(table)}"

    # --- connection -------------------------------------------------------------------------------------

    def secrets(self) -> list:
        cr = self.config.credentials
        return [cr.password, cr.private_key, cr.private_key_passphrase, cr.token]

    def _private_key_der(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        cr = self.config.credentials
        if cr.private_key is not None:
            pem = cr.private_key.get_secret_value().encode()
        else:
            path = self.context.resolve(cr.private_key_path)
            try:
                pem = path.read_bytes()
            except OSError as err:
                raise self.error(f"cannot read private_key_path {path}: {err.strerror or err}") from None
        passphrase = (
            cr.private_key_passphrase.get_secret_value().encode() if cr.private_key_passphrase else None
        )
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase)
        except (ValueError, TypeError) as err:
            raise self.error(f"cannot load the private key: {first_line(err)}") from None
        return key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def connect_args(self) -> dict:
        c, cr = self.config, self.config.credentials
        args: dict = {
            "account": c.account_identifier,
            "user": cr.username,
            "database": c.database,
            "schema": c.schema_name,
            "login_timeout": c.login_timeout,
            "network_timeout": max(c.login_timeout, 60),
            "session_parameters": {"TIMEZONE": "UTC", "QUERY_TAG": f"bifrost_pipeline:{self.export_name}"},
            "application": "bifrost_pipeline",
        }
        if c.warehouse:
            args["warehouse"] = c.warehouse
        if c.role:
            args["role"] = c.role
        if c.host:
            args.update(host=c.host, protocol=c.protocol)
        if c.port:
            args["port"] = c.port
        if cr.password is not None:
            args["password"] = cr.password.get_secret_value()
        elif cr.token is not None:
            args.update(authenticator="oauth", token=cr.token.get_secret_value())
        else:
            args["private_key"] = self._private_key_der()
        return args

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        import snowflake.connector

        return (snowflake.connector.Error,)

    def retryable(self, err: BaseException) -> bool:
        errno = getattr(err, "errno", None)
        sqlstate = str(getattr(err, "sqlstate", None) or "")
        return not (errno in LOGIN_REFUSED or errno in NOT_FOUND or sqlstate[:2] in FINAL_SQLSTATE_CLASSES)

    def connect(self):
        import snowflake.connector

        with self.failing("cannot connect"):
            return snowflake.connector.connect(**self.connect_args())

    def execute(self, session, sql: str, params=()) -> list[tuple]:
        cur = session.cursor()
        try:
            cur.execute(sql, params or None)
            return cur.fetchall() if cur.description else []
        finally:
            cur.close()

    # --- writing ----------------------------------------------------------------------------------------

    def prepare(self, session) -> None:
        with self.failing(f"cannot use {self.config.database}.{self.config.schema_name}"):
            self._use_schema(session.cursor())

    def _use_schema(self, cur) -> None:
        db, schema = self.dialect.quote(self.config.database), self.dialect.quote(self.config.schema_name)
        cur.execute(f"USE DATABASE {db}")  # fails clearly when the database is missing or not granted
        found = cur.execute(
            f"SELECT COUNT(*) FROM {db}.INFORMATION_SCHEMA.SCHEMATA WHERE SCHEMA_NAME = %s",
            (self.dialect.fold(self.config.schema_name),),
        ).fetchone()[0]
        if not found:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {db}.{schema}")
        cur.execute(f"USE SCHEMA {db}.{schema}")

    def load(self, session, table: str, cols: list[Column], f: DatasetFile, output: PartitionOutput) -> int:
        # The table step ran before: DDL commits implicitly in Snowflake, so it stays out of this transaction.
        cur = session.cursor()
        # The table's own stage (@%TABLE) needs no CREATE STAGE privilege; a run-unique path per load.
        safe_key = re.sub(r"[^A-Za-z0-9_.=-]", "_", output.partition_key)
        stage_path = f"@%{table.upper()}/bifrost/{safe_key}/{uuid.uuid4().hex}/"
        local = Path(f.parquet_path).resolve().as_posix()
        cur.execute(f"PUT {literal('file://' + local)} {stage_path} AUTO_COMPRESS=FALSE OVERWRITE=TRUE")
        q = self.dialect.quote
        targets = ", ".join([*(q(c.name) for c in cols), q(PARTITION_COLUMN)])
        selects = ", ".join([*(select_expr(c) for c in cols), literal(output.partition_key)])
        loaded = 0
        cur.execute("BEGIN")
        try:
            cur.execute(
                f"DELETE FROM {self.qualified(table)} WHERE {q(PARTITION_COLUMN)} = %s",
                (output.partition_key,),
            )
            results = cur.execute(
                f"COPY INTO {self.qualified(table)} ({targets}) FROM (SELECT {selects} FROM {stage_path}) "
                "FILE_FORMAT = (TYPE = PARQUET USE_LOGICAL_TYPE = TRUE) ON_ERROR = ABORT_STATEMENT"
            ).fetchall()
            loaded = sum(int(r[3] or 0) for r in results if len(r) > 3 and str(r[1]).upper() == "LOADED")
            if loaded != f.rows:
                raise self.error(
                    f"COPY INTO {table.upper()} loaded {loaded} of {f.rows} rows: "
                    + "; ".join(f"{r[0]}: {r[1]} {r[6] if len(r) > 6 else ''}" for r in results)
                )
            cur.execute("COMMIT")
        except BaseException:
            try:
                cur.execute("ROLLBACK")
            except Exception:
                pass  # the original error matters more (the session may be gone)
            raise
        finally:
            self._remove_staged(cur, stage_path)
        return loaded

    @staticmethod
    def _remove_staged(cur, stage_path: str) -> None:
        import snowflake.connector

        try:
            cur.execute(f"REMOVE {stage_path}")
        except snowflake.connector.Error:
            pass  # best effort: a leftover staged file is harmless (fakesnow has no REMOVE)
