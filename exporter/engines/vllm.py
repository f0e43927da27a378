"""vLLM (V1 engine, 0.33 names, with fallbacks for names renamed since 0.10).

Labels: `model_name` -> `model`, `engine` (data-parallel rank) -> `engine_index`. KV capacity comes from
`vllm:cache_config_info` (`kv_cache_size_tokens`, else `num_gpu_blocks` x `block_size`), which carries
`engine` but no `model_name`. `vllm:request_num_preemptions` is a per-request histogram and is never used
as the preemption counter. NIM reads the same tables in its own spelling (`nim.py`): both go through
`normalize_vllm_names` with a `Dialect`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from exporter.engines.base import (
    Engine,
    Fetch,
    LabelMap,
    Scraped,
    Table,
    add_finished,
    add_info,
    apply_table,
    label_values,
    labels_from_engine,
    models_seen,
    optional_json,
)
from exporter.engines.parse import Exposition
from exporter.engines.schema import Normalized

REASON_LABELS = ("finished_reason", "finish_reason")
# normalized family -> vLLM names without the prefix, preferred first (older names after newer ones)
NAMES: dict[str, tuple[str, ...]] = {
    "llm_requests_running": ("num_requests_running",),
    "llm_requests_waiting": ("num_requests_waiting",),
    "llm_kv_cache_usage_ratio": ("kv_cache_usage_perc", "gpu_cache_usage_perc"),
    "llm_prompt_tokens_total": ("prompt_tokens_total",),
    "llm_prompt_tokens_cached_total": ("prompt_tokens_cached_total",),
    "llm_generation_tokens_total": ("generation_tokens_total",),
    "llm_time_to_first_token_seconds": ("time_to_first_token_seconds",),
    "llm_inter_token_latency_seconds": ("inter_token_latency_seconds", "time_per_output_token_seconds"),
    "llm_time_per_output_token_seconds": ("request_time_per_output_token_seconds",),
    "llm_e2e_request_latency_seconds": ("e2e_request_latency_seconds",),
    "llm_request_queue_time_seconds": ("request_queue_time_seconds",),
    "llm_preemptions_total": ("num_preemptions_total",),
    "llm_prefix_cache_queries_total": ("prefix_cache_queries_total", "gpu_prefix_cache_queries_total"),
    "llm_prefix_cache_hits_total": ("prefix_cache_hits_total", "gpu_prefix_cache_hits_total"),
}


@dataclass(frozen=True)
class Dialect:
    """One spelling of vLLM's metric names: vLLM's own (`vllm:` prefix), or NIM's bare names."""

    prefix: str
    names: Mapping[str, tuple[str, ...]]  # normalized family -> wire names without the prefix

    def wire(self, name: str) -> str:
        return self.prefix + name


VLLM_NAMES = Dialect("vllm:", NAMES)
Finished = Callable[[Exposition, Dialect, LabelMap, Normalized], None]


class Vllm(Engine):
    kind = "vllm"
    prefixes = ("vllm:",)
    process_names = r"vllm(\..*)?"

    async def scrape(self, fetch: Fetch, exposition: Exposition | None = None) -> Scraped:
        scraped = await super().scrape(fetch, exposition)
        # vLLM's {"version": "0.33.0"}; absent elsewhere
        version = await optional_json(fetch, "/version", static=True)
        if isinstance(version, dict) and isinstance(version.get("version"), str):
            scraped.documents["/version"] = version
        return scraped

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        return normalize_vllm_names(scraped, VLLM_NAMES, add_success_by_reason, model)


def add_success_by_reason(
    exposition: Exposition, dialect: Dialect, labels: LabelMap, out: Normalized
) -> None:
    """vLLM's finished requests: `request_success_total` by its reason label."""
    for reason_label in REASON_LABELS:  # llm-d-inference-sim: finish_reason
        add_finished(exposition, dialect.wire("request_success_total"), reason_label, labels, out)


def normalize_vllm_names(
    scraped: Scraped, dialect: Dialect, finished: Finished, model: str | None
) -> Normalized:
    """The llm_* view of a payload in one of vLLM's spellings (its own, and NIM's, which derives from it)."""
    exposition = scraped.exposition
    assert exposition is not None
    out = Normalized()

    labels = labels_from_engine(model, index_key="engine")
    names = {family: [dialect.wire(name) for name in wire] for family, wire in dialect.names.items()}
    apply_table(exposition, Table(names, labels), out)
    finished(exposition, dialect, labels, out)
    _capacity(exposition, dialect, out)
    models = models_seen(out) + label_values(
        exposition, "model_name", [dialect.prefix] if dialect.prefix else ["vllm:", ""]
    )
    version = scraped.documents.get("/version", {}).get("version")
    add_info(out, models or ([model] if model else []), version)
    return out


def _capacity(exposition: Exposition, dialect: Dialect, out: Normalized) -> None:
    models_by_engine: dict[str | None, set[str]] = {}
    for point in out.points:
        if "model" in point.labels:
            models_by_engine.setdefault(point.labels.get("engine_index"), set()).add(point.labels["model"])
    all_models = set().union(*models_by_engine.values()) if models_by_engine else set()
    for sample in exposition.samples(dialect.wire("cache_config_info")):
        tokens = kv_capacity_tokens(sample.labels)
        if tokens is None:
            continue
        engine = sample.labels.get("engine")
        models = models_by_engine.get(engine, all_models) if engine is not None else all_models
        for model_name in sorted(models) or [""]:
            labels = {"model": model_name, "engine_index": engine or ""}
            out.add("llm_kv_cache_capacity_tokens", tokens, {k: v for k, v in labels.items() if v})


def kv_capacity_tokens(config: Mapping[str, str]) -> float | None:
    try:
        if config.get("kv_cache_size_tokens", "None") not in ("None", ""):
            return float(config["kv_cache_size_tokens"])
        return float(config["num_gpu_blocks"]) * float(config["block_size"])
    except (KeyError, ValueError):
        return None  # not sized yet ("None") or an unknown shape: absent, never a guess
