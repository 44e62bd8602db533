#!/usr/bin/env bash
# local-bigquery 0.3.2 (the BigQuery emulator the warehouse tests start) in its own Python 3.13 venv.
# It needs Python >= 3.13 (pyenv's) and DuckDB extensions that cannot be downloaded at run time: the pinned
# duckdb-extension-* packages carry them; they are imported once into $HOME/.duckdb. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.emulators/bigquery-venv
PINS=(local-bigquery==0.3.2 duckdb==1.5.5 duckdb-extensions==1.5.5 duckdb-extension-ducklake==1.5.5
      duckdb-extension-icu==1.5.5 duckdb-extension-spatial==1.5.5)

if [ ! -x "$VENV/bin/local-bigquery" ] || ! "$VENV/bin/python" -c "import duckdb; assert duckdb.__version__ == '1.5.5'" 2>/dev/null; then
  PY313=""
  if command -v pyenv >/dev/null 2>&1; then
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[3-9]' || true); do
      PY313="$(pyenv root)/versions/$v/bin/python"; break
    done
  fi
  [ -z "$PY313" ] && PY313="$(command -v python3.13 || true)"
  if [ -z "$PY313" ]; then
    echo "bigquery.sh: no Python >= 3.13 found (pyenv install 3.13, or put python3.13 on PATH)" >&2
    exit 1
  fi
  mkdir -p .emulators
  "$PY313" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "${PINS[@]}"
fi

mkdir -p "${HOME:?HOME must be set}"
"$VENV/bin/python" - <<'PY'
import duckdb_extensions
for name in ("ducklake", "icu", "spatial"):
    duckdb_extensions.import_extension(name)
from importlib.metadata import version
print(f"local-bigquery ready: {version('local-bigquery')} (on DuckDB {version('duckdb')})")
PY
