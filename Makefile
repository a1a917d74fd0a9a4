# Every target builds its own virtual environment from the wheel (not an editable install), so what
# the tests and the demo run is what Airbyte ships.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export AIRBYTE_OFFLINE_MODE := 1
export DO_NOT_TRACK := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

SOURCES := pyproject.toml manifest.yaml components.py README.md constraints.txt $(wildcard source_klarna/*.py) emulator/pyproject.toml
# constraints.txt pins every package (airbyte-cdk at manifest.yaml's `version:`): the tests and the
# Docker image run the same versions. `make constraints` regenerates it.
CONSTRAINTS := --constraint constraints.txt

# The Docker image: `make image` builds $(IMAGE) as Airbyte builds a manifest-only connector, on
# metadata.yaml's base image (airbyte/source-declarative-manifest), or on BASE_IMAGE=... Where Docker
# Hub is out of reach, BASE_IMAGE=$(STANDIN_BASE_IMAGE) builds on a stand-in of that image made from
# Debian's packages and the wheelhouse (scripts/build_base_image.sh; built first if missing).
IMAGE ?= airbyte/source-klarna:dev
METADATA_BASE_IMAGE := $(shell sed -n 's/^ *baseImage: *//p' metadata.yaml)
BASE_IMAGE ?= $(METADATA_BASE_IMAGE)
CDK_VERSION := $(shell sed -n 's/^version: *//p' manifest.yaml)
STANDIN_BASE_IMAGE := source-klarna/source-declarative-manifest:$(CDK_VERSION)-standin
CONNECTOR_VERSION := $(shell sed -n 's/^ *dockerImageTag: *//p' metadata.yaml)
WHEELHOUSE := build/wheelhouse
DOCKER ?= docker
# BuildKit where the client has it (the buildx plugin, or a client older than 23 with BuildKit built in):
# Docker's classic builder copies the whole file system once per instruction, which on the `vfs`
# storage driver makes the build three times slower. Expanded only by the image recipe.
BUILDKIT = $(shell if $(DOCKER) buildx version > /dev/null 2>&1; then echo 1; \
	elif [ "$$($(DOCKER) version --format '{{.Client.Version}}' 2> /dev/null | cut -d. -f1)" -lt 23 ] 2> /dev/null; then echo 1; \
	else echo 0; fi)

# The manifest-only runtime: a virtual environment with airbyte-cdk alone (pinned), not this package,
# whose `source-declarative-manifest` the manifest-only tests run on build/manifest-only/.
MANIFEST_ONLY_VENV := .venv-manifest-only

.PHONY: install test unit integration demo bench wheel clean constraints wheelhouse base-image image manifest-only

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

## Every test: unit tests, then end-to-end tests against the emulator (the manifest-only form too).
## The warehouse tests start PostgreSQL servers of their own: scripts/ensure_postgres.sh installs
## Debian's postgresql package first where its server binaries are missing (as root; else says how).
test: install manifest-only $(MANIFEST_ONLY_VENV)/.installed
	scripts/ensure_postgres.sh
	$(BIN)/pytest -q --durations=15

## The manifest-only form, build/manifest-only/{manifest.yaml,components.py,metadata.yaml}: the root's
## files as they are (they are that form), after checking what the stock runtime needs of components.py.
manifest-only: install
	$(BIN)/python -m scripts.manifest_only

$(MANIFEST_ONLY_VENV)/.installed: constraints.txt
	test -x $(MANIFEST_ONLY_VENV)/bin/python || $(PYTHON) -m venv $(MANIFEST_ONLY_VENV)
	$(MANIFEST_ONLY_VENV)/bin/python -m pip install -q "airbyte-cdk==$$(sed -n 's/^version: *//p' manifest.yaml)" $(CONSTRAINTS)
	touch $@

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
bench: install manifest-only $(MANIFEST_ONLY_VENV)/.installed
	$(BIN)/python bench/bench.py $(BENCH_ARGS)
	$(BIN)/python bench/rate_limit.py $(RATE_LIMIT_ARGS)

## How a sync shares the merchant's rate limit with its other traffic (not a test): bench/rate_limit.py.
.PHONY: bench-rate-limit
bench-rate-limit: install
	$(BIN)/python bench/rate_limit.py $(RATE_LIMIT_ARGS)

## Rewrite constraints.txt from a fresh resolution (after changing the CDK version or a dependency).
constraints:
	PYTHON=$(PYTHON) scripts/update_constraints.sh

## airbyte-cdk at manifest.yaml's `version:` and its dependencies, as wheels pinned by constraints.txt:
## what the stand-in base image installs (its build has no package index).
$(WHEELHOUSE)/.built: constraints.txt manifest.yaml
	rm -rf $(WHEELHOUSE)
	$(PYTHON) -m pip wheel -q --wheel-dir $(WHEELHOUSE) $(CONSTRAINTS) "airbyte-cdk==$(CDK_VERSION)"
	touch $@

wheelhouse: $(WHEELHOUSE)/.built

## The stand-in SDM base image (Debian's Python 3.11, airbyte-cdk from the wheelhouse, user airbyte):
## needs root, debootstrap and Docker.
base-image: $(WHEELHOUSE)/.built
	scripts/build_base_image.sh $(STANDIN_BASE_IMAGE) $(WHEELHOUSE) $(CDK_VERSION)

## The connector's Docker image, $(IMAGE): the base plus manifest.yaml and components.py; the build
## has no network (--network none).
image:
	@if [ "$(BASE_IMAGE)" = "$(STANDIN_BASE_IMAGE)" ] && ! $(DOCKER) image inspect $(BASE_IMAGE) > /dev/null 2>&1; then \
		$(MAKE) --no-print-directory base-image; fi
	DOCKER_BUILDKIT=$(BUILDKIT) $(DOCKER) build --network none --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg CONNECTOR_VERSION=$(CONNECTOR_VERSION) --tag $(IMAGE) .
	$(DOCKER) image inspect --format '$(IMAGE): {{.Size}} bytes' $(IMAGE)

clean:
	rm -rf $(VENV) $(MANIFEST_ONLY_VENV) dist build *.egg-info .pytest_cache
