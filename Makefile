# The two commands of the README: `make demo` and `make test`. Everything they need is installed from here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install emulators lint dev bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e '.[proxy,cloud,test]'
	touch $(STAMP)

install: $(STAMP)

# Local servers the destination tests start (installed once; see docs/EMULATORS and shared notes).
emulators: $(STAMP)
	bash scripts/install-emulators.sh

demo: $(STAMP)
	$(VENV)/bin/bifrost-pipeline demo

test: $(STAMP) emulators
	$(VENV)/bin/ruff check bifrost_pipeline bifrost_pipeline_tests bench
	$(PY) -m pytest -q

dev: $(STAMP)
	$(VENV)/bin/dagster dev

bench: $(STAMP)
	$(PY) bench/pipeline_bench.py

clean:
	rm -rf .bifrost .tmp_dagster_home
