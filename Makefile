# The two commands the README gives: `make dev` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.12 2>/dev/null || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: dev dev-python test lint install lock migrate migrate-status build-check bench clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 12), f"Python 3.12 needed, got {sys.version}"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# Keyed on the lock's content, not mtimes: a fresh checkout must not re-run `npm ci` (which
# empties node_modules first) when the pinned CLI is already installed.
NODE_STAMP := node_modules/.ascendos-$(shell sha1sum package-lock.json | cut -c1-12)

$(NODE_STAMP):
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

install: $(STAMP) $(NODE_STAMP)

## Run the whole app locally with the real Vercel CLI on embedded Postgres and Redis.
dev: install
	$(PY) -m devtools.dev

## The same stack with the functions served by Python in one process (no Node, no builds).
dev-python: $(STAMP)
	$(PY) -m devtools.dev --server python

## Install what is missing, lint and type-check, then run the whole test suite.
test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

## ruff (ruff.toml) and mypy (mypy.ini) over the whole tree.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## requirements.txt, fully pinned, from requirements.in and the versions in .venv.
lock: $(STAMP)
	$(PY) -m devtools.lock

migrate: $(STAMP)
	$(PY) -m ops migrate

migrate-status: $(STAMP)
	$(PY) -m ops migrate status

build-check: install
	$(PY) -m pytest tests/test_vercel.py

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .vercel/output
