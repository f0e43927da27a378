"""--data-parallel-size N: N engines behind one API, balanced like vLLM's DP client, one `engine`
label each."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
from prometheus_client.parser import text_string_to_metric_families

from exporter.engines.base import Scraped
from exporter.engines.parse import parse
from exporter.engines.vllm import Vllm


def by_engine(text: str, name: str) -> Iterator[tuple[str, float]]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                yield sample.labels["engine"], sample.value


def test_two_engines_share_the_load_and_report_separately(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--data-parallel-size", "2")

    async def load() -> list[str]:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"prompt": "spread me out", "max_tokens": 40, "ignore_eos": True}
            tasks = [asyncio.create_task(client.post(f"{url}/v1/completions", json=body)) for _ in range(16)]
            await asyncio.sleep(0.5)
            snapshot = (await client.get(f"{url}/metrics")).text
            responses = [await task for task in tasks]
            assert [response.status_code for response in responses] == [200] * 16
            return [snapshot, (await client.get(f"{url}/metrics")).text]

    during, after = asyncio.run(load())
    running = dict(by_engine(during, "vllm:num_requests_running"))
    assert running == {"0": 8.0, "1": 8.0}  # 16 requests, 8 sequences per engine
    generated = dict(by_engine(after, "vllm:generation_tokens_total"))
    assert generated == {"0": 320.0, "1": 320.0}
    engines = sorted(
        sample.labels["engine"]
        for family in text_string_to_metric_families(after)
        if family.name == "vllm:cache_config_info"
        for sample in family.samples
    )
    assert engines == ["0", "1"]
    normalized = Vllm().normalize(Scraped(exposition=parse(after)), model=None)
    for index in ("0", "1"):
        assert normalized.value("llm_generation_tokens_total", engine_index=index) == 320
        assert normalized.value("llm_kv_cache_capacity_tokens", engine_index=index) == 1024
    assert httpx.get(f"{url}/_simulator/stats", timeout=5).json()["data_parallel_size"] == 2
