# Two commands matter: `make demo` (end to end) and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
SRC_DIRS := python_backend launcher client frontend export calibration benchmarks tests model_repository

.PHONY: setup models demo test lint serve bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@set -euo pipefail; \
	if ! ldconfig -p | grep -q 'libb64.so.0d'; then \
	  echo "setup: installing Debian's libb64-0d (perf_analyzer needs it)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libb64-0d >/dev/null; \
	fi; \
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (the Triton stub embeds libpython3.11), found " + sys.version' ; \
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	$(PY) -m pip install -q --upgrade pip; \
	$(PY) -m pip install -q -c constraints.txt -e '.[export,frontend,bench,calibrate,test]'; \
	touch $(STAMP)

models: setup
	$(VENV)/bin/router-build-models

demo: models
	$(VENV)/bin/router-demo

test: models
	$(VENV)/bin/ruff check $(SRC_DIRS)
	$(VENV)/bin/ruff format --check $(SRC_DIRS)
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

serve: models
	$(VENV)/bin/router-serve

lint: setup
	$(VENV)/bin/ruff check $(SRC_DIRS)
	$(VENV)/bin/ruff format --check $(SRC_DIRS)

clean:
	rm -rf $(VENV) artifacts
