# Operator interface of the local constellation. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON_VERSION ?= 3.11
UV := python3 -m uv
PY := .venv/bin/python
OPS := $(PY) -m constellation
STACK := $(OPS) stack

# Ports of the local stack; clients get matching connection settings unless set explicitly.
export KAFKA_PORT ?= 9092
export SCHEMA_REGISTRY_PORT ?= 8081
export MLFLOW_PORT ?= 5000
export KAFKA_BOOTSTRAP_SERVERS ?= 127.0.0.1:$(KAFKA_PORT)
export SCHEMA_REGISTRY_URL ?= http://127.0.0.1:$(SCHEMA_REGISTRY_PORT)/apis/ccompat/v7
export MLFLOW_TRACKING_URI ?= http://127.0.0.1:$(MLFLOW_PORT)

.PHONY: help bootstrap stack-up stack-down stack-status up down status run test lint typecheck \
        test-unit test-integration chaos soak provision check-schemas bench catalogue scenarios

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

bootstrap: ## install uv and the locked Python environment (.venv)
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --frozen --all-packages --python $(PYTHON_VERSION) --quiet

stack-up: bootstrap ## start Kafka (KRaft), schema registry and MLflow, then create topics and register schemas
	@$(STACK) up --infra

stack-down: bootstrap ## stop everything the stack runs (services included)
	@$(STACK) down

stack-status: bootstrap ## show every component, its pid, URL and health
	@$(STACK) status

up: bootstrap ## start the whole constellation in the background (stack, first champion, services)
	@$(STACK) up

down: bootstrap ## stop the whole constellation
	@$(STACK) down

status: bootstrap ## readiness of every service with its dependencies
	@$(STACK) status

run: bootstrap ## the product: start the constellation and run the live demo scenario (Ctrl+C stops everything)
	@$(OPS) run

provision: bootstrap ## create missing topics and register schemas (idempotent)
	@$(STACK) provision

check-schemas: bootstrap ## test every local .avsc against the registry's latest version
	@$(PY) -m mlops_platform.provision check

lint: bootstrap ## ruff lint and format check
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .

typecheck: bootstrap ## mypy over libs, services and the operator package
	@$(UV) run --frozen mypy libs/*/src services/*/src deploy/schema-registry/src scripts/src

test-unit: bootstrap ## unit tests only (no stack needed)
	@$(UV) run --frozen pytest tests/unit

test-integration: stack-up ## integration and end-to-end tests against the real local stack
	@$(UV) run --frozen pytest tests/integration tests/e2e

chaos: stack-up ## chaos tier: SIGKILLs, poison records, broker/registry/MLflow outages; prints counts per scenario
	@$(UV) run --frozen pytest tests/chaos

soak: bootstrap ## soak run on the whole constellation: mixed traffic and a kill loop (MINUTES=60 KILL_EVERY=60)
	@$(OPS) soak --minutes $(or $(MINUTES),60) --kill-every $(or $(KILL_EVERY),60)

test: lint typecheck stack-up ## everything CI runs: lint, type-check, start the stack, all tests
	@$(UV) run --frozen pytest tests

bench: up ## scoring benchmark: pipeline (a predictor per core) vs naive vs raw pipe vs compute floor, ingest over HTTP
	@$(OPS) bench

scenarios: bootstrap ## incident scenario suite on the constellation: detection, false alarms, actions, recovery (ARGS="--only sudden_drift --stable-events 100000")
	@$(OPS) scenarios $(ARGS)

catalogue: bootstrap ## rewrite the files generated from schemas/services.yaml (scrape configs, README table)
	@$(OPS) catalogue write
