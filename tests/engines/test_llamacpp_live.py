"""The exporter against a real llama.cpp server: normalized series move exactly as the engine's own /metrics.

Ground truth is the server's side: every /completion answer reports the prompt tokens it evaluated (cached
and computed) and the tokens it predicted; the engine's /metrics counters must add up to them, and the
exporter's normalized counters must equal the engine's after the load has finished.
"""

from __future__ import annotations

import threading
import time
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


def load_until_running_is_seen(url: str, seen: threading.Event, minimum: int) -> list[dict]:
    """Waves of PARALLEL completions until at least `minimum` are done and a scrape has seen one running."""
    answers: list[dict] = []
    deadline = time.monotonic() + 180
    with ThreadPoolExecutor(PARALLEL) as pool:
        while (len(answers) < minimum or not seen.is_set()) and time.monotonic() < deadline:
            wave = [
                pool.submit(complete, url, f"request {len(answers) + i}: the quick brown fox jumps", 64)
                for i in range(PARALLEL)
            ]
            answers.extend(f.result() for f in wave)
    return answers


def test_normalized_counters_equal_the_engine_and_running_is_seen_under_load(tmp_path: Path) -> None:
    with llama_server(tmp_path, parallel=PARALLEL, ctx_size=PARALLEL * 512) as server:
        collector = EnginesCollector(Config(targets=(TargetConfig("llama", server.url, timeout_seconds=8),)))
        try:
            idle = scrape(collector)
            assert value(idle, "llm_target_up", target="llama") == 1
            assert value(idle, "llm_target_info", target="llama", engine_kind="llamacpp") == 1
            assert value(idle, "llm_requests_running", model=server.model) == 0
            # Four slots: /props cannot say whether the cache is unified, so no capacity is published.
            assert value(idle, "llm_kv_cache_capacity_tokens", model=server.model) is None

            # Scrape while waves of requests run, until a scrape has landed on a running one.
            running_seen: list[float] = []
            seen = threading.Event()
            with ThreadPoolExecutor(1) as loader:
                load = loader.submit(load_until_running_is_seen, server.url, seen, 2 * PARALLEL)
                while not load.done():
                    running = value(scrape(collector), "llm_requests_running", model=server.model) or 0
                    running_seen.append(running)
                    if running > 0:
                        seen.set()
                answers = load.result()

            final = scrape(collector)
            engine = engine_counters(server.url)
        finally:
            collector.close()

    assert max(running_seen) > 0, f"no running request seen in {len(running_seen)} scrapes under load"
    assert max(running_seen) <= PARALLEL
    assert value(final, "llm_requests_running", model=server.model) == 0

    predicted = sum(a["tokens_predicted"] for a in answers)
    evaluated = sum(a["tokens_evaluated"] for a in answers)
    cached = sum(a["timings"]["cache_n"] for a in answers)
    assert predicted == 64 * len(answers)
    assert cached > 0, "the shared prompt prefix should be served from the slots' cache"
    # The engine's own counters add up to what it answered...
    assert engine["llamacpp:tokens_predicted_total"] == predicted
    assert engine["llamacpp:prompt_tokens_total"] + engine["llamacpp:prompt_tokens_cached_total"] == evaluated
    assert engine["llamacpp:prompt_tokens_cached_total"] == cached
    # ...and the exporter's normalized counters equal the engine's exactly.
    labels = {"target": "llama", "model": server.model}
    assert value(final, "llm_generation_tokens_total", **labels) == engine["llamacpp:tokens_predicted_total"]
    assert value(final, "llm_prompt_tokens_cached_total", **labels) == cached
    assert value(final, "llm_prompt_tokens_total", **labels) == evaluated
    assert value(final, "llm_prefix_cache_queries_total", **labels) == evaluated
    assert value(final, "llm_prefix_cache_hits_total", **labels) == cached
    assert value(final, "llm_requests_waiting", **labels) == engine["llamacpp:requests_deferred"]
    [info] = [s for s in final.samples("llm_engine_info") if s.labels["target"] == "llama"]
    assert info.labels["model"] == server.model and info.labels["version"]  # the build, from /props


def props_and_capacity(server) -> tuple[dict, float | None]:
    collector = EnginesCollector(Config(targets=(TargetConfig("llama", server.url),)))
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    props = httpx.get(f"{server.url}/props", timeout=10).json()
    return props, value(exposition, "llm_kv_cache_capacity_tokens", target="llama")


def test_kv_capacity_is_published_only_when_the_server_pins_it_down(tmp_path: Path) -> None:
    """The real server's /props under the flags that change what n_ctx per slot means (trained on 4096)."""
    with llama_server(tmp_path, parallel=1, ctx_size=512) as server:
        props, capacity = props_and_capacity(server)
    assert props["total_slots"] == 1 and props["default_generation_settings"]["n_ctx"] == 512
    assert capacity == 512  # one slot, below the training context: the cache holds exactly 512 tokens

    with llama_server(tmp_path, parallel=2, ctx_size=1024) as server:
        split, split_capacity = props_and_capacity(server)
    with llama_server(tmp_path, parallel=2, ctx_size=1024, extra_args=["--kv-unified"]) as server:
        unified, unified_capacity = props_and_capacity(server)
    # The same 1024-token cache: split it reads 512 per slot, unified 1024 per slot; /props says no more.
    assert split["default_generation_settings"]["n_ctx"] == 512
    assert unified["default_generation_settings"]["n_ctx"] == 1024
    assert split_capacity is None and unified_capacity is None

    with llama_server(tmp_path, parallel=1, ctx_size=8192) as server:
        capped, capped_capacity = props_and_capacity(server)
    assert capped["default_generation_settings"]["n_ctx"] == 4096  # capped by the training context
    assert capped_capacity is None  # the cache holds 8192 tokens; n_ctx per slot would say 4096
