# Two entry points a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LINT_PATHS := src tests $(wildcard bench)

.PHONY: demo test lint typecheck unit bench dist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,mysql,nats,gcp,gcp-test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/phasegate demo

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck unit

dist: $(STAMP)
	$(BIN)/python -m build --no-isolation --outdir dist

BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,mysql,nats,gcp,gcp-test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run_all.py

.PHONY: chaos
# Three replicas under load and faults on a private PostgreSQL primary (initdb/pg_ctl) and
# the shared PostgreSQL as backup; writes bench/results/chaos.json. CHAOS_ARGS='--completions 5000'
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
