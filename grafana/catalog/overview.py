"""Overview: client latency, engine saturation and GPU telemetry on one time axis."""

from __future__ import annotations

from grafana import variables as var
from grafana.catalog.names import (
    CLIENT_TPOT,
    CLIENT_TTFO,
    CLIENT_TTFT,
    COMPLETED,
    FAILED,
    SERVER_TPOT,
    SERVER_TTFT,
    SLOWDOWNS,
)
from grafana.model import ATTAINMENT, ERRORS, RATIO_HIGH_BAD, Dashboard, q, row, stat, timeline, timeseries
from grafana.promql import ENGINE, GPU, HOST, RUN, TARGET, mean, quantile, rate, ratio, within


def overview() -> Dashboard:
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
            thresholds=ATTAINMENT,
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
            thresholds=ERRORS,
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
            thresholds=RATIO_HIGH_BAD,
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
            thresholds=RATIO_HIGH_BAD,
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
            "and by the engine (same vLLM bucket boundaries). Client TTFT counts the first token of any "
            "kind, reasoning included; client TTFO the first answer (content) token: with a reasoning "
            "model the gap between them is the thinking time.",
            [
                q(quantile(0.5, CLIENT_TTFT, RUN), "client p50"),
                q(quantile(0.95, CLIENT_TTFT, RUN), "client p95"),
                q(quantile(0.5, CLIENT_TTFO, RUN), "client TTFO p50"),
                q(quantile(0.95, CLIENT_TTFO, RUN), "client TTFO p95"),
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
            min=0,
            max=1,
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
            min=0,
            max=1,
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
    variables = (var.HOST, var.GPU, var.TARGET, var.MODEL, var.SCENARIO, var.RUN, var.TTFT_SLO)
    return Dashboard(
        "overview",
        "llmobs-overview",
        "LLM serving: overview",
        "Client latency, engine saturation and GPU telemetry on one time axis.",
        variables,
        tuple(panels),
        (var.PHASES,),
    )
