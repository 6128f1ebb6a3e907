# edifd developer targets. On a fresh machine use ./run <target> (it installs make first).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: help setup test test-fast lab lab-up lab-down bench soak lint clean deb

help:
	@echo "make lab        run the QEMU lab scenario end to end (root; builds/caches the guest image)"
	@echo "make test       all tests: unit, interop (strongSwan, tshark) and the QEMU lab"
	@echo "make test-fast  everything but the lab"
	@echo "make lab-up     keep VM-H running with an edifd LUN exported over iSCSI on 127.0.0.1:3260"
	@echo "make lab-down   stop what lab-up started"
	@echo "make bench      performance figures (bench/*.py; final line of each is JSON)"
	@echo "make soak       the channel's fault soak: 10,000 messages, a fault every 100 (bench/soak.py)"
	@echo "make deb        the Debian packages (dpkg-buildpackage, lintian) into build/deb (docs/packaging.md)"
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

soak: setup
	$(PY) bench/soak.py --messages 10000 --fault-every 100

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis lab/out

# Debian packages (docs/packaging.md): a copy of the tree as it is (tracked and untracked files that
# git does not ignore) is built in $(DEB_DIR)/edif-VERSION with dpkg-buildpackage, so the source tree
# stays clean; the .debs, the source package and the .changes land in $(DEB_DIR); lintian must
# report no error. Debian's own tools and interpreter only: PATH is the system's, whatever the caller's.
DEB_DIR ?= build/deb
DEB_ENV := env PATH=/usr/sbin:/usr/bin:/sbin:/bin
deb:
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)
	v=$$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])') && \
	  mkdir $(DEB_DIR)/edif-$$v && \
	  git ls-files -z --cached --others --exclude-standard | \
	    tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C $(DEB_DIR)/edif-$$v && \
	  cd $(DEB_DIR)/edif-$$v && $(DEB_ENV) dpkg-buildpackage --build=full -us -uc
	$(DEB_ENV) lintian --fail-on error --tag-display-limit 0 $(DEB_DIR)/*.changes
