#!/usr/bin/env bash
# PostgreSQL 15: the `sql` destination's test database and Redshift's wire-protocol stand-in. The tests run
# initdb/postgres from its bin directory themselves (BIFROST_PG_BIN, default /usr/lib/postgresql/15/bin).
# Idempotent: installs the Debian/Ubuntu package only when that directory is missing.
set -euo pipefail
PG_BIN="${BIFROST_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/postgres" ]; then
  echo "postgres ready: $("$PG_BIN/postgres" --version)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "postgres.sh: $PG_BIN/initdb is missing and apt-get is not available: install PostgreSQL 15 and set BIFROST_PG_BIN" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15
# The package's own cluster is not used by the tests; keep it from holding port 5432.
$SUDO service postgresql stop >/dev/null 2>&1 || true
echo "postgres ready: $("$PG_BIN/postgres" --version)"
