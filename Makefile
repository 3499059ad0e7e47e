# covidflow: `make demo` and `make test` do all the set-up on a fresh clone (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COVIDFLOW := $(BIN)/covidflow
PYTEST := $(BIN)/pytest

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

venv: $(STAMP)  ## Create the virtualenv and install the locked requirements.

lock: ## Rewrite constraints.txt from the current virtualenv (after changing requirements.txt).
	$(BIN)/pip freeze --exclude-editable | grep -v '^covidflow' > constraints.txt

prereqs:  ## Check the system prerequisites (JDK 17, Maven, setpriv, setfacl); installs the missing ones as root on Debian.
	bash scripts/prereqs.sh

up: venv prereqs  ## Fetch what is missing and start the local stack (idempotent).
	$(COVIDFLOW) stack up

status: venv  ## One line per service.
	$(COVIDFLOW) stack status

down: venv  ## Stop the local stack; data is kept.
	$(COVIDFLOW) stack down

reset: venv  ## Stop the stack and wipe its data (asks first).
	$(COVIDFLOW) stack reset

demo: up  ## Bring the stack up and run the main job on the bundled sample data.
	$(BIN)/python -m covidflow.demo

audit:  ## pip-audit over constraints.txt (exit 1: vulnerable or partial; 3: no vulnerability service reachable).
	bash scripts/audit.sh

lint: venv  ## ruff, as CI runs it.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

compose:  ## Install the pinned Docker Compose binary (validates docker-compose.yaml without an engine).
	bash scripts/install-compose.sh

unit: venv compose  ## Fast tests: pure functions and DAG integrity, no services.
	$(PYTEST) -m "not integration and not e2e" tests

browser:  ## Install Debian's Chromium for the dashboard's browser tests.
	bash scripts/install-browser.sh

integration: up browser  ## Tests on the real local stack (started if needed).
	$(PYTEST) -m "integration or e2e" tests

test: venv  ## Everything: lint, unit and DAG tests, then the stack and the integration tests.
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) integration

bench: venv  ## Benchmarks (see bench/README.md).
	$(BIN)/python bench/read_throughput.py

.PHONY: help prereqs venv lock compose browser up status down reset demo audit lint unit integration test bench
