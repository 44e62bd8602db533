"""The `sql` destination (SQLAlchemy URL) against PostgreSQL 15 on loopback."""

from __future__ import annotations

import time

import psycopg
import pytest

from bifrost_pipeline.config import parse_config
from bifrost_pipeline.destinations import destination_class
from bifrost_pipeline.destinations.base import DestinationError
from bifrost_pipeline.destinations.sql import SQLDestination
from bifrost_pipeline_tests.destinations import warehouse_data as wd
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.emulators.servers import free_port


@pytest.fixture(scope="module")
def pg_db(postgres_server):
    return postgres_server.create_database("sql_dest")


def make(postgres_server, database, export="daily_pg", **config) -> SQLDestination:
    cfg = SQLDestination.Config.model_validate({"url": postgres_server.url(database), **config})
    return SQLDestination(cfg, context(export))


def query(postgres_server, database, sql, params=None) -> list[tuple]:
    with psycopg.connect(postgres_server.url(database, "postgresql")) as con:
        return con.execute(sql, params).fetchall()


def count(postgres_server, database, table, schema="public") -> int:
    return query(postgres_server, database, f'SELECT count(*) FROM "{schema}"."{table}"')[0][0]


def column_types(postgres_server, database, table, schema="public") -> dict[str, tuple[str, str]]:
    rows = query(
        postgres_server,
        database,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def test_registered_and_configured_from_an_environment_variable():
    assert destination_class("sql") is SQLDestination
    raw = {
        "log_exports": {
            "exports": [
                {
                    "name": "pg",
                    "schedule": "daily",
                    "destination": {"type": "sql", "config": {"url": "${PG_URL}", "schema": "analytics"}},
                }
            ]
        }
    }
    app = parse_config(raw, env={"PG_URL": "postgresql+psycopg://u:hunter22@db.example:5432/logs"})
    dest = destination_class("sql")(app.exports[0].destination.config, app.destination_context("pg"))
    assert dest.config.schema_name == "analytics"
    assert "hunter22" not in dest.describe() and "db.example" in dest.describe()
    assert "hunter22" not in repr(app.exports[0])


def test_table_created_with_types_loaded_and_reloaded_idempotently(postgres_server, pg_db, tmp_path):
    dest = make(postgres_server, pg_db, table="request_logs", schema="analytics")
    first = wd.day_partition("daily_pg", wd.DAYS[0], tmp_path)
    result = dest.write_partition(first)
    assert result.rows == {"request_logs": 10}
    types = column_types(postgres_server, pg_db, "request_logs", "analytics")
    assert types["timestamp"] == ("timestamp with time zone", "YES")
    assert types["input_tokens"][0] == "integer"
    assert types["cost_usd"][0] == "double precision"
    assert types["stream"][0] == "boolean"
    assert types["metadata"][0] == "jsonb" and types["input_content"][0] == "jsonb"
    assert types["export_partition"] == ("character varying", "NO")
    assert count(postgres_server, pg_db, "request_logs", "analytics") == 10

    dest.write_partition(first)  # a retry of the same partition
    dest.write_partition(wd.day_partition("daily_pg", wd.DAYS[1], tmp_path))
    dest.write_partition(first)  # a backfill of the first day
    assert count(postgres_server, pg_db, "request_logs", "analytics") == 20
    by_partition = dict(
        query(
            postgres_server, pg_db, "SELECT export_partition, count(*) FROM analytics.request_logs GROUP BY 1"
        )
    )
    assert by_partition == {wd.DAYS[0]: 10, wd.DAYS[1]: 10}
    # JSON arrived as JSON (not a JSON string), timestamps as instants, NULLs as NULLs.
    team, ts, out = query(
        postgres_server,
        pg_db,
        "SELECT metadata->>'team', \"timestamp\", output_tokens FROM analytics.request_logs "
        "WHERE request_id = 'req_2024-01-15_3'",
    )[0]
    assert team == "t1" and ts.isoformat().startswith("2024-01-15T10:03:00") and out is None


def test_a_new_field_becomes_a_nullable_column(postgres_server, pg_db, tmp_path):
    dest = make(postgres_server, pg_db, table="evolving")
    dest.write_partition(wd.day_partition("daily_pg", wd.DAYS[0], tmp_path))
    assert "region" not in column_types(postgres_server, pg_db, "evolving")
    dest.write_partition(wd.day_partition("daily_pg", wd.DAYS[1], tmp_path, with_region=True))
    assert column_types(postgres_server, pg_db, "evolving")["region"] == ("text", "YES")
    rows = dict(
        query(postgres_server, pg_db, "SELECT export_partition, count(region) FROM evolving GROUP BY 1")
    )
    assert rows == {wd.DAYS[0]: 0, wd.DAYS[1]: 10}


def test_aggregate_output_gets_its_own_typed_table(postgres_server, pg_db, tmp_path):
    dest = make(postgres_server, pg_db, table="weekly")
    dest.write_partition(wd.aggregate_partition("weekly", tmp_path))
    types = column_types(postgres_server, pg_db, "weekly_metrics")
    assert types["date"][0] == "date" and types["count"][0] == "bigint"
    assert types["p95_latency"][0] == "double precision" and types["total_tokens"][0] == "numeric"
    rows = query(
        postgres_server, pg_db, "SELECT provider, count, total_tokens FROM weekly_metrics ORDER BY 1"
    )
    assert [(r[0], r[1], int(r[2])) for r in rows] == [("anthropic", 4, 1020), ("openai", 6, 630)]


def test_the_analyst_queries_of_the_docs(postgres_server, pg_db, tmp_path):
    dest = make(postgres_server, pg_db, table="request_logs")  # schema public, as the docs assume
    for day in wd.DAYS:
        dest.write_partition(wd.day_partition("daily_pg", day, tmp_path))
    queries = wd.doc_queries("postgres")
    assert set(queries) == {"cost_by_customer_day", "p95_latency_by_model", "error_rate_by_provider"}
    wd.check_analyst_answers({name: query(postgres_server, pg_db, sql) for name, sql in queries.items()})


def test_a_million_row_partition_loads_whole(postgres_server, pg_db, million_file):
    dest = make(postgres_server, pg_db, table="big")
    output = wd.partition("big", "2024-02-01", [million_file])
    started = time.perf_counter()
    dest.write_partition(output)
    elapsed = time.perf_counter() - started
    assert count(postgres_server, pg_db, "big") == 1_000_000
    print(f"sql/postgres: 1,000,000 rows in {elapsed:.1f}s")


def test_errors_name_the_export_and_store_never_the_password(postgres_server, pg_db):
    output = wd.partition("daily_pg", wd.DAYS[0], [])
    bad_pw = SQLDestination(
        SQLDestination.Config(
            url=postgres_server.url(pg_db).replace(postgres_server.password, "wrong-pw-123")
        ),
        context("daily_pg"),
    )
    with pytest.raises(DestinationError) as err:
        bad_pw.write_partition(output)
    assert "daily_pg" in str(err.value) and "authentication failed" in str(err.value)
    assert "wrong-pw-123" not in str(err.value) and not err.value.retryable

    with pytest.raises(DestinationError) as err:
        make(postgres_server, "no_such_db").write_partition(output)
    assert 'database "no_such_db" does not exist' in str(err.value)
    assert postgres_server.password not in str(err.value)

    unreachable = SQLDestination(
        SQLDestination.Config(
            url=f"postgresql+psycopg://u:secret-xyz@127.0.0.1:{free_port()}/db", connect_timeout=3
        ),
        context("daily_pg"),
    )
    with pytest.raises(DestinationError) as err:
        unreachable.write_partition(output)
    assert "cannot connect" in str(err.value) and err.value.retryable
    assert "secret-xyz" not in str(err.value)


def test_a_failed_load_keeps_the_partition_as_it_was(postgres_server, pg_db, tmp_path):
    import pyarrow as pa

    dest = make(postgres_server, pg_db, table="atomic")
    dest.write_partition(wd.day_partition("daily_pg", wd.DAYS[0], tmp_path))
    # The same partition again, but one latency does not fit the INTEGER column: COPY fails after DELETE.
    table = wd.records_table(wd.day_records(wd.DAYS[0]))
    latency = table.column("latency_ms").cast(pa.int64()).to_pylist()
    latency[-1] = 2**40
    bad = table.set_column(
        table.schema.get_field_index("latency_ms"), "latency_ms", pa.array(latency, pa.int64())
    )
    output = wd.partition("daily_pg", wd.DAYS[0], [wd.dataset_file(bad, "request_logs", tmp_path / "bad")])
    with pytest.raises(DestinationError) as err:
        dest.write_partition(output)
    assert "loading request_logs into atomic failed" in str(err.value) and "out of range" in str(err.value)
    assert count(postgres_server, pg_db, "atomic") == 10


def test_other_databases_load_through_executemany(tmp_path):
    # SQLite stands for "a database without COPY": the portable executemany path, same semantics.
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'w.db'}"
    dest = SQLDestination(
        SQLDestination.Config(url=url, table="request_logs"), context("lite")
    )
    first = wd.day_partition("lite", wd.DAYS[0], tmp_path)
    dest.write_partition(first)
    dest.write_partition(first)
    dest.write_partition(wd.day_partition("lite", wd.DAYS[1], tmp_path, with_region=True))
    engine = sa.create_engine(url)
    with engine.connect() as con:
        counts = dict(
            con.execute(sa.text("SELECT export_partition, count(*) FROM request_logs GROUP BY 1")).all()
        )
        regions = con.execute(sa.text("SELECT count(region) FROM request_logs")).scalar()
        team = con.execute(
            sa.text(
                "SELECT json_extract(metadata, '$.team') FROM request_logs WHERE request_id = 'req_2024-01-15_3'"
            )
        ).scalar()
    engine.dispose()
    assert counts == {wd.DAYS[0]: 10, wd.DAYS[1]: 10} and regions == 10 and team == "t1"


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_files_staged_by_the_export_step_load_as_is(postgres_server, pg_db, tmp_path, fmt):
    # The real staging function of the export step (Polars writes large_string; JSON exports get a Parquet
    # copy beside the export file): what a warehouse receives in production.
    import polars as pl

    from bifrost_pipeline.exports import stage_dataset

    lf = pl.from_arrow(wd.records_table(wd.day_records(wd.DAYS[0]))).lazy()
    staged = stage_dataset(lf, "request_logs", fmt, "gzip" if fmt == "json" else "zstd", tmp_path / fmt)
    assert {"metadata", "input_content", "output_content"} <= set(staged.json_columns)
    dest = make(postgres_server, pg_db, table=f"staged_{fmt}")
    dest.write_partition(wd.partition("daily_pg", wd.DAYS[0], [staged]))
    types = column_types(postgres_server, pg_db, f"staged_{fmt}")
    assert types["metadata"][0] == "jsonb" and types["timestamp"][0] == "timestamp with time zone"
    assert types["request_id"][0] == "text" and types["latency_ms"][0] == "integer"
    assert count(postgres_server, pg_db, f"staged_{fmt}") == 10


def test_count_rows_reads_the_partition_back_with_count(postgres_server, pg_db, tmp_path):
    dest = make(postgres_server, pg_db, table="counted")

    def delete_one(table: str, request_id: str) -> None:
        query(postgres_server, pg_db, f'DELETE FROM "{table}" WHERE request_id = %s RETURNING 1', (request_id,))

    wd.check_count_rows(dest, tmp_path, delete_one)
