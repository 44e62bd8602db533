"""`bigquery`: a load job from the partition's Parquet file, then one MERGE that swaps the partition's rows.

One table per dataset (`table`, `table_<dataset>`), typed from the dataset's columns (TIMESTAMP, INT64,
FLOAT64, BOOL, DATE, NUMERIC, JSON for JSON text columns), partitioned by day and clustered:

- partitioned on `timestamp` (request logs), else on a `date` or `hour` column (aggregates grouped by time),
  else not partitioned (an aggregate without a time column is small);
- clustered by `provider`, `model` when the table has them.

Idempotence: the Parquet file is loaded into a staging table (WRITE_TRUNCATE, expires after a day), then
a single MERGE ... ON FALSE deletes the target rows of this export_partition (WHEN NOT MATCHED BY SOURCE)
and inserts the staged rows (WHEN NOT MATCHED). One DML statement is atomic in BigQuery, so readers see the
old partition or the new one, never both or neither; a retry or a backfill replaces instead of appending.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

from pydantic import Field, SecretStr, field_validator

from bifrost_pipeline.destinations.base import DatasetFile, DestinationConfig, PartitionOutput
from bifrost_pipeline.destinations.warehouse import PARTITION_COLUMN, Column, Dialect, Warehouse

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
CLUSTER_BY = ("provider", "model")


class BigQueryCredentials(DestinationConfig):
    # The service account key: its JSON text (e.g. ${GCP_SERVICE_ACCOUNT_KEY}) or the path of the key file.
    # Absent: application-default credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity, gcloud).
    service_account_key: SecretStr | None = None


class BigQueryConfig(DestinationConfig):
    project_id: str
    dataset: str
    table: str | None = None  # default: the export's name
    location: str | None = None  # e.g. "EU", "us-west2": where a missing dataset is created
    credentials: BigQueryCredentials = Field(default_factory=BigQueryCredentials)
    api_endpoint: str | None = None  # only for an emulator (e.g. http://127.0.0.1:9050)
    retry_deadline: float = Field(120.0, gt=0)  # seconds to keep retrying transient API errors
    job_timeout: float = Field(1800.0, gt=0)

    @field_validator("dataset", "table")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not NAME.match(v):
            raise ValueError("expected letters, digits and underscores, e.g. bifrost_logs")
        return v


class BigQueryDialect(Dialect):
    """Backtick-quoted names; column names are case-insensitive. Tables are listed, created and altered
    through the API (no query job), so this dialect has no SQL catalogue statements."""

    partition_type = "STRING"
    types = {
        "string": "STRING",
        "int32": "INT64",
        "int64": "INT64",
        "double": "FLOAT64",
        "bool": "BOOL",
        "date": "DATE",
        "timestamptz": "TIMESTAMP",
        "timestamp": "DATETIME",
        "json": "JSON",
    }

    def type_of(self, c: Column) -> str:
        if c.kind == "decimal":
            return "NUMERIC" if c.scale <= 9 and c.precision - c.scale <= 29 else "BIGNUMERIC"
        return self.types[c.kind]

    def column_key(self, name: str) -> str:
        return name.lower()

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "\\`") + "`"


# What the API reports for the legacy names of the same types.
_SAME = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


def time_partition_field(cols: list[Column]) -> str | None:
    kinds = {c.name: c.kind for c in cols}
    if kinds.get("timestamp") == "timestamptz":
        return "timestamp"
    if kinds.get("date") == "date":
        return "date"
    if kinds.get("hour") in ("timestamptz", "timestamp"):
        return "hour"
    return None


class BigQueryDestination(Warehouse):
    kind = "bigquery"
    Config = BigQueryConfig
    config: BigQueryConfig
    dialect = BigQueryDialect()

    @classmethod
    def table_location(cls, config, context) -> str:
        return f"bigquery:{config.project_id}.{config.dataset}.{config.table}"

    def describe(self) -> str:
        return f"bigquery:{self.config.project_id}.{self.config.dataset}.{self.table}"

    def table_ref(self, table: str) -> str:
        return f"{self.config.project_id}.{self.config.dataset}.{table}"

    def qualified(self, table: str) -> str:
        q = self.dialect.quote
        return f"{q(self.config.project_id)}.{q(self.config.dataset)}.{q(table)}"

    # --- client -----------------------------------------------------------------------------------------

    def secrets(self) -> list:
        return [self.config.credentials.service_account_key]

    def _credentials(self):
        key = self.config.credentials.service_account_key
        if key is None:
            if self.config.api_endpoint:
                from google.auth.credentials import AnonymousCredentials

                return AnonymousCredentials()
            return None  # application-default credentials, found by the client
        from google.oauth2 import service_account

        text = key.get_secret_value().strip()
        try:
            if text.startswith("{"):
                info = json.loads(text)
                return service_account.Credentials.from_service_account_info(info)
            path = self.context.resolve(text)
            return service_account.Credentials.from_service_account_file(str(path))
        except (ValueError, KeyError, OSError) as err:
            # Never echo the key: only what kind of problem it has.
            kind = "is not a service account key (JSON text or a file path)"
            if isinstance(err, OSError):
                kind = f"names a file that cannot be read ({err.strerror or type(err).__name__})"
            raise self.error(f"credentials.service_account_key {kind}") from None

    def connect(self):
        from google.api_core.client_options import ClientOptions
        from google.cloud import bigquery

        options = ClientOptions(api_endpoint=self.config.api_endpoint) if self.config.api_endpoint else None
        credentials = self._credentials()
        try:
            return bigquery.Client(
                project=self.config.project_id,
                credentials=credentials,
                location=self.config.location,
                client_options=options,
            )
        except Exception as err:  # google.auth.exceptions.DefaultCredentialsError and the like
            raise self.failure(err, "cannot create the BigQuery client") from None

    def _retry(self):
        from google.cloud import bigquery

        return bigquery.DEFAULT_RETRY.with_deadline(self.config.retry_deadline)

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        from google.api_core import exceptions as gexc

        return (gexc.GoogleAPIError, OSError)  # OSError: also requests' connection errors and timeouts

    def retryable(self, err: BaseException) -> bool:
        from google.api_core import exceptions as gexc

        return isinstance(
            err,
            gexc.ServiceUnavailable
            | gexc.InternalServerError
            | gexc.TooManyRequests
            | gexc.RetryError
            | ConnectionError
            | TimeoutError,
        ) or _is_requests_transient(err)

    def execute(self, session, sql: str, params=()) -> list[tuple]:
        """Run one query job; `params` maps names to STRING values (@name in the SQL)."""
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter(k, "STRING", v) for k, v in dict(params).items()]
        )
        job = session.query(sql, job_config=config, retry=self._retry(), timeout=self.config.job_timeout)
        return [tuple(r.values()) for r in job.result(timeout=self.config.job_timeout)]

    def partition_param(self, partition_key: str) -> tuple[str, dict]:
        return "@partition", {"partition": partition_key}

    # --- the table step, through the API ---------------------------------------------------------------

    def prepare(self, session) -> None:
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        ref = f"{self.config.project_id}.{self.config.dataset}"
        with self.failing(f"cannot use dataset {ref}"):
            try:
                session.get_dataset(ref, retry=self._retry(), timeout=60)
            except NotFound:
                ds = bigquery.Dataset(ref)
                if self.config.location:
                    ds.location = self.config.location
                session.create_dataset(ds, exists_ok=True, retry=self._retry(), timeout=60)

    def _get_table(self, session, table: str):
        return session.get_table(self.table_ref(table), retry=self._retry(), timeout=60)

    def column_names(self, session, table: str) -> set[str]:
        from google.api_core.exceptions import NotFound

        try:
            return {f.name for f in self._get_table(session, table).schema}
        except NotFound:
            return set()

    def create_table(self, session, table: str, cols: list[Column]) -> None:
        from google.cloud import bigquery

        spec = bigquery.Table(
            self.table_ref(table),
            schema=[
                *self._fields(cols),
                bigquery.SchemaField(PARTITION_COLUMN, self.dialect.partition_type, mode="REQUIRED"),
            ],
        )
        field = time_partition_field(cols)
        if field:
            spec.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=field)
        clustering = [c for c in CLUSTER_BY if c in {col.name for col in cols}]
        if clustering:
            spec.clustering_fields = clustering
        session.create_table(spec, exists_ok=True, retry=self._retry(), timeout=60)

    def add_columns(self, session, table: str, cols: list[Column]) -> None:
        current = self._get_table(session, table)
        current.schema = [*current.schema, *self._fields(cols)]
        session.update_table(current, ["schema"], retry=self._retry(), timeout=60)

    def _fields(self, cols: list[Column]) -> list:
        from google.cloud import bigquery

        return [bigquery.SchemaField(c.name, self.dialect.type_of(c), mode="NULLABLE") for c in cols]

    # --- load job + MERGE ------------------------------------------------------------------------------

    def load(self, session, table: str, cols: list[Column], f: DatasetFile, output: PartitionOutput) -> int:
        from google.cloud import bigquery

        types = {s.name.lower(): _SAME.get(s.field_type, s.field_type) for s in self._get_table(session, table).schema}
        staging = f"{self.config.project_id}.{self.config.dataset}._{table}__load_{uuid.uuid4().hex[:12]}"
        job_config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        try:
            with open(f.parquet_path, "rb") as fh:
                job = session.load_table_from_file(
                    fh, staging, job_config=job_config, timeout=self.config.job_timeout, num_retries=3
                )
            job.result(timeout=self.config.job_timeout)
            if job.output_rows is not None and job.output_rows != f.rows:
                raise self.error(f"the load job of {f.dataset} loaded {job.output_rows} of {f.rows} rows")
            try:  # a staging table left behind by a crash disappears by itself
                st = session.get_table(staging)
                st.expires = datetime.now(UTC) + timedelta(days=1)
                session.update_table(st, ["expires"])
            except Exception:
                pass
            self.execute(session, self._merge_sql(table, staging, cols, types), {"partition": output.partition_key})
        finally:
            session.delete_table(staging, not_found_ok=True)
        return f.rows

    def _merge_sql(self, table: str, staging: str, cols: list[Column], types: dict) -> str:
        """One MERGE: delete the partition's rows (NOT MATCHED BY SOURCE) and insert the staged ones."""
        q = self.dialect.quote

        def source(c: Column) -> str:
            target = types.get(c.name.lower(), self.dialect.type_of(c))
            if target == "JSON":
                return f"PARSE_JSON({q(c.name)}) AS {q(c.name)}"
            return f"CAST({q(c.name)} AS {target}) AS {q(c.name)}"

        names = [q(c.name) for c in cols] + [q(PARTITION_COLUMN)]
        return (
            f"MERGE {self.qualified(table)} T\n"
            f"USING (SELECT {', '.join(source(c) for c in cols)}, @partition AS {q(PARTITION_COLUMN)} "
            f"FROM `{staging}`) S\n"
            "ON FALSE\n"
            f"WHEN NOT MATCHED BY SOURCE AND T.{q(PARTITION_COLUMN)} = @partition THEN DELETE\n"
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) VALUES ({', '.join('S.' + n for n in names)})"
        )


def _is_requests_transient(err: BaseException) -> bool:
    try:
        import requests
    except ImportError:
        return False
    return isinstance(err, requests.exceptions.ConnectionError | requests.exceptions.Timeout)
