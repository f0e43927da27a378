"""llama.cpp `llama-server` (`--metrics`).

Its exposition has no labels and no histograms. `llamacpp:prompt_tokens_total` EXCLUDES prompt tokens
reused from the cache, so the normalized prompt counter is that plus `llamacpp:prompt_tokens_cached_total`
(builds without the cached counter get no prompt counter rather than an undercount). The throughput
gauges (`prompt_tokens_seconds`, `predicted_tokens_seconds`) reset on every read and are not used: rates
come from the counters. `/props` (optional: a build or proxy without it, or router mode's own stub,
still publishes the metrics) gives the model alias, the build (version) and the slots.
"""

from __future__ import annotations

from typing import Any

from exporter.engines.base import (
    Engine,
    Fetch,
    Scraped,
    add_info,
    model_labels,
    optional_json,
    read_exposition,
)
from exporter.engines.parse import Exposition
from exporter.engines.schema import Normalized

P = "llamacpp:"


class LlamaCpp(Engine):
    kind = "llamacpp"
    prefixes = (P,)

    async def scrape(self, fetch: Fetch, exposition: Exposition | None = None) -> Scraped:
        if exposition is None:
            exposition = await read_exposition(fetch, self.metrics_path)
        props = await optional_json(fetch, "/props")
        documents: dict[str, Any] = {}
        if isinstance(props, dict) and props.get("role") != "router":  # the router's own /props is a stub
            documents["/props"] = props
        return Scraped(exposition, documents)

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        exposition = scraped.exposition
        assert exposition is not None
        props: dict[str, Any] = scraped.documents.get("/props", {})
        model = model or _text(props.get("model_alias")) or None
        labels = model_labels(model)
        out = Normalized()

        def value(name: str) -> float | None:
            samples = exposition.samples(P + name)
            return samples[0].value if samples else None

        def add(family: str, number: float | None) -> None:
            if number is not None:
                out.add(family, number, labels)

        uncached, cached = value("prompt_tokens_total"), value("prompt_tokens_cached_total")
        add("llm_requests_running", value("requests_processing"))
        add("llm_requests_waiting", value("requests_deferred"))
        add("llm_generation_tokens_total", value("tokens_predicted_total"))
        if uncached is not None and cached is not None:
            add("llm_prompt_tokens_total", uncached + cached)
            add("llm_prompt_tokens_cached_total", cached)
            add("llm_prefix_cache_queries_total", uncached + cached)
            add("llm_prefix_cache_hits_total", cached)
        add("llm_kv_cache_capacity_tokens", _capacity(props))
        add_info(out, [model] if model else [""], _text(props.get("build_info")))
        return out


def _capacity(props: dict[str, Any]) -> float | None:
    settings = props.get("default_generation_settings")
    slots = props.get("total_slots")
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
    if isinstance(n_ctx, int) and isinstance(slots, int) and n_ctx > 0 and slots > 0:
        return float(n_ctx * slots)
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
