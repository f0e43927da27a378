"""LMDeploy 0.18 `api_server` (metrics on by default; vLLM-V0-style names with an `lmdeploy:` prefix).

Labels: `model_name` -> `model`, `engine` (DP rank) -> `engine_index`. Finish reasons are Python enum
reprs (`ResponseType.CANCEL`, ...): mapped onto the common set, the repr kept as `raw_reason`. LMDeploy
has no preemption metric. Prefix-cache hits/queries are its cached/prompt token counters.
Finish reasons: `SUCCESS`/`FINISH` ended normally (`completed`: LMDeploy does not say stop or length),
`CANCEL` is `abort`, every other type is a failure its API server answers as an error (`error`).
"""

from __future__ import annotations

from exporter.engines.base import (
    Engine,
    Scraped,
    Table,
    add_finished,
    add_info,
    apply_table,
    label_values,
    labels_from_engine,
    models_seen,
)
from exporter.engines.schema import Normalized, finish_reason

P = "lmdeploy:"
NAMES: dict[str, tuple[str, ...]] = {
    "llm_requests_running": (P + "num_requests_running",),
    "llm_requests_waiting": (P + "num_requests_waiting",),
    "llm_kv_cache_usage_ratio": (P + "gpu_cache_usage_perc", P + "kv_cache_usage_perc"),
    "llm_prompt_tokens_total": (P + "prompt_tokens_total",),
    "llm_prompt_tokens_cached_total": (P + "cached_tokens_total",),
    "llm_generation_tokens_total": (P + "generation_tokens_total",),
    "llm_time_to_first_token_seconds": (P + "time_to_first_token_seconds",),
    "llm_inter_token_latency_seconds": (P + "iter_token_latency", P + "inter_token_latency_seconds"),
    "llm_time_per_output_token_seconds": (P + "time_per_output_token_seconds",),
    "llm_e2e_request_latency_seconds": (P + "e2e_request_latency_seconds",),
    "llm_request_queue_time_seconds": (P + "request_queue_time_seconds",),
    "llm_prefix_cache_queries_total": (P + "prompt_tokens_total",),
    "llm_prefix_cache_hits_total": (P + "cached_tokens_total",),
}


class LmDeploy(Engine):
    kind = "lmdeploy"
    prefixes = (P,)
    process_names = r"lmdeploy(\..*)?"

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        exposition = scraped.exposition
        assert exposition is not None
        out = Normalized()

        labels = labels_from_engine(model, index_key="engine")
        apply_table(exposition, Table(NAMES, labels), out)
        if not exposition.has(P + "cached_tokens_total"):
            # No hit counter: queries alone would read as a 0 % hit ratio.
            out.points = [p for p in out.points if p.family != "llm_prefix_cache_queries_total"]
        add_finished(exposition, P + "request_success_total", "finished_reason", labels, out, lmdeploy_reason)
        add_info(
            out,
            models_seen(out) + label_values(exposition, "model_name", self.prefixes)
            or ([model] if model else []),
        )
        return out


def lmdeploy_reason(raw: str) -> str:
    """`ResponseType.*` onto the common set: LMDeploy treats every type but SUCCESS/FINISH as an error."""
    common = finish_reason(raw)
    return common if common in ("completed", "abort") else "error"
