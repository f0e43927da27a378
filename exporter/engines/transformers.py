"""Hugging Face `transformers serve` (5.x): an engine without metrics.

It serves no /metrics, so a target of this kind (`kind=transformers`; never detected, there is nothing
to detect it by) is read for its health only: `GET /health` answering 200 is `llm_target_up 1` (503, its
answer once the continuous-batching worker died, is down), and `llm_engine_info` names the target's
configured `model` (its /v1/models answers 500 without a Hugging Face cache). Everything else it has
comes from the host and the GPU, under its target: `host_engine_process_*{target}` (the process tree
that listens on the target's port; program name `transformers`) and `llm_engine_gpu_*{target}` (the GPU
join). No other llm_* family: absent, never zero.
"""

from __future__ import annotations

from exporter.engines.base import Engine, Fetch, Scraped, add_info
from exporter.engines.parse import Exposition
from exporter.engines.schema import Normalized


class Transformers(Engine):
    kind = "transformers"
    metrics_path = "/health"
    process_names = r"transformers"

    async def scrape(self, fetch: Fetch, exposition: Exposition | None = None) -> Scraped:
        return Scraped(documents={"/health": await fetch.json("/health")})

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        out = Normalized()
        add_info(out, [model] if model else [])
        return out
