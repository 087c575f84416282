# The two commands a new user needs: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
GENERATED := syntera envoy/syntera.pb third_party web/src/gen

.PHONY: run test bootstrap bootstrap-run generate check-generated lint lock buf-check typecheck pytest bench clean

run: bootstrap-run
	$(PY) -m devrun

test: bootstrap lint check-generated pytest

bootstrap:
	@scripts/bootstrap.sh dev

bootstrap-run:
	@scripts/bootstrap.sh run

generate: bootstrap
	$(PY) scripts/generate.py

# CI regenerates and fails if the committed output differs in any way.
check-generated: generate
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
	  echo "generated code is out of date; run 'make generate' and commit:"; \
	  git status --porcelain -- $(GENERATED); git --no-pager diff --stat -- $(GENERATED); exit 1; \
	fi
	@echo "generated code is up to date"

# The lock files (requirements/) must be made from the dependencies now in pyproject.toml.
lint: bootstrap buf-check typecheck
	$(PY) scripts/lock.py --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd web && npm run --silent lint

# After changing the dependencies in pyproject.toml: relock, then commit requirements/. Not after
# bootstrap, which refuses a stale lock; uv comes with the dev install.
lock:
	$(PY) scripts/lock.py

typecheck: bootstrap
	$(VENV)/bin/mypy
	cd web && npm run --silent typecheck

buf-check: bootstrap
	$(BUF) lint
	$(BUF) format --diff --exit-code
	@scripts/buf-breaking.sh

# Per-test timeouts come from pytest-timeout; this outer limit (SIGINT, so pytest still prints its
# summary) keeps a wedged run well inside CI's 90 minutes.
pytest: bootstrap
	timeout -s INT -k 60 3600 $(PY) -m pytest $(PYTEST_ARGS)

bench: bootstrap
	$(PY) -m bench

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
