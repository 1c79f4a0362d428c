# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean system-deps assets

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The dashboard's front-end libraries, from the npm registry at pinned versions, into
# src/tidal/dashboard/static/vendor/ (never from a CDN at run time).
ASSETS := src/tidal/dashboard/static/vendor/.built
assets: $(ASSETS)

$(ASSETS): src/tidal/dashboard/assets/package.json src/tidal/dashboard/assets/package-lock.json scripts/build-assets.sh
	bash scripts/build-assets.sh
	touch $@

# Starts an embedded platform, deploys the seed example, calls it, and stops.
run: $(STAMP) assets
	$(BIN)/python examples/run_example.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; that is a failure here, as any non-zero code is.
test: $(STAMP) system-deps assets lint typecheck
	$(BIN)/pytest -p no:cacheprovider

# Debian packages for the container, cluster, database and browser tiers.
system-deps:
	bash scripts/system-deps.sh

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

bench: $(STAMP)
	$(BIN)/python bench/gateway_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
