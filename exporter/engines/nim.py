"""NVIDIA NIM for LLMs: vLLM-derived names without the `vllm:` prefix, served on `/v1/metrics`.

NIMs built on a vLLM backend may pass `vllm:*` names through instead; both spellings are read. NIM's own
(bare) `time_per_output_token_seconds` is its per-request TPOT (reference/engines.md section 10, the TPOT
row), so it becomes `llm_time_per_output_token_seconds`, never the inter-token latency; passed-through
`vllm:*` names keep vLLM's meaning (there the old name measured gaps between tokens).
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.engines.base import Engine, Fetch, Scraped
from exporter.engines.parse import Exposition
from exporter.engines.vllm import NAMES, Vllm

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

    def detect(self, exposition: Exposition) -> bool:
        return has_bare_vllm_names(exposition) or exposition.has("vllm:num_requests_running")


def has_bare_vllm_names(exposition: Exposition) -> bool:
    """vLLM-derived names without a prefix: how NIM's own exposition looks."""
    return all(exposition.has(name) for name in BARE_MARKERS)
