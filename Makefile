# Every target builds its own virtual environment from the wheel (not an editable install), so what
# the tests and the demo run is what Airbyte ships.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export AIRBYTE_OFFLINE_MODE := 1
export DO_NOT_TRACK := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

SOURCES := pyproject.toml manifest.yaml README.md constraints.txt $(wildcard source_klarna/*.py) emulator/pyproject.toml
# constraints.txt pins every package (airbyte-cdk at manifest.yaml's `version:`): the tests and the
# Docker image run the same versions. `make constraints` regenerates it.
CONSTRAINTS := --constraint constraints.txt

.PHONY: install test unit integration demo bench wheel clean constraints

$(BIN)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip build $(CONSTRAINTS)
	rm -rf dist && $(BIN)/python -m build --wheel --outdir dist . > /dev/null
	$(BIN)/python -m pip install -q --force-reinstall --no-deps dist/*.whl
	$(BIN)/python -m pip install -q "$$(ls dist/*.whl)[dev,demo]" $(CONSTRAINTS)
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

## Speed and memory figures (not a test): see README's Performance section.
bench: install
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

## Rewrite constraints.txt from a fresh resolution (after changing the CDK version or a dependency).
constraints:
	PYTHON=$(PYTHON) scripts/update_constraints.sh

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache
