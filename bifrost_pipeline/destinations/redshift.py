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

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bifrost_pipeline.destinations.base import (
    DatasetFile,
    DestinationConfig,
    PartitionOutput,
    check_prefix,
    render_prefix,
)
from bifrost_pipeline.destinations.warehouse import (
    PARTITION_COLUMN,
    SIMPLE,
    Column,
    FoldingDialect,
    Warehouse,
    first_line,
    iter_batches,
    literal,
)

# SQLSTATE classes after which a retry cannot help: 28 authorization (a wrong password), 3D / 3F no such
# database / schema, 42 syntax error, access rule violation or undefined object.
FINAL_SQLSTATE_CLASSES = {"28", "3D", "3F", "42"}
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


class RedshiftDialect(FoldingDialect):
    """Redshift folds identifiers to lower case: plain names are lower-cased and quoted."""

    case = "lower"
    partition_type = "VARCHAR(128)"
    types = {
        "string": "VARCHAR(65535)",
        "int32": "INTEGER",
        "int64": "BIGINT",
        "double": "DOUBLE PRECISION",
        "bool": "BOOLEAN",
        "date": "DATE",
        "timestamptz": "TIMESTAMPTZ",
        "timestamp": "TIMESTAMP",
        "json": "SUPER",
    }

    def staging_type(self, c: Column) -> str:
        """Type of a column of the temporary table COPY fills: JSON arrives as text, parsed on insert."""
        return "VARCHAR(65535)" if c.kind == "json" else self.type_of(c)


def copy_sql(target: str, s3_uri: str, iam_role: str, region: str | None = None) -> str:
    """The COPY of a staged Parquet file (runs on Redshift only)."""
    region_clause = f" REGION {literal(region)}" if region else ""
    return (
        f"COPY {target} FROM {literal(s3_uri)} IAM_ROLE {literal(iam_role)} FORMAT AS PARQUET{region_clause}"
    )


class RedshiftDestination(Warehouse):
    kind = "redshift"
    Config = RedshiftConfig
    config: RedshiftConfig
    dialect = RedshiftDialect()

    @classmethod
    def table_location(cls, config, context) -> str:
        return f"redshift:{config.cluster}/{config.database}.{config.schema_name}.{config.table}".lower()

    def describe(self) -> str:
        c = self.config
        return f"redshift:{c.cluster}/{c.database}.{c.schema_name}.{self.table}"

    def table_ref(self, table: str) -> str:
        return f"{self.config.database}.{self.config.schema_name}.{table}"

    def result_metadata(self) -> dict:
        return {"load_method": self.config.method}

    # --- connection -------------------------------------------------------------------------------------

    def secrets(self) -> list:
        c = self.config
        values = [c.credentials.password]
        if c.s3_staging:
            values += [c.s3_staging.access_key_id, c.s3_staging.secret_access_key]
        return values

    def message(self, err: BaseException) -> str:
        arg = err.args[0] if err.args else None
        if isinstance(arg, dict):  # redshift_connector puts the server's fields in a dict
            text = str(arg.get("M") or arg)
            if arg.get("C"):
                text += f" (SQLSTATE {arg['C']})"
            return text
        return first_line(err)

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        import redshift_connector

        return (redshift_connector.Error,)

    def retryable(self, err: BaseException) -> bool:
        import redshift_connector

        if isinstance(err, redshift_connector.InterfaceError):  # the connection itself failed
            return True
        arg = err.args[0] if err.args else None
        sqlstate = str(arg.get("C") or "") if isinstance(arg, dict) else ""
        return sqlstate[:2] not in FINAL_SQLSTATE_CLASSES

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
                f"that may call redshift:DescribeClusters): {first_line(err)}",
                retryable=not isinstance(err, botocore.exceptions.ClientError),
            ) from None

    def connect(self):
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
        with self.failing(f"cannot connect to {host}:{port}"):
            return redshift_connector.connect(**args)

    def execute(self, session, sql: str, params=()) -> list[tuple]:
        cur = session.cursor()
        cur.execute(sql, params or None)
        return list(cur.fetchall()) if cur.description else []

    # --- writing ----------------------------------------------------------------------------------------

    def prepare(self, session) -> None:
        with self.failing(f"cannot use schema {self.config.schema_name}"), self.ddl(session):
            found = self.execute(
                session, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.dialect.fold(self.config.schema_name),)
            )
            if not found:  # create only when missing: the loader may lack CREATE on the database
                self.execute(session, f"CREATE SCHEMA IF NOT EXISTS {self.dialect.quote(self.config.schema_name)}")

    @contextmanager
    def ddl(self, session) -> Iterator[None]:
        # Autocommit: Redshift does not run some ALTER TABLE forms inside a transaction block.
        session.rollback()
        session.autocommit = True
        try:
            yield
        finally:
            session.autocommit = False

    def table_suffix(self, session, cols: list[Column]) -> str:
        (version,) = self.execute(session, "SELECT version()")[0]
        if "redshift" not in str(version).lower():  # the PostgreSQL stand-in of the tests has no sort keys
            return ""
        keys = [PARTITION_COLUMN] + [c.name for c in cols if c.name == "timestamp"]
        return " COMPOUND SORTKEY (" + ", ".join(self.dialect.quote(k) for k in keys) + ")"

    def load(self, session, table: str, cols: list[Column], f: DatasetFile, output: PartitionOutput) -> int:
        if self.config.method == "copy":
            return self._load_copy(session, table, cols, f, output)
        return self._load_insert(session, table, cols, f, output.partition_key)

    # --- load_method: insert ------------------------------------------------------------------------------

    def _load_insert(self, con, table: str, cols: list[Column], f: DatasetFile, partition_key: str) -> int:
        names = ", ".join([*(self.dialect.quote(c.name) for c in cols), self.dialect.quote(PARTITION_COLUMN)])
        row_sql = (
            "(" + ", ".join(["JSON_PARSE(%s)" if c.kind == "json" else "%s" for c in cols] + ["%s"]) + ")"
        )
        per_statement = max(1, min(self.config.insert_batch_rows, MAX_PARAMS // (len(cols) + 1)))
        cur = con.cursor()
        loaded = 0
        try:
            cur.execute(
                f"DELETE FROM {self.qualified(table)} WHERE {self.dialect.quote(PARTITION_COLUMN)} = %s", (partition_key,)
            )
            for batch in iter_batches(f.parquet_path, per_statement, [c.name for c in cols]):
                columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
                params: list = []
                for values in zip(*columns, strict=True):
                    params.extend(values)
                    params.append(partition_key)
                sql = f"INSERT INTO {self.qualified(table)} ({names}) VALUES " + ", ".join(
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
                f"cannot stage {f.dataset} in s3://{s.bucket}/{key}: {first_line(err)}",
                retryable=True,
            ) from None
        return key

    def _load_copy(self, con, table: str, cols: list[Column], f: DatasetFile, output: PartitionOutput) -> int:
        s = self.config.s3_staging
        s3 = self.s3_client()
        key = self.stage(s3, f, output)
        staging = self.dialect.quote(f"bifrost_load_{uuid.uuid4().hex[:12]}")
        cur = con.cursor()
        try:
            cur.execute(
                f"CREATE TEMP TABLE {staging} ("
                + ", ".join(f"{self.dialect.quote(c.name)} {self.dialect.staging_type(c)}" for c in cols)
                + ")"
            )
            cur.execute(copy_sql(staging, f"s3://{s.bucket}/{key}", self.config.iam_role, s.region))
            cur.execute(f"SELECT COUNT(*) FROM {staging}")
            staged = int(cur.fetchone()[0])
            if staged != f.rows:
                raise self.error(f"COPY staged {staged} of {f.rows} rows of {f.dataset}")
            names = ", ".join([*(self.dialect.quote(c.name) for c in cols), self.dialect.quote(PARTITION_COLUMN)])
            values = ", ".join(
                [*(f"JSON_PARSE({self.dialect.quote(c.name)})" if c.kind == "json" else self.dialect.quote(c.name) for c in cols), "%s"]
            )
            cur.execute(
                f"DELETE FROM {self.qualified(table)} WHERE {self.dialect.quote(PARTITION_COLUMN)} = %s",
                (output.partition_key,),
            )
            cur.execute(
                f"INSERT INTO {self.qualified(table)} ({names}) SELECT {values} FROM {staging}",
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
