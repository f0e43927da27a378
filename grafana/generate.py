"""Dashboards as code: `python -m grafana.generate` writes grafana/dashboards/*.json.

Plain dicts in Grafana's classic dashboard JSON model (schemaVersion 41, Grafana 11.6 as pinned in
docker-compose.yml). Every query goes through the `${datasource}` variable (no datasource ids), every
latency quantile and ratio is guarded so an idle stack shows "No data" instead of NaN, and panel ids and
positions come from the order below, so the output is deterministic. `--check` exits 1 when the committed
JSON is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 41
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["llmobs"]

# Selectors built from the template variables.
GPU = 'instance=~"$host", gpu=~"$gpu"'
HOST = 'instance=~"$host"'
ENGINE = 'instance=~"$host", target=~"$target", model=~"$model"'
ENGINE_KIND = 'instance=~"$host", engine_kind=~"$engine_kind", target=~"$target", model=~"$model"'
TARGET = 'instance=~"$host", target=~"$target"'
RUN = 'run_id=~"$run"'
VLLM = 'model_name=~"$model"'
RATE = "$__rate_interval"

TTFT_BOUNDS = ["0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0", "7.5", "10.0"]
TPOT_BOUNDS = ["0.025", "0.05", "0.075", "0.1", "0.15", "0.2", "0.3"]


# ---------------------------------------------------------------------------------------------- PromQL


def rate(metric: str, selector: str, by: str = "") -> str:
    group = f" by ({by}) " if by else ""
    return f"sum{group}(rate({metric}{{{selector}}}[{RATE}]))"


def ratio(numerator: str, denominator: str) -> str:
    """numerator / denominator, absent (not NaN) while the denominator is 0."""
    return f"{numerator}\n/\n({denominator} > 0)"


def quantile(q: float, histogram: str, selector: str, by: str = "") -> str:
    """Quantile of a classic histogram, only while observations arrive (no NaN at idle)."""
    keep = f"{by}, le" if by else "le"
    on = f"on ({by})" if by else "on ()"
    return (
        f"histogram_quantile({q}, {rate(histogram + '_bucket', selector, keep)})\n"
        f"and {on} {rate(histogram + '_count', selector, by)} > 0"
    )


def mean(histogram: str, selector: str, by: str = "") -> str:
    return ratio(rate(histogram + "_sum", selector, by), rate(histogram + "_count", selector, by))


def within(histogram: str, selector: str, bound: str, by: str = "") -> str:
    """Share of observations at or below a bucket boundary (SLO attainment)."""
    bucket_selector = f'{selector}, le="{bound}"'
    return ratio(rate(histogram + "_bucket", bucket_selector, by), rate(histogram + "_count", selector, by))


# ---------------------------------------------------------------------------------------------- panels


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False
    heatmap: bool = False


@dataclass
class Panel:
    kind: str
    title: str
    description: str
    queries: list[Query] = field(default_factory=list)
    unit: str = "short"
    width: int = 12
    height: int = 8
    options: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)


def q(expr: str, legend: str = "", **kwargs) -> Query:
    return Query(expr, legend, **kwargs)


def timeseries(title: str, description: str, queries: list[Query], unit: str = "short", **kw) -> Panel:
    return Panel("timeseries", title, description, queries, unit, **kw)


def stat(title: str, description: str, query: Query, unit: str = "short", **kw) -> Panel:
    kw.setdefault("width", 4)
    kw.setdefault("height", 4)
    return Panel("stat", title, description, [query], unit, **kw)


def table(title: str, description: str, query: Query, **kw) -> Panel:
    query = Query(query.expr, query.legend, instant=True, table=True)
    return Panel("table", title, description, [query], **kw)


def heatmap(title: str, description: str, histogram: str, selector: str, unit: str = "s", **kw) -> Panel:
    expr = f"sum by (le) (increase({histogram}_bucket{{{selector}}}[{RATE}]))"
    return Panel("heatmap", title, description, [Query(expr, "{{le}}", heatmap=True)], unit, **kw)


def timeline(title: str, description: str, queries: list[Query], **kw) -> Panel:
    return Panel("state-timeline", title, description, queries, **kw)


def row(title: str) -> Panel:
    return Panel("row", title, "", width=24, height=1)


def thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"thresholds": {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}}


GREEN = (None, "green")
RATIO_HIGH_BAD = thresholds(GREEN, (0.9, "orange"), (0.98, "red"))
ATTAINMENT = thresholds((None, "red"), (0.9, "orange"), (0.99, "green"))
ERRORS = thresholds(GREEN, (0.001, "orange"), (0.01, "red"))


def target_json(query: Query, ref: str) -> dict:
    target = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": query.expr,
        "instant": query.instant,
        "legendFormat": query.legend or "__auto",
        "range": not query.instant,
        "refId": ref,
    }
    if query.table:
        target["format"] = "table"
    if query.heatmap:
        target["format"] = "heatmap"
    return target


def panel_json(panel: Panel, panel_id: int, pos: dict) -> dict:
    if panel.kind == "row":
        return {
            "collapsed": False,
            "gridPos": pos,
            "id": panel_id,
            "panels": [],
            "title": panel.title,
            "type": "row",
        }
    defaults = {"unit": panel.unit, **thresholds(GREEN), **panel.defaults}
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            **defaults.get("custom", {}),
        }
    options = {
        "timeseries": {
            "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "stat": {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        },
        "table": {"cellHeight": "sm", "showHeader": True},
        "heatmap": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "tooltip": {"mode": "single", "yHistogram": True},
            "yAxis": {"axisPlacement": "left", "unit": panel.unit},
            "rowsFrame": {"layout": "auto"},
        },
        "state-timeline": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "mergeValues": True,
            "showValue": "never",
            "rowHeight": 0.9,
        },
    }[panel.kind]
    body = {
        "datasource": DATASOURCE,
        "description": panel.description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": pos,
        "id": panel_id,
        "options": {**options, **panel.options},
        "targets": [target_json(query, chr(ord("A") + i)) for i, query in enumerate(panel.queries)],
        "title": panel.title,
        "type": panel.kind,
    }
    if panel.kind == "table":
        body["transformations"] = [
            {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}}}
        ]
    return body


def layout(panels: Iterable[Panel]) -> list[dict]:
    """Pack panels left to right into Grafana's 24-column grid; rows start on a new line."""
    out, x, y, line_height = [], 0, 0, 0
    for panel_id, panel in enumerate(panels, start=1):
        if panel.kind == "row" or x + panel.width > 24:
            x, y, line_height = 0, y + line_height, 0
        out.append(panel_json(panel, panel_id, {"h": panel.height, "w": panel.width, "x": x, "y": y}))
        x += panel.width
        line_height = max(line_height, panel.height)
        if panel.kind == "row":
            x, y, line_height = 0, y + panel.height, 0
    return out


# ---------------------------------------------------------------------------------------------- variables


def datasource_variable() -> dict:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def query_variable(name: str, label: str, query: str) -> dict:
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "datasource": DATASOURCE,
        "definition": query,
        "hide": 0,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }


def custom_variable(name: str, label: str, values: list[str], default: str, description: str) -> dict:
    return {
        "current": {"selected": True, "text": default, "value": default},
        "description": description,
        "hide": 0,
        "includeAll": False,
        "label": label,
        "multi": False,
        "name": name,
        "options": [{"selected": v == default, "text": v, "value": v} for v in values],
        "query": ",".join(values),
        "type": "custom",
    }


HOST_VAR = query_variable("host", "Host (exporter)", "label_values(exporter_build_info, instance)")
GPU_VAR = query_variable("gpu", "GPU", 'label_values(gpu_info{instance=~"$host"}, gpu)')
# llm_target_* health series carry the target only; llm_target_info{target, engine_kind} names its kind.
KIND_VAR = query_variable(
    "engine_kind", "Engine kind", 'label_values(llm_target_info{instance=~"$host"}, engine_kind)'
)
TARGET_VAR = query_variable(
    "target", "Engine target", 'label_values(llm_target_info{instance=~"$host"}, target)'
)
KIND_TARGET_VAR = query_variable(
    "target",
    "Engine target",
    'label_values(llm_target_info{instance=~"$host", engine_kind=~"$engine_kind"}, target)',
)
MODEL_VAR = query_variable("model", "Model", 'label_values(llm_engine_info{target=~"$target"}, model)')
SCENARIO_VAR = query_variable("scenario", "Scenario", "label_values(loadgen_run_info, scenario)")
RUN_VAR = query_variable(
    "run", "Load-test run", 'label_values(loadgen_run_info{scenario=~"$scenario"}, run_id)'
)
TTFT_SLO_VAR = custom_variable(
    "ttft_slo",
    "TTFT SLO (s)",
    TTFT_BOUNDS,
    "1.0",
    "TTFT objective; a bucket boundary of vLLM's TTFT histogram.",
)
TPOT_SLO_VAR = custom_variable(
    "tpot_slo", "TPOT SLO (s)", TPOT_BOUNDS, "0.1", "Time per output token objective (0.1 s = 10 tokens/s)."
)

PHASE_ANNOTATION = {
    "datasource": DATASOURCE,
    "enable": True,
    "expr": 'loadgen_phase_info{run_id=~"$run"}',
    "iconColor": "purple",
    "name": "Load-test phases",
    "step": "5s",
    "tagKeys": "scenario,run_id",
    "textFormat": "",
    "titleFormat": "{{phase}}",
    "useValueForTime": False,
}
ALERT_ANNOTATION = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def dashboard(
    uid: str, title: str, description: str, variables: list[dict], panels: list[Panel], phases: bool = False
) -> dict:
    annotations = [ALERT_ANNOTATION] + ([PHASE_ANNOTATION] if phases else [])
    return {
        "annotations": {"list": annotations},
        "description": description,
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "tags": TAGS,
                "targetBlank": False,
                "title": "llmobs",
                "type": "dashboards",
            }
        ],
        "panels": layout(panels),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": [datasource_variable(), *variables]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# ---------------------------------------------------------------------------------------------- dashboards

SLOWDOWNS = (
    'reason=~"sw_thermal_slowdown|hw_thermal_slowdown|hw_slowdown|hw_power_brake_slowdown|sw_power_cap"'
)
CLIENT_TTFT = "loadgen_time_to_first_token_seconds"
SERVER_TTFT = "llm_time_to_first_token_seconds"
CLIENT_TPOT = "loadgen_time_per_output_token_seconds"
SERVER_TPOT = "llm_time_per_output_token_seconds"
FAILED = f'{RUN}, outcome!~"success|cancelled"'
COMPLETED = f'{RUN}, outcome!="cancelled"'


def overview() -> dict:
    panels = [
        row("At a glance"),
        stat(
            "Offered load",
            "Requests/s the load generator sends (loadgen_requests_sent_total).",
            q(rate("loadgen_requests_sent_total", RUN)),
            "reqps",
        ),
        stat(
            "Output tokens/s",
            "Tokens/s the engines generate (llm_generation_tokens_total).",
            q(rate("llm_generation_tokens_total", ENGINE)),
            "short",
        ),
        stat(
            "Client TTFT p95",
            "95th percentile time to first token seen by the load generator.",
            q(quantile(0.95, CLIENT_TTFT, RUN)),
            "s",
        ),
        stat(
            "TTFT SLO attainment",
            "Share of client requests with TTFT <= $ttft_slo s.",
            q(within(CLIENT_TTFT, RUN, "$ttft_slo")),
            "percentunit",
            defaults=ATTAINMENT,
        ),
        stat(
            "Client error ratio",
            "Failed / completed client requests (cancelled ones excluded).",
            q(
                ratio(
                    f"({rate('loadgen_requests_total', FAILED)} or vector(0))",
                    rate("loadgen_requests_total", COMPLETED),
                )
            ),
            "percentunit",
            defaults=ERRORS,
        ),
        stat(
            "Tokens per joule",
            "Generated tokens per joule of GPU energy on the selected hosts "
            "(recording rule instance:llm_generation_tokens_per_gpu_joule:ratio_rate5m).",
            q(f"avg(instance:llm_generation_tokens_per_gpu_joule:ratio_rate5m{{{HOST}}})"),
            "short",
        ),
        stat(
            "Engines up",
            "Engine targets the exporter currently reads successfully (llm_target_up).",
            q(f"sum(llm_target_up{{{TARGET}}})"),
            "short",
        ),
        stat(
            "Waiting requests",
            "Requests queued inside the engines (llm_requests_waiting).",
            q(f"sum(llm_requests_waiting{{{ENGINE}}})"),
            "short",
        ),
        stat(
            "KV cache (max)",
            "Fullest KV cache among the selected engines.",
            q(f"max(llm_kv_cache_usage_ratio{{{ENGINE}}})"),
            "percentunit",
            defaults=RATIO_HIGH_BAD,
        ),
        stat(
            "GPU utilization",
            "Mean NVML utilization of the selected GPUs.",
            q(f"avg(gpu_utilization_ratio{{{GPU}}})"),
            "percentunit",
        ),
        stat(
            "VRAM (max)",
            "Fullest GPU memory among the selected GPUs.",
            q(f"max(gpu_memory_used_bytes{{{GPU}}} / (gpu_memory_total_bytes{{{GPU}}} > 0))"),
            "percentunit",
            defaults=RATIO_HIGH_BAD,
        ),
        stat(
            "GPU power",
            "Total power draw of the selected GPUs.",
            q(f"sum(gpu_power_usage_watts{{{GPU}}})"),
            "watt",
        ),
        row("Load: offered vs achieved"),
        timeseries(
            "Requests per second",
            "Offered (client sends), scheduled target rate, client successes and "
            "requests the engines finished. A gap between offered and finished is queueing or failure.",
            [
                q(rate("loadgen_requests_sent_total", RUN), "offered (client sent)"),
                q(f"sum(loadgen_target_request_rate{{{RUN}}})", "scheduled rate"),
                q(rate("loadgen_requests_total", f'{RUN}, outcome="success"'), "client successes"),
                q(rate("llm_requests_finished_total", ENGINE), "engine finished"),
            ],
            "reqps",
        ),
        timeseries(
            "Concurrency and queues",
            "Client target concurrency and requests in flight next to what the "
            "engines run and queue; in flight minus running minus waiting is queueing outside the engine.",
            [
                q(f"sum(loadgen_target_concurrency{{{RUN}}})", "target concurrency"),
                q(f"sum(loadgen_requests_in_flight{{{RUN}}})", "client in flight"),
                q(f"sum(llm_requests_running{{{ENGINE}}})", "engine running"),
                q(f"sum(llm_requests_waiting{{{ENGINE}}})", "engine waiting"),
            ],
        ),
        row("Latency: client vs engine"),
        timeseries(
            "TTFT: client vs engine",
            "Time to first token, p50 and p95, measured by the load generator "
            "and by the engine (same vLLM bucket boundaries).",
            [
                q(quantile(0.5, CLIENT_TTFT, RUN), "client p50"),
                q(quantile(0.95, CLIENT_TTFT, RUN), "client p95"),
                q(quantile(0.5, SERVER_TTFT, ENGINE), "engine p50"),
                q(quantile(0.95, SERVER_TTFT, ENGINE), "engine p95"),
            ],
            "s",
        ),
        timeseries(
            "TTFT outside the engine",
            "Mean client TTFT minus mean engine TTFT: network, proxy, "
            "tokenization and client-side queueing. (Differences of means, not of quantiles.)",
            [
                q(
                    f"{mean(CLIENT_TTFT, RUN)}\n- on ()\n{mean(SERVER_TTFT, ENGINE)}",
                    "client mean - engine mean",
                ),
                q(mean("loadgen_dispatch_delay_seconds", RUN), "client dispatch delay (mean)"),
            ],
            "s",
        ),
        timeseries(
            "Time per output token: client vs engine",
            "Per-request mean time per output token, p50 and p95; 0.1 s = 10 tokens/s per user.",
            [
                q(quantile(0.5, CLIENT_TPOT, RUN), "client p50"),
                q(quantile(0.95, CLIENT_TPOT, RUN), "client p95"),
                q(quantile(0.5, SERVER_TPOT, ENGINE), "engine p50"),
                q(quantile(0.95, SERVER_TPOT, ENGINE), "engine p95"),
            ],
            "s",
        ),
        timeseries(
            "End-to-end latency: client vs engine",
            "Request latency p95 on both sides.",
            [
                q(quantile(0.95, "loadgen_e2e_request_latency_seconds", RUN), "client p95"),
                q(quantile(0.95, "llm_e2e_request_latency_seconds", ENGINE), "engine p95"),
                q(quantile(0.95, "llm_request_queue_time_seconds", ENGINE), "engine queue time p95"),
            ],
            "s",
        ),
        row("Engine saturation"),
        timeseries(
            "KV cache usage",
            "Share of the KV cache in use per engine rank; near 1 the engine stops "
            "admitting and starts preempting.",
            [
                q(f"llm_kv_cache_usage_ratio{{{ENGINE}}}", "{{target}} {{model}} {{engine_index}}"),
            ],
            "percentunit",
            width=8,
            defaults={"min": 0, "max": 1},
        ),
        timeseries(
            "Preemptions",
            "Requests preempted per second (KV cache exhausted mid-generation).",
            [
                q(rate("llm_preemptions_total", ENGINE, "target, model"), "{{target}} {{model}}"),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "Client errors by outcome",
            "Failed client requests per second by outcome.",
            [
                q(rate("loadgen_requests_total", FAILED, "outcome"), "{{outcome}}"),
            ],
            "reqps",
            width=8,
        ),
        row("GPU"),
        timeseries(
            "GPU utilization",
            "NVML utilization per GPU.",
            [
                q(f"gpu_utilization_ratio{{{GPU}}}", "{{instance}} GPU {{gpu}}"),
            ],
            "percentunit",
            width=8,
            defaults={"min": 0, "max": 1},
        ),
        timeseries(
            "GPU memory used",
            "VRAM in use per GPU, and what the engines' processes hold.",
            [
                q(f"gpu_memory_used_bytes{{{GPU}}}", "{{instance}} GPU {{gpu}} used"),
                q(f"gpu_memory_total_bytes{{{GPU}}}", "{{instance}} GPU {{gpu}} total"),
                q(
                    f"sum by (target, gpu) (llm_engine_gpu_memory_used_bytes{{{TARGET}}})",
                    "{{target}} on GPU {{gpu}}",
                ),
            ],
            "bytes",
            width=8,
        ),
        timeseries(
            "GPU power",
            "Power draw and enforced limit per GPU.",
            [
                q(f"gpu_power_usage_watts{{{GPU}}}", "{{instance}} GPU {{gpu}}"),
                q(f"gpu_power_limit_watts{{{GPU}}}", "{{instance}} GPU {{gpu}} limit"),
            ],
            "watt",
            width=8,
        ),
        timeseries(
            "Tokens per joule",
            "Generated tokens per joule of GPU energy, per engine and per GPU "
            "(recording rules in prometheus/rules/gpu.rules.yml; 5-minute windows).",
            [
                q(
                    f"instance_target:llm_generation_tokens_per_gpu_joule:ratio_rate5m{{{TARGET}}}",
                    "engine {{target}}",
                ),
                q(
                    f"instance_gpu:llm_generation_tokens_per_gpu_joule:ratio_rate5m{{{GPU}}}",
                    "{{instance}} GPU {{gpu}}",
                ),
            ],
            "short",
            width=16,
        ),
        timeseries(
            "GPU temperature",
            "Core temperature per GPU; thermal slowdowns start in the high 80s °C.",
            [q(f"gpu_temperature_celsius{{{GPU}}}", "{{instance}} GPU {{gpu}}")],
            "celsius",
            width=8,
        ),
        timeline(
            "Clock events",
            "Thermal and power clock events while active: every token takes longer while one is on.",
            [
                q(
                    f"max by (instance, gpu, reason) (gpu_clock_event_reason_active{{{GPU}, {SLOWDOWNS}}})",
                    "GPU {{gpu}} {{reason}}",
                )
            ],
            width=24,
        ),
    ]
    variables = [HOST_VAR, GPU_VAR, TARGET_VAR, MODEL_VAR, SCENARIO_VAR, RUN_VAR, TTFT_SLO_VAR]
    return dashboard(
        "llmobs-overview",
        "LLM serving: overview",
        "Client latency, engine saturation and GPU telemetry on one time axis.",
        variables,
        panels,
        phases=True,
    )


def gpu_detail() -> dict:
    G = GPU
    legend = "{{instance}} GPU {{gpu}}"
    panels = [
        row("GPUs"),
        table("GPU inventory", "gpu_info: one row per GPU.", q(f"gpu_info{{{G}}}"), width=24, height=5),
        stat(
            "NVML available", "1 when the exporter initialised NVML.", q(f"min(gpu_nvml_available{{{HOST}}})")
        ),
        stat("GPUs answering", "GPUs whose NVML reads succeed (gpu_up).", q(f"sum(gpu_up{{{G}}})")),
        stat(
            "Mean utilization",
            "Mean GPU utilization.",
            q(f"avg(gpu_utilization_ratio{{{G}}})"),
            "percentunit",
        ),
        stat("Power", "Total power draw.", q(f"sum(gpu_power_usage_watts{{{G}}})"), "watt"),
        stat(
            "Hottest GPU",
            "Highest core temperature.",
            q(f"max(gpu_temperature_celsius{{{G}}})"),
            "celsius",
            defaults=thresholds(GREEN, (80, "orange"), (90, "red")),
        ),
        stat(
            "Fullest VRAM",
            "Highest memory use ratio.",
            q(f"max(gpu_memory_used_bytes{{{G}}} / (gpu_memory_total_bytes{{{G}}} > 0))"),
            "percentunit",
            defaults=RATIO_HIGH_BAD,
        ),
        row("Utilization"),
        timeseries(
            "Utilization",
            "GPU and memory-controller utilization (NVML: share of time a kernel ran).",
            [
                q(f"gpu_utilization_ratio{{{G}}}", f"{legend} gpu"),
                q(f"gpu_memory_bandwidth_utilization_ratio{{{G}}}", f"{legend} memory"),
            ],
            "percentunit",
            defaults={"min": 0, "max": 1},
        ),
        timeseries(
            "GPM activity (Hopper+)",
            "SM active, SM occupancy, tensor-core active and DRAM bandwidth "
            "from GPM: how busy the GPU really is, unlike NVML utilization.",
            [
                q(f"gpu_sm_active_ratio{{{G}}}", f"{legend} SM active"),
                q(f"gpu_sm_occupancy_ratio{{{G}}}", f"{legend} SM occupancy"),
                q(f"gpu_tensor_active_ratio{{{G}}}", f"{legend} tensor active"),
                q(f"gpu_dram_bandwidth_utilization_ratio{{{G}}}", f"{legend} DRAM bandwidth"),
            ],
            "percentunit",
            defaults={"min": 0, "max": 1},
        ),
        row("Memory"),
        timeseries(
            "VRAM",
            "Used, reserved and total GPU memory.",
            [
                q(f"gpu_memory_used_bytes{{{G}}}", f"{legend} used"),
                q(f"gpu_memory_reserved_bytes{{{G}}}", f"{legend} reserved"),
                q(f"gpu_memory_total_bytes{{{G}}}", f"{legend} total"),
            ],
            "bytes",
        ),
        timeseries(
            "VRAM by process",
            "Memory of each compute process (capped list).",
            [
                q(f"gpu_process_memory_used_bytes{{{G}}}", "GPU {{gpu}} {{process}} ({{pid}})"),
            ],
            "bytes",
        ),
        timeseries(
            "SM utilization by process",
            "Share of SM time per process (sampled).",
            [
                q(f"gpu_process_sm_utilization_ratio{{{G}}}", "GPU {{gpu}} {{process}} ({{pid}})"),
            ],
            "percentunit",
        ),
        timeseries(
            "VRAM by engine",
            "Memory the engines' process trees hold on each GPU.",
            [
                q(f"llm_engine_gpu_memory_used_bytes{{{G}}}", "{{target}} on GPU {{gpu}}"),
            ],
            "bytes",
        ),
        row("Power and thermal"),
        timeseries(
            "Power",
            "Draw, enforced limit, and mean power from the energy counter (5-minute rate).",
            [
                q(f"gpu_power_usage_watts{{{G}}}", f"{legend} draw"),
                q(f"gpu_power_limit_watts{{{G}}}", f"{legend} limit"),
                q(f"instance_gpu:gpu_energy_joules:rate5m{{{G}}}", f"{legend} mean (energy counter)"),
            ],
            "watt",
        ),
        timeseries(
            "Temperature",
            "GPU core and memory (HBM) temperature.",
            [
                q(f"gpu_temperature_celsius{{{G}}}", f"{legend} core"),
                q(f"gpu_memory_temperature_celsius{{{G}}}", f"{legend} memory"),
            ],
            "celsius",
        ),
        timeseries(
            "Clocks",
            "Current clocks against their maximum.",
            [
                q(f"gpu_clock_hertz{{{G}}}", f"{legend} {{{{clock}}}}"),
                q(f'gpu_clock_max_hertz{{{G}, clock="sm"}}', f"{legend} sm max"),
            ],
            "hertz",
        ),
        timeseries(
            "Fans and performance state",
            "Fan speed (where the board has fans) and P-state (0 = fastest).",
            [
                q(f"gpu_fan_speed_ratio{{{G}}} * 100", f"{legend} fan {{{{fan}}}} %"),
                q(f"gpu_performance_state{{{G}}}", f"{legend} P-state"),
            ],
            "short",
        ),
        timeline(
            "Clock events",
            "Why the clocks are held back right now (NVML clock event reasons).",
            [
                q(
                    f"max by (instance, gpu, reason) (gpu_clock_event_reason_active{{{G}}})",
                    "GPU {{gpu}} {{reason}}",
                ),
            ],
            width=24,
            height=8,
        ),
        timeseries(
            "Time in clock events",
            "Share of time spent in each clock event (from NVML's counters).",
            [
                q(
                    rate("gpu_clock_event_duration_seconds_total", G, "instance, gpu, reason"),
                    "GPU {{gpu}} {{reason}}",
                ),
            ],
            "percentunit",
            width=24,
        ),
        row("Interconnect"),
        timeseries(
            "PCIe throughput",
            "Host to GPU and back (sampled over 20 ms windows).",
            [
                q(f"gpu_pcie_transmit_bytes_per_second{{{G}}}", f"{legend} tx"),
                q(f"gpu_pcie_receive_bytes_per_second{{{G}}}", f"{legend} rx"),
            ],
            "Bps",
            width=8,
        ),
        timeseries(
            "PCIe link and replays",
            "Link generation and width (a degraded link shows here) and replays.",
            [
                q(f"gpu_pcie_link_generation{{{G}}}", f"{legend} gen"),
                q(f"gpu_pcie_link_width{{{G}}}", f"{legend} width"),
                q(rate("gpu_pcie_replays_total", G, "instance, gpu"), f"{legend} replays/s"),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "NVLink",
            "NVLink throughput and errors per link.",
            [
                q(rate("gpu_nvlink_transmit_bytes_total", G, "instance, gpu"), f"{legend} tx"),
                q(rate("gpu_nvlink_receive_bytes_total", G, "instance, gpu"), f"{legend} rx"),
                q(
                    rate("gpu_nvlink_errors_total", G, "instance, gpu, type"),
                    f"{legend} {{{{type}}}} errors/s",
                ),
            ],
            "Bps",
            width=8,
        ),
        row("Reliability"),
        timeseries(
            "Xid errors",
            "Driver-reported Xid events in each interval.",
            [
                q(
                    f"sum by (instance, gpu, xid) (increase(gpu_xid_errors_total{{{G}}}[{RATE}]))",
                    "GPU {{gpu}} Xid {{xid}}",
                ),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "ECC errors",
            "New ECC errors per interval (volatile counters).",
            [
                q(
                    f"sum by (instance, gpu, severity) "
                    f'(increase(gpu_ecc_errors_total{{{G}, scope="volatile"}}[{RATE}]))',
                    "GPU {{gpu}} {{severity}}",
                ),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "Row remapping and recovery",
            "Remapped rows, pending/failed remaps (0/1) and the NVML recovery "
            "action (0 none, 1 reset, 2 reboot, 3 drain P2P, 4 drain and reset).",
            [
                q(f"gpu_remapped_rows_total{{{G}}}", "GPU {{gpu}} remapped {{cause}}"),
                q(f"gpu_remapped_rows_pending{{{G}}}", "GPU {{gpu}} pending"),
                q(f"gpu_remapped_rows_failed{{{G}}}", "GPU {{gpu}} failed"),
                q(f"gpu_recovery_action{{{G}}}", "GPU {{gpu}} recovery action"),
            ],
            "short",
            width=8,
        ),
        row("Exporter and host"),
        timeseries(
            "Sampler age",
            "Seconds since the background sampler last read each slow NVML source.",
            [
                q(f"time() - gpu_sample_timestamp_seconds{{{G}}}", "GPU {{gpu}} {{source}}"),
            ],
            "s",
            width=8,
        ),
        timeseries(
            "NVML errors",
            "Labelled NVML call failures per second.",
            [
                q(rate("gpu_nvml_errors_total", G, "gpu, call, error"), "GPU {{gpu}} {{call}}: {{error}}"),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "Collectors",
            "Duration of each exporter collector and its errors per second.",
            [
                q(f"exporter_collector_duration_seconds{{{HOST}}}", "{{collector}} duration"),
                q(
                    rate("exporter_collector_errors_total", HOST, "collector, kind"),
                    "{{collector}} {{kind}} errors/s",
                ),
            ],
            "s",
            width=8,
        ),
        timeseries(
            "Host CPU and load",
            "CPU utilization of all cores and the load average per core.",
            [
                q(f"host_cpu_utilization_ratio{{{HOST}}}", "{{instance}} CPU"),
                q(
                    f"host_load_average{{{HOST}}} / on (instance) group_left host_cpu_cores{{{HOST}}}",
                    "{{instance}} load {{period}} per core",
                ),
            ],
            "percentunit",
            width=8,
        ),
        timeseries(
            "Host memory",
            "Used and available memory, and swap in use.",
            [
                q(f"host_memory_used_bytes{{{HOST}}}", "{{instance}} used"),
                q(f"host_memory_available_bytes{{{HOST}}}", "{{instance}} available"),
                q(f"host_memory_total_bytes{{{HOST}}}", "{{instance}} total"),
                q(f"host_swap_used_bytes{{{HOST}}}", "{{instance}} swap used"),
                q(f"host_swap_total_bytes{{{HOST}}}", "{{instance}} swap total"),
            ],
            "bytes",
            width=8,
        ),
        timeseries(
            "Host network and disk",
            "Bytes per second by interface and device, and network errors.",
            [
                q(rate("host_network_receive_bytes_total", HOST, "instance, interface"), "{{interface}} rx"),
                q(rate("host_network_transmit_bytes_total", HOST, "instance, interface"), "{{interface}} tx"),
                q(rate("host_disk_read_bytes_total", HOST, "instance, device"), "{{device}} read"),
                q(rate("host_disk_written_bytes_total", HOST, "instance, device"), "{{device}} written"),
                q(
                    rate("host_network_receive_errors_total", HOST, "instance, interface"),
                    "{{interface}} rx errors",
                ),
                q(
                    rate("host_network_transmit_errors_total", HOST, "instance, interface"),
                    "{{interface}} tx errors",
                ),
            ],
            "Bps",
            width=8,
        ),
        timeseries(
            "Per-core CPU",
            "Utilization of each logical core.",
            [
                q(f"host_cpu_core_utilization_ratio{{{HOST}}}", "{{instance}} cpu {{cpu}}"),
            ],
            "percentunit",
            width=24,
        ),
    ]
    return dashboard(
        "llmobs-gpu",
        "LLM serving: GPU detail",
        "Everything NVML says about the GPUs, and the host around them.",
        [HOST_VAR, GPU_VAR],
        panels,
    )


def engine_detail() -> dict:
    S = ENGINE_KIND
    by = "target, model"
    lg = "{{target}} {{model}}"
    latency = [
        ("Time to first token", "llm_time_to_first_token_seconds"),
        ("Inter-token latency", "llm_inter_token_latency_seconds"),
        ("Time per output token (per request)", "llm_time_per_output_token_seconds"),
        ("End-to-end latency", "llm_e2e_request_latency_seconds"),
        ("Queue time", "llm_request_queue_time_seconds"),
    ]
    latency_panels = [
        timeseries(
            title,
            f"p50/p95/p99 and mean of {metric} (the engine's own buckets).",
            [
                q(quantile(0.5, metric, S, by), f"{lg} p50"),
                q(quantile(0.95, metric, S, by), f"{lg} p95"),
                q(quantile(0.99, metric, S, by), f"{lg} p99"),
                q(mean(metric, S, by), f"{lg} mean"),
            ],
            "s",
            width=8,
        )
        for title, metric in latency
    ]
    panels = [
        row("Targets"),
        table(
            "Engines",
            "llm_engine_info: one row per target and model.",
            q(f"llm_engine_info{{{S}}}"),
            width=12,
            height=6,
        ),
        timeseries(
            "Scrape health",
            "1 while the exporter reads the target; scrape duration; errors by kind.",
            [
                q(
                    f'llm_target_up{{{HOST}, target=~"$target"}}\n* on (instance, target) group_left '
                    f'llm_target_info{{{HOST}, engine_kind=~"$engine_kind"}}',
                    "{{target}} up",
                ),
                q(
                    f'llm_target_scrape_duration_seconds{{{HOST}, target=~"$target"}}',
                    "{{target}} scrape seconds",
                ),
                q(
                    rate("llm_target_errors_total", f'{HOST}, target=~"$target"', "target, kind"),
                    "{{target}} {{kind}} errors/s",
                ),
                q(
                    f'time() - llm_target_last_success_timestamp_seconds{{{HOST}, target=~"$target"}}',
                    "{{target}} seconds since success",
                ),
            ],
            "short",
            height=6,
        ),
        row("Load and throughput"),
        timeseries(
            "Running and waiting",
            "Requests executing and queued in the engine.",
            [
                q(f"sum by ({by}) (llm_requests_running{{{S}}})", f"{lg} running"),
                q(f"sum by ({by}) (llm_requests_waiting{{{S}}})", f"{lg} waiting"),
            ],
            width=8,
        ),
        timeseries(
            "Finished requests by reason",
            "Requests finished per second by common reason.",
            [
                q(rate("llm_requests_finished_total", S, f"{by}, reason"), f"{lg} {{{{reason}}}}"),
            ],
            "reqps",
            width=8,
        ),
        timeseries(
            "Tokens per second",
            "Prompt tokens (cached ones included), cached prompt tokens and generated tokens per second.",
            [
                q(rate("llm_prompt_tokens_total", S, by), f"{lg} prompt"),
                q(rate("llm_prompt_tokens_cached_total", S, by), f"{lg} prompt cached"),
                q(rate("llm_generation_tokens_total", S, by), f"{lg} generated"),
            ],
            "short",
            width=8,
        ),
        row("Latency (engine side)"),
        *latency_panels,
        heatmap(
            "TTFT distribution",
            "Where first-token latencies fall, per interval.",
            "llm_time_to_first_token_seconds",
            S,
            width=8,
        ),
        row("KV cache and preemption"),
        timeseries(
            "KV cache usage",
            "Share of KV cache in use per engine rank.",
            [
                q(f"llm_kv_cache_usage_ratio{{{S}}}", f"{lg} {{{{engine_index}}}}"),
            ],
            "percentunit",
            width=8,
            defaults={"min": 0, "max": 1},
        ),
        timeseries(
            "KV cache capacity",
            "KV cache size in tokens (where the engine reports it).",
            [
                q(f"llm_kv_cache_capacity_tokens{{{S}}}", f"{lg} {{{{engine_index}}}}"),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "Preemptions and prefix-cache hits",
            "Preemptions per second, and the share of prompt tokens found in the prefix cache.",
            [
                q(rate("llm_preemptions_total", S, by), f"{lg} preemptions/s"),
                q(
                    ratio(
                        rate("llm_prefix_cache_hits_total", S, by),
                        rate("llm_prefix_cache_queries_total", S, by),
                    ),
                    f"{lg} prefix hit ratio",
                ),
            ],
            "short",
            width=8,
        ),
        row("GPUs and processes"),
        table(
            "Engine GPUs",
            "GPUs each engine's process tree occupies (llm_engine_gpu_info).",
            q(f'llm_engine_gpu_info{{{HOST}, target=~"$target"}}'),
            width=8,
        ),
        timeseries(
            "Engine VRAM",
            "GPU memory the engine's processes hold, per GPU.",
            [
                q(f'llm_engine_gpu_memory_used_bytes{{{HOST}, target=~"$target"}}', "{{target}} GPU {{gpu}}"),
            ],
            "bytes",
            width=8,
        ),
        timeseries(
            "Engine processes",
            "CPU time per second and resident memory of recognised engine processes (process tree summed).",
            [
                q(
                    rate(
                        "host_engine_process_cpu_seconds_total",
                        f'{HOST}, engine_kind=~"$engine_kind"',
                        "engine_kind, pid, mode",
                    ),
                    "{{engine_kind}} {{pid}} cpu {{mode}}",
                ),
                q(
                    f'host_engine_process_resident_memory_bytes{{{HOST}, engine_kind=~"$engine_kind"}} / 1e9',
                    "{{engine_kind}} {{pid}} RSS GB",
                ),
                q(
                    f'host_engine_process_threads{{{HOST}, engine_kind=~"$engine_kind"}}',
                    "{{engine_kind}} {{pid}} threads",
                ),
            ],
            "short",
            width=8,
        ),
        table(
            "Engine processes (identity)",
            "host_engine_process_info: recognised engine processes.",
            q(f'host_engine_process_info{{{HOST}, engine_kind=~"$engine_kind"}}'),
            width=24,
            height=5,
        ),
        row("Loaded models (Ollama)"),
        timeseries(
            "Model memory",
            "Memory and VRAM a loaded model occupies.",
            [
                q(f"llm_model_memory_bytes{{{S}}}", f"{lg} memory"),
                q(f"llm_model_vram_bytes{{{S}}}", f"{lg} VRAM"),
            ],
            "bytes",
        ),
        timeseries(
            "Keep-alive and context",
            "Seconds until the model is unloaded, and its context length.",
            [
                q(f"llm_model_expiry_timestamp_seconds{{{S}}} - time()", f"{lg} seconds to unload"),
                q(f"llm_model_context_length_tokens{{{S}}}", f"{lg} context tokens"),
            ],
            "short",
        ),
        row("vLLM native metrics (engines scraped directly)"),
        timeseries(
            "Waiting by reason",
            "vLLM's waiting queue split by capacity and deferred.",
            [
                q(
                    f"sum by (model_name, reason) (vllm:num_requests_waiting_by_reason{{{VLLM}}})",
                    "{{model_name}} {{reason}}",
                ),
                q(f"sum by (model_name) (vllm:num_requests_running{{{VLLM}}})", "{{model_name}} running"),
                q(f"sum by (model_name) (vllm:num_requests_waiting{{{VLLM}}})", "{{model_name}} waiting"),
            ],
            width=8,
        ),
        timeseries(
            "Phase means",
            "Mean time per request in queue, prefill and decode.",
            [
                q(mean("vllm:request_queue_time_seconds", VLLM, "model_name"), "{{model_name}} queue"),
                q(mean("vllm:request_prefill_time_seconds", VLLM, "model_name"), "{{model_name}} prefill"),
                q(mean("vllm:request_decode_time_seconds", VLLM, "model_name"), "{{model_name}} decode"),
            ],
            "s",
            width=8,
        ),
        timeseries(
            "Tokens per engine step",
            "Mean tokens scheduled per engine step (batch size proxy).",
            [
                q(mean("vllm:iteration_tokens_total", VLLM, "model_name"), "{{model_name}}"),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "vLLM latency",
            "TTFT, inter-token latency and per-request TPOT from vLLM directly (p95).",
            [
                q(
                    quantile(0.95, "vllm:time_to_first_token_seconds", VLLM, "model_name"),
                    "{{model_name}} TTFT",
                ),
                q(
                    quantile(0.95, "vllm:inter_token_latency_seconds", VLLM, "model_name"),
                    "{{model_name}} ITL",
                ),
                q(
                    quantile(0.95, "vllm:request_time_per_output_token_seconds", VLLM, "model_name"),
                    "{{model_name}} TPOT",
                ),
                q(
                    quantile(0.95, "vllm:e2e_request_latency_seconds", VLLM, "model_name"),
                    "{{model_name}} E2E",
                ),
            ],
            "s",
            width=8,
        ),
        timeseries(
            "vLLM tokens and finishes",
            "Prompt tokens by source, generated tokens, finished requests by "
            "reason, preemptions and prefix-cache hits per second.",
            [
                q(
                    rate("vllm:prompt_tokens_by_source_total", VLLM, "model_name, source"),
                    "{{model_name}} prompt {{source}}",
                ),
                q(rate("vllm:prompt_tokens_total", VLLM, "model_name"), "{{model_name}} prompt"),
                q(rate("vllm:generation_tokens_total", VLLM, "model_name"), "{{model_name}} generated"),
                q(
                    rate("vllm:request_success_total", VLLM, "model_name, finished_reason"),
                    "{{model_name}} finished {{finished_reason}}",
                ),
                q(rate("vllm:num_preemptions_total", VLLM, "model_name"), "{{model_name}} preemptions"),
                q(
                    ratio(
                        rate("vllm:prefix_cache_hits_total", VLLM, "model_name"),
                        rate("vllm:prefix_cache_queries_total", VLLM, "model_name"),
                    ),
                    "{{model_name}} prefix hit ratio",
                ),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "vLLM KV cache",
            "vLLM's KV cache usage per engine rank.",
            [
                q(f"vllm:kv_cache_usage_perc{{{VLLM}}}", "{{model_name}} {{engine}}"),
            ],
            "percentunit",
            width=8,
            defaults={"min": 0, "max": 1},
        ),
        heatmap(
            "Prompt lengths",
            "Prompt tokens per finished request.",
            "vllm:request_prompt_tokens",
            VLLM,
            unit="short",
            width=12,
        ),
        heatmap(
            "Output lengths",
            "Generated tokens per finished request.",
            "vllm:request_generation_tokens",
            VLLM,
            unit="short",
            width=12,
        ),
        table(
            "vLLM cache config",
            "vllm:cache_config_info labels: block size, GPU blocks, dtype, prefix caching.",
            q("vllm:cache_config_info"),
            width=24,
            height=5,
        ),
    ]
    return dashboard(
        "llmobs-engine",
        "LLM serving: engine detail",
        "Normalized engine metrics for every engine kind, plus vLLM's own metrics when scraped directly.",
        [HOST_VAR, KIND_VAR, KIND_TARGET_VAR, MODEL_VAR],
        panels,
    )


def load_tests() -> dict:
    R = RUN
    by = "run_id"
    lg = "{{run_id}}"
    histograms = [
        ("Time to first token", CLIENT_TTFT),
        ("Time to first output token", "loadgen_time_to_first_output_token_seconds"),
        ("Time per output token (per request)", CLIENT_TPOT),
        ("Inter-token latency", "loadgen_inter_token_latency_seconds"),
        ("End-to-end latency", "loadgen_e2e_request_latency_seconds"),
        ("Dispatch delay", "loadgen_dispatch_delay_seconds"),
    ]
    latency_panels = [
        timeseries(
            title,
            f"p50/p90/p95/p99 and mean of {metric} (client side).",
            [
                q(quantile(0.5, metric, R, by), f"{lg} p50"),
                q(quantile(0.9, metric, R, by), f"{lg} p90"),
                q(quantile(0.95, metric, R, by), f"{lg} p95"),
                q(quantile(0.99, metric, R, by), f"{lg} p99"),
                q(mean(metric, R, by), f"{lg} mean"),
            ],
            "s",
            width=8,
        )
        for title, metric in histograms
    ]
    ttft_ok = f'{R}, le="$ttft_slo"'
    tpot_ok = f'{R}, le="$tpot_slo"'
    both_ok = f'{R}, ttft_le="$ttft_slo", tpot_le="$tpot_slo"'
    panels = [
        row("Runs"),
        table(
            "Runs",
            "loadgen_run_info: model, endpoint kind and load shape of each run.",
            q(f'loadgen_run_info{{scenario=~"$scenario", {R}}}'),
            width=12,
            height=5,
        ),
        table(
            "Current phase",
            "loadgen_phase_info: the phase each run is in now.",
            q(f"loadgen_phase_info{{{R}}}"),
            width=12,
            height=5,
        ),
        stat(
            "Requests sent",
            "Requests sent over the time range.",
            q(f"sum(increase(loadgen_requests_sent_total{{{R}}}[$__range]))"),
            width=6,
        ),
        stat(
            "Success ratio",
            "Successful / completed requests over the time range.",
            q(
                ratio(
                    f'sum(increase(loadgen_requests_total{{{R}, outcome="success"}}[$__range]))',
                    f'sum(increase(loadgen_requests_total{{{R}, outcome!="cancelled"}}[$__range]))',
                )
            ),
            "percentunit",
            width=6,
            defaults=thresholds((None, "red"), (0.99, "orange"), (0.999, "green")),
        ),
        stat(
            "TTFT SLO attainment",
            "Share of requests with TTFT <= $ttft_slo s over the time range.",
            q(
                ratio(
                    f"sum(increase({CLIENT_TTFT}_bucket{{{ttft_ok}}}[$__range]))",
                    f"sum(increase({CLIENT_TTFT}_count{{{R}}}[$__range]))",
                )
            ),
            "percentunit",
            width=6,
            defaults=ATTAINMENT,
        ),
        stat(
            "TPOT SLO attainment",
            "Share of requests with TPOT <= $tpot_slo s over the time range.",
            q(
                ratio(
                    f"sum(increase({CLIENT_TPOT}_bucket{{{tpot_ok}}}[$__range]))",
                    f"sum(increase({CLIENT_TPOT}_count{{{R}}}[$__range]))",
                )
            ),
            "percentunit",
            width=6,
            defaults=ATTAINMENT,
        ),
        timeline(
            "Phases",
            "The phase each run was in (steps of a ramp or sweep).",
            [
                q(f"max by (run_id, phase) (loadgen_phase_info{{{R}}})", "{{run_id}} {{phase}}"),
            ],
            width=24,
            height=5,
        ),
        row("Load"),
        timeseries(
            "Offered and achieved",
            "Requests sent per second, the schedule's target rate, and completions by outcome.",
            [
                q(rate("loadgen_requests_sent_total", R, by), f"{lg} sent"),
                q(f"sum by ({by}) (loadgen_target_request_rate{{{R}}})", f"{lg} target rate"),
                q(rate("loadgen_requests_total", R, f"{by}, outcome"), f"{lg} {{{{outcome}}}}"),
            ],
            "reqps",
        ),
        timeseries(
            "Concurrency",
            "Target concurrency of the schedule and requests in flight.",
            [
                q(f"sum by ({by}) (loadgen_target_concurrency{{{R}}})", f"{lg} target"),
                q(f"sum by ({by}) (loadgen_requests_in_flight{{{R}}})", f"{lg} in flight"),
            ],
        ),
        row("Latency percentiles (client side)"),
        *latency_panels,
        heatmap("TTFT distribution", "Client TTFT per interval.", CLIENT_TTFT, R, width=12),
        heatmap("TPOT distribution", "Client time per output token per interval.", CLIENT_TPOT, R, width=12),
        row("Errors, throughput and goodput"),
        timeseries(
            "Error ratio",
            "Failed / completed requests (cancelled excluded) per interval.",
            [
                q(
                    ratio(
                        f"({rate('loadgen_requests_total', FAILED, by)}\n"
                        f"or {rate('loadgen_requests_total', COMPLETED, by)} * 0)",
                        rate("loadgen_requests_total", COMPLETED, by),
                    ),
                    lg,
                ),
            ],
            "percentunit",
            width=8,
        ),
        timeseries(
            "Tokens per second",
            "Prompt, output and reasoning tokens per second.",
            [
                q(rate("loadgen_prompt_tokens_total", R, by), f"{lg} prompt"),
                q(rate("loadgen_output_tokens_total", R, by), f"{lg} output"),
                q(rate("loadgen_reasoning_tokens_total", R, by), f"{lg} reasoning"),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "Goodput",
            "Successful requests per second meeting both the TTFT and the TPOT objective "
            "(loadgen_requests_slo_met_total, counted per request by the load generator), beside those "
            "meeting each objective alone and all successes. One-token answers meet any TPOT objective; "
            "requests that were not streamed have no TTFT and meet none.",
            [
                q(rate("loadgen_requests_slo_met_total", both_ok, by), f"{lg} both objectives"),
                q(rate(f"{CLIENT_TTFT}_bucket", ttft_ok, by), f"{lg} TTFT <= $ttft_slo s"),
                q(rate(f"{CLIENT_TPOT}_bucket", tpot_ok, by), f"{lg} TPOT <= $tpot_slo s"),
                q(rate("loadgen_requests_total", f'{R}, outcome="success"', by), f"{lg} all successes"),
            ],
            "reqps",
            width=8,
        ),
    ]
    return dashboard(
        "llmobs-load-tests",
        "LLM serving: load-test runs",
        "Client-side view of load-generator runs: phases, percentiles, errors and goodput.",
        [SCENARIO_VAR, RUN_VAR, TTFT_SLO_VAR, TPOT_SLO_VAR],
        panels,
        phases=True,
    )


DASHBOARDS = {
    "overview.json": overview,
    "gpu.json": gpu_detail,
    "engine.json": engine_detail,
    "load-tests.json": load_tests,
}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print(f"stale dashboards (run `make dashboards`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
