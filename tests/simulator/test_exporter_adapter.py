"""The exporter's vLLM adapter (exporter/engines/vllm.py) reads the simulator's /metrics: it detects
vLLM, and every normalized family it knows comes out with the values the simulator reports."""

from __future__ import annotations

import httpx

from exporter.engines.base import Scraped
from exporter.engines.detect import engine_for_payload
from exporter.engines.parse import parse
from exporter.engines.vllm import NAMES, Vllm
from tests.simulator.test_pressure import metric_values


def test_vllm_adapter_normalizes_the_simulator(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--model", "Qwen/Qwen3-4B")
    shared = "you are a careful assistant. " * 12
    for question in ["one", "two", "three"]:
        body = {"prompt": shared + question, "max_tokens": 4, "ignore_eos": True}
        assert httpx.post(f"{url}/v1/completions", json=body, timeout=10).status_code == 200
    text = httpx.get(f"{url}/metrics", timeout=5).text
    raw = metric_values(url)

    exposition = parse(text)
    assert isinstance(engine_for_payload(exposition), Vllm)
    normalized = Vllm().normalize(Scraped(exposition=exposition), model=None)
    assert normalized.families() >= set(NAMES) | {
        "llm_kv_cache_capacity_tokens",
        "llm_requests_finished_total",
    }

    labels = {"model": "Qwen/Qwen3-4B", "engine_index": "0"}
    assert (
        normalized.value("llm_generation_tokens_total", **labels) == raw["vllm:generation_tokens_total"] == 12
    )
    assert normalized.value("llm_prompt_tokens_total", **labels) == raw["vllm:prompt_tokens_total"]
    assert (
        normalized.value("llm_prefix_cache_hits_total", **labels) == raw["vllm:prefix_cache_hits_total"] > 0
    )
    assert normalized.value("llm_kv_cache_capacity_tokens", **labels) == 1024
    assert normalized.value("llm_requests_finished_total", reason="length", **labels) == 3
    ttft = next(h for h in normalized.histograms if h.family == "llm_time_to_first_token_seconds")
    assert ttft.count == 3 and ttft.labels == labels
