# logpipe: `make run` runs the whole pipeline, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOGPIPE := $(BIN)/logpipe

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install logpipe with its dev tools

run: setup ## Run Redis (started if none answers), the API and the drainer; Ctrl-C stops all
	$(LOGPIPE) run

server: setup ## Run only the API (logpipe serve)
	$(LOGPIPE) serve

drainer: setup ## Run only the drainer loop (logpipe drain)
	$(LOGPIPE) drain

redis-check: setup ## Check the configured Redis (logpipe redis-check)
	$(LOGPIPE) redis-check

stop: ## Stop what `make run` started
	@if [ -f .logpipe/run.pid ]; then kill -TERM $$(cat .logpipe/run.pid) && echo "stopping logpipe run (pid $$(cat .logpipe/run.pid))"; else echo "nothing to stop"; fi

test: setup ## Run the whole test suite (needs redis-server installed)
	$(BIN)/pytest

test-faults: setup ## Run only the fault-injection suite
	$(BIN)/pytest tests/faults -m faults

lint: setup ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test ## Lint, type-check and test

bench: setup ## Benchmark against ceilings measured in the same run (needs wrk)
	$(BIN)/python -m bench.run

bench-auth: setup ## POST /log with and without a bearer token, interleaved (needs wrk)
	$(BIN)/python -m bench.auth

clean: ## Remove the venv and local state
	rm -rf $(VENV) .logpipe .pytest_cache .ruff_cache .mypy_cache

.PHONY: help setup run server drainer redis-check stop test test-faults lint check bench bench-auth clean
