# Two commands matter: `make demo` and `make test`. Both bootstrap their own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit venv llama-server prometheus-package dashboards clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py

# The real components the tests use: Debian's Prometheus and Alertmanager (promtool, amtool), installed
# when we are root, as CI is, and llama.cpp's llama-server built from the llama-cpp-python sdist
# (cached under .cache/).
prometheus-package:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v amtool >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	      --no-install-recommends prometheus prometheus-alertmanager) >/dev/null \
	    || echo "prometheus/amtool not installed and not root: tests that need them skip (fail under CI=true)"; }

llama-server:
	@bash tools/build-llama-server.sh >/dev/null || echo "llama-server build failed: tests that need it skip (fail under CI=true)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

dashboards: $(STAMP)
	$(BIN)/python -m grafana.generate

test: $(STAMP) prometheus-package llama-server lint
	$(BIN)/python -m pytest -q -ra

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not real"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
