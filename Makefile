# Every target builds its own virtual environment from the wheel (not an editable install), so what
# the tests and the demo run is what Airbyte ships.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export AIRBYTE_OFFLINE_MODE := 1
export DO_NOT_TRACK := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

SOURCES := pyproject.toml manifest.yaml README.md $(wildcard source_klarna/*.py) emulator/pyproject.toml

.PHONY: install test unit integration demo bench wheel clean

$(BIN)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip build
	rm -rf dist && $(BIN)/python -m build --wheel --outdir dist . > /dev/null
	$(BIN)/python -m pip install -q --force-reinstall --no-deps dist/*.whl
	$(BIN)/python -m pip install -q "$$(ls dist/*.whl)[dev,demo]"
	# The emulator is a distribution of its own (emulator/), for the tests, the demo and the bench.
	$(BIN)/python -m pip install -q --no-deps -e ./emulator
	touch $@

install: $(BIN)/.installed

wheel: install

## The main job: a real sync into ./klarna.duckdb (the bundled emulator unless KLARNA_CONFIG names a config file).
demo: install
	$(BIN)/python demo/run_demo.py $(DEMO_ARGS)

## Every test: unit tests, then end-to-end tests against the emulator.
test: install
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q unit_tests

integration: install
	$(BIN)/pytest -q integration_tests

## Rewrite manifest.yaml's `schemas:` section (between its markers) from reference/*.openapi.yml and
## scripts/schema_decisions.yaml. Only the venv's Python is needed: the wheel is rebuilt by the next install.
.PHONY: schemas
schemas:
	test -x $(BIN)/python || $(MAKE) install
	$(BIN)/python -m scripts.openapi_schemas

## Speed and memory figures (not a test): see README's Performance section.
bench: install
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache
