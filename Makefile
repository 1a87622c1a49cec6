# Two commands matter: `make demo` (end to end) and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# `make demo PORTS=9000` / `make serve PORTS=9000`: HTTP 9000, gRPC 9001, metrics 9002 (default 8000-8002; the demo
# then moves to free ports when those are taken)
PORTS ?=
PORT_ARGS = $(if $(PORTS),--http-port $(PORTS) --grpc-port $(shell expr $(PORTS) + 1) --metrics-port $(shell expr $(PORTS) + 2))
SRC_DIRS := python_backend launcher client frontend export calibration benchmarks evaluation deploy tests model_repository

, := ,
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
	[ -x $(PY) ] || { echo "setup: creating $(VENV) (Python 3.11)"; $(PYTHON) -m venv $(VENV); }; \
	$(PY) -m pip install -q --upgrade pip; \
	echo "setup: installing the pinned packages into $(VENV) (Triton server wheel, torch CPU, onnxruntime, ...; a few minutes the first time, quiet while pip works)"; \
	$(PY) -m pip install -q -c constraints.txt -e '.[export,frontend,bench,calibrate,test]'; \
	if [ ! -x $(VENV)/bin/promtool ] && ! command -v promtool >/dev/null; then \
	  echo "setup: extracting promtool from Debian's prometheus package into $(VENV)/bin (the alert-rule tests run it)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  tmp=$$(mktemp -d); \
	  if (cd $$tmp && { apt-get download -qq prometheus 2>/dev/null || { $$SUDO apt-get update -qq && apt-get download -qq prometheus; }; }) \
	    && dpkg-deb --fsys-tarfile $$tmp/prometheus_*.deb | tar -xO ./usr/bin/promtool > $(VENV)/bin/promtool; then \
	    chmod +x $(VENV)/bin/promtool; \
	  else rm -f $(VENV)/bin/promtool; echo "setup: promtool not available (the promtool rule tests will skip)"; fi; \
	  rm -rf $$tmp; \
	fi; \
	echo "setup: done"; \
	touch $(STAMP)

models: setup
	@echo "models: building what is missing in model_repository/ (intent classifier, tiers; skipped when up to date)"
	$(VENV)/bin/router-build-models

demo: models
	@echo "demo: starting the local Triton server, routing the demo prompts over gRPC, then stopping it"
	$(VENV)/bin/router-demo $(PORT_ARGS)

test: models lint
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

serve: models
	@echo "serve: the local Triton server until Ctrl-C ($(if $(PORTS),HTTP $(PORTS)$(,) gRPC $(shell expr $(PORTS) + 1)$(,) metrics $(shell expr $(PORTS) + 2),HTTP 8000$(,) gRPC 8001$(,) metrics 8002); PORTS=9000 moves them)"
	$(VENV)/bin/router-serve $(PORT_ARGS)

lint: setup
	$(VENV)/bin/ruff check $(SRC_DIRS)
	$(VENV)/bin/ruff format --check $(SRC_DIRS)

clean:
	rm -rf $(VENV) artifacts
