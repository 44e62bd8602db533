"""Session fixtures for the warehouse destinations: local servers on loopback, each stopped by its PID.

- fakesnow in server mode (the real snowflake-connector-python talks to it over HTTP),
- local-bigquery 0.3.2 in its own Python 3.13 venv (scripts/emulators/bigquery.sh installs it),
- PostgreSQL 15 (initdb in a temp dir, md5 passwords) for the `sql` destination and as Redshift's stand-in,
  with a SUPER domain and JSON_PARSE so Redshift DDL runs on it, behind the redshift_connector shim,
- moto for Redshift's S3 staging half.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bifrost_pipeline_tests.emulators.servers import Server, free_port, port_open, start_server

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PG_BIN = Path(os.environ.get("BIFROST_PG_BIN", "/usr/lib/postgresql/15/bin"))
BIGQUERY_BIN = ROOT / ".emulators" / "bigquery-venv" / "bin" / "local-bigquery"

PG_USER = "bifrost"
PG_PASSWORD = "bifrost-test-pw"  # a throwaway password of a loopback test server


@pytest.fixture(scope="session")
def warehouse_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("warehouse-logs")


# --- Snowflake: fakesnow -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fakesnow_server(warehouse_logs):
    port = free_port()
    server = start_server(
        "fakesnow",
        [str(VENV_BIN / "fakesnow"), "-s", "--host", "127.0.0.1", "-p", str(port)],
        port,
        warehouse_logs,
    )
    yield server
    server.stop()


# --- BigQuery: local-bigquery -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bigquery_server(warehouse_logs, tmp_path_factory):
    if not BIGQUERY_BIN.exists():  # install it (idempotent; about a minute, needs the package index)
        script = ROOT / "scripts" / "emulators" / "bigquery.sh"
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        if done.returncode != 0 or not BIGQUERY_BIN.exists():
            pytest.fail(f"{script} failed; local-bigquery is missing:\n{done.stderr[-2000:]}")
    port, grpc_port = free_port(), free_port()
    data_dir = tmp_path_factory.mktemp("bigquery-data")
    server = start_server(
        "local-bigquery",
        [
            str(BIGQUERY_BIN),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            "--data-dir",
            str(data_dir),
            "--project",
            "bifrost-test",
        ],
        port,
        warehouse_logs,
        timeout=90,
    )
    yield server
    server.stop()


# --- PostgreSQL 15 ------------------------------------------------------------------------------------------


@dataclass
class Postgres:
    server: Server
    data_dir: Path
    port: int
    user: str = PG_USER
    password: str = PG_PASSWORD

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database, "postgresql"), autocommit=True) as con:
            con.execute(sql)

    def create_database(self, name: str) -> str:
        self.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self.execute(f'CREATE DATABASE "{name}"')
        return name


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: run it as the `postgres` user then.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres_server(warehouse_logs):
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL 15 is missing under {PG_BIN}: run scripts/emulators/postgres.sh")
    # Not under pytest's tmp dir: that one is private to this user and the postgres user must enter it.
    data_dir = Path(tempfile.mkdtemp(prefix="bifrost-pg-"))
    pwfile = data_dir / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    pgdata = data_dir / "data"
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                PG_USER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=md5",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = start_server(
        "postgres",
        _as_postgres(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(pgdata),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={data_dir}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                # md5 (not SCRAM) password hashes: redshift_connector does not speak SCRAM.
                "-c",
                "password_encryption=md5",
            ]
        ),
        port,
        warehouse_logs,
    )
    pg = Postgres(server, data_dir, port)
    import psycopg

    deadline = time.monotonic() + 30
    while True:  # the port opens a moment before the server accepts logins
        try:
            # initdb stored the password as SCRAM: store it again as md5 (over the trusted local socket).
            with psycopg.connect(
                host=str(data_dir), port=port, user=PG_USER, dbname="postgres", autocommit=True
            ) as con:
                con.execute(f"ALTER ROLE {PG_USER} PASSWORD '{PG_PASSWORD}'")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    pg.execute("SELECT 1")
    yield pg
    # A fast shutdown (the default SIGTERM waits for every client to leave), then stop by PID.
    subprocess.run(
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"]),
        capture_output=True,
    )
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


# --- Redshift: PostgreSQL + shim + moto ---------------------------------------------------------------------

# What a Redshift cluster has and PostgreSQL lacks, for the DDL and SQL the redshift destination emits.
REDSHIFT_COMPAT_SQL = """
DO $$ BEGIN
  CREATE DOMAIN super AS jsonb;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE OR REPLACE FUNCTION json_parse(text) RETURNS jsonb AS 'SELECT $1::jsonb' LANGUAGE sql IMMUTABLE;
"""


@dataclass
class RedshiftStandIn:
    postgres: Postgres
    shim: Server
    database: str

    @property
    def port(self) -> int:
        return self.shim.port


@pytest.fixture(scope="session")
def redshift_standin(postgres_server, warehouse_logs):
    database = postgres_server.create_database("bifrost_logs")
    postgres_server.execute(REDSHIFT_COMPAT_SQL, database)
    port = free_port()
    shim = start_server(
        "redshift-shim",
        [
            sys.executable,
            "-m",
            "bifrost_pipeline_tests.emulators.redshift_shim",
            "--port",
            str(port),
            "--upstream-port",
            str(postgres_server.port),
        ],
        port,
        warehouse_logs,
        env={"PYTHONPATH": str(ROOT)},
    )
    yield RedshiftStandIn(postgres_server, shim, database)
    shim.stop()


@pytest.fixture(scope="session")
def warehouse_moto(warehouse_logs):
    port = free_port()
    server = start_server(
        "moto-warehouse",
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        port,
        warehouse_logs,
        ready=lambda: port_open(port),
    )
    yield server
    server.stop()
