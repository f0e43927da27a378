"""/metrics with vLLM 0.33's exact family names, types, labels, help texts and buckets.

The simulator imitates vLLM, so it emits `vllm:` names with colons, `_created` series (vLLM with one
API server runs prometheus_client in single-process mode) and vllm:cache_config_info with every
CacheConfig field of 0.33 as a label. Source of truth: vllm/v1/metrics/loggers.py of the 0.33.0
wheel. Families built from one snapshot of the engine per scrape (a custom collector).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.samples import Sample

from simulator.engine import Engine
from simulator.stats import ADMISSION_REASONS, FINISH_REASONS, Histogram

LABELS = ("model_name", "engine")
ENGINE_INDEX = "0"

COUNTER_HELP = {
    "vllm:prefix_cache_queries": "Prefix cache queries, in terms of number of queried tokens.",
    "vllm:prefix_cache_hits": "Prefix cache hits, in terms of number of cached tokens.",
    "vllm:external_prefix_cache_queries": (
        "External prefix cache queries from KV connector cross-instance cache sharing, "
        "in terms of number of queried tokens."
    ),
    "vllm:external_prefix_cache_hits": (
        "External prefix cache hits from KV connector cross-instance cache sharing, "
        "in terms of number of cached tokens."
    ),
    "vllm:mm_cache_queries": "Multi-modal cache queries, in terms of number of queried items.",
    "vllm:mm_cache_hits": "Multi-modal cache hits, in terms of number of cached items.",
    "vllm:num_preemptions": "Cumulative number of preemption from the engine.",
    "vllm:prompt_tokens": "Number of prefill tokens processed.",
    "vllm:prompt_tokens_cached": "Number of cached prompt tokens (local + external).",
    "vllm:generation_tokens": "Number of generation tokens processed.",
}
MFU_COUNTERS = {
    "vllm:estimated_flops_per_gpu": (
        "Estimated number of floating point operations per GPU (for Model Flops Utilization calculations)."
    ),
    "vllm:estimated_read_bytes_per_gpu": (
        "Estimated number of bytes read from memory per GPU (for Model Flops Utilization calculations)."
    ),
    "vllm:estimated_write_bytes_per_gpu": (
        "Estimated number of bytes written to memory per GPU (for Model Flops Utilization calculations)."
    ),
}
PROMPT_TOKENS_BY_SOURCE_HELP = "Number of prompt tokens by source."
PROMPT_TOKENS_CACHED_BY_SOURCE_HELP = (
    "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host "
    "(offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or external_unspecified. "
    "Counted at admission; sums to vllm:prefix_cache_hits + vllm:external_prefix_cache_hits."
)
CACHE_HIT_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
HISTOGRAM_HELP = {
    "request_prompt_tokens": "Number of prefill tokens processed.",
    "request_generation_tokens": "Number of generation tokens processed.",
    "iteration_tokens_total": "Histogram of number of tokens per engine_step.",
    "request_max_num_generation_tokens": "Histogram of maximum number of requested generation tokens.",
    "request_params_n": "Histogram of the n request parameter.",
    "request_params_max_tokens": "Histogram of the max_tokens request parameter.",
    "time_to_first_token_seconds": "Histogram of time to first token in seconds.",
    "inter_token_latency_seconds": "Histogram of inter-token latency in seconds.",
    "request_time_per_output_token_seconds": "Histogram of time_per_output_token_seconds per request.",
    "e2e_request_latency_seconds": "Histogram of e2e request latency in seconds.",
    "request_queue_time_seconds": "Histogram of time spent in WAITING phase for request.",
    "request_inference_time_seconds": "Histogram of time spent in RUNNING phase for request.",
    "request_prefill_time_seconds": "Histogram of time spent in PREFILL phase for request.",
    "request_decode_time_seconds": "Histogram of time spent in DECODE phase for request.",
    "request_num_preemptions": "Histogram of the number of times a request was preempted.",
    "request_prefill_kv_computed_tokens": (
        "Histogram of new KV tokens computed during prefill (excluding cached tokens)."
    ),
}
WAITING_BY_REASON_HELP = (
    "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; "
    "'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). "
    "Sum of all reasons equals vllm:num_requests_waiting."
)
SLEEP_STATE_HELP = (
    "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
    "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2."
)


class VllmCollector:
    """The vllm:* families of one engine (engine index "0")."""

    def __init__(self, engine: Engine, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name
        self.labels = [model_name, ENGINE_INDEX]

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        stats = engine.stats
        created = stats.created
        # Registered by vLLM 0.33 in every deployment; they only move with --enable-mfu-metrics.
        for name, documentation in MFU_COUNTERS.items():
            yield self._counter(name, documentation, 0, created)
        yield from self._scheduler_gauges()
        counters = {
            "vllm:prefix_cache_queries": stats.prefix_cache_queries,
            "vllm:prefix_cache_hits": stats.prefix_cache_hits,
            "vllm:external_prefix_cache_queries": 0,
            "vllm:external_prefix_cache_hits": 0,
            "vllm:mm_cache_queries": 0,
            "vllm:mm_cache_hits": 0,
            "vllm:num_preemptions": stats.preemptions,
            "vllm:prompt_tokens": stats.prompt_tokens,
        }
        for name, value in counters.items():
            yield self._counter(name, COUNTER_HELP[name], value, created)
        by_source = CounterMetricFamily(
            "vllm:prompt_tokens_by_source", PROMPT_TOKENS_BY_SOURCE_HELP, labels=[*LABELS, "source"]
        )
        sources = {
            "local_compute": stats.prompt_tokens_computed,
            "local_cache_hit": stats.prompt_tokens_cache_hit,
            "external_kv_transfer": 0,
        }
        for source, value in sources.items():
            by_source.add_metric([*self.labels, source], value, created=created)
        yield by_source
        yield self._counter(
            "vllm:prompt_tokens_cached",
            COUNTER_HELP["vllm:prompt_tokens_cached"],
            stats.prompt_tokens_cache_hit,
            created,
        )
        cached_by_source = CounterMetricFamily(
            "vllm:prompt_tokens_cached_by_source",
            PROMPT_TOKENS_CACHED_BY_SOURCE_HELP,
            labels=[*LABELS, "source"],
        )
        for source in CACHE_HIT_SOURCES:
            value = stats.prefix_cache_hits if source == "device" else 0
            cached_by_source.add_metric([*self.labels, source], value, created=created)
        yield cached_by_source
        yield self._counter(
            "vllm:generation_tokens", COUNTER_HELP["vllm:generation_tokens"], stats.generation_tokens, created
        )
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=[*LABELS, "finished_reason"],
        )
        for reason in FINISH_REASONS:
            success.add_metric([*self.labels, reason], stats.request_success[reason], created=created)
        yield success
        rejections = CounterMetricFamily(
            "vllm:admission_rejections",
            "Number of admission attempts rejected by a queue limit, by reason.",
            labels=["model_name", "reason"],
        )
        for reason in ADMISSION_REASONS:
            rejections.add_metric(
                [self.model_name, reason], stats.admission_rejections[reason], created=created
            )
        yield rejections
        for name in HISTOGRAM_ORDER:
            yield self._histogram(f"vllm:{name}", HISTOGRAM_HELP[name], stats.histograms[name], created)
        yield self._cache_config_info()

    def _scheduler_gauges(self) -> Iterator[Metric]:
        engine = self.engine
        yield self._gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches.", engine.num_running
        )
        yield self._gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", engine.num_waiting
        )
        by_reason = GaugeMetricFamily(
            "vllm:num_requests_waiting_by_reason", WAITING_BY_REASON_HELP, labels=[*LABELS, "reason"]
        )
        by_reason.add_metric([*self.labels, "capacity"], engine.num_waiting)
        by_reason.add_metric([*self.labels, "deferred"], 0)
        yield by_reason
        sleep = GaugeMetricFamily(
            "vllm:engine_sleep_state", SLEEP_STATE_HELP, labels=[*LABELS, "sleep_state"]
        )
        for state, value in (("awake", 1), ("weights_offloaded", 0), ("discard_all", 0)):
            sleep.add_metric([*self.labels, state], value)
        yield sleep
        yield self._gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", engine.pool.usage
        )

    def _gauge(self, name: str, documentation: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=LABELS)
        family.add_metric(self.labels, value)
        return family

    def _counter(self, name: str, documentation: str, value: float, created: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=LABELS)
        family.add_metric(self.labels, value, created=created)
        return family

    def _histogram(self, name: str, documentation: str, histogram: Histogram, created: float) -> Metric:
        family = HistogramMetricFamily(name, documentation, labels=LABELS)
        cumulative, buckets = 0, []
        for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
            cumulative += count
            buckets.append((_bound_label(bound), cumulative))
        family.add_metric(self.labels, buckets, histogram.total)
        family.samples.append(Sample(f"{name}_created", dict(zip(LABELS, self.labels, strict=True)), created))
        return family

    def _cache_config_info(self) -> GaugeMetricFamily:
        info = cache_config_fields(self.engine)
        info["engine"] = ENGINE_INDEX
        family = GaugeMetricFamily(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig", labels=list(info)
        )
        family.add_metric(list(info.values()), 1)
        return family


# The order vLLM 0.33 registers its histograms in (the order they appear on /metrics).
HISTOGRAM_ORDER = (
    "request_prompt_tokens",
    "request_generation_tokens",
    "iteration_tokens_total",
    "request_max_num_generation_tokens",
    "request_params_n",
    "request_params_max_tokens",
    "time_to_first_token_seconds",
    "inter_token_latency_seconds",
    "request_time_per_output_token_seconds",
    "e2e_request_latency_seconds",
    "request_queue_time_seconds",
    "request_inference_time_seconds",
    "request_prefill_time_seconds",
    "request_decode_time_seconds",
    "request_num_preemptions",
    "request_prefill_kv_computed_tokens",
)


def cache_config_fields(engine: Engine) -> dict[str, str]:
    """vLLM 0.33 CacheConfig.metrics_info(): every field of the config, as strings, in field order."""
    cache = engine.profile.cache
    profile = engine.profile
    return {
        "block_size": str(cache.block_size),
        "user_specified_block_size": "False",
        "kv_cache_layout": "None",
        "prefix_match_unit": "None",
        "gpu_memory_utilization": str(cache.gpu_memory_utilization),
        "cache_dtype": cache.cache_dtype,
        "is_attention_free": "False",
        "num_gpu_blocks_override": "None",
        "sliding_window": "None",
        "enable_prefix_caching": str(cache.enable_prefix_caching),
        "prefix_caching_hash_algo": "sha256",
        "prefix_cache_retention_interval": "0",
        "kv_cache_dtype_skip_layers": "[]",
        "mamba_page_size_padded": "None",
        "skip_page_size_padded": "None",
        "mamba_block_size": "None",
        "mamba_cache_dtype": "auto",
        "mamba_ssm_cache_dtype": "auto",
        "mamba_cache_mode": "none",
        "enable_mamba_shared_prefix_checkpoint": "False",
        "replayssm_buffer_len": "16",
        "use_replayssm": "False",
        "use_kda_recoverssm": "False",
        "num_gpu_blocks": str(cache.num_gpu_blocks),
        "num_cpu_blocks": "None",
        "simple_cpu_offload_num_blocks": "None",
        "effective_attention_block_size": str(cache.block_size),
        "kv_cache_size_tokens": str(profile.kv_capacity_tokens),
        "kv_cache_max_concurrency": str(round(profile.kv_capacity_tokens / profile.max_model_len, 2)),
        "hash_block_size": str(cache.block_size),
        "cache_hit_alignment_tokens": str(cache.block_size),
        "kv_sharing_fast_prefill": "False",
        "swa_bounded_replay": "True",
        "kv_cache_memory_bytes": "None",
        "kv_offloading_size": "None",
        "kv_offloading_backend": "native",
        "_block_size_resolved": "True",  # a private dataclass field, but vLLM's metrics_info() includes it
    }


def _bound_label(bound: float) -> str:
    """prometheus_client's text for an `le` value: 1.0, 0.25, +Inf."""
    if bound == float("inf"):
        return "+Inf"
    return repr(float(bound))


def build_registry(engine: Engine, model_name: str) -> CollectorRegistry:
    """The registry a vLLM API server serves: engine families plus process and Python metrics."""
    registry = CollectorRegistry(auto_describe=False)
    GCCollector(registry=registry)  # the default registry's order, which vLLM's /metrics shows
    PlatformCollector(registry=registry, platform=platform)
    ProcessCollector(registry=registry)
    registry.register(VllmCollector(engine, model_name))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
