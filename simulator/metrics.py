"""/metrics with vLLM 0.33's exact family names, types, labels, help texts and buckets.

The simulator imitates vLLM, so it emits `vllm:` names with colons, `_created` series (vLLM with one
API server runs prometheus_client in single-process mode) and vllm:cache_config_info with every
CacheConfig field of 0.33 as a label. Source of truth: vllm/v1/metrics/loggers.py of the 0.33.0
wheel. Families built from one snapshot of the engine per scrape (a custom collector).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from simulator.engine import Engine
from simulator.stats import ADMISSION_REASONS, FINISH_REASONS

LABELS = ("model_name", "engine")

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
# Registered only with a speculative config (vllm/v1/spec_decode/metrics.py SpecDecodingProm), before
# every other vllm:* family.
SPEC_DECODE_HELP = {
    "vllm:spec_decode_num_drafts": "Number of spec decoding drafts.",
    "vllm:spec_decode_num_draft_tokens": "Number of draft tokens.",
    "vllm:spec_decode_num_accepted_tokens": "Number of accepted tokens.",
}
RUNNING_HELP = "Number of requests in model execution batches."
WAITING_HELP = "Number of requests waiting to be processed."
KV_USAGE_HELP = "KV-cache usage. 1 means 100 percent usage."
SUCCESS_HELP = "Count of successfully processed requests."
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


Value = Callable[[Engine], float]


class VllmCollector:
    """The vllm:* families of one served model on one or more data-parallel engines ("0".."N-1")."""

    def __init__(self, engines: Sequence[Engine], model_name: str) -> None:
        self.engines = list(engines)
        self.model_name = model_name

    def collect(self) -> Iterator[Metric]:
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        if self.engines[0].num_spec:
            yield from self._spec_decode()
        # Registered by vLLM 0.33 in every deployment; they only move with --enable-mfu-metrics.
        for name, documentation in MFU_COUNTERS.items():
            yield self._counter(name, documentation, zero)
        yield self._gauge("vllm:num_requests_running", RUNNING_HELP, lambda engine: engine.num_running)
        yield self._gauge("vllm:num_requests_waiting", WAITING_HELP, lambda engine: engine.num_waiting)
        waiting = {"capacity": lambda engine: engine.num_waiting, "deferred": zero}
        yield self._labelled(
            gauge, "vllm:num_requests_waiting_by_reason", WAITING_BY_REASON_HELP, "reason", waiting
        )
        sleep = {"awake": lambda engine: 1, "weights_offloaded": zero, "discard_all": zero}
        yield self._labelled(gauge, "vllm:engine_sleep_state", SLEEP_STATE_HELP, "sleep_state", sleep)
        yield self._gauge("vllm:kv_cache_usage_perc", KV_USAGE_HELP, lambda engine: engine.pool.usage)
        counters: dict[str, Value] = {
            "vllm:prefix_cache_queries": lambda engine: engine.stats.prefix_cache_queries,
            "vllm:prefix_cache_hits": lambda engine: engine.stats.prefix_cache_hits,
            "vllm:external_prefix_cache_queries": zero,
            "vllm:external_prefix_cache_hits": zero,
            "vllm:mm_cache_queries": zero,
            "vllm:mm_cache_hits": zero,
            "vllm:num_preemptions": lambda engine: engine.stats.preemptions,
            "vllm:prompt_tokens": lambda engine: engine.stats.prompt_tokens,
        }
        for name, value in counters.items():
            yield self._counter(name, COUNTER_HELP[name], value)
        sources: dict[str, Value] = {
            "local_compute": lambda engine: engine.stats.prompt_tokens_computed,
            "local_cache_hit": lambda engine: engine.stats.prompt_tokens_cache_hit,
            "external_kv_transfer": zero,
        }
        yield self._labelled(
            counter, "vllm:prompt_tokens_by_source", PROMPT_TOKENS_BY_SOURCE_HELP, "source", sources
        )
        name = "vllm:prompt_tokens_cached"
        yield self._counter(name, COUNTER_HELP[name], lambda engine: engine.stats.prompt_tokens_cache_hit)
        tiers: dict[str, Value] = {source: zero for source in CACHE_HIT_SOURCES}
        tiers["device"] = lambda engine: engine.stats.prefix_cache_hits
        name = "vllm:prompt_tokens_cached_by_source"
        yield self._labelled(counter, name, PROMPT_TOKENS_CACHED_BY_SOURCE_HELP, "source", tiers)
        name = "vllm:generation_tokens"
        yield self._counter(name, COUNTER_HELP[name], lambda engine: engine.stats.generation_tokens)
        reasons = {reason: _success(reason) for reason in FINISH_REASONS}
        yield self._labelled(counter, "vllm:request_success", SUCCESS_HELP, "finished_reason", reasons)
        yield self._admission_rejections()
        for short_name in HISTOGRAM_ORDER:
            yield self._histogram(short_name)
        yield self._cache_config_info()

    def _spec_decode(self) -> Iterator[Metric]:
        values: dict[str, Value] = {
            "vllm:spec_decode_num_drafts": lambda engine: engine.stats.spec_drafts,
            "vllm:spec_decode_num_draft_tokens": lambda engine: engine.stats.spec_draft_tokens,
            "vllm:spec_decode_num_accepted_tokens": lambda engine: engine.stats.spec_accepted_tokens,
        }
        for name, value in values.items():
            yield self._counter(name, SPEC_DECODE_HELP[name], value)
        family = CounterMetricFamily(
            "vllm:spec_decode_num_accepted_tokens_per_pos",
            "Accepted tokens per draft position.",
            labels=[*LABELS, "position"],
        )
        for index, engine in enumerate(self.engines):  # vLLM creates them engine by engine
            for position, accepted in enumerate(engine.stats.spec_accepted_per_position):
                family.add_metric(
                    [*self._labels(index), str(position)], accepted, created=engine.stats.created
                )
        yield family

    def _labels(self, index: int) -> list[str]:
        return [self.model_name, str(index)]

    def _gauge(self, name: str, documentation: str, value: Value) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=LABELS)
        for index, engine in enumerate(self.engines):
            family.add_metric(self._labels(index), value(engine))
        return family

    def _counter(self, name: str, documentation: str, value: Value) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=LABELS)
        for index, engine in enumerate(self.engines):
            family.add_metric(self._labels(index), value(engine), created=engine.stats.created)
        return family

    def _labelled(
        self, cls: type, name: str, documentation: str, label: str, values: dict[str, Value]
    ) -> Metric:
        """A family with one more label; vLLM creates its series label value first, then engine."""
        family = cls(name, documentation, labels=[*LABELS, label])
        for label_value, value in values.items():
            for index, engine in enumerate(self.engines):
                extra = {"created": engine.stats.created} if cls is CounterMetricFamily else {}
                family.add_metric([*self._labels(index), label_value], value(engine), **extra)
        return family

    def _admission_rejections(self) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "vllm:admission_rejections",
            "Number of admission attempts rejected by a queue limit, by reason.",
            labels=["model_name", "reason"],
        )
        created = min(engine.stats.created for engine in self.engines)
        for reason in ADMISSION_REASONS:
            total = sum(engine.stats.admission_rejections[reason] for engine in self.engines)
            family.add_metric([self.model_name, reason], total, created=created)
        return family

    def _histogram(self, short_name: str) -> Metric:
        name = f"vllm:{short_name}"
        family = HistogramMetricFamily(name, HISTOGRAM_HELP[short_name], labels=LABELS)
        for index, engine in enumerate(self.engines):
            histogram = engine.stats.histograms[short_name]
            cumulative, buckets = 0, []
            for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric(self._labels(index), buckets, histogram.total)
        for index, engine in enumerate(self.engines):
            labels = dict(zip(LABELS, self._labels(index), strict=True))
            family.samples.append(Sample(f"{name}_created", labels, engine.stats.created))
        return family

    def _cache_config_info(self) -> GaugeMetricFamily:
        family = None
        for index, engine in enumerate(self.engines):
            info = {**cache_config_fields(engine), "engine": str(index)}
            if family is None:
                family = GaugeMetricFamily(
                    "vllm:cache_config_info", "Information of the LLMEngine CacheConfig", labels=list(info)
                )
            family.add_metric(list(info.values()), 1)
        assert family is not None
        return family


def zero(engine: Engine) -> float:
    return 0


def _success(reason: str) -> Value:
    return lambda engine: engine.stats.request_success[reason]


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


def build_registry(engines: Sequence[Engine], model_name: str) -> CollectorRegistry:
    """The registry a vLLM API server serves: engine families plus process and Python metrics."""
    registry = CollectorRegistry(auto_describe=False)
    GCCollector(registry=registry)  # the default registry's order, which vLLM's /metrics shows
    PlatformCollector(registry=registry, platform=platform)
    ProcessCollector(registry=registry)
    registry.register(VllmCollector(engines, model_name))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
