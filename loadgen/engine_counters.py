"""The engine's own prefix-cache counters, read from its /metrics around a phase, so the hit rate a
workload aimed at (--prefix-hit-rate) is checked against what the engine counted.

vLLM (and the simulator) count prefix-cache lookups and hits in tokens: `vllm:prefix_cache_queries_total`
and `vllm:prefix_cache_hits_total` (`vllm:gpu_prefix_cache_*` before 0.10), one series per data-parallel
engine, summed here (other engines' caches are not read: SGLang's hit counters are split by cache tier
and rank, and the exporter normalizes them for dashboards). The counters are the engine's, so other
traffic to the same engine during the phase counts too, and a restart (a counter going down) voids the
phase's figure. A server without /metrics, or with none of these names, gives no figure; never an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from loadgen.client import LoadClient

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


async def read_prefix_cache(client: LoadClient) -> PrefixCache | None:
    """The engine's counters now; None when its /metrics cannot be read or has none of them."""
    try:
        return parse_prefix_cache((await client.get_bytes("/metrics")).decode("utf-8", "replace"))
    except Exception as exc:  # any failure (network, HTTP status, parse) only means: no figure
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
