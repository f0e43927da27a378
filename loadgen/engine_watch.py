"""The engine's own view during each phase: requests running, requests waiting in its queue, KV cache
usage, read from its /metrics once a second while the load runs.

The load generator sees queueing only as a long time to the first token; the engine says whether the
wait was its queue (waiting > 0, running at its cap) or a full KV cache. Names are the engines' own
(kept as data below, the same ones the exporter normalizes), or the exporter's normalized `llm_*` names
when the URL is an exporter's. Every read has a 2 s timeout and a 4 MiB cap; an engine without /metrics
(or one that stops answering) just leaves the figures out, and the report says why.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("loadgen")

# concept -> metric names, most specific first: vLLM, SGLang (served as `sglang:`, and as `sglang_` by
# sgl-router's /engine_metrics and Prometheus's underscore escaping: SGLang issue 12618), llama.cpp, TGI,
# LMDeploy/trtllm-serve, NIM and older vLLM (bare names), then the exporter's normalized ones.
NAMES: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running", "sglang:num_running_reqs", "sglang_num_running_reqs",
                "llamacpp:requests_processing", "tgi_batch_current_size", "lmdeploy:num_requests_running",
                "trtllm_num_requests_running", "num_requests_running", "llm_requests_running"),
    "waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "sglang_num_queue_reqs",
                "llamacpp:requests_deferred", "tgi_queue_size", "lmdeploy:num_requests_waiting",
                "trtllm_num_requests_waiting", "num_requests_waiting", "llm_requests_waiting"),
    "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage",
                 "sglang_token_usage", "lmdeploy:gpu_cache_usage_perc", "gpu_cache_usage_perc",
                 "llm_kv_cache_usage_ratio"),
    "preemptions": ("vllm:num_preemptions_total", "vllm:num_preemptions", "llm_preemptions_total"),
}  # fmt: skip
MAX_BYTES = 4 * 1024 * 1024
TIMEOUT_S = 2.0


@dataclass
class Gauge:
    """Samples of one gauge over a phase: count, sum, max."""

    count: int = 0
    total: float = 0.0
    max: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.max = max(self.max, value)

    def summary(self) -> dict | None:
        return {"mean": self.total / self.count, "max": self.max} if self.count else None


@dataclass
class EngineView:
    """What the engine said during one phase."""

    samples: int = 0
    gauges: dict[str, Gauge] = field(
        default_factory=lambda: {
            k: Gauge() for k in ("running", "waiting", "kv_usage", "running_while_waiting")
        }
    )
    preemptions_first: float | None = None
    preemptions_last: float | None = None

    def add(self, values: dict[str, float]) -> None:
        self.samples += 1
        for concept, gauge in self.gauges.items():
            if concept in values:
                gauge.add(values[concept])
        if values.get("waiting", 0) > 0 and "running" in values:  # what ran while requests queued: the cap
            self.gauges["running_while_waiting"].add(values["running"])
        if "preemptions" in values:
            if self.preemptions_first is None:
                self.preemptions_first = values["preemptions"]
            self.preemptions_last = values["preemptions"]

    def summary(self) -> dict:
        out: dict = {"samples": self.samples}
        for concept, gauge in self.gauges.items():
            out[concept] = gauge.summary()
        if self.preemptions_first is not None and self.preemptions_last is not None:
            out["preemptions"] = max(0.0, self.preemptions_last - self.preemptions_first)
        return out


def read_values(text: str) -> dict[str, float]:
    """The concepts found in one exposition: counts summed over their series (data-parallel engines),
    the KV usage ratio the highest of them (the fullest engine is the one that queues)."""
    found: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith(("_created", "_bucket")):
                found.setdefault(sample.name, []).append(float(sample.value))
    values = {}
    for concept, names in NAMES.items():
        name = next((n for n in names if n in found), None)
        if name is not None:
            values[concept] = max(found[name]) if concept == "kv_usage" else sum(found[name])
    return values


class Unreadable(Exception):
    """The engine's /metrics answered, but not with a page to read (its status, or its size)."""


async def read_page(client: httpx.AsyncClient, url: str) -> str:
    """One read of the engine's /metrics: HTTP 200 and at most MAX_BYTES (the client's timeout bounds
    the time). Every reader of the engine's page goes through here (prefix-cache counters included)."""
    async with client.stream("GET", url) as response:
        if response.status_code != 200:
            raise Unreadable(f"HTTP {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_BYTES:
                raise Unreadable(f"answer over {MAX_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


class EngineWatch:
    """Reads `url` every `interval_s` into the current phase's EngineView until stopped.

    `start()` runs during the run's setup: it builds the HTTP client (an SSL context costs tens of
    milliseconds of CPU) and takes a first reading, so nothing of this lands on a phase's first requests.
    """

    def __init__(self, url: str, interval_s: float = 1.0) -> None:
        self.url = url
        self.interval_s = interval_s
        self.view: EngineView | None = None
        self.problem: str | None = None  # why there are no figures, once known
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task | None = None
        self._answered = False  # once it has answered, a failed reading is skipped, not the end

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=TIMEOUT_S)
        if await self._read() is not None:
            self._task = asyncio.create_task(self._loop())

    def start_phase(self) -> EngineView:
        self.view = EngineView()
        return self.view

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            values = await self._read()
            if values is None:
                return
            if self.view is not None and values:
                self.view.add(values)

    async def _read(self) -> dict[str, float] | None:
        """One reading; None ends the watch (no /metrics, or nothing it knows)."""
        assert self._client is not None
        try:
            values = read_values(await read_page(self._client, self.url))
        except Unreadable as exc:
            return self._give_up(str(exc))
        except httpx.HTTPError as exc:
            return {} if self._answered else self._give_up(type(exc).__name__)
        except (ValueError, TypeError, IndexError) as exc:
            return self._give_up(f"not Prometheus text ({exc})")
        if not values:
            return self._give_up("no running/waiting/KV metric this load generator knows")
        self._answered = True
        return values

    def _give_up(self, why: str) -> None:
        self.problem = why
        log.info("engine metrics not read (%s): the report leaves the engine's queue out", why)
        return None
