"""The engine's own prefix-cache counters, read from its /metrics around a phase, so the hit rate a
workload aimed at (--prefix-hit-rate) is checked against what the engine counted.

vLLM (and the simulator) count prefix-cache lookups and hits in tokens: `vllm:prefix_cache_queries_total`
and `vllm:prefix_cache_hits_total` (`vllm:gpu_prefix_cache_*` before 0.10), one series per data-parallel
engine, summed here (other engines' caches are not read: SGLang's hit counters are split by cache tier
and rank, and the exporter normalizes them for dashboards). The counters are the engine's, so other
traffic to the same engine during the phase counts too, and a restart (a counter going down) voids the
phase's figure. A server without /metrics, or with none of these names, gives no figure; never an error.

The page is the one --engine-metrics names (engine_watch.py reads the same one, within the same budgets):
`auto` the engine's /metrics beside its API, a URL, or `none`, which reads nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadgen.engine_watch import TIMEOUT_S, read_page

__all__ = ["PrefixCache", "prefix_cache_delta", "read_prefix_cache"]

log = logging.getLogger("loadgen")

# (queries, hits) sample names, preferred first
NAMES = (
    ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"),
    ("vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_hits_total"),
)


@dataclass(frozen=True)
class PrefixCache:
    queries: float  # prompt tokens looked up
    hits: float  # of which found in the cache
    source: str  # the queries counter read
    block_size: int | None = None  # tokens per KV block (vllm:cache_config_info), the unit of a hit

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.queries if self.queries > 0 else None


def parse_prefix_cache(text: str) -> PrefixCache | None:
    totals: dict[str, float] = {}
    block_size = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            elif sample.name == "vllm:cache_config_info" and sample.labels.get("block_size", "").isdigit():
                block_size = int(sample.labels["block_size"])
    for queries, hits in NAMES:
        if queries in totals and hits in totals:
            return PrefixCache(totals[queries], totals[hits], queries, block_size)
    return None


async def read_prefix_cache(url: str | None) -> PrefixCache | None:
    """The engine's counters now, from the page at `url` (the scenario's engine_metrics; None: not read);
    None when it cannot be read or has none of them."""
    if url is None:
        return None
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            return parse_prefix_cache(await read_page(client, url))
    except Exception as exc:  # any failure (network, HTTP status, size, parse) only means: no figure
        log.info("no prefix-cache counters from the engine's /metrics (%s)", type(exc).__name__)
        return None


def prefix_cache_delta(before: PrefixCache | None, after: PrefixCache | None) -> PrefixCache | None:
    """What the engine counted between two readings; None when either is missing, the names changed or
    a counter went down (the engine restarted)."""
    if before is None or after is None or before.source != after.source:
        return None
    queries, hits = after.queries - before.queries, after.hits - before.hits
    if queries < 0 or hits < 0:
        return None
    return PrefixCache(queries, hits, after.source, after.block_size)
