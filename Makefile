# The two commands of the README: `make demo` and `make test`. Everything they need is installed from here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install emulators lint dev bench clean

# The proxy's compiled modules (bifrost_pipeline/proxy/native.py) are built by the install: it runs again when
# one of their sources changes, else the stale module would run from source, slower.
NATIVE_SOURCES := $(shell $(PYTHON) -c 'import runpy; n = runpy.run_path("bifrost_pipeline/proxy/native.py"); \
	print(" ".join("bifrost_pipeline/proxy/" + s for s in n["NATIVE_MODULES"].values()))') \
	$(wildcard bifrost_pipeline/proxy/*.pxd)

$(STAMP): pyproject.toml setup.py $(NATIVE_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) --reinstall-package bifrost_pipeline -e '.[proxy,cloud,deploy,test]'
	touch $(STAMP)

install: $(STAMP)

# Local servers the destination tests start (installed once; see docs/testing.md).
emulators: $(STAMP)
	bash scripts/install-emulators.sh

demo: $(STAMP)
	$(VENV)/bin/bifrost-pipeline demo

test: $(STAMP) emulators
	$(VENV)/bin/ruff check bifrost_pipeline bifrost_pipeline_tests bench setup.py
	$(PY) -m pytest -q

# The Dagster UI and daemon on the instance of dagster.yaml (the demo's runs are there), and beside them the
# log explorer (http://127.0.0.1:8090, key in BIFROST_LOGS_API_KEY or the demo config's demo key); stopping
# one stops both. The demo config hashes ids with the key in BIFROST_ANONYMIZE_KEY, or its own demo key.
dev: $(STAMP)
	$(VENV)/bin/bifrost-pipeline logs & logs=$$!; trap 'kill $$logs 2>/dev/null' EXIT INT TERM; \
	DAGSTER_HOME=$(CURDIR) $(VENV)/bin/dagster dev -w workspace.yaml

bench: $(STAMP)
	$(PY) bench/pipeline_bench.py
	$(PY) bench/proxy_bench.py
	$(PY) bench/warehouse_bench.py

clean:
	rm -rf .bifrost .tmp_dagster_home
