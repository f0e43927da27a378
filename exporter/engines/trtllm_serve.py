"""TensorRT-LLM `trtllm-serve` (PyTorch backend): `trtllm_*` names on `/prometheus/metrics`, not `/metrics`.

Labels: `model_name` -> `model` (`engine_type` dropped). `trtllm_time_per_output_token_seconds` is
observed once per request, so it is the per-request TPOT. KV capacity = max blocks x tokens per block.
Prefix-cache hits/queries are its cached/prompt token counters (tokens, like vLLM). Finished: the success
counter by `finished_reason`, and the error counter (no reason label) as `error`.
"""

from __future__ import annotations

from exporter.engines.base import (
    Engine,
    Scraped,
    Table,
    add_counted,
    add_finished,
    add_info,
    apply_table,
    group,
    label_values,
    labels_from_engine,
    models_seen,
)
from exporter.engines.schema import Normalized

P = "trtllm_"
NAMES: dict[str, tuple[str, ...]] = {
    "llm_requests_running": (P + "num_requests_running",),
    "llm_requests_waiting": (P + "num_requests_waiting",),
    "llm_kv_cache_usage_ratio": (P + "kv_cache_utilization",),
    "llm_prompt_tokens_total": (P + "prompt_tokens_total",),
    "llm_prompt_tokens_cached_total": (P + "prompt_cached_tokens_total",),
    "llm_generation_tokens_total": (P + "generation_tokens_total",),
    "llm_time_to_first_token_seconds": (P + "time_to_first_token_seconds",),
    "llm_time_per_output_token_seconds": (P + "time_per_output_token_seconds",),
    "llm_e2e_request_latency_seconds": (P + "e2e_request_latency_seconds",),
    "llm_request_queue_time_seconds": (P + "request_queue_time_seconds",),
}


class TrtllmServe(Engine):
    kind = "trtllm_serve"
    metrics_path = "/prometheus/metrics"
    prefixes = (P,)
    process_names = r"trtllm-serve"

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        exposition = scraped.exposition
        assert exposition is not None
        out = Normalized()

        labels = labels_from_engine(model)
        apply_table(exposition, Table(NAMES, labels), out)
        max_blocks = group(exposition.samples(P + "kv_cache_max_blocks"), labels)
        per_block = group(exposition.samples(P + "kv_cache_tokens_per_block"), labels)
        for key, values in max_blocks.items():
            if key in per_block:
                out.add("llm_kv_cache_capacity_tokens", max(values) * max(per_block[key]), dict(key))
        cached = group(exposition.samples(P + "prompt_cached_tokens_total"), labels)
        for key, values in group(exposition.samples(P + "prompt_tokens_total"), labels).items():
            if key in cached:
                out.add("llm_prefix_cache_queries_total", sum(values), dict(key))
                out.add("llm_prefix_cache_hits_total", sum(cached[key]), dict(key))
        add_finished(exposition, P + "request_success_total", "finished_reason", labels, out)
        add_counted(exposition, P + "request_error_total", "error", "request_error", labels, out)
        add_info(
            out,
            models_seen(out) + label_values(exposition, "model_name", self.prefixes)
            or ([model] if model else []),
        )
        return out
