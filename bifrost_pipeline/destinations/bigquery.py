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
from pathlib import Path

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
from bifrost_pipeline.destinations.warehouse import Column, columns_of, first_line, scrub

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


def bigquery_type(c: Column) -> str:
    if c.kind == "decimal":
        if c.scale <= 9 and c.precision - c.scale <= 29:
            return "NUMERIC"
        return "BIGNUMERIC"
    return {
        "string": "STRING",
        "int32": "INT64",
        "int64": "INT64",
        "double": "FLOAT64",
        "bool": "BOOL",
        "date": "DATE",
        "timestamptz": "TIMESTAMP",
        "timestamp": "DATETIME",
        "json": "JSON",
    }[c.kind]


# What the API reports for the legacy names of the same types.
_SAME = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


def quote(name: str) -> str:
    return "`" + name.replace("`", "\\`") + "`"


def time_partition_field(cols: list[Column]) -> str | None:
    kinds = {c.name: c.kind for c in cols}
    if kinds.get("timestamp") == "timestamptz":
        return "timestamp"
    if kinds.get("date") == "date":
        return "date"
    if kinds.get("hour") in ("timestamptz", "timestamp"):
        return "hour"
    return None


class BigQueryDestination(TableDestination):
    kind = "bigquery"
    Config = BigQueryConfig
    config: BigQueryConfig

    @classmethod
    def table_location(cls, config, app) -> str:
        return f"bigquery:{config.project_id}.{config.dataset}.{config.table}"

    def describe(self) -> str:
        return f"bigquery:{self.config.project_id}.{self.config.dataset}.{self.table}"

    # --- client -----------------------------------------------------------------------------------------

    def _secrets(self) -> list[str | None]:
        key = self.config.credentials.service_account_key
        return [key.get_secret_value() if key else None]

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
            path = self.app.resolve(text) if self.app else Path(text)
            return service_account.Credentials.from_service_account_file(str(path))
        except (ValueError, KeyError, OSError) as err:
            # Never echo the key: only what kind of problem it has.
            kind = "is not a service account key (JSON text or a file path)"
            if isinstance(err, OSError):
                kind = f"names a file that cannot be read ({err.strerror or type(err).__name__})"
            raise self.error(f"credentials.service_account_key {kind}") from None

    def client(self):
        from google.api_core.client_options import ClientOptions
        from google.cloud import bigquery

        options = ClientOptions(api_endpoint=self.config.api_endpoint) if self.config.api_endpoint else None
        try:
            return bigquery.Client(
                project=self.config.project_id,
                credentials=self._credentials(),
                location=self.config.location,
                client_options=options,
            )
        except Exception as err:  # google.auth.exceptions.DefaultCredentialsError and the like
            raise self._fail(err, "cannot create the BigQuery client") from None

    def _retry(self):
        from google.cloud import bigquery

        return bigquery.DEFAULT_RETRY.with_deadline(self.config.retry_deadline)

    def _fail(self, err: BaseException, doing: str):
        from google.api_core import exceptions as gexc

        message = scrub(first_line(err), self._secrets())
        retryable = isinstance(
            err, gexc.ServiceUnavailable | gexc.InternalServerError | gexc.TooManyRequests | gexc.RetryError
        ) or isinstance(err, ConnectionError | TimeoutError)
        try:
            import requests

            retryable = retryable or isinstance(
                err, requests.exceptions.ConnectionError | requests.exceptions.Timeout
            )
        except ImportError:
            pass
        return self.error(f"{doing}: {message}", retryable=retryable)

    # --- writing ----------------------------------------------------------------------------------------

    def write_partition(self, output: PartitionOutput) -> WriteResult:
        from google.api_core import exceptions as gexc

        client = self.client()
        rows: dict[str, int] = {}
        tables: list[str] = []
        try:
            try:
                self._ensure_dataset(client)
            except (gexc.GoogleAPIError, OSError) as err:
                raise self._fail(
                    err, f"cannot use dataset {self.config.project_id}.{self.config.dataset}"
                ) from None
            for f in output.files:
                name = table_for(self.table, f.dataset)
                try:
                    rows[f.dataset] = self._load(client, name, f, output.partition_key)
                except (gexc.GoogleAPIError, OSError) as err:
                    raise self._fail(err, f"loading {f.dataset} into {name} failed") from None
                tables.append(f"{self.config.project_id}.{self.config.dataset}.{name}")
        finally:
            client.close()
        return WriteResult(location=self.describe(), written=tables, rows=rows)

    def _ensure_dataset(self, client) -> None:
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        ref = f"{self.config.project_id}.{self.config.dataset}"
        try:
            client.get_dataset(ref, retry=self._retry(), timeout=60)
        except NotFound:
            ds = bigquery.Dataset(ref)
            if self.config.location:
                ds.location = self.config.location
            client.create_dataset(ds, exists_ok=True, retry=self._retry(), timeout=60)

    def _ensure_table(self, client, name: str, cols: list[Column]):
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        ref = f"{self.config.project_id}.{self.config.dataset}.{name}"
        wanted = [bigquery.SchemaField(c.name, bigquery_type(c), mode="NULLABLE") for c in cols]
        try:
            table = client.get_table(ref, retry=self._retry(), timeout=60)
        except NotFound:
            table = bigquery.Table(
                ref, schema=[*wanted, bigquery.SchemaField(PARTITION_COLUMN, "STRING", mode="REQUIRED")]
            )
            field = time_partition_field(cols)
            if field:
                table.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.DAY, field=field
                )
            clustering = [c for c in CLUSTER_BY if c in {col.name for col in cols}]
            if clustering:
                table.clustering_fields = clustering
            return client.create_table(table, exists_ok=True, retry=self._retry(), timeout=60)
        existing = {f.name.lower() for f in table.schema}
        # A field added to the schema becomes a new NULLABLE column; old rows read NULL.
        added = [f for f in wanted if f.name.lower() not in existing]
        if added:
            table.schema = [*table.schema, *added]
            table = client.update_table(table, ["schema"], retry=self._retry(), timeout=60)
        return table

    def _load(self, client, name: str, f: DatasetFile, partition_key: str) -> int:
        from google.cloud import bigquery

        cols = columns_of(f)
        table = self._ensure_table(client, name, cols)
        types = {s.name.lower(): _SAME.get(s.field_type, s.field_type) for s in table.schema}
        staging = f"{self.config.project_id}.{self.config.dataset}._{name}__load_{uuid.uuid4().hex[:12]}"
        job_config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        try:
            with open(f.parquet_path, "rb") as fh:
                job = client.load_table_from_file(
                    fh, staging, job_config=job_config, timeout=self.config.job_timeout, num_retries=3
                )
            job.result(timeout=self.config.job_timeout)
            if job.output_rows is not None and job.output_rows != f.rows:
                raise self.error(f"the load job of {f.dataset} loaded {job.output_rows} of {f.rows} rows")
            try:  # a staging table left behind by a crash disappears by itself
                st = client.get_table(staging)
                st.expires = datetime.now(UTC) + timedelta(days=1)
                client.update_table(st, ["expires"])
            except Exception:
                pass
            self._merge(client, table, staging, cols, types, partition_key)
        finally:
            client.delete_table(staging, not_found_ok=True)
        return f.rows

    def _merge(
        self, client, table, staging: str, cols: list[Column], types: dict, partition_key: str
    ) -> None:
        from google.cloud import bigquery

        def source(c: Column) -> str:
            target = types.get(c.name.lower(), bigquery_type(c))
            if target == "JSON":
                return f"PARSE_JSON({quote(c.name)}) AS {quote(c.name)}"
            return f"CAST({quote(c.name)} AS {target}) AS {quote(c.name)}"

        names = [quote(c.name) for c in cols] + [quote(PARTITION_COLUMN)]
        target = f"{quote(self.config.project_id)}.{quote(self.config.dataset)}.{quote(table.table_id)}"
        sql = (
            f"MERGE {target} T\n"
            f"USING (SELECT {', '.join(source(c) for c in cols)}, @partition AS {quote(PARTITION_COLUMN)} "
            f"FROM `{staging}`) S\n"
            "ON FALSE\n"
            f"WHEN NOT MATCHED BY SOURCE AND T.{quote(PARTITION_COLUMN)} = @partition THEN DELETE\n"
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) VALUES ({', '.join('S.' + n for n in names)})"
        )
        config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("partition", "STRING", partition_key)]
        )
        client.query(sql, job_config=config, retry=self._retry(), timeout=self.config.job_timeout).result(
            timeout=self.config.job_timeout
        )
