# Quick start: `make demo` and `make test` on a fresh machine (Python 3.11 with venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

SCALEOUT_STAMP := $(VENV)/.scaleout-stamp

.PHONY: install install-scaleout demo airflow scaleout test test-unit test-scaleout bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test,client]'
	touch $@

# the scale-out stack's packages (Celery provider, Redis client, moto's S3 server) on top
install-scaleout: $(SCALEOUT_STAMP)

$(SCALEOUT_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test,client,scaleout]'
	touch $@

demo: install
	scripts/demo.sh

# Airflow in the foreground: scheduler, dag-processor, triggerer, api-server (UI on 127.0.0.1:8080).
airflow: install
	scripts/airflow-stack

# PostgreSQL and MariaDB for the integration tests (scripts/test-servers.sh): started for the run
# and stopped after it, unless they were already running.
# CeleryExecutor on PostgreSQL and Redis, two Celery workers, the sharing store on moto's S3
# server and govshare serve, in the foreground (scripts/scaleout-stack; README "Scale-out").
scaleout: install-scaleout
	scripts/scaleout-stack

test: install
	@set -e; running=$$(bash scripts/test-servers.sh env >/dev/null 2>&1 && echo yes || echo no); \
	servers=$$(bash scripts/test-servers.sh start); eval "$$servers"; \
	if [ "$$running" = no ]; then trap 'bash scripts/test-servers.sh stop' EXIT; fi; \
	$(VENV)/bin/python -m pytest

test-unit: install
	$(VENV)/bin/python -m pytest tests/unit

# The three syncs and an incremental one through the scale-out stack, against an embedded run.
test-scaleout: install-scaleout
	@set -e; running=$$(bash scripts/test-servers.sh env >/dev/null 2>&1 && echo yes || echo no); \
	servers=$$(bash scripts/test-servers.sh start); eval "$$servers"; \
	if [ "$$running" = no ]; then trap 'bash scripts/test-servers.sh stop' EXIT; fi; \
	GOVSHARE_TEST_SCALEOUT=1 $(VENV)/bin/python -m pytest tests/scaleout

bench: install
	$(VENV)/bin/python -m benchmarks.run $(ARGS)

clean:
	rm -rf var .pytest_cache
