"""`redshift`: stage the partition's Parquet file in S3, COPY it into Redshift, swap the partition's rows.

One table per dataset (`table`, `table_<dataset>`), typed from the dataset's columns: TIMESTAMPTZ, INTEGER /
BIGINT, DOUBLE PRECISION, BOOLEAN, DATE, DECIMAL, VARCHAR(65535), SUPER for JSON text columns.

Two load methods (`load_method`):

- `copy` (the default when `s3_staging` is set): boto3 uploads the Parquet file under the staging prefix;
  then, in one transaction, the file is COPYed (IAM_ROLE, FORMAT AS PARQUET) into a temporary table shaped
  like the file, the partition's old rows are deleted, and the staged rows are inserted (JSON_PARSE for
  SUPER columns); COMMIT. The staged object is removed afterwards.
- `insert`: the rows are sent in multi-row INSERT statements, a batch of Parquet rows at a time, in the same
  delete+insert transaction. Needs no bucket or role; fine for small partitions; slow for millions of rows.

`host` defaults to the cluster's endpoint, looked up with the Redshift API (boto3) from `cluster` and
`region`. The connection goes through redshift_connector.
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bifrost_pipeline.destinations.base import (
    PARTITION_COLUMN,
    DatasetFile,
    DestinationConfig,
    PartitionOutput,
    TableDestination,
    WriteResult,
    check_prefix,
    render_prefix,
    table_for,
)
from bifrost_pipeline.destinations.warehouse import Column, columns_of, first_line, iter_batches, scrub

SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
MAX_PARAMS = 30_000  # parameters per INSERT statement (the wire protocol allows 32767)


class RedshiftCredentials(DestinationConfig):
    username: str
    password: SecretStr | None = None
    # IAM authentication instead of a password: temporary database credentials for `username` (db_user),
    # from the AWS credentials of the environment (or `profile`).
    iam: bool = False
    profile: str | None = None

    @model_validator(mode="after")
    def _method(self) -> RedshiftCredentials:
        if not self.iam and self.password is None:
            raise ValueError("give a password, or iam: true for IAM authentication")
        return self


class S3Staging(DestinationConfig):
    bucket: str
    prefix: str = "bifrost-staging/{export}/{partition}/"
    region: str | None = None  # the bucket's region, when it differs from the cluster's
    endpoint_url: str | None = None  # only for an S3-compatible store / emulator
    access_key_id: SecretStr | None = None  # default: the AWS credential chain of the environment
    secret_access_key: SecretStr | None = None

    _check_prefix = field_validator("prefix")(classmethod(lambda cls, v: check_prefix(v)))


class RedshiftConfig(DestinationConfig):
    cluster: str
    database: str
    schema_name: str = Field("public", alias="schema")
    table: str | None = None  # default: the export's name
    region: str | None = None
    credentials: RedshiftCredentials
    host: str | None = None  # default: the cluster's endpoint from the Redshift API
    port: int = 5439
    ssl: bool = True
    iam_role: str | None = None  # arn:aws:iam::<account>:role/<role> that lets COPY read the staging bucket
    s3_staging: S3Staging | None = None
    load_method: Literal["auto", "copy", "insert"] = "auto"
    insert_batch_rows: int = Field(5_000, ge=1)
    timeout: int = Field(30, ge=1)  # connect timeout, seconds

    @field_validator("table")
    @classmethod
    def _table(cls, v: str | None) -> str | None:
        if v is not None and not SIMPLE.match(v):
            raise ValueError("expected a plain identifier (letters, digits, _ and $), e.g. request_logs")
        return v

    @model_validator(mode="after")
    def _copy_needs(self) -> RedshiftConfig:
        if self.load_method == "copy" and (self.s3_staging is None or not self.iam_role):
            raise ValueError("load_method copy needs s3_staging and iam_role (or load_method: insert)")
        return self

    @property
    def method(self) -> str:
        if self.load_method == "auto":
            return "copy" if self.s3_staging is not None and self.iam_role else "insert"
        return self.load_method


def ident(name: str) -> str:
    """Redshift folds identifiers to lower case: plain names are lower-cased and quoted."""
    name = name.lower() if SIMPLE.match(name) else name
    return '"' + name.replace('"', '""') + '"'


def redshift_type(c: Column, *, staging: bool = False) -> str:
    if c.kind == "json":
        return "VARCHAR(65535)" if staging else "SUPER"
    if c.kind == "decimal":
        return f"DECIMAL({c.precision or 38},{c.scale})"
    return {
        "string": "VARCHAR(65535)",
        "int32": "INTEGER",
        "int64": "BIGINT",
        "double": "DOUBLE PRECISION",
        "bool": "BOOLEAN",
        "date": "DATE",
        "timestamptz": "TIMESTAMPTZ",
        "timestamp": "TIMESTAMP",
    }[c.kind]


def literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def copy_sql(target: str, s3_uri: str, iam_role: str, region: str | None = None) -> str:
    """The COPY of a staged Parquet file (runs on Redshift only)."""
    region_clause = f" REGION {literal(region)}" if region else ""
    return (
        f"COPY {target} FROM {literal(s3_uri)} IAM_ROLE {literal(iam_role)} FORMAT AS PARQUET{region_clause}"
    )


class RedshiftDestination(TableDestination):
    kind = "redshift"
    Config = RedshiftConfig
    config: RedshiftConfig

    @classmethod
    def table_location(cls, config, app) -> str:
        return f"redshift:{config.cluster}/{config.database}.{config.schema_name}.{config.table}".lower()

    def describe(self) -> str:
        c = self.config
        return f"redshift:{c.cluster}/{c.database}.{c.schema_name}.{self.table}"

    # --- connection -------------------------------------------------------------------------------------

    def _secrets(self) -> list[str | None]:
        c = self.config
        values = [c.credentials.password]
        if c.s3_staging:
            values += [c.s3_staging.access_key_id, c.s3_staging.secret_access_key]
        return [v.get_secret_value() if v else None for v in values]

    def _message(self, err: BaseException) -> str:
        arg = err.args[0] if err.args else None
        if isinstance(arg, dict):  # redshift_connector puts the server's fields in a dict
            text = str(arg.get("M") or arg)
            if arg.get("C"):
                text += f" (SQLSTATE {arg['C']})"
        else:
            text = first_line(err)
        return scrub(text, self._secrets())

    def _fail(self, err: BaseException, doing: str, *, retryable: bool | None = None):
        message = self._message(err)
        if retryable is None:
            lower = message.lower()
            retryable = not any(
                s in lower for s in ("password", "authentication", "does not exist", "permission denied")
            )
        return self.error(f"{doing}: {message}", retryable=retryable)

    def endpoint(self) -> tuple[str, int]:
        if self.config.host:
            return self.config.host, self.config.port
        import boto3
        import botocore.exceptions

        try:
            client = boto3.client("redshift", region_name=self.config.region)
            cluster = client.describe_clusters(ClusterIdentifier=self.config.cluster)["Clusters"][0]
            return cluster["Endpoint"]["Address"], int(cluster["Endpoint"]["Port"])
        except (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
            KeyError,
            IndexError,
        ) as err:
            raise self.error(
                f"cannot find the endpoint of cluster {self.config.cluster!r} (set host, or give AWS credentials "
                f"that may call redshift:DescribeClusters): {scrub(first_line(err), self._secrets())}",
                retryable=not isinstance(err, botocore.exceptions.ClientError),
            ) from None

    def _connect(self):
        import redshift_connector

        c, cr = self.config, self.config.credentials
        host, port = self.endpoint()
        args: dict = {
            "host": host,
            "port": port,
            "database": c.database,
            "ssl": c.ssl,
            "timeout": c.timeout,
            "application_name": "bifrost_pipeline",
        }
        if cr.iam:
            args.update(iam=True, db_user=cr.username, cluster_identifier=c.cluster, region=c.region)
            if cr.profile:
                args["profile"] = cr.profile
        else:
            args.update(user=cr.username, password=cr.password.get_secret_value())
        try:
            return redshift_connector.connect(**args)
        except redshift_connector.InterfaceError as err:
            raise self._fail(err, f"cannot connect to {host}:{port}", retryable=True) from None
        except redshift_connector.Error as err:
            raise self._fail(err, f"cannot connect to {host}:{port}") from None

    # --- writing ----------------------------------------------------------------------------------------

    def write_partition(self, output: PartitionOutput) -> WriteResult:
        import redshift_connector

        con = self._connect()
        rows: dict[str, int] = {}
        tables: list[str] = []
        try:
            for f in output.files:
                name = table_for(self.table, f.dataset)
                try:
                    rows[f.dataset] = self._load(con, name, f, output)
                except redshift_connector.Error as err:
                    raise self._fail(err, f"loading {f.dataset} into {name} failed") from None
                tables.append(f"{self.config.schema_name}.{name}")
        finally:
            con.close()
        return WriteResult(
            location=self.describe(), written=tables, rows=rows, metadata={"load_method": self.config.method}
        )

    def _qualified(self, table: str) -> str:
        return f"{ident(self.config.schema_name)}.{ident(table)}"

    def _ensure_table(self, con, table: str, cols: list[Column]) -> None:
        # DDL in autocommit: Redshift does not run some ALTER TABLE forms inside a transaction block.
        con.rollback()
        con.autocommit = True
        try:
            cur = con.cursor()
            cur.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._folded(self.config.schema_name),)
            )
            if cur.fetchone() is None:  # create only when missing: the loader may lack CREATE on the database
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(self.config.schema_name)}")
            cur.execute("SELECT version()")
            on_redshift = "redshift" in str(cur.fetchone()[0]).lower()
            sort = ""
            if on_redshift:  # the PostgreSQL stand-in of the tests has no sort keys
                keys = [PARTITION_COLUMN] + [c.name for c in cols if c.name == "timestamp"]
                sort = " COMPOUND SORTKEY (" + ", ".join(ident(k) for k in keys) + ")"
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self._qualified(table)} ("
                + ", ".join(f"{ident(c.name)} {redshift_type(c)}" for c in cols)
                + f", {ident(PARTITION_COLUMN)} VARCHAR(128) NOT NULL){sort}"
            )
            cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                (self._folded(self.config.schema_name), self._folded(table)),
            )
            existing = {r[0] for r in cur.fetchall()}
            # A field added to the schema becomes a new nullable column; old rows read NULL.
            for c in cols:
                if self._folded(c.name) not in existing:
                    cur.execute(
                        f"ALTER TABLE {self._qualified(table)} ADD COLUMN {ident(c.name)} {redshift_type(c)}"
                    )
        finally:
            con.autocommit = False

    @staticmethod
    def _folded(name: str) -> str:
        return name.lower() if SIMPLE.match(name) else name

    def _load(self, con, table: str, f: DatasetFile, output: PartitionOutput) -> int:
        cols = columns_of(f)
        self._ensure_table(con, table, cols)
        if self.config.method == "copy":
            return self._load_copy(con, table, cols, f, output)
        return self._load_insert(con, table, cols, f, output.partition_key)

    # --- load_method: insert ------------------------------------------------------------------------------

    def _load_insert(self, con, table: str, cols: list[Column], f: DatasetFile, partition_key: str) -> int:
        names = ", ".join([*(ident(c.name) for c in cols), ident(PARTITION_COLUMN)])
        row_sql = (
            "(" + ", ".join(["JSON_PARSE(%s)" if c.kind == "json" else "%s" for c in cols] + ["%s"]) + ")"
        )
        per_statement = max(1, min(self.config.insert_batch_rows, MAX_PARAMS // (len(cols) + 1)))
        cur = con.cursor()
        loaded = 0
        try:
            cur.execute(
                f"DELETE FROM {self._qualified(table)} WHERE {ident(PARTITION_COLUMN)} = %s", (partition_key,)
            )
            for batch in iter_batches(f.parquet_path, per_statement, [c.name for c in cols]):
                columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
                params: list = []
                for values in zip(*columns, strict=True):
                    params.extend(values)
                    params.append(partition_key)
                sql = f"INSERT INTO {self._qualified(table)} ({names}) VALUES " + ", ".join(
                    [row_sql] * batch.num_rows
                )
                cur.execute(sql, params)
                loaded += batch.num_rows
            con.commit()
        except BaseException:
            con.rollback()
            raise
        return loaded

    # --- load_method: copy (a real cluster only) ------------------------------------------------------

    def s3_client(self):
        import boto3

        s = self.config.s3_staging
        kwargs: dict = {"region_name": s.region or self.config.region}
        if s.endpoint_url:
            kwargs["endpoint_url"] = s.endpoint_url
        if s.access_key_id and s.secret_access_key:
            kwargs.update(
                aws_access_key_id=s.access_key_id.get_secret_value(),
                aws_secret_access_key=s.secret_access_key.get_secret_value(),
            )
        return boto3.client("s3", **kwargs)

    def stage(self, s3, f: DatasetFile, output: PartitionOutput) -> str:
        """Upload the Parquet file under a run-unique key; return its key."""
        import boto3.exceptions
        import botocore.exceptions

        s = self.config.s3_staging
        prefix = render_prefix(
            s.prefix,
            export=output.export,
            partition_key=output.partition_key,
            window_start=output.window_start,
        )
        key = f"{prefix}{output.run_id}-{uuid.uuid4().hex[:8]}/{f.dataset}.parquet"
        try:
            s3.upload_file(str(f.parquet_path), s.bucket, key)
        except (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
            boto3.exceptions.S3UploadFailedError,
        ) as err:
            raise self.error(
                f"cannot stage {f.dataset} in s3://{s.bucket}/{key}: {scrub(first_line(err), self._secrets())}",
                retryable=True,
            ) from None
        return key

    def _load_copy(self, con, table: str, cols: list[Column], f: DatasetFile, output: PartitionOutput) -> int:
        s = self.config.s3_staging
        s3 = self.s3_client()
        key = self.stage(s3, f, output)
        staging = ident(f"bifrost_load_{uuid.uuid4().hex[:12]}")
        cur = con.cursor()
        try:
            cur.execute(
                f"CREATE TEMP TABLE {staging} ("
                + ", ".join(f"{ident(c.name)} {redshift_type(c, staging=True)}" for c in cols)
                + ")"
            )
            cur.execute(copy_sql(staging, f"s3://{s.bucket}/{key}", self.config.iam_role, s.region))
            cur.execute(f"SELECT COUNT(*) FROM {staging}")
            staged = int(cur.fetchone()[0])
            if staged != f.rows:
                raise self.error(f"COPY staged {staged} of {f.rows} rows of {f.dataset}")
            names = ", ".join([*(ident(c.name) for c in cols), ident(PARTITION_COLUMN)])
            values = ", ".join(
                [*(f"JSON_PARSE({ident(c.name)})" if c.kind == "json" else ident(c.name) for c in cols), "%s"]
            )
            cur.execute(
                f"DELETE FROM {self._qualified(table)} WHERE {ident(PARTITION_COLUMN)} = %s",
                (output.partition_key,),
            )
            cur.execute(
                f"INSERT INTO {self._qualified(table)} ({names}) SELECT {values} FROM {staging}",
                (output.partition_key,),
            )
            cur.execute(f"DROP TABLE {staging}")
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            try:
                s3.delete_object(Bucket=s.bucket, Key=key)
            except Exception:
                pass  # best effort: a lifecycle rule on the staging prefix cleans up what is left
        return staged
