# edifd developer targets. On a fresh machine use ./run <target> (it installs make first).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: help setup test test-fast lab lab-up lab-down bench lint clean

help:
	@echo "make lab        run the QEMU lab scenario end to end (root; builds/caches the guest image)"
	@echo "make test       all tests: unit, interop (strongSwan, tshark) and the QEMU lab"
	@echo "make test-fast  everything but the lab"
	@echo "make lab-up     keep VM-H running with an edifd LUN exported over iSCSI on 127.0.0.1:3260"
	@echo "make lab-down   stop what lab-up started"
	@echo "make bench      performance figures (bench/*.py; final line of each is JSON)"
	@echo "make lint       ruff and the import contracts (docs/architecture.md)"
	@echo "make setup      apt packages (as root) and the venv $(VENV)"

setup:
	@./scripts/setup.sh

test: setup
	$(VENV)/bin/lint-imports
	$(PYTEST) tests

test-fast: setup
	$(VENV)/bin/lint-imports
	$(PYTEST) -m "not lab" tests

lab: setup
	$(PY) -m lab scenario

lab-up: setup
	$(PY) -m lab up

lab-down:
	$(PY) -m lab down

bench: setup
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis lab/out
