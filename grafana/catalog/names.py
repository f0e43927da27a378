"""Metric names and selectors more than one dashboard reads."""

from __future__ import annotations

from collections.abc import Callable

from grafana.promql import RUN

SLOWDOWNS = (
    'reason=~"sw_thermal_slowdown|hw_thermal_slowdown|hw_slowdown|hw_power_brake_slowdown|sw_power_cap"'
)
CLIENT_TTFT = "loadgen_time_to_first_token_seconds"
CLIENT_TTFO = "loadgen_time_to_first_output_token_seconds"
SERVER_TTFT = "llm_time_to_first_token_seconds"
CLIENT_TPOT = "loadgen_time_per_output_token_seconds"
SERVER_TPOT = "llm_time_per_output_token_seconds"
FAILED = f'{RUN}, outcome!~"success|cancelled"'
COMPLETED = f'{RUN}, outcome!="cancelled"'

# vLLM's names and what the same metric was called before it was renamed (kept equal to the exporter's
# table, exporter/engines/vllm.py NAMES, by tests/stack/test_dashboard_renames.py). A panel that reads
# vLLM's own names reads both, so it does not go empty on either side of a rename.
VLLM_OLD_NAMES = {
    "vllm:kv_cache_usage_perc": "vllm:gpu_cache_usage_perc",  # renamed 0.9/0.10, old removed 0.12
    "vllm:prefix_cache_queries_total": "vllm:gpu_prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total": "vllm:gpu_prefix_cache_hits_total",
    "vllm:inter_token_latency_seconds": "vllm:time_per_output_token_seconds",  # old removed 0.15
}


def either_vllm_name(build: Callable[[Callable[[str], str]], str]) -> str:
    """`build(name)`, `or` the same query over vLLM's older names where one of its names has one.
    `build` gets a function that spells a name; with `or`, the newer spelling wins per series."""
    newer = build(lambda name: name)
    older = build(lambda name: VLLM_OLD_NAMES.get(name, name))
    return newer if older == newer else f"(\n{newer}\n)\nor\n(\n{older}\n)"
