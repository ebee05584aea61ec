# The two commands the README gives: `make dev` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.12 2>/dev/null || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: dev test install migrate migrate-status build-check bench clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 12), f"Python 3.12 needed, got {sys.version}"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

install: $(STAMP) node_modules/.package-lock.json

## Run the whole app locally with the real Vercel CLI on embedded Postgres and Redis.
dev: install
	$(PY) -m devtools.dev

## Install what is missing, then run the whole test suite.
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

migrate: $(STAMP)
	$(PY) -m ops migrate

migrate-status: $(STAMP)
	$(PY) -m ops migrate status

build-check: install
	$(PY) -m pytest tests/test_vercel_build.py

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .vercel/output
