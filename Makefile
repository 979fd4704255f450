# logpipe: `make run` runs the whole pipeline, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# two stamps: `make run` needs only logpipe's own dependencies, `make test` adds the dev tools
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
LOGPIPE := $(BIN)/logpipe

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(DEV_STAMP)

install: $(RUN_STAMP) ## Create .venv and install logpipe (what running needs, no dev tools)

setup: $(DEV_STAMP) ## Create .venv and install logpipe with its dev tools

run: install ## Run Redis (started if none answers), the API and the drainer; Ctrl-C stops all
	$(LOGPIPE) run

server: install ## Run only the API (logpipe serve)
	$(LOGPIPE) serve

drainer: install ## Run only the drainer loop (logpipe drain)
	$(LOGPIPE) drain

redis-check: install ## Check the configured Redis (logpipe redis-check)
	$(LOGPIPE) redis-check

# Signal only a pid that is still logpipe's: after a crash or a reboot the pid in the file
# may belong to an unrelated process by now.
stop: ## Stop what `make run` started (a stale pid file is removed)
	@pidfile=.logpipe/run.pid; \
	if [ ! -f $$pidfile ]; then echo "nothing to stop"; exit 0; fi; \
	pid=$$(tr -cd '0-9' < $$pidfile); \
	cmd=$$( [ -n "$$pid" ] && { tr '\0' ' ' 2>/dev/null < /proc/$$pid/cmdline || ps -p $$pid -o args= 2>/dev/null; }); \
	if echo "$$cmd" | grep -q logpipe && echo "$$cmd" | grep -qw run; then \
		kill -TERM $$pid && echo "stopping logpipe run (pid $$pid)"; \
	else \
		rm -f $$pidfile; echo "removed stale $$pidfile: pid $${pid:-?} is not a running logpipe"; \
	fi

# The CI gate replays one fixed kill-9 schedule; `make test LP_TEST_SEED=N` picks
# another (every run prints its seed), `make test-faults` draws a fresh one.
LP_TEST_SEED ?= 20261201

system-deps: ## Install the programs the tests run (redis-server, redis-cli, systemd-analyze, chromium) if missing
	bash tests/system_deps.sh

# pytest-xdist: one worker per core (`make test PYTEST_WORKERS=0` runs in one process); the
# fault tests stay one at a time on one worker, and start first (their xdist_group and the
# order of tests/conftest.py, which --no-loadscope-reorder keeps)
PYTEST_WORKERS ?= auto
XDIST := -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder
# Python's bytecode caches on for the tests even where the environment sets
# PYTHONDONTWRITEBYTECODE (the development machine's does): without them each run compiled
# every module from source again and pytest rewrote every test module's asserts again, in
# each worker (~6 s of collection apiece) and in every `logpipe`/`python` process a test starts
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest

test: setup system-deps ## Run the whole test suite, the CI gate (installs what it runs; see system-deps)
	LP_TEST_SEED=$(LP_TEST_SEED) $(PYTEST) $(XDIST)

test-fast: setup system-deps ## Everything but the fault and end-to-end suites: the quick loop
	$(PYTEST) $(XDIST) -m "not faults and not e2e"

test-faults: setup ## Run only the fault-injection suite
	$(PYTEST) tests/faults -m faults

lint: setup ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test ## Lint, type-check and test

bench: setup ## Benchmark against ceilings measured in the same run, 3 runs each, then bench-cluster (needs wrk; 12-25 min, ~6 GB of disk)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.cluster

bench-quick: setup ## The same figures, small and short, for development (< 60 s)
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

bench-auth: setup ## POST /log with and without a bearer token, interleaved (needs wrk)
	$(BIN)/python -m bench.auth

bench-replication: setup ## Ingest standalone vs Sentinel with min_replicas 0/1/2 (WAIT's cost)
	$(BIN)/python -m bench.replication

bench-cluster: setup ## Ingest and drain: 1 Redis vs a 3-master cluster, min_replicas 0/1 (part of make bench)
	$(BIN)/python -m bench.cluster

clean: ## Remove the venv and local state
	rm -rf $(VENV) .logpipe .pytest_cache .ruff_cache .mypy_cache

.PHONY: help install setup system-deps run server drainer redis-check stop test test-fast test-faults lint check bench bench-quick bench-auth bench-replication bench-cluster clean
