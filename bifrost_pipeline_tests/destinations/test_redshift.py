"""The `redshift` destination: redshift_connector through the shim to PostgreSQL 15 (the SQL half) and boto3
against moto (the S3 staging half). `COPY ... FROM 's3://...' IAM_ROLE` itself runs on a real cluster only."""

from __future__ import annotations

import time

import boto3
import psycopg
import pytest

from bifrost_pipeline.config import parse_config
from bifrost_pipeline.destinations import destination_class
from bifrost_pipeline.destinations.base import DestinationError
from bifrost_pipeline.destinations.redshift import RedshiftDestination, copy_sql
from bifrost_pipeline_tests.destinations import warehouse_data as wd
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.emulators.servers import free_port

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)


def make(standin, export="daily_redshift", **config) -> RedshiftDestination:
    raw = {
        "cluster": "bifrost-cluster",
        "database": standin.database,
        "schema": "public",
        "region": "us-east-1",
        "credentials": {"username": standin.postgres.user, "password": standin.postgres.password},
        "host": "127.0.0.1",
        "port": standin.port,
        "ssl": False,  # the loopback shim declines TLS; a real cluster keeps the default (True)
        **config,
    }
    return RedshiftDestination(
        RedshiftDestination.Config.model_validate(raw), context(export)
    )


def query(standin, sql, params=None) -> list[tuple]:
    with psycopg.connect(standin.postgres.url(standin.database, "postgresql")) as con:
        return con.execute(sql, params).fetchall()


def partition_rows(standin, table, partition) -> int:
    """Rows of one export partition (0 when the table does not exist yet): independent of test order."""
    if not query(standin, "SELECT to_regclass(%s) IS NOT NULL", [table])[0][0]:
        return 0
    return query(standin, f"SELECT count(*) FROM {table} WHERE export_partition = %s", [partition])[0][0]


def column_types(standin, table, schema="public") -> dict[str, tuple[str, str]]:
    rows = query(
        standin,
        "SELECT column_name, domain_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    )
    return {r[0]: ((r[1] or r[2]), r[3]) for r in rows}


def test_the_seed_keys_load_unchanged():
    seed = {
        "cluster": "bifrost-cluster",
        "database": "bifrost_logs",
        "schema": "public",
        "table": "request_logs",
        "region": "us-west-2",
        "credentials": {"username": "${REDSHIFT_USERNAME}", "password": "${REDSHIFT_PASSWORD}"},
    }
    raw = {
        "log_exports": {
            "exports": [
                {"name": "rs", "schedule": "daily", "destination": {"type": "redshift", "config": seed}}
            ]
        }
    }
    app = parse_config(raw, env={"REDSHIFT_USERNAME": "loader", "REDSHIFT_PASSWORD": "rs-secret-42"})
    cfg = app.exports[0].destination.config
    assert destination_class("redshift") is RedshiftDestination
    assert cfg.method == "insert" and cfg.port == 5439 and cfg.ssl
    assert "rs-secret-42" not in repr(app.exports[0])
    staged = RedshiftDestination.Config.model_validate(
        {
            **seed,
            "credentials": {"username": "u", "password": "p"},
            "iam_role": "arn:aws:iam::123:role/copy",
            "s3_staging": {"bucket": "b"},
        }
    )
    assert staged.method == "copy"
    with pytest.raises(ValueError, match="load_method copy needs s3_staging and iam_role"):
        RedshiftDestination.Config.model_validate(
            {**seed, "credentials": {"username": "u", "password": "p"}, "load_method": "copy"}
        )


def test_the_host_is_looked_up_from_the_cluster(warehouse_moto, aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_REDSHIFT", warehouse_moto.url)
    boto3.client("redshift", region_name="us-east-1").create_cluster(
        ClusterIdentifier="bifrost-cluster",
        NodeType="ra3.xlplus",
        MasterUsername="admin",
        MasterUserPassword="Admin-pw-1",
        DBName="bifrost_logs",
    )
    cfg = RedshiftDestination.Config.model_validate(
        {
            "cluster": "bifrost-cluster",
            "database": "bifrost_logs",
            "region": "us-east-1",
            "credentials": {"username": "u", "password": "p"},
        }
    )
    host, port = RedshiftDestination(cfg, context("rs")).endpoint()
    assert host.startswith("bifrost-cluster.") and port == 5439
    missing = cfg.model_copy(update={"cluster": "no-such-cluster"})
    with pytest.raises(DestinationError, match="cannot find the endpoint of cluster 'no-such-cluster'"):
        RedshiftDestination(missing, context("rs")).endpoint()


def test_table_created_with_redshift_types_loaded_and_reloaded_idempotently(redshift_standin, tmp_path):
    dest = make(redshift_standin, table="request_logs", schema="analytics")
    first = wd.day_partition("daily_redshift", wd.DAYS[0], tmp_path)
    result = dest.write_partition(first)
    assert result.rows == {"request_logs": 10} and result.metadata["load_method"] == "insert"
    types = column_types(redshift_standin, "request_logs", "analytics")
    assert types["timestamp"] == ("timestamp with time zone", "YES")
    assert types["input_tokens"][0] == "integer" and types["cost_usd"][0] == "double precision"
    assert (
        types["metadata"][0] == "super" and types["input_content"][0] == "super"
    )  # SUPER (a jsonb domain here)
    assert types["request_id"][0] == "character varying" and types["export_partition"][1] == "NO"

    dest.write_partition(first)
    dest.write_partition(wd.day_partition("daily_redshift", wd.DAYS[1], tmp_path))
    dest.write_partition(first)
    counts = dict(
        query(redshift_standin, "SELECT export_partition, count(*) FROM analytics.request_logs GROUP BY 1")
    )
    assert counts == {wd.DAYS[0]: 10, wd.DAYS[1]: 10}
    team, out_tokens = query(
        redshift_standin,
        "SELECT metadata->>'team', output_tokens FROM analytics.request_logs WHERE request_id = 'req_2024-01-15_3'",
    )[0]
    assert team == "t1" and out_tokens is None


def test_a_new_field_becomes_a_nullable_column(redshift_standin, tmp_path):
    dest = make(redshift_standin, table="evolving")
    dest.write_partition(wd.day_partition("daily_redshift", wd.DAYS[0], tmp_path))
    assert "region" not in column_types(redshift_standin, "evolving")
    dest.write_partition(wd.day_partition("daily_redshift", wd.DAYS[1], tmp_path, with_region=True))
    assert column_types(redshift_standin, "evolving")["region"] == ("character varying", "YES")
    got = dict(query(redshift_standin, "SELECT export_partition, count(region) FROM evolving GROUP BY 1"))
    assert got == {wd.DAYS[0]: 0, wd.DAYS[1]: 10}


def test_aggregate_output_gets_its_own_typed_table(redshift_standin, tmp_path):
    make(redshift_standin, table="weekly").write_partition(wd.aggregate_partition("weekly", tmp_path))
    types = column_types(redshift_standin, "weekly_metrics")
    assert (
        types["date"][0] == "date" and types["count"][0] == "bigint" and types["total_tokens"][0] == "numeric"
    )
    got = query(redshift_standin, "SELECT provider, count, total_tokens FROM weekly_metrics ORDER BY 1")
    assert [(r[0], r[1], int(r[2])) for r in got] == [("anthropic", 4, 1020), ("openai", 6, 630)]


def test_the_analyst_queries_of_the_docs(redshift_standin, tmp_path):
    dest = make(redshift_standin, table="request_logs")
    for day in wd.DAYS:
        dest.write_partition(wd.day_partition("daily_redshift", day, tmp_path))
    queries = wd.doc_queries("redshift")
    assert set(queries) == {"cost_by_customer_day", "p95_latency_by_model", "error_rate_by_provider"}
    wd.check_analyst_answers({name: query(redshift_standin, sql) for name, sql in queries.items()})


def test_insert_loads_a_hundred_thousand_rows_in_bounded_batches(redshift_standin, tmp_path):
    output = wd.million_partition("big", tmp_path, n=100_000)
    started = time.perf_counter()
    make(redshift_standin, table="big", insert_batch_rows=2_000).write_partition(output)
    elapsed = time.perf_counter() - started
    assert query(redshift_standin, "SELECT count(*) FROM big")[0][0] == 100_000
    print(f"redshift/insert via shim: 100,000 rows in {elapsed:.1f}s")


def test_the_s3_staging_half_against_moto(redshift_standin, warehouse_moto, aws_env, million_file, tmp_path):
    s3 = boto3.client("s3", endpoint_url=warehouse_moto.url, region_name="us-east-1")
    s3.create_bucket(Bucket="bifrost-staging")
    dest = make(
        redshift_standin,
        table="request_logs",
        iam_role="arn:aws:iam::123456789012:role/bifrost-copy",
        s3_staging={
            "bucket": "bifrost-staging",
            "prefix": "stage/{export}/{partition}/",
            "endpoint_url": warehouse_moto.url,
            "access_key_id": "testing",
            "secret_access_key": "testing",
        },
    )
    assert dest.config.method == "copy"
    output = wd.partition(
        "daily_redshift", "2024-02-01", [million_file]
    )  # a million rows: a multipart upload
    (f,) = output.files
    started = time.perf_counter()
    key = dest.stage(dest.s3_client(), f, output)
    elapsed = time.perf_counter() - started
    assert key.startswith("stage/daily_redshift/2024-02-01/run-1-") and key.endswith("/request_logs.parquet")
    body = s3.get_object(Bucket="bifrost-staging", Key=key)["Body"].read()
    assert body == f.parquet_path.read_bytes()
    print(f"redshift/S3 staging: {len(body) / 1e6:.0f} MB in {elapsed:.1f}s")
    assert copy_sql('"t"', f"s3://bifrost-staging/{key}", "arn:aws:iam::1:role/r", "us-west-2") == (
        f"COPY \"t\" FROM 's3://bifrost-staging/{key}' IAM_ROLE 'arn:aws:iam::1:role/r' FORMAT AS PARQUET REGION 'us-west-2'"
    )
    # On the PostgreSQL stand-in the COPY itself fails (Redshift-only syntax): the error names the export and
    # store, the partition is left as it was, and the staged object is removed.
    small = wd.day_partition("daily_redshift", wd.DAYS[0], tmp_path)
    before = partition_rows(redshift_standin, "request_logs", wd.DAYS[0])
    with pytest.raises(DestinationError) as err:
        dest.write_partition(small)
    assert str(err.value).startswith("export 'daily_redshift' -> redshift:bifrost-cluster/")
    assert partition_rows(redshift_standin, "request_logs", wd.DAYS[0]) == before
    left = [o["Key"] for o in s3.list_objects_v2(Bucket="bifrost-staging").get("Contents", [])]
    assert left == [key]  # only the one staged by hand above


def test_errors_name_the_export_and_store_never_the_password(redshift_standin):
    output = wd.partition("daily_redshift", wd.DAYS[0], [])
    bad = make(
        redshift_standin, credentials={"username": redshift_standin.postgres.user, "password": "wrong-pw-77"}
    )
    with pytest.raises(DestinationError) as err:
        bad.write_partition(output)
    assert "daily_redshift" in str(err.value) and "password authentication failed" in str(err.value)
    assert "wrong-pw-77" not in str(err.value) and not err.value.retryable

    with pytest.raises(DestinationError) as err:
        make(redshift_standin, database="no_such_db").write_partition(output)
    assert 'database "no_such_db" does not exist' in str(err.value) and not err.value.retryable

    with pytest.raises(DestinationError) as err:
        make(redshift_standin, port=free_port(), timeout=3).write_partition(output)
    assert "cannot connect to 127.0.0.1" in str(err.value) and err.value.retryable
    assert redshift_standin.postgres.password not in str(err.value)


def test_a_daily_redshift_export_materializes_through_dagster(redshift_standin, tmp_path, monkeypatch):
    monkeypatch.setenv("REDSHIFT_USERNAME", redshift_standin.postgres.user)
    monkeypatch.setenv("REDSHIFT_PASSWORD", redshift_standin.postgres.password)
    entry = {
        "name": "daily_redshift_export",
        "schedule": "daily",
        "destination": {
            "type": "redshift",
            "config": {  # the seed's keys, plus where the stand-in listens
                "cluster": "bifrost-cluster",
                "database": redshift_standin.database,
                "schema": "public",
                "table": "request_logs_e2e",
                "region": "us-west-2",
                "credentials": {"username": "${REDSHIFT_USERNAME}", "password": "${REDSHIFT_PASSWORD}"},
                "host": "127.0.0.1",
                "port": redshift_standin.port,
                "ssl": False,
            },
        },
        "data": {
            "format": "json",
            "include": ["request_logs"],
            "transformations": [
                {
                    "type": "aggregate",
                    "group_by": ["provider", "date"],
                    "metrics": ["count", "p95_latency", "error_rate"],
                }
            ],
        },
    }
    result = wd.materialize_daily(tmp_path, entry, monkeypatch)
    tables = {r[0] for r in query(redshift_standin, "SELECT table_name FROM information_schema.tables")}
    (table,) = [t for t in tables if t.startswith("request_logs_e2e")]
    got = query(
        redshift_standin,
        f'SELECT provider, "date", "count", error_rate, export_partition FROM "{table}" ORDER BY 1',
    )
    records = wd.e2e_records()
    expected = []
    for provider in ("anthropic", "openai"):
        mine = [r for r in records if r["provider"] == provider]
        errors = sum(r["status"] == "error" for r in mine)
        expected.append((provider, "2024-01-15", len(mine), errors / len(mine), "2024-01-15"))
    assert [(g[0], str(g[1]), int(g[2]), float(g[3]), g[4]) for g in got] == expected
    assert redshift_standin.postgres.password not in str(result.all_events)


def test_count_rows_reads_the_partition_back_with_count(redshift_standin, tmp_path):
    dest = make(redshift_standin, table="counted")

    def delete_one(table: str, request_id: str) -> None:
        query(redshift_standin, f"DELETE FROM public.{table} WHERE request_id = %s RETURNING 1", (request_id,))

    wd.check_count_rows(dest, tmp_path, delete_one)
