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

# The PyTorch build: cpu (PyTorch's CPU wheels, about 200 MB), cuda (PyPI's Linux
# wheel, with NVIDIA's CUDA libraries: several GB) or auto (cuda where nvidia-smi
# lists a GPU, cpu otherwise). On macOS both take the one macOS wheel, which runs on
# the CPU and on Apple's GPU (MPS). Switching builds: make clean install TORCH=cuda.
TORCH           ?= auto
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_VERSION   := $(shell sed -n 's/^torch==//p' $(CONSTRAINTS))
TORCH_BUILD     := $(if $(filter auto,$(TORCH)),$(if $(shell nvidia-smi -L 2>/dev/null),cuda,cpu),$(TORCH))
TORCH_PIP_ARGS  := $(if $(filter cpu,$(TORCH_BUILD)),--extra-index-url $(TORCH_CPU_INDEX))

BIN   := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

# Debian packages the project needs (installed by `make system-deps` only when
# missing; needs root or sudo): the headless browser of the UI tests (driven by
# Playwright at /usr/bin/chromium) and a font for its pages.
DEBIAN_PACKAGES ?= chromium fonts-dejavu-core

.PHONY: help install test test-long app docs clean system-deps python-check torch-check

help:
	@echo "make app          install into $(VENV) and serve the dashboard at http://localhost:$(PORT)/dashboard"
	@echo "make test         install into $(VENV) and run the test suite (PYTEST_ARGS='...' to pass options)"
	@echo "make test-long    run the long tier: the defaults' accuracy fits, the notebooks, the benchmarks (~20 min)"
	@echo "make install      only create $(VENV) and install the package with its app and test extras"
	@echo "                  (TORCH=cpu|cuda|auto picks the PyTorch build; default auto: $(TORCH_BUILD) here)"
	@echo "make docs         write the API reference (HTML, from the docstrings) to docs/api/"
	@echo "make system-deps  install missing Debian packages ($(DEBIAN_PACKAGES))"
	@echo "make clean        remove $(VENV), build outputs and caches"

# Checks that $(PYTHON) can create virtual environments.
python-check:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python >= 3.11" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "error: $(PYTHON) is older than 3.11 (numpy 2.4 and pandas 3 need 3.11)" >&2; exit 1; }
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

torch-check:
	@case "$(TORCH)" in auto|cpu|cuda) ;; \
	  *) echo "error: TORCH=$(TORCH); use TORCH=cpu, TORCH=cuda or TORCH=auto" >&2; exit 1;; esac

# torch first, alone and without its own dependencies, from the chosen build's index
# (skipped when the venv has the pinned release already); then the package, which
# brings torch's dependencies from PyPI.
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python torch-check
	@$(BIN)/python -c 'import sys, torch; sys.exit(torch.__version__.split("+")[0] != "$(TORCH_VERSION)")' 2>/dev/null \
	  || { echo "Installing torch $(TORCH_VERSION), $(TORCH_BUILD) build"; \
	       $(BIN)/python -m pip install --no-deps "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS); }
	$(BIN)/python -m pip install -e ".[$(EXTRAS)]" -c $(CONSTRAINTS)
	@touch $@

install: $(STAMP)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The long tier, kept out of `make test`: the defaults' accuracy against reference
# posteriors, the notebooks executed top to bottom, the benchmarks end to end.
test-long: $(STAMP) system-deps
	$(BIN)/python -m pytest -m long $(PYTEST_ARGS)

app: $(STAMP)
	$(BIN)/pavi-viz serve --port $(PORT)

docs: $(STAMP)
	$(BIN)/python docs/build_api.py -o docs/api

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis tests/artifacts docs/api
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
