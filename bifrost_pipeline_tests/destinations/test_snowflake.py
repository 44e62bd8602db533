"""The `snowflake` destination: the real snowflake-connector-python against fakesnow in server mode."""

from __future__ import annotations

import time

import pytest
import snowflake.connector

from bifrost_pipeline.config import parse_config
from bifrost_pipeline.destinations import destination_class
from bifrost_pipeline.destinations.base import DestinationError
from bifrost_pipeline.destinations.snowflake import SnowflakeDestination
from bifrost_pipeline_tests.destinations import warehouse_data as wd
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.emulators.servers import free_port

DATABASE = "BIFROST_LOGS"


def connect(server, **kw):
    return snowflake.connector.connect(
        user="analyst",
        password="any",
        account="fakesnow",
        host="127.0.0.1",
        port=server.port,
        protocol="http",
        **kw,
    )


@pytest.fixture(scope="module")
def snow(fakesnow_server):
    # The database exists before the pipeline runs (an administrator creates it); schemas are created on demand.
    with connect(fakesnow_server) as con:
        con.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    return fakesnow_server


def make(server, export="daily_snowflake", schema="PUBLIC", **config) -> SnowflakeDestination:
    raw = {
        "account": "fakesnow",
        "database": DATABASE,
        "schema": schema,
        "warehouse": "COMPUTE_WH",
        "credentials": {"username": "loader", "password": "loader-pw-123"},
        "host": "127.0.0.1",
        "port": server.port,
        "protocol": "http",
        **config,
    }
    return SnowflakeDestination(
        SnowflakeDestination.Config.model_validate(raw), context(export)
    )


def query(server, sql, params=None, schema="PUBLIC") -> list[tuple]:
    with connect(server, database=DATABASE, schema=schema) as con:
        return con.cursor().execute(sql, params).fetchall()


def column_types(server, table, schema="PUBLIC") -> dict[str, str]:
    rows = query(
        server,
        f"SELECT column_name, data_type FROM {DATABASE}.information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s",
        (schema, table),
        schema,
    )
    return {r[0]: r[1] for r in rows}


def test_the_seed_keys_load_unchanged_and_secrets_stay_hidden():
    seed = {
        "account": "your-account.snowflakecomputing.com",
        "database": "BIFROST_LOGS",
        "schema": "PUBLIC",
        "table": "request_logs",
        "warehouse": "COMPUTE_WH",
        "credentials": {"username": "${SNOWFLAKE_USERNAME}", "password": "${SNOWFLAKE_PASSWORD}"},
    }
    raw = {
        "log_exports": {
            "exports": [
                {"name": "sf", "schedule": "daily", "destination": {"type": "snowflake", "config": seed}}
            ]
        }
    }
    app = parse_config(raw, env={"SNOWFLAKE_USERNAME": "loader", "SNOWFLAKE_PASSWORD": "pw-secret-987"})
    cfg = app.exports[0].destination.config
    assert destination_class("snowflake") is SnowflakeDestination
    assert cfg.account_identifier == "your-account" and cfg.schema_name == "PUBLIC"
    dest = SnowflakeDestination(cfg, app.destination_context("sf"))
    assert dest.describe() == "snowflake:your-account/BIFROST_LOGS.PUBLIC.request_logs"
    assert "pw-secret-987" not in repr(app.exports[0])
    args = dest.connect_args()
    assert args["account"] == "your-account" and args["warehouse"] == "COMPUTE_WH" and "host" not in args


def test_key_pair_and_oauth_credentials(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass-phrase-1"),
    )
    (tmp_path / "rsa_key.p8").write_bytes(pem)
    base = {"account": "acme-prod", "database": "D", "role": "LOADER"}
    dest = SnowflakeDestination(
        SnowflakeDestination.Config.model_validate(
            {
                **base,
                "credentials": {
                    "username": "u",
                    "private_key_path": str(tmp_path / "rsa_key.p8"),
                    "private_key_passphrase": "pass-phrase-1",
                },
            }
        ),
        context("e"),
    )
    args = dest.connect_args()
    assert args["role"] == "LOADER" and "password" not in args
    loaded = serialization.load_der_private_key(args["private_key"], password=None)
    assert loaded.private_numbers() == key.private_numbers()

    oauth = SnowflakeDestination.Config.model_validate(
        {**base, "credentials": {"username": "u", "token": "tok-1"}}
    )
    args = SnowflakeDestination(oauth, context("e")).connect_args()
    assert args["authenticator"] == "oauth" and args["token"] == "tok-1"

    with pytest.raises(ValueError, match="exactly one of"):
        SnowflakeDestination.Config.model_validate(
            {**base, "credentials": {"username": "u", "password": "p", "token": "t"}}
        )


def test_table_created_with_types_loaded_and_reloaded_idempotently(snow, tmp_path):
    dest = make(snow, table="request_logs", schema="ANALYTICS")
    first = wd.day_partition("daily_snowflake", wd.DAYS[0], tmp_path)
    result = dest.write_partition(first)
    assert result.rows == {"request_logs": 10} and result.written == ["BIFROST_LOGS.ANALYTICS.REQUEST_LOGS"]
    types = column_types(snow, "REQUEST_LOGS", "ANALYTICS")
    assert types["TIMESTAMP"] == "TIMESTAMP_TZ"
    assert types["INPUT_TOKENS"] == "NUMBER" and types["COST_USD"] == "FLOAT"
    assert (
        types["STREAM"] == "BOOLEAN"
        and types["METADATA"] == "VARIANT"
        and types["INPUT_CONTENT"] == "VARIANT"
    )
    assert types["EXPORT_PARTITION"] == "TEXT"

    dest.write_partition(first)  # a retry
    dest.write_partition(wd.day_partition("daily_snowflake", wd.DAYS[1], tmp_path))
    dest.write_partition(first)  # a backfill
    counts = dict(
        query(snow, "SELECT export_partition, COUNT(*) FROM request_logs GROUP BY 1", schema="ANALYTICS")
    )
    assert counts == {wd.DAYS[0]: 10, wd.DAYS[1]: 10}
    team, ts, out_tokens, n = query(
        snow,
        "SELECT metadata:team::VARCHAR, timestamp, output_tokens, input_tokens FROM request_logs "
        "WHERE request_id = 'req_2024-01-15_3'",
        schema="ANALYTICS",
    )[0]
    assert (
        team == "t1" and ts.isoformat().startswith("2024-01-15T10:03:00") and out_tokens is None and n == 40
    )


def test_a_new_field_becomes_a_nullable_column(snow, tmp_path):
    dest = make(snow, table="evolving")
    dest.write_partition(wd.day_partition("daily_snowflake", wd.DAYS[0], tmp_path))
    assert "REGION" not in column_types(snow, "EVOLVING")
    dest.write_partition(wd.day_partition("daily_snowflake", wd.DAYS[1], tmp_path, with_region=True))
    assert column_types(snow, "EVOLVING")["REGION"] == "TEXT"
    rows = dict(query(snow, "SELECT export_partition, COUNT(region) FROM evolving GROUP BY 1"))
    assert rows == {wd.DAYS[0]: 0, wd.DAYS[1]: 10}


def test_aggregate_output_gets_its_own_typed_table(snow, tmp_path):
    make(snow, table="weekly").write_partition(wd.aggregate_partition("weekly", tmp_path))
    types = column_types(snow, "WEEKLY_METRICS")
    assert types["DATE"] == "DATE" and types["COUNT"] == "NUMBER" and types["P95_LATENCY"] == "FLOAT"
    rows = query(snow, 'SELECT provider, "COUNT", total_tokens FROM weekly_metrics ORDER BY 1')
    assert [(r[0], int(r[1]), int(r[2])) for r in rows] == [("anthropic", 4, 1020), ("openai", 6, 630)]


def test_the_analyst_queries_of_the_docs(snow, tmp_path):
    dest = make(snow, table="request_logs")
    for day in wd.DAYS:
        dest.write_partition(wd.day_partition("daily_snowflake", day, tmp_path))
    queries = wd.doc_queries("snowflake")
    assert set(queries) == {"cost_by_customer_day", "p95_latency_by_model", "error_rate_by_provider"}
    wd.check_analyst_answers({name: query(snow, sql) for name, sql in queries.items()})


def test_a_million_row_partition_loads_whole(snow, million_file):
    dest = make(snow, table="big")
    output = wd.partition("big", "2024-02-01", [million_file])
    started = time.perf_counter()
    dest.write_partition(output)
    elapsed = time.perf_counter() - started
    assert query(snow, "SELECT COUNT(*) FROM big")[0][0] == 1_000_000
    print(f"snowflake/fakesnow: 1,000,000 rows in {elapsed:.1f}s")


def test_errors_name_the_export_and_store_never_a_secret(snow, tmp_path):
    output = wd.day_partition("daily_snowflake", wd.DAYS[0], tmp_path)
    # A table someone else created with an incompatible type: the COPY fails after the DELETE, the
    # transaction rolls back, and the partition's old row is still there.
    query(snow, "CREATE TABLE IF NOT EXISTS conflicting (timestamp BOOLEAN, export_partition VARCHAR)")
    query(snow, f"INSERT INTO conflicting VALUES (TRUE, '{wd.DAYS[0]}')")
    with pytest.raises(DestinationError) as err:
        make(snow, table="conflicting").write_partition(output)
    assert str(err.value).startswith(
        "export 'daily_snowflake' -> snowflake:fakesnow/BIFROST_LOGS.PUBLIC.conflicting"
    )
    assert "loading request_logs into CONFLICTING failed" in str(err.value)
    assert "loader-pw-123" not in str(err.value)
    assert query(snow, "SELECT timestamp, export_partition FROM conflicting") == [(True, wd.DAYS[0])]

    unreachable = make(snow, port=free_port(), login_timeout=3)
    with pytest.raises(DestinationError) as err:
        unreachable.write_partition(output)
    assert "cannot connect" in str(err.value) and "loader-pw-123" not in str(err.value)
    assert err.value.retryable


def test_bad_credentials_and_missing_database_are_not_retryable():
    # fakesnow accepts any password and creates databases on connect: Snowflake's own messages are used here.
    dest = make(type("S", (), {"port": 1})(), database="NO_SUCH_DB")
    bad_login = snowflake.connector.errors.DatabaseError(
        msg="Failed to connect to DB: acme.snowflakecomputing.com:443. Incorrect username or password was specified.",
        errno=390100,
        sqlstate="08001",
    )
    err = dest.failure(bad_login, "cannot connect")
    assert (
        not err.retryable and "Incorrect username or password" in str(err) and "daily_snowflake" in str(err)
    )
    missing = snowflake.connector.errors.ProgrammingError(
        msg="SQL compilation error: Object does not exist, or operation cannot be performed.",
        errno=2043,
        sqlstate="02000",
    )
    assert not dest.failure(missing, "cannot use NO_SUCH_DB.PUBLIC").retryable
    echoed = snowflake.connector.errors.DatabaseError(msg="login failed for password loader-pw-123")
    assert "loader-pw-123" not in str(dest.failure(echoed, "cannot connect"))


def test_a_file_staged_by_the_export_step_loads_as_is(snow, tmp_path):
    import polars as pl

    from bifrost_pipeline.exports import stage_dataset

    lf = pl.from_arrow(wd.records_table(wd.day_records(wd.DAYS[0]))).lazy()
    staged = stage_dataset(lf, "request_logs", "json", "gzip", tmp_path)
    make(snow, table="staged").write_partition(wd.partition("daily_snowflake", wd.DAYS[0], [staged]))
    types = column_types(snow, "STAGED")
    assert (
        types["METADATA"] == "VARIANT"
        and types["TIMESTAMP"] == "TIMESTAMP_TZ"
        and types["REQUEST_ID"] == "TEXT"
    )
    assert query(snow, "SELECT COUNT(*), COUNT(metadata:team) FROM staged") == [(10, 7)]


def test_a_daily_snowflake_export_materializes_through_dagster(snow, tmp_path, monkeypatch):
    # The seed's Snowflake keys, plus where fakesnow listens; the password comes from the environment.
    monkeypatch.setenv("SNOWFLAKE_USERNAME", "loader")
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "env-secret-pw-314")
    entry = {
        "name": "daily_snowflake_export",
        "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
        "destination": {
            "type": "snowflake",
            "config": {
                "account": "your-account.snowflakecomputing.com",
                "database": DATABASE,
                "schema": "PUBLIC",
                "table": "request_logs_e2e",
                "warehouse": "COMPUTE_WH",
                "credentials": {"username": "${SNOWFLAKE_USERNAME}", "password": "${SNOWFLAKE_PASSWORD}"},
                "host": "127.0.0.1",
                "port": snow.port,
                "protocol": "http",
            },
        },
        "data": {"format": "parquet", "include": ["request_logs", "error_logs"]},
    }
    result = wd.materialize_daily(tmp_path, entry, monkeypatch)  # twice: the second replaces the first
    got = query(snow, "SELECT export_partition, COUNT(*), SUM(cost_usd) FROM request_logs_e2e GROUP BY 1")
    assert [(g[0], g[1], round(g[2], 6)) for g in got] == [("2024-01-15", 12, 0.078)]
    assert query(snow, "SELECT COUNT(*) FROM request_logs_e2e_error_logs") == [(3,)]
    assert query(snow, 'SELECT metadata:"x-tenant-id"::VARCHAR FROM request_logs_e2e LIMIT 1') == [("acme",)]
    assert "env-secret-pw-314" not in str(result.all_events)


def test_count_rows_reads_the_partition_back_with_count(snow, tmp_path):
    dest = make(snow, table="counted")

    def delete_one(table: str, request_id: str) -> None:
        query(snow, f"DELETE FROM {table} WHERE request_id = %s", (request_id,))

    wd.check_count_rows(dest, tmp_path, delete_one)
