# The two commands a fresh Debian machine needs: `make run` and `make test`.
# Both set up everything themselves (infra/bootstrap.sh), so they work on a machine that has
# nothing but Debian and root.

VENV ?= .venv
export QUIRE_VENV := $(VENV)
PY := $(VENV)/bin/python

.PHONY: run test lint bootstrap bootstrap-dev bench lock

bootstrap:
	infra/bootstrap.sh

bootstrap-dev:
	infra/bootstrap.sh --dev

## Run the embedded default in the foreground: API, workers, sweeper, private Redis, SQLite.
run: bootstrap
	$(PY) infra/run_embedded.py

lint: bootstrap-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## Lint, type-check and run the whole test suite against real services.
test: lint
	$(VENV)/bin/pytest

## Throughput and memory against LibreOffice's own limit, the fairness scenario and the scaling
## across hosts (tests/bench/cluster.py; needs root) (BENCH_ARGS="--documents 200" etc.).
bench: bootstrap-dev
	$(PY) -m tests.bench.run $(BENCH_ARGS)

## Re-resolve the lock files (requirements/*.txt) from pyproject.toml: after changing a
## dependency, or to take newer releases. Commit the result; every install uses only these.
lock: bootstrap-dev
	$(PY) infra/lock.py
