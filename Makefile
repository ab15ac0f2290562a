# coalmine — thin front door.  Every target delegates to a script or a Python module;
# `make help` lists them.  Image targets live in scripts/image.mk.
# Python runs from the checkout's virtual environment .venv/, which the deps steps create
# (scripts/install-deps.sh): Debian's own python3 is externally managed and has no pip.
SHELL := /bin/bash
PYTHON ?= $(CURDIR)/.venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.DEFAULT_GOAL := help

.PHONY: help deps test lint demo bench console sign

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

deps: ## install what the demo and the tests need (apt-get as root, pip into .venv/)
	bash scripts/install-deps.sh test

test: deps ## run linters and the whole test suite
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

lint: deps ## ruff, mypy and shellcheck only
	$(PYTHON) -m pytest -q tests/test_lint.py

demo: deps ## console + unbound + device runtime on loopback, one real SSH login attempt
	$(PYTHON) -m scripts.demo

bench: deps ## print benchmark figures (console ingest, alert latency, payload per query)
	$(PYTHON) -m bench

console: deps ## run the companion console CLI: make console ARGS="--help"
	$(PYTHON) -m console $(ARGS)

sign: ## the offline signer (key ceremony, releases, canaries): make sign ARGS="--help"
	bash scripts/install-deps.sh sign
	$(PYTHON) -m signing $(ARGS)

-include scripts/image.mk
