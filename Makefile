# salesflow: every target does its own set-up on a fresh machine (Java 17+ needed; `make test` installs Chromium with apt when missing).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST := $(PY) -m pytest

.PHONY: help demo up test test-fast test-faults lint format docs bench bench-smoke bench-scale audit clean check-java install browser-deps screenshot

help:
	@echo "make demo        run the whole system: generate -> upload -> Kafka -> train -> forecast"
	@echo "make test        the whole test suite (unit, integration, end-to-end)"
	@echo "make test-fast   unit tests only (a minute or two)"
	@echo "make screenshot  refresh docs/forecast-explorer.png (the README's picture) with the browser test"
	@echo "make lint        ruff check, ruff format --check, mypy on src/, import layers (lint-imports)"
	@echo "make bench       benchmarks (prints tables, writes bench/results/*.json)"
	@echo "make bench-smoke a quick run of every benchmark (CI runs it)"
	@echo "make bench-scale training growth up to 50M rows (hours; not in CI)"
	@echo "make audit       pip-audit of the installed packages (needs PyPI's JSON API or OSV)"

check-java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "salesflow needs Java 17 or newer for Spark, and 'java' is not on PATH."; \
	  echo "Install it with:  apt-get install openjdk-17-jre-headless"; exit 1; }

# The dashboard's browser test drives Debian's chromium (Playwright's own browser download is not used).
browser-deps:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium for the dashboard's browser test"; \
	  apt-get update && apt-get install -y chromium; }

$(STAMP): pyproject.toml
	@echo "installing salesflow into $(VENV) (a first run downloads Spark and friends: a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "  1/3 pip itself"
	$(PY) -m pip install --quiet --upgrade pip
	@echo "  2/3 salesflow and its dependencies (pyspark, statsforecast, ...)"
	$(PY) -m pip install --quiet -e ".[test,bench]"
	@echo "  3/3 Spark's class archive for this venv (about a minute)"
	@# Spark's class archive for this venv (a small training, ~45 s once), so even the first
	@# Spark start of a new clone maps it; without java it is recorded later, by the first run.
	-@command -v java >/dev/null 2>&1 && $(PY) -m salesflow.spark.class_archive
	@touch $(STAMP)

install: $(STAMP)

# ARGS=--keep-running leaves the demo's services (and the dashboard) up until Ctrl-C.
demo: check-java $(STAMP)
	$(VENV)/bin/salesflow demo $(ARGS)

up: check-java $(STAMP)
	$(VENV)/bin/salesflow up

# --durations: the slowest tests, so a CI log shows where the suite's time goes.
test: check-java browser-deps $(STAMP)
	$(PYTEST) tests --durations=25

# `make test` leaves tracked files alone; this runs the browser test to refresh the README's picture.
screenshot: check-java browser-deps $(STAMP)
	SALESFLOW_SCREENSHOT_TO=$(CURDIR)/docs/forecast-explorer.png $(PYTEST) tests/browser -q

test-fast: check-java $(STAMP)
	$(PYTEST) tests -m "not slow and not e2e"

test-faults: check-java $(STAMP)
	$(PYTEST) tests/faults

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests bench scripts
	$(VENV)/bin/ruff format src tests bench scripts

docs: $(STAMP)
	$(PY) scripts/update_config_docs.py

bench: check-java $(STAMP)
	$(PY) -m bench.run

bench-smoke: check-java $(STAMP)
	$(PY) -m bench.run --smoke

bench-scale: check-java $(STAMP)
	$(PY) -m bench.run --only growth --scale

# Not in CI: it needs a vulnerability database (PyPI's JSON API or OSV) that the build machine cannot reach.
audit: $(STAMP)
	$(PY) -m pip install --quiet "pip-audit>=2.7"
	$(VENV)/bin/pip-audit --strict --progress-spinner off || { \
	  echo "pip-audit failed: either a vulnerable package (listed above) or no reachable advisory database"; \
	  exit 1; }

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
