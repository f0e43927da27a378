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
    samples: dict[int, tracemalloc.Snapshot] = {}

    async def watch() -> None:
        for mark in (1000, 4000):
            while run.metrics.sent < mark:
                await asyncio.sleep(0.05)
            gc.collect()
            samples[mark] = tracemalloc.take_snapshot()
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
    assert requests["sent"] == requests["finished"] >= 4000
    # The report's percentile sketches gain buckets as new latency values appear; they are bounded
    # by the range of values, not the number of requests (test_units checks that bound). Everything
    # else must stay flat: even 10 bytes kept per request would add 30 KB over 3,000 requests.
    others = [
        tracemalloc.Filter(False, "*/loadgen/stats.py"),
        tracemalloc.Filter(False, tracemalloc.__file__),
    ]
    before, after = (samples[mark].filter_traces(others) for mark in (1000, 4000))
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 30_000, f"traced memory outside the sketches grew by {growth} bytes over 3,000 requests"
    sketch_buckets = max(len(d._buckets) for s in run.stats for d in s.dist.values())
    assert sketch_buckets < 15_000
