"""NVIDIA NIM for LLMs: vLLM-derived names without the `vllm:` prefix, served on `/v1/metrics`.

NIMs built on a vLLM backend may pass `vllm:*` names through instead; both spellings are read. NIM's own
(bare) `time_per_output_token_seconds` is its per-request TPOT (reference/engines.md section 10, the TPOT
row), so it becomes `llm_time_per_output_token_seconds`, never the inter-token latency; passed-through
`vllm:*` names keep vLLM's meaning (there the old name measured gaps between tokens). Finished requests:
`request_finish_total` by its reason label where NIM serves it; else `request_success_total` (stop, length)
and `request_failure_total` (every other reason; `error` when it carries no reason label).
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.engines.base import Engine, Fetch, LabelMap, Scraped, add_counted, add_finished
from exporter.engines.parse import Exposition
from exporter.engines.schema import Normalized
from exporter.engines.vllm import NAMES, REASON_LABELS, Vllm

BARE_MARKERS = ("num_requests_running", "gpu_cache_usage_perc")
BARE_NAMES: dict[str, tuple[str, ...]] = {
    **NAMES,
    "llm_inter_token_latency_seconds": ("inter_token_latency_seconds",),
    "llm_time_per_output_token_seconds": (
        "request_time_per_output_token_seconds",
        "time_per_output_token_seconds",
    ),
}


class Nim(Vllm):
    kind = "nim"
    metrics_path = "/v1/metrics"
    prefixes = ()
    prefix = ""

    async def scrape(self, fetch: Fetch, exposition: Exposition | None = None) -> Scraped:
        return await Engine.scrape(self, fetch, exposition)

    def name_prefix(self, exposition: Exposition) -> str:
        return "" if exposition.has("num_requests_running") else "vllm:"

    def names(self, prefix: str) -> Mapping[str, tuple[str, ...]]:
        return BARE_NAMES if prefix == "" else NAMES

    def finished(self, exposition: Exposition, prefix: str, labels: LabelMap, out: Normalized) -> None:
        """`request_finish_total` (every finished request, by reason) where NIM has it; else its success
        counter (stop, length) plus its failure counter (every other reason), which do not overlap."""
        if prefix or not exposition.samples("request_finish_total"):
            super().finished(exposition, prefix, labels, out)
            if not prefix:
                _add_by_reason(exposition, "request_failure_total", "error", labels, out)
            return
        _add_by_reason(exposition, "request_finish_total", "other", labels, out)

    def detect(self, exposition: Exposition) -> bool:
        return has_bare_vllm_names(exposition) or exposition.has("vllm:num_requests_running")


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
