# Treasure Hunt Engine. Targets are the interface; CI runs `make test`.
SHELL := /bin/bash
PYTHON_SYS ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The faults that touch no Redis (a service killed, the leaderboard down, a
# Postgres restart, a replica lost) run once, in the standalone pass: on clusters they would
# test the same code again and cost two minutes.
# $(call flag,VAR,option): --option when VAR is 1/yes/true, --no-option when
# it is set to anything else, nothing when unset (`make up` keeps the running
# stack's shape: tools/stack.py).
flag = $(if $(filter 1 yes true,$($(1))),--$(2),$(if $($(1)),--no-$(2)))
CLUSTER_DESELECT := not kill- and not leaderboard-down and not postgres_restart and not replica

.DEFAULT_GOAL := help
.PHONY: help deps venv protos check-protos lint test test-unit up down status demo bench check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the pinned dependencies

deps: venv ## venv plus the system servers (redis-server, postgresql) when missing
	@scripts/ensure_system_deps.sh

protos: venv ## generate Python stubs and .pyi for every proto into gen/
	@PYTHON=$(PY) scripts/gen_protos.sh gen

check-protos: venv ## fail when gen/ drifted from protos/
	$(PY) -m pytest -q tests/unit/test_generated_stubs.py

lint: venv ## buf lint (STANDARD), ruff, and mypy on libs/, services/ and tools/
	$(VENV)/bin/buf lint protos
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: deps lint ## the whole suite on standalone Redis, then integration + e2e on Redis Clusters
	@echo "== make test: the whole suite, each service on a standalone Redis =="
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	@echo "== make test: integration + e2e, each service on a 3-master Redis Cluster (TEST_REDIS=cluster) =="
	TEST_REDIS=cluster $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests/integration tests/e2e \
		-k "$(CLUSTER_DESELECT)"

test-unit: venv ## unit tests only (no servers)
	$(PY) -m pytest -q tests/unit

up: deps ## start Postgres, four Redis servers (CLUSTER=1: Redis Clusters) and the services (REPLICAS=2: two of each; STANDBY=1: a Postgres read replica)
	$(PY) -m tools.stack up $(call flag,CLUSTER,cluster) $(call flag,STANDBY,standby) $(if $(REPLICAS),--replicas $(REPLICAS))

down: venv ## stop exactly what `make up` started
	$(PY) -m tools.stack down

status: venv ## what the local stack runs (pids)
	@$(PY) -m tools.stack status

demo: up ## the local stack plus a simulated festival in Lisbon (DEMO_ARGS="--players 200 --duration 60")
	$(PY) -m tools.demo $(DEMO_ARGS)

bench: deps ## the load benchmark: SubmitScan open/closed loop, echo floor, service reads -> bench/results/
	$(PY) -m bench.run $(BENCH_ARGS)

check: venv ## the invariant checker against the local stack (HUNT=lisbon-festival)
	HUNTCTL_TOKEN=local-admin-token $(PY) -m tools.huntctl verify $(or $(HUNT),lisbon-festival)

clean: down ## stop the stack and remove run files
	rm -rf .run
