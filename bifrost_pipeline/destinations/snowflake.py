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

from bifrost_pipeline.destinations.base import (
    PARTITION_COLUMN,
    DatasetFile,
    DestinationConfig,
    PartitionOutput,
    TableDestination,
    WriteResult,
    table_for,
)
from bifrost_pipeline.destinations.warehouse import Column, columns_of, first_line, scrub

SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


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


def ident(name: str) -> str:
    """Snowflake identifier: plain names upper-cased (so unquoted references match), others kept quoted."""
    name = name.upper() if SIMPLE.match(name) else name
    return '"' + name.replace('"', '""') + '"'


def snowflake_type(c: Column) -> str:
    if c.kind == "decimal":
        return f"NUMBER({c.precision or 38},{c.scale})"
    return {
        "string": "VARCHAR",
        "int32": "INTEGER",
        "int64": "BIGINT",
        "double": "FLOAT",
        "bool": "BOOLEAN",
        "date": "DATE",
        "timestamptz": "TIMESTAMP_TZ",
        "timestamp": "TIMESTAMP_NTZ",
        "json": "VARIANT",
    }[c.kind]


def select_expr(c: Column) -> str:
    """How the COPY transformation reads one Parquet field ($1 is the row as a VARIANT)."""
    field = "$1:" + '"' + c.name.replace('"', '""') + '"'
    if c.kind == "json":
        return f"PARSE_JSON({field}::VARCHAR)"
    return f"{field}::{snowflake_type(c)}"


def literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class SnowflakeDestination(TableDestination):
    kind = "snowflake"
    Config = SnowflakeConfig
    config: SnowflakeConfig

    @classmethod
    def table_location(cls, config, app) -> str:
        return f"snowflake:{config.account_identifier}/{config.database}.{config.schema_name}.{config.table}".upper()

    def describe(self) -> str:
        c = self.config
        return f"snowflake:{c.account_identifier}/{c.database}.{c.schema_name}.{self.table}"

    # --- connection -------------------------------------------------------------------------------------

    def _secrets(self) -> list[str | None]:
        cr = self.config.credentials
        return [
            s.get_secret_value() if s else None
            for s in (cr.password, cr.private_key, cr.private_key_passphrase, cr.token)
        ]

    def _private_key_der(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        cr = self.config.credentials
        if cr.private_key is not None:
            pem = cr.private_key.get_secret_value().encode()
        else:
            path = self.app.resolve(cr.private_key_path) if self.app else Path(cr.private_key_path)
            try:
                pem = Path(path).read_bytes()
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

    def _fail(self, err: BaseException, doing: str):
        message = scrub(first_line(err), self._secrets())
        lower = message.lower()
        retryable = not any(
            s in lower
            for s in (
                "incorrect username or password",
                "does not exist",
                "not authorized",
                "authenticat",
                "jwt",
            )
        )
        return self.error(f"{doing}: {message}", retryable=retryable)

    def _connect(self):
        import snowflake.connector

        try:
            return snowflake.connector.connect(**self.connect_args())
        except snowflake.connector.Error as err:
            raise self._fail(err, "cannot connect") from None

    # --- writing ----------------------------------------------------------------------------------------

    def write_partition(self, output: PartitionOutput) -> WriteResult:
        import snowflake.connector

        con = self._connect()
        rows: dict[str, int] = {}
        tables: list[str] = []
        try:
            cur = con.cursor()
            try:
                self._use_schema(cur)
            except snowflake.connector.Error as err:
                raise self._fail(
                    err, f"cannot use {self.config.database}.{self.config.schema_name}"
                ) from None
            for f in output.files:
                name = table_for(self.table, f.dataset)
                try:
                    rows[f.dataset] = self._load(con, cur, name, f, output)
                except snowflake.connector.Error as err:
                    raise self._fail(err, f"loading {f.dataset} into {name.upper()} failed") from None
                tables.append(f"{self.config.database}.{self.config.schema_name}.{name}".upper())
        finally:
            con.close()
        return WriteResult(location=self.describe(), written=tables, rows=rows)

    def _use_schema(self, cur) -> None:
        db, schema = ident(self.config.database), ident(self.config.schema_name)
        cur.execute(f"USE DATABASE {db}")  # fails clearly when the database is missing or not granted
        found = cur.execute(
            f"SELECT COUNT(*) FROM {db}.INFORMATION_SCHEMA.SCHEMATA WHERE SCHEMA_NAME = %s",
            (
                self.config.schema_name.upper()
                if SIMPLE.match(self.config.schema_name)
                else self.config.schema_name,
            ),
        ).fetchone()[0]
        if not found:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {db}.{schema}")
        cur.execute(f"USE SCHEMA {db}.{schema}")

    def _qualified(self, table: str) -> str:
        return f"{ident(self.config.database)}.{ident(self.config.schema_name)}.{ident(table)}"

    def _ensure_table(self, cur, table: str, cols: list[Column]) -> None:
        qualified = self._qualified(table)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {qualified} ("
            + ", ".join(f"{ident(c.name)} {snowflake_type(c)}" for c in cols)
            + f", {ident(PARTITION_COLUMN)} VARCHAR NOT NULL)"
        )
        existing = {
            r[0].upper()
            for r in cur.execute(
                f"SELECT COLUMN_NAME FROM {ident(self.config.database)}.INFORMATION_SCHEMA.COLUMNS "
                "WHERE UPPER(TABLE_SCHEMA) = UPPER(%s) AND UPPER(TABLE_NAME) = UPPER(%s)",
                (self.config.schema_name, table),
            ).fetchall()
        }
        # A field added to the schema becomes a new nullable column; old rows read NULL.
        for c in cols:
            if c.name.upper() not in existing:
                cur.execute(f"ALTER TABLE {qualified} ADD COLUMN {ident(c.name)} {snowflake_type(c)}")

    def _load(self, con, cur, table: str, f: DatasetFile, output: PartitionOutput) -> int:
        cols = columns_of(f)
        self._ensure_table(cur, table, cols)  # DDL commits implicitly in Snowflake: before the transaction
        # The table's own stage (@%TABLE) needs no CREATE STAGE privilege; a run-unique path per load.
        safe_key = re.sub(r"[^A-Za-z0-9_.=-]", "_", output.partition_key)
        stage_path = f"@%{table.upper()}/bifrost/{safe_key}/{uuid.uuid4().hex}/"
        local = Path(f.parquet_path).resolve().as_posix()
        cur.execute(f"PUT {literal('file://' + local)} {stage_path} AUTO_COMPRESS=FALSE OVERWRITE=TRUE")
        targets = ", ".join([*(ident(c.name) for c in cols), ident(PARTITION_COLUMN)])
        selects = ", ".join([*(select_expr(c) for c in cols), literal(output.partition_key)])
        loaded = 0
        cur.execute("BEGIN")
        try:
            cur.execute(
                f"DELETE FROM {self._qualified(table)} WHERE {ident(PARTITION_COLUMN)} = %s",
                (output.partition_key,),
            )
            results = cur.execute(
                f"COPY INTO {self._qualified(table)} ({targets}) FROM (SELECT {selects} FROM {stage_path}) "
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
