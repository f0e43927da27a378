"""The exporter against a real llama.cpp server: normalized series move exactly as the engine's own /metrics.

Ground truth is the server's side: every /completion answer reports the prompt tokens it evaluated (cached
and computed) and the tokens it predicted; the engine's /metrics counters must add up to them, and the
exporter's normalized counters must equal the engine's after the load has finished.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from exporter.config import Config, TargetConfig
from exporter.engines.collector import EnginesCollector
from exporter.engines.parse import parse
from tests.engines.conftest import scrape, value
from tests.support.llama import llama_server

pytestmark = [pytest.mark.real, pytest.mark.slow]
PARALLEL = 4


def complete(url: str, prompt: str, n_predict: int) -> dict:
    # A fresh connection per request: llama-server may close keep-alive connections between requests.
    with httpx.Client(timeout=120) as client:
        response = client.post(
            f"{url}/completion",
            json={"prompt": prompt, "n_predict": n_predict, "ignore_eos": True, "cache_prompt": True},
        )
    response.raise_for_status()
    return response.json()


def engine_counters(url: str) -> dict[str, float]:
    exposition = parse(httpx.get(f"{url}/metrics", timeout=10).text)
    return {name: samples[0].value for name, samples in exposition.by_sample_name.items()}


def test_normalized_counters_equal_the_engine_and_running_is_seen_under_load(tmp_path: Path) -> None:
    with llama_server(tmp_path, parallel=PARALLEL, ctx_size=PARALLEL * 512) as server:
        collector = EnginesCollector(Config(targets=(TargetConfig("llama", server.url, timeout_seconds=8),)))
        try:
            idle = scrape(collector)
            assert value(idle, "llm_target_up", target="llama") == 1
            assert value(idle, "llm_target_info", target="llama", engine_kind="llamacpp") == 1
            assert value(idle, "llm_requests_running", model=server.model) == 0
            assert value(idle, "llm_kv_cache_capacity_tokens", model=server.model) == PARALLEL * 512

            running_seen: list[float] = []
            prompts = [
                f"request {i}: the quick brown fox jumps over the lazy dog" for i in range(2 * PARALLEL)
            ]
            with ThreadPoolExecutor(PARALLEL) as pool:
                futures = [pool.submit(complete, server.url, prompt, 64) for prompt in prompts]
                while not all(f.done() for f in futures):
                    running = value(scrape(collector), "llm_requests_running", model=server.model)
                    running_seen.append(running or 0)
                answers = [f.result() for f in futures]

            final = scrape(collector)
            engine = engine_counters(server.url)
        finally:
            collector.close()

    assert max(running_seen) > 0, "no running request observed while 8 completions were in flight"
    assert max(running_seen) <= PARALLEL
    assert value(final, "llm_requests_running", model=server.model) == 0

    predicted = sum(a["tokens_predicted"] for a in answers)
    evaluated = sum(a["tokens_evaluated"] for a in answers)
    cached = sum(a["timings"]["cache_n"] for a in answers)
    assert predicted == 64 * len(prompts)
    # The engine's own counters add up to what it answered...
    assert engine["llamacpp:tokens_predicted_total"] == predicted
    assert engine["llamacpp:prompt_tokens_total"] + engine["llamacpp:prompt_tokens_cached_total"] == evaluated
    # ...and the exporter's normalized counters equal the engine's exactly.
    labels = {"target": "llama", "model": server.model}
    assert value(final, "llm_generation_tokens_total", **labels) == engine["llamacpp:tokens_predicted_total"]
    assert value(final, "llm_prompt_tokens_cached_total", **labels) == cached
    assert cached == engine["llamacpp:prompt_tokens_cached_total"]
    assert value(final, "llm_prompt_tokens_total", **labels) == evaluated
    assert value(final, "llm_prefix_cache_hits_total", **labels) == cached
    assert value(final, "llm_requests_waiting", **labels) == engine["llamacpp:requests_deferred"]
    [info] = [s for s in final.samples("llm_engine_info") if s.labels["target"] == "llama"]
    assert info.labels["model"] == server.model and info.labels["version"]  # the build, from /props
