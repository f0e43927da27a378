"""NVIDIA NIM for LLMs: vLLM-derived names without the `vllm:` prefix, served on `/v1/metrics`.

NIMs built on a vLLM backend may pass `vllm:*` names through instead; both spellings are read. NIM's own
(bare) `time_per_output_token_seconds` is its per-request TPOT (reference/engines.md section 10, the TPOT
row), so it becomes `llm_time_per_output_token_seconds`, never the inter-token latency; passed-through
`vllm:*` names keep vLLM's meaning (there the old name measured gaps between tokens). Finished requests:
`request_finish_total` by its reason label where NIM serves it; else `request_success_total` (stop, length)
and `request_failure_total` (every other reason; `error` when it carries no reason label).
"""

from __future__ import annotations

from exporter.engines.base import Engine, LabelMap, Scraped, add_counted, add_finished
from exporter.engines.parse import Exposition
from exporter.engines.schema import Normalized
from exporter.engines.vllm import (
    NAMES,
    REASON_LABELS,
    VLLM_NAMES,
    Dialect,
    add_success_by_reason,
    normalize_vllm_names,
)

BARE_MARKERS = ("num_requests_running", "gpu_cache_usage_perc")
BARE_NAMES = Dialect(
    "",
    {
        **NAMES,
        "llm_inter_token_latency_seconds": ("inter_token_latency_seconds",),
        "llm_time_per_output_token_seconds": (
            "request_time_per_output_token_seconds",
            "time_per_output_token_seconds",
        ),
    },
)


class Nim(Engine):
    kind = "nim"
    metrics_path = "/v1/metrics"

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        exposition = scraped.exposition
        assert exposition is not None
        if exposition.has("num_requests_running"):
            return normalize_vllm_names(scraped, BARE_NAMES, add_bare_finished, model)
        return normalize_vllm_names(scraped, VLLM_NAMES, add_success_by_reason, model)

    def detect(self, exposition: Exposition) -> bool:
        return has_bare_vllm_names(exposition) or exposition.has("vllm:num_requests_running")


def add_bare_finished(exposition: Exposition, dialect: Dialect, labels: LabelMap, out: Normalized) -> None:
    """`request_finish_total` (every finished request, by reason) where NIM has it; else its success
    counter (stop, length) plus its failure counter (every other reason), which do not overlap."""
    if exposition.samples("request_finish_total"):
        _add_by_reason(exposition, "request_finish_total", "other", labels, out)
        return
    add_success_by_reason(exposition, dialect, labels, out)
    _add_by_reason(exposition, "request_failure_total", "error", labels, out)


def has_bare_vllm_names(exposition: Exposition) -> bool:
    """vLLM-derived names without a prefix: how NIM's own exposition looks."""
    return all(exposition.has(name) for name in BARE_MARKERS)


def _add_by_reason(
    exposition: Exposition, name: str, unlabelled: str, labels: LabelMap, out: Normalized
) -> None:
    """By its reason label where the series carry one, else all as `unlabelled`."""
    samples = exposition.samples(name)
    label = next((r for r in REASON_LABELS if any(r in s.labels for s in samples)), None)
    if label is not None:
        add_finished(exposition, name, label, labels, out)
    else:
        add_counted(exposition, name, unlabelled, name.removesuffix("_total"), labels, out)
