"""A target's budgets (bytes, series, its deadline) and hostile values, over real loopback HTTP.

Each refusal is one counted error of its own kind for that target; the reading stops when the budget or
the deadline is reached, and nothing of a refused payload stays in memory after its round.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import math
import sys
import threading
import time
from collections.abc import AsyncGenerator
from typing import Any

from exporter.config import Config, TargetConfig
from exporter.engines.collector import EnginesCollector
from tests.engines.conftest import FakeEngine, scrape, value

SERIES_LINE = 'vllm:num_requests_running{{engine="{e}",model_name="model-{i}"}} {i}.0\n'


def vllm_payload(series: int) -> bytes:
    lines = ["# TYPE vllm:num_requests_running gauge\n"]
    lines += [SERIES_LINE.format(e=i % 8, i=i) for i in range(series)]
    return "".join(lines).encode()


def errors(exposition, target: str) -> dict[str, float]:
    samples = exposition.samples("llm_target_errors_total")
    return {s.labels["kind"]: s.value for s in samples if s.labels["target"] == target and s.value}


def collector_for(*targets: TargetConfig, passthrough: bool = False) -> EnginesCollector:
    return EnginesCollector(Config(targets=targets, engine_passthrough=passthrough))


def test_each_budget_refusal_has_its_own_kind(fake_engines: list[FakeEngine]) -> None:
    announced, chunked, series, compressed, good, *_ = fake_engines
    payload = vllm_payload(3000)  # about 220 KB
    announced.serve("/metrics", payload)
    chunked.serve("/metrics", payload, chunked=True)
    series.serve("/metrics", payload)
    compressed.serve("/metrics", gzip.compress(payload), headers={"Content-Encoding": "gzip"})
    good.serve("/metrics", vllm_payload(10))
    collector = collector_for(
        TargetConfig("announced", announced.url, kind="vllm", max_bytes=100_000),
        TargetConfig("chunked", chunked.url, kind="vllm", max_bytes=100_000),
        TargetConfig("series", series.url, kind="vllm", max_series=1000),
        TargetConfig("compressed", compressed.url, kind="vllm"),
        TargetConfig("good", good.url, kind="vllm", max_series=10),
    )
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert errors(exposition, "announced") == {"too_large": 1}
    assert errors(exposition, "chunked") == {"too_large": 1}
    assert errors(exposition, "series") == {"too_many_series": 1}
    assert errors(exposition, "compressed") == {"parse": 1}
    assert errors(exposition, "good") == {}
    assert value(exposition, "llm_target_up", target="good") == 1  # exactly at its budget is within it
    assert all("identity" in headers.get("Accept-Encoding", "") for _, headers in good.requests)


def test_the_deadline_stops_the_parsing_and_leaves_nothing_running(fake_engine: FakeEngine) -> None:
    """A payload too big to parse within the deadline: a timeout on time, no parse left behind, and every
    async generator of the read closed when the deadline stopped it (one left unclosed is closed by a task
    the loop starts when the garbage collector finds it: work going on after the deadline, at any time)."""
    fake_engine.serve("/metrics", vllm_payload(400_000), chunked=True)
    target = TargetConfig("big", fake_engine.url, kind="vllm", max_series=1_000_000, timeout_seconds=0.5)
    collector = collector_for(target)
    threads = threading.active_count()
    try:
        unclosed = collector._loop.submit(_note_unclosed_generators()).result(5)
        for _ in range(3):
            started = time.monotonic()
            exposition = scrape(collector)
            assert time.monotonic() - started < collector.deadline_seconds + 0.5
        pending = collector._loop.submit(_tasks_left()).result(5)
    finally:
        collector.close()
    assert errors(exposition, "big") == {"timeout": 3}
    assert unclosed == [], "async generators of a scrape were left for the garbage collector to close"
    assert pending == 0, "a scrape's work went on after its deadline"
    assert threading.active_count() <= threads + 1  # the engines loop's own thread; no parse threads


async def _note_unclosed_generators() -> list[str]:
    """The names of the async generators first iterated on this loop from now on that are finalized
    unclosed (the loop's asyncgen finalizer hook, wrapped; it still closes them)."""
    firstiter, finalizer = sys.get_asyncgen_hooks()
    unclosed: list[str] = []

    def noting(generator: AsyncGenerator[Any, Any]) -> None:
        unclosed.append(generator.ag_code.co_qualname)
        if finalizer is not None:
            finalizer(generator)

    sys.set_asyncgen_hooks(firstiter, noting)
    return unclosed


async def _tasks_left() -> int:
    """Tasks on the loop besides this one, once the garbage collector has run."""
    gc.collect()
    return len([task for task in asyncio.all_tasks() if task is not asyncio.current_task()])


def test_a_refused_payload_is_not_kept_in_memory_after_its_round(fake_engines: list[FakeEngine]) -> None:
    """Nothing of what a refused scrape read waits in reference cycles for a full collection."""
    too_large, too_many, slow, *_ = fake_engines
    too_large.serve("/metrics", vllm_payload(60_000), chunked=True)
    too_many.serve("/metrics", vllm_payload(60_000))
    slow.serve("/metrics", vllm_payload(400_000), chunked=True)
    collector = collector_for(
        TargetConfig("too_large", too_large.url, kind="vllm", max_bytes=2_000_000, max_series=1_000_000),
        TargetConfig("too_many", too_many.url, kind="vllm", max_series=20_000),
        TargetConfig("slow", slow.url, kind="vllm", max_series=1_000_000, timeout_seconds=0.5),
    )
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            exposition = scrape(collector)
            garbage = gc.collect()  # what only a full collection would have freed
            assert garbage < 2000, f"{garbage} objects of a refused scrape were kept in reference cycles"
    finally:
        gc.enable()
        collector.close()
    assert errors(exposition, "too_large") == {"too_large": 2}
    assert errors(exposition, "too_many") == {"too_many_series": 2}
    assert errors(exposition, "slow") == {"timeout": 2}


HOSTILE = (
    "# TYPE vllm:num_requests_running gauge\n"
    'vllm:num_requests_running{engine="0",model_name="m"} 2.0\n'
    f'vllm:num_requests_running{{engine="1",model_name="{"x" * 1_000_000}"}} 3.0\n'
    "# TYPE vllm:generation_tokens_total counter\n"
    'vllm:generation_tokens_total{engine="0",model_name="m"} NaN\n'
    'vllm:generation_tokens_total{engine="1",model_name="m"} -5.0\n'
    "# TYPE vllm:prompt_tokens_total counter\n"
    'vllm:prompt_tokens_total{engine="0",model_name="m"} +Inf\n'
    'vllm:prompt_tokens_total{engine="1",model_name="m"} 7.0\n'
    "# TYPE vllm:e2e_request_latency_seconds histogram\n"
    'vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="m"} -1.0\n'
    'vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2.0\n'
    'vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 2.0\n'
    'vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 1.0\n'
    "# TYPE vllm:kv_cache_usage_perc gauge\n"
    'vllm:kv_cache_usage_perc{engine="0",model_name="http://admin:hunter2@db:5432"} NaN\n'
)


def test_hostile_values_are_dropped_and_counted_never_republished(fake_engine: FakeEngine) -> None:
    fake_engine.serve("/metrics", HOSTILE)
    collector = collector_for(TargetConfig("t", fake_engine.url, kind="vllm"), passthrough=True)
    try:
        exposition = scrape(collector)
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="t") == 1
    assert value(exposition, "llm_requests_running", target="t", model="m") == 2
    assert value(exposition, "llm_prompt_tokens_total", target="t", engine_index="1") == 7
    for name in (
        "llm_generation_tokens_total",
        "vllm_generation_tokens_total",
        "llm_e2e_request_latency_seconds_count",
    ):
        assert not exposition.samples(name), name
    assert not exposition.samples("vllm_e2e_request_latency_seconds_count")
    assert value(exposition, "llm_prompt_tokens_total", target="t", engine_index="0") is None
    assert max(len(v) for s in _all(exposition) for v in s.labels.values()) < 100
    dropped = exposition.samples("llm_target_series_dropped_total")
    # per scrape: one long label, NaN + +Inf, a negative counter and the histogram with a negative bucket
    assert {s.labels["reason"]: s.value for s in dropped} == {
        "label_too_long": 2,
        "not_finite": 4,
        "negative": 4,
    }
    # A gauge keeps its NaN; a credential in a label value is published redacted.
    [kv] = exposition.samples("llm_kv_cache_usage_ratio")
    assert math.isnan(kv.value) and kv.labels["model"] == "http://<redacted>@db:5432"
    assert not [s for s in _all(exposition) if "hunter2" in str(s.labels)]


def _all(exposition):
    return [s for samples in exposition.by_sample_name.values() for s in samples]
