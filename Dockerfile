# One image for the three llmobs processes; the compose file and the Helm chart pick one with `command`:
#   llmobs-exporter (GPU host), llmobs-loadgen run|serve (anywhere), llmobs-simulator (demo, no GPU).
# grafana/ is the dashboards as code: the load generator's reports and `llmobs snapshot` draw its panels.
# Their HTML pages need the html extra (plotly, tens of MB), left out to keep the exporter's image small:
# `llmobs-loadgen run` writes its JSON report here and says so if asked for HTML; add ',html' for pages.
# The kubernetes extra adds gRPC for the kubelet's pod-resources API (GPU -> pod attribution).
FROM python:3.11.13-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter exporter
COPY loadgen loadgen
COPY simulator simulator
COPY grafana grafana
RUN pip install '.[kubernetes]' && useradd --system --uid 10001 --no-create-home llmobs && rm -rf /src

WORKDIR /
USER 10001
# exporter 9840, load generator 9841, simulator 8000
EXPOSE 9840 9841 8000
CMD ["llmobs-exporter"]
