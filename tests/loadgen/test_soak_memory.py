"""Soak: memory does not grow with the number of requests (streaming aggregation, no per-request lists)."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

from loadgen.metrics import LoadgenCollector
from loadgen.runner import Run
from loadgen.scenario import Scenario


def test_memory_is_flat_over_thousands_of_requests(scripted, tmp_path):
    scenario = Scenario.build(
        None,
        {
            "url": scripted.url, "model": "scripted", "concurrency": 8, "soak": True, "output_len": 6,
            "input_len": "uniform:8:64", "metrics_address": "none", "progress": "none",
            "output_jsonl": str(tmp_path / "soak.jsonl"),
        },
    )  # fmt: skip
    run = Run(scenario, LoadgenCollector())
    samples: dict[int, int] = {}

    async def watch() -> None:
        for mark in (2000, 7000):
            while run.metrics.sent < mark:
                await asyncio.sleep(0.05)
            gc.collect()
            samples[mark] = tracemalloc.get_traced_memory()[0]
        run.stop()

    async def main() -> dict:
        watcher = asyncio.create_task(watch())
        report = await run.execute()
        await watcher
        return report

    tracemalloc.start()
    try:
        report = asyncio.run(main())
    finally:
        tracemalloc.stop()
    requests = report["phases"][0]["requests"]
    assert requests["sent"] == requests["finished"] >= 7000
    growth = samples[7000] - samples[2000]
    # 5,000 more requests: even 40 bytes kept per request would add 200 KB
    assert growth < 200_000, f"traced memory grew by {growth} bytes over 5,000 requests"
