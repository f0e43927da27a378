"""Queueing and KV pressure appear when load exceeds the engine's capacity and disappear when it falls.
Ground truth is the simulator's own /metrics (server side), not client-side sleeps."""

from __future__ import annotations

import asyncio
import random

import httpx
from prometheus_client.parser import text_string_to_metric_families


def metric_values(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("le") in (None, "+Inf") and "reason" not in sample.labels:
                values[sample.name] = sample.value
    return values


def prompt(rng: random.Random, words: int) -> str:
    return " ".join(f"w{rng.randrange(10**5)}" for _ in range(words))


async def one_request(client: httpx.AsyncClient, url: str, text: str, max_tokens: int) -> None:
    body = {"prompt": text, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        assert response.status_code == 200
        async for _ in response.aiter_lines():
            pass


def mean_ttft_since(before: dict[str, float], after: dict[str, float]) -> float:
    count = after["vllm:time_to_first_token_seconds_count"] - before["vllm:time_to_first_token_seconds_count"]
    total = after["vllm:time_to_first_token_seconds_sum"] - before["vllm:time_to_first_token_seconds_sum"]
    return total / count


def test_queue_and_kv_pressure_appear_under_overload_and_clear_after(start_simulator) -> None:
    # tiny profile: 64 KV blocks of 16 tokens, 8 sequences; each request below needs ~10 blocks.
    url = start_simulator("--profile", "tiny")
    rng = random.Random(7)

    async def scenario() -> tuple[dict, dict, list[dict]]:
        async with httpx.AsyncClient(timeout=60) as client:
            idle_before = metric_values(url)
            for _ in range(3):
                await one_request(client, url, prompt(rng, 100), 60)
            idle_after = metric_values(url)
            load = [asyncio.create_task(one_request(client, url, prompt(rng, 100), 60)) for _ in range(40)]
            samples = []
            while not all(task.done() for task in load):
                samples.append(await asyncio.to_thread(metric_values, url))
                await asyncio.sleep(0.2)
            await asyncio.gather(*load)
            return idle_before, idle_after, samples

    idle_before, idle_after, samples = asyncio.run(scenario())
    loaded_end = metric_values(url)
    assert idle_after["vllm:num_preemptions_total"] == 0
    assert max(s["vllm:num_requests_waiting"] for s in samples) >= 20
    assert max(s["vllm:num_requests_running"] for s in samples) == 8
    assert max(s["vllm:kv_cache_usage_perc"] for s in samples) >= 0.9
    assert loaded_end["vllm:num_preemptions_total"] > 0
    idle_ttft = mean_ttft_since(idle_before, idle_after)
    loaded_ttft = mean_ttft_since(idle_after, loaded_end)
    assert loaded_ttft > 5 * idle_ttft, (idle_ttft, loaded_ttft)
    # Load gone: nothing waits or runs, and the cache holds nothing live (cached blocks count as free).
    assert loaded_end["vllm:num_requests_waiting"] == 0
    assert loaded_end["vllm:num_requests_running"] == 0
    assert loaded_end["vllm:kv_cache_usage_perc"] == 0
    after = metric_values(url)

    async def single() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await one_request(client, url, prompt(rng, 100), 60)

    asyncio.run(single())
    recovered = metric_values(url)
    assert mean_ttft_since(after, recovered) < idle_ttft + 0.5 < loaded_ttft  # the queue is gone


def test_repeated_prefix_hits_the_prefix_cache(start_simulator) -> None:
    url = start_simulator("--profile", "tiny")
    shared = "system: you are a helpful assistant. " * 20
    for question in ["what is one", "what is two"]:
        body = {"prompt": shared + question, "max_tokens": 2}
        assert httpx.post(f"{url}/v1/completions", json=body, timeout=10).status_code == 200
    values = metric_values(url)
    assert values["vllm:prefix_cache_hits_total"] >= 128
    assert values["vllm:prompt_tokens_cached_total"] == values["vllm:prefix_cache_hits_total"]
    assert values["vllm:prefix_cache_queries_total"] == values["vllm:prompt_tokens_total"]
