# Set-up and everyday commands. On a fresh clone with only python3 installed:
#     make app    # installs into .venv, then serves http://localhost:$(PORT)/dashboard
#     make test   # installs into .venv, then runs the test suite
# Installation is stamped: pip only reruns when pyproject.toml or the
# constraints file changes (or after `make clean`).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        ?= .venv
PORT        ?= 5006
PYTEST_ARGS ?=
CONSTRAINTS := requirements/constraints.txt
EXTRAS      := app,test

BIN   := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

# Debian packages the project needs (installed by `make system-deps` only when
# missing; needs root or sudo): the headless browser of the UI tests (driven by
# Playwright at /usr/bin/chromium) and a font for its pages.
DEBIAN_PACKAGES ?= chromium fonts-dejavu-core

.PHONY: help install test app clean system-deps python-check

help:
	@echo "make app          install into $(VENV) and serve the dashboard at http://localhost:$(PORT)/dashboard"
	@echo "make test         install into $(VENV) and run the test suite (PYTEST_ARGS='...' to pass options)"
	@echo "make install      only create $(VENV) and install the package with its app and test extras"
	@echo "make system-deps  install missing Debian packages ($(DEBIAN_PACKAGES))"
	@echo "make clean        remove $(VENV), build outputs and caches"

# Checks that $(PYTHON) can create virtual environments.
python-check:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python >= 3.10" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
	  || { echo "error: $(PYTHON) is older than 3.10" >&2; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null \
	  || { echo "error: '$(PYTHON) -m venv' is unavailable; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }

# Installs any of DEBIAN_PACKAGES that dpkg does not report as installed (the
# tests need them; the app does not).
system-deps:
	@missing=""; \
	for pkg in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  echo "Installing Debian packages:$$missing"; \
	  $$sudo apt-get update; \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y --no-install-recommends $$missing; \
	fi

$(BIN)/python: | python-check
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install -e ".[$(EXTRAS)]" -c $(CONSTRAINTS)
	@touch $@

install: $(STAMP)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

app: $(STAMP)
	$(BIN)/pavi-viz serve --port $(PORT)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis tests/artifacts
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
