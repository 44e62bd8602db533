"""The `bigquery` destination: the real google-cloud-bigquery client against local-bigquery 0.3.2."""

from __future__ import annotations

import json
import time

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from bifrost_pipeline.config import parse_config
from bifrost_pipeline.destinations import destination_class
from bifrost_pipeline.destinations.base import DestinationError
from bifrost_pipeline.destinations.bigquery import BigQueryDestination
from bifrost_pipeline_tests.destinations import warehouse_data as wd
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.emulators.servers import free_port

PROJECT = "bifrost-test"
DATASET = "bifrost_logs"


@pytest.fixture(scope="module")
def bq(bigquery_server):
    client = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": bigquery_server.url},
    )
    yield bigquery_server, client
    client.close()


def make(server, export="weekly_bigquery", **config) -> BigQueryDestination:
    raw = {"project_id": PROJECT, "dataset": DATASET, "api_endpoint": server.url, **config}
    return BigQueryDestination(
        BigQueryDestination.Config.model_validate(raw), context(export)
    )


def rows(client, sql) -> list[tuple]:
    return [tuple(r.values()) for r in client.query(sql).result()]


def test_the_seed_keys_load_unchanged_and_the_key_stays_hidden(tmp_path):
    seed = {
        "project_id": "your-analytics-project",
        "dataset": "bifrost_analytics",
        "table": "weekly_logs",
        "credentials": {"service_account_key": "${GCP_SERVICE_ACCOUNT_KEY}"},
    }
    raw = {
        "log_exports": {
            "exports": [
                {"name": "bq", "schedule": "daily", "destination": {"type": "bigquery", "config": seed}}
            ]
        }
    }
    app = parse_config(raw, env={"GCP_SERVICE_ACCOUNT_KEY": '{"private_key": "-----BEGIN secret-key-555"}'})
    assert destination_class("bigquery") is BigQueryDestination
    dest = BigQueryDestination(app.exports[0].destination.config, app.destination_context("bq"))
    assert dest.describe() == "bigquery:your-analytics-project.bifrost_analytics.weekly_logs"
    assert "secret-key-555" not in repr(app.exports[0])
    # A malformed key is reported without being echoed.
    with pytest.raises(DestinationError) as err:
        dest.connect()
    assert "service_account_key is not a service account key" in str(err.value)
    assert "secret-key-555" not in str(err.value)
    missing = BigQueryDestination.Config.model_validate(
        {**seed, "credentials": {"service_account_key": str(tmp_path / "nope.json")}}
    )
    with pytest.raises(DestinationError, match="names a file that cannot be read"):
        BigQueryDestination(missing, app.destination_context("bq")).connect()


def test_table_created_partitioned_clustered_typed_and_reloaded_idempotently(bq, tmp_path):
    server, client = bq
    dest = make(server, table="request_logs")
    first = wd.day_partition("weekly_bigquery", wd.DAYS[0], tmp_path)
    result = dest.write_partition(first)
    assert result.rows == {"request_logs": 10}
    table = client.get_table(f"{PROJECT}.{DATASET}.request_logs")
    assert table.time_partitioning.field == "timestamp" and table.time_partitioning.type_ == "DAY"
    assert table.clustering_fields == ["provider", "model"]
    types = {f.name: (f.field_type, f.mode) for f in table.schema}
    assert types["timestamp"][0] == "TIMESTAMP"
    assert types["input_tokens"][0] in ("INTEGER", "INT64") and types["cost_usd"][0] in ("FLOAT", "FLOAT64")
    assert types["stream"][0] in ("BOOLEAN", "BOOL")
    assert types["metadata"][0] == "JSON" and types["input_content"][0] == "JSON"
    assert types["export_partition"] == ("STRING", "REQUIRED")

    dest.write_partition(first)  # a retry
    dest.write_partition(wd.day_partition("weekly_bigquery", wd.DAYS[1], tmp_path))
    dest.write_partition(first)  # a backfill
    counts = dict(rows(client, f"SELECT export_partition, COUNT(*) FROM {DATASET}.request_logs GROUP BY 1"))
    assert counts == {wd.DAYS[0]: 10, wd.DAYS[1]: 10}
    team, out_tokens = rows(
        client,
        f"SELECT JSON_VALUE(metadata, '$.team'), output_tokens FROM {DATASET}.request_logs "
        "WHERE request_id = 'req_2024-01-15_3'",
    )[0]
    assert team == "t1" and out_tokens is None
    # No staging table is left behind.
    assert sorted(t.table_id for t in client.list_tables(DATASET) if t.table_id.startswith("_")) == []


def test_a_new_field_becomes_a_nullable_column(bq, tmp_path):
    server, client = bq
    dest = make(server, table="evolving")
    dest.write_partition(wd.day_partition("weekly_bigquery", wd.DAYS[0], tmp_path))
    assert "region" not in {f.name for f in client.get_table(f"{PROJECT}.{DATASET}.evolving").schema}
    dest.write_partition(wd.day_partition("weekly_bigquery", wd.DAYS[1], tmp_path, with_region=True))
    region = {f.name: f for f in client.get_table(f"{PROJECT}.{DATASET}.evolving").schema}["region"]
    assert (region.field_type, region.mode) == ("STRING", "NULLABLE")
    got = dict(rows(client, f"SELECT export_partition, COUNT(region) FROM {DATASET}.evolving GROUP BY 1"))
    assert got == {wd.DAYS[0]: 0, wd.DAYS[1]: 10}


def test_aggregate_output_is_partitioned_on_its_date(bq, tmp_path):
    server, client = bq
    make(server, table="weekly").write_partition(wd.aggregate_partition("weekly", tmp_path))
    table = client.get_table(f"{PROJECT}.{DATASET}.weekly_metrics")
    assert table.time_partitioning.field == "date" and table.clustering_fields == ["provider", "model"]
    types = {f.name: f.field_type for f in table.schema}
    assert (
        types["date"] == "DATE"
        and types["count"] in ("INTEGER", "INT64")
        and types["total_tokens"] == "BIGNUMERIC"
    )
    got = rows(client, f"SELECT provider, `count`, total_tokens FROM {DATASET}.weekly_metrics ORDER BY 1")
    assert [(r[0], int(r[1]), int(r[2])) for r in got] == [("anthropic", 4, 1020), ("openai", 6, 630)]


def test_the_analyst_queries_of_the_docs(bq, tmp_path):
    server, client = bq
    dest = make(server, table="request_logs")
    for day in wd.DAYS:
        dest.write_partition(wd.day_partition("weekly_bigquery", day, tmp_path))
    queries = wd.doc_queries("bigquery")
    assert set(queries) == {"cost_by_customer_day", "p95_latency_by_model", "error_rate_by_provider"}
    wd.check_analyst_answers({name: rows(client, sql) for name, sql in queries.items()})


def test_a_million_row_partition_loads_whole(bq, million_file):
    server, client = bq
    output = wd.partition("big", "2024-02-01", [million_file])
    started = time.perf_counter()
    make(server, table="big").write_partition(output)
    elapsed = time.perf_counter() - started
    assert rows(client, f"SELECT COUNT(*) FROM {DATASET}.big") == [(1_000_000,)]
    print(f"bigquery/local-bigquery: 1,000,000 rows in {elapsed:.1f}s")


def test_unreachable_endpoint_is_a_retryable_error_naming_export_and_store(tmp_path):
    key = json.dumps({"type": "not-a-service-account", "secret": "k-123456"})
    down = BigQueryDestination(
        BigQueryDestination.Config.model_validate(
            {
                "project_id": PROJECT,
                "dataset": DATASET,
                "api_endpoint": f"http://127.0.0.1:{free_port()}",
                "retry_deadline": 2,
            }
        ),
        context("weekly_bigquery"),
    )
    with pytest.raises(DestinationError) as err:
        down.write_partition(wd.day_partition("weekly_bigquery", wd.DAYS[0], tmp_path))
    assert str(err.value).startswith(
        f"export 'weekly_bigquery' -> bigquery:{PROJECT}.{DATASET}.weekly_bigquery"
    )
    assert f"cannot use dataset {PROJECT}.{DATASET}" in str(err.value) and err.value.retryable
    assert "k-123456" not in key.replace("k-123456", "") + str(err.value)


def test_a_file_staged_by_the_export_step_loads_as_is(bq, tmp_path):
    import polars as pl

    from bifrost_pipeline.exports import stage_dataset

    server, client = bq
    lf = pl.from_arrow(wd.records_table(wd.day_records(wd.DAYS[0]))).lazy()
    staged = stage_dataset(lf, "request_logs", "json", "gzip", tmp_path)
    make(server, table="staged").write_partition(wd.partition("weekly_bigquery", wd.DAYS[0], [staged]))
    types = {f.name: f.field_type for f in client.get_table(f"{PROJECT}.{DATASET}.staged").schema}
    assert (
        types["metadata"] == "JSON" and types["timestamp"] == "TIMESTAMP" and types["request_id"] == "STRING"
    )
    got = rows(client, f"SELECT COUNT(*), COUNT(JSON_VALUE(metadata, '$.team')) FROM {DATASET}.staged")
    assert got == [(10, 7)]


# --- end to end: the seed's "weekly_bigquery_export" through Dagster into local-bigquery ---------------------


def test_the_seed_weekly_bigquery_export_materializes_into_bigquery(bq, tmp_path, monkeypatch):
    import dagster as dg
    import yaml

    from bifrost_pipeline.config import load_config
    from bifrost_pipeline.definitions import build_definitions
    from bifrost_pipeline.defs.raw import RAW_JOB
    from bifrost_pipeline_tests.helpers import HASH_KEY, land, record

    server, client = bq
    seed = json.loads(
        (wd.ROOT / "bifrost_pipeline_tests" / "data" / "seed_complete_example.json").read_text()
    )
    (entry,) = [e for e in seed["log_exports"]["exports"] if e["name"] == "weekly_bigquery_export"]
    config = entry["destination"]["config"]
    # The emulator's endpoint instead of Google's (and so no service account key: anonymous credentials).
    config["api_endpoint"] = server.url
    config["project_id"] = PROJECT
    del config["credentials"]
    path = tmp_path / "bifrost_pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "log_exports": {"enabled": True, "exports": [entry]},
                "landing": {"path": "landing"},
                "pipeline": {"data_dir": "data", "start_date": "2024-01-01", "export_retries": 0},
            }
        )
    )
    monkeypatch.setenv("BIFROST_ANONYMIZE_KEY", HASH_KEY)
    app = load_config(path)
    rows_in = [
        record(
            request_id=f"r{i}",
            timestamp=f"2024-01-{15 + i % 3}T1{i % 10}:00:00Z",
            provider="openai" if i % 2 else "anthropic",
            model="gpt-4o" if i % 2 else "claude-3-sonnet",
            customer_id=f"cust_{i % 3}",
            status="error" if i % 5 == 0 else "success",
            status_code=500 if i % 5 == 0 else 200,
            latency_ms=100 + 10 * i,
            **({"error_type": "upstream_error"} if i % 5 == 0 else {}),
        )
        for i in range(30)
    ]
    for day in ("15", "16", "17"):
        land(app, [r for r in rows_in if r["timestamp"].startswith(f"2024-01-{day}")])
    defs = build_definitions(app, str(path))
    instance = dg.DagsterInstance.ephemeral()
    for day in range(14, 21):  # the week of Sunday 2024-01-14 (days without traffic are empty partitions)
        raw = defs.resolve_job_def(RAW_JOB).execute_in_process(
            partition_key=f"2024-01-{day}", instance=instance
        )
        assert raw.success
    job = defs.resolve_job_def("export_weekly_bigquery_export_job")
    for _ in range(2):  # a re-materialization replaces the partition's rows
        assert job.execute_in_process(partition_key="2024-01-14", instance=instance).success

    tables = {t.table_id for t in client.list_tables("bifrost_analytics")}
    assert "weekly_logs" in tables, tables
    got = rows(
        client,
        "SELECT provider, model, customer_id, total_requests, error_rate, export_partition "
        "FROM bifrost_analytics.weekly_logs ORDER BY 1, 2, 3",
    )
    expected: dict[tuple, list] = {}
    for r in rows_in:
        key = (r["provider"], r["model"], r["customer_id"])
        expected.setdefault(key, []).append(r["status"] == "error")
    assert [(g[0], g[1], g[2]) for g in got] == sorted(expected)
    for g in got:
        errors = expected[(g[0], g[1], g[2])]
        assert int(g[3]) == len(errors) and abs(float(g[4]) - sum(errors) / len(errors)) < 1e-9
        assert g[5] == "2024-01-14"


def test_count_rows_reads_the_partition_back_with_count(bq, tmp_path):
    server, client = bq
    dest = make(server, table="counted")

    def delete_one(table: str, request_id: str) -> None:
        client.query(f"DELETE FROM `{PROJECT}.{DATASET}.{table}` WHERE request_id = '{request_id}'").result()

    wd.check_count_rows(dest, tmp_path, delete_one)
