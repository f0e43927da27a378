"""Hugging Face TGI (router `/metrics`; Rust exporter: counters without `_total`, no model label).

The model and version come from `/info` (or the target's `model` setting); `/info` is optional, since
TGI's separate `--prometheus-port` serves only `/metrics`: without it the model label is the configured
one, or absent. TGI has no TTFT, KV-usage, prefix-cache or preemption metrics. Token counters are the
`_sum` of its per-request length histograms (prompt: recorded at validation; generated: successful
requests only). Its per-request "mean time per
token" includes prefill, so it is an upper bound of TPOT. Successful requests carry no stop/length
split (`reason="completed"`, `raw_reason="success"`); failures are `error` (`dropped`: `abort`) with
their `err` cause as `raw_reason`.
"""

from __future__ import annotations

from typing import Any

from exporter.engines.base import (
    Engine,
    Fetch,
    Scraped,
    Table,
    add_info,
    apply_table,
    model_labels,
    optional_json,
)
from exporter.engines.parse import Exposition
from exporter.engines.schema import Normalized, raw_reason_label

NAMES: dict[str, tuple[str, ...]] = {
    "llm_requests_running": ("tgi_batch_current_size",),
    "llm_requests_waiting": ("tgi_queue_size",),
    "llm_kv_cache_capacity_tokens": ("tgi_batch_max_total_tokens",),
    "llm_prompt_tokens_total": ("tgi_request_input_length_sum",),
    "llm_generation_tokens_total": ("tgi_request_generated_tokens_sum",),
    "llm_time_per_output_token_seconds": ("tgi_request_mean_time_per_token_duration",),
    "llm_e2e_request_latency_seconds": ("tgi_request_duration",),
    "llm_request_queue_time_seconds": ("tgi_request_queue_duration",),
}


class Tgi(Engine):
    kind = "tgi"
    prefixes = ("tgi_",)
    process_names = r"text-generation-(launcher|server)"

    async def scrape(self, fetch: Fetch, exposition: Exposition | None = None) -> Scraped:
        if exposition is None:
            exposition = await fetch.metrics(self.metrics_path)
        info = await optional_json(fetch, "/info", static=True)  # absent on TGI's separate --prometheus-port
        return Scraped(exposition, {"/info": info} if isinstance(info, dict) else {})

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        exposition = scraped.exposition
        assert exposition is not None
        info: dict[str, Any] = scraped.documents.get("/info", {})
        model = model or _text(info.get("model_id")) or None
        labels = model_labels(model)
        out = Normalized()
        apply_table(exposition, Table(NAMES, lambda _: labels), out)
        for sample in exposition.samples("tgi_request_success"):
            out.add("llm_requests_finished_total", sample.value, {**labels, "reason": "completed",
                                                                   "raw_reason": "success"})  # fmt: skip
        for sample in exposition.samples("tgi_request_failure"):
            raw = sample.labels.get("err", "")
            reason = {"reason": "abort" if raw == "dropped" else "error", "raw_reason": raw_reason_label(raw)}
            out.add("llm_requests_finished_total", sample.value, {**labels, **reason})
        add_info(out, [model or ""], _text(info.get("version")))
        return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
