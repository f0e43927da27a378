"""llama.cpp `llama-server` (`--metrics`).

Its exposition has no labels and no histograms. `llamacpp:prompt_tokens_total` EXCLUDES prompt tokens
reused from the cache, so the normalized prompt counter is that plus `llamacpp:prompt_tokens_cached_total`
(builds without the cached counter get no prompt counter rather than an undercount). The throughput
gauges (`prompt_tokens_seconds`, `predicted_tokens_seconds`) reset on every read and are not used: rates
come from the counters. `/props` (optional: a build or proxy without it, or router mode's own stub,
still publishes the metrics) gives the model alias, the build (version) and the slots. The KV capacity
is published only when it is known exactly (one slot whose context is below the model's training
context, see `_capacity`); with several slots the cache may be unified or split, which no endpoint says.
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
)
from exporter.engines.parse import Exposition
from exporter.engines.schema import Normalized

P = "llamacpp:"


class LlamaCpp(Engine):
    kind = "llamacpp"
    prefixes = (P,)
    process_names = r"llama-server"

    async def scrape(self, fetch: Fetch, exposition: Exposition | None = None) -> Scraped:
        if exposition is None:
            exposition = await fetch.metrics(self.metrics_path)
        props = await optional_json(fetch, "/props", static=True)
        documents: dict[str, Any] = {}
        if isinstance(props, dict) and props.get("role") != "router":  # the router's own /props is a stub
            documents["/props"] = props
            if props.get("total_slots") == 1:  # the only case where the capacity can be known (below)
                models = await optional_json(fetch, "/v1/models", static=True)
                if isinstance(models, dict):
                    documents["/v1/models"] = models
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
        add("llm_kv_cache_capacity_tokens", _capacity(props, scraped.documents.get("/v1/models")))
        add_info(out, [model] if model else [""], _text(props.get("build_info")))
        return out


def _capacity(props: dict[str, Any], models: Any) -> float | None:
    """The KV cache's size in tokens, only where llama-server's answers pin it down exactly.

    `/props` reports `total_slots` and each slot's context (`default_generation_settings.n_ctx`), which is
    the KV context per sequence capped by `--kv-unified-per-slot` and by the model's training context
    (`n_ctx_slot()` in tools/server/server-context.cpp). It does not say whether the cache is unified:
    with `--kv-unified` (the default when `-np` is left on auto) every slot's n_ctx is the whole cache, else
    the cache is n_ctx per slot times the slots. With one slot both read the same, so the capacity is that
    slot's context, provided it is below the training context (`/v1/models` `meta.n_ctx_train`), i.e. was
    not capped by it. Anything else: absent.
    """
    settings = props.get("default_generation_settings")
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
    if props.get("total_slots") != 1 or not _positive_int(n_ctx):
        return None
    n_ctx_train = _n_ctx_train(models)
    if n_ctx_train is None or n_ctx >= n_ctx_train:
        return None
    return float(n_ctx)


def _n_ctx_train(models: Any) -> int | None:
    data = models.get("data") if isinstance(models, dict) else None
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        return None
    meta = data[0].get("meta")
    value = meta.get("n_ctx_train") if isinstance(meta, dict) else None
    return value if _positive_int(value) else None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
