"""Engine detail: normalized llm_* metrics for every engine kind, and vLLM's own names."""

from __future__ import annotations

from grafana import variables as var
from grafana.catalog.names import either_vllm_name
from grafana.model import Dashboard, heatmap, q, row, table, timeseries
from grafana.promql import ENGINE_KIND, HOST, VLLM, increase_buckets, mean, quantile, rate, ratio

# Engine processes: of the selected kinds and targets. A tree serving two targets carries both
# (`a,b`), and one on no configured target's port carries none, which "All" (.*) keeps.
PROCESS = f'{HOST}, engine_kind=~"$engine_kind", target=~"(.*,)?($target)(,.*)?"'


def engine_detail() -> Dashboard:
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
            increase_buckets("llm_time_to_first_token_seconds", S),
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
            min=0,
            max=1,
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
            "CPU time per second and resident memory of recognised engine processes (process tree summed), "
            "under the target whose port the tree listens on (blank: no configured target on this host's "
            "addresses), so two engines of one kind on a host are told apart.",
            [
                q(
                    rate(
                        "host_engine_process_cpu_seconds_total",
                        f"{PROCESS}",
                        "target, engine_kind, pid, mode",
                    ),
                    "{{target}} {{engine_kind}} {{pid}} cpu {{mode}}",
                ),
                q(
                    f"host_engine_process_resident_memory_bytes{{{PROCESS}}} / 1e9",
                    "{{target}} {{engine_kind}} {{pid}} RSS GB",
                ),
                q(
                    f"host_engine_process_threads{{{PROCESS}}}",
                    "{{target}} {{engine_kind}} {{pid}} threads",
                ),
            ],
            "short",
            width=8,
        ),
        table(
            "Engine processes (identity)",
            "host_engine_process_info: recognised engine processes and the target each serves.",
            q(f"host_engine_process_info{{{PROCESS}}}"),
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
            "TTFT, inter-token latency and per-request TPOT from vLLM directly (p95). ITL reads "
            "vllm:inter_token_latency_seconds, or vllm:time_per_output_token_seconds on vLLM before 0.11 "
            "(the same per-gap histogram); per-request TPOT exists since 0.11. vLLM observes one gap per "
            "engine step, so with speculative decoding its ITL is per event, not per token.",
            [
                q(
                    quantile(0.95, "vllm:time_to_first_token_seconds", VLLM, "model_name"),
                    "{{model_name}} TTFT",
                ),
                q(
                    either_vllm_name(
                        lambda name: quantile(
                            0.95, name("vllm:inter_token_latency_seconds"), VLLM, "model_name"
                        )
                    ),
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
                    either_vllm_name(
                        lambda name: ratio(
                            rate(name("vllm:prefix_cache_hits_total"), VLLM, "model_name"),
                            rate(name("vllm:prefix_cache_queries_total"), VLLM, "model_name"),
                        )
                    ),
                    "{{model_name}} prefix hit ratio",
                ),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "vLLM KV cache",
            "vLLM's KV cache usage per engine rank (vllm:kv_cache_usage_perc, or "
            "vllm:gpu_cache_usage_perc before the rename).",
            [
                q(
                    either_vllm_name(lambda name: f"{name('vllm:kv_cache_usage_perc')}{{{VLLM}}}"),
                    "{{model_name}} {{engine}}",
                ),
            ],
            "percentunit",
            width=8,
            min=0,
            max=1,
        ),
        heatmap(
            "Prompt lengths",
            "Prompt tokens per finished request.",
            increase_buckets("vllm:request_prompt_tokens", VLLM),
            unit="short",
            width=12,
        ),
        heatmap(
            "Output lengths",
            "Generated tokens per finished request.",
            increase_buckets("vllm:request_generation_tokens", VLLM),
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
    return Dashboard(
        "engine",
        "llmobs-engine",
        "LLM serving: engine detail",
        "Normalized engine metrics for every engine kind, plus vLLM's own metrics when scraped directly.",
        (var.HOST, var.ENGINE_KIND, var.KIND_TARGET, var.MODEL),
        tuple(panels),
    )
