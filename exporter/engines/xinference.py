"""Xinference 4.x: the worker's metrics exporter port (`--metrics-exporter-port`), not the API port.

Labels: `model_uid` (the name clients request; else `model_name`) -> `model`, `replica_index` ->
`engine_index`. Xinference's `engine` label names the backend (vllm, llama.cpp, ...), not a rank, and
is dropped. It has no queue, KV, inter-token, preemption or prefix-cache metrics. Its request counter
(`model_request_total`, failures included) is one `other` series of `llm_requests_finished_total`; the
failure counter overlaps it and is not published. Supervisor-port metrics (cluster inventory) are not
engine metrics.
"""

from __future__ import annotations

from exporter.engines.base import (
    Engine,
    Scraped,
    Table,
    add_counted,
    add_info,
    apply_table,
    labels_from_engine,
    models_seen,
)
from exporter.engines.schema import Normalized

P = "xinference:"
NAMES: dict[str, tuple[str, ...]] = {
    "llm_requests_running": (P + "model_serve_count",),
    "llm_prompt_tokens_total": (P + "input_tokens_total_counter",),
    "llm_generation_tokens_total": (P + "output_tokens_total_counter", P + "generate_tokens_total"),
    "llm_time_to_first_token_seconds": (P + "time_to_first_token_seconds",),
    "llm_e2e_request_latency_seconds": (P + "model_request_duration_seconds",),
}


class Xinference(Engine):
    kind = "xinference"
    prefixes = (P,)
    process_names = r"xinference(-local|-worker|-supervisor)?(\..*)?"

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        exposition = scraped.exposition
        assert exposition is not None
        out = Normalized()

        labels = labels_from_engine(model, ("model_uid", "model_name"), index_key="replica_index")
        apply_table(exposition, Table(NAMES, labels), out)
        # Requests (errors included) and, apart, failed requests: publishing both would count errors
        # twice, and total minus errors can go down between the two increments. So the total, as `other`.
        add_counted(exposition, P + "model_request_total", "other", "model_request", labels, out)
        add_info(out, models_seen(out) or ([model] if model else []))
        return out
