"""SGLang 0.5.x (`--enable-metrics`).

Labels: `model_name` -> `model`, `dp_rank` -> `engine_index`. Scheduler gauges are published per
tp/pp/moe-ep rank when every rank reports; the rank-0 series is kept instead of summing copies.
With priority scheduling, only the total (`priority=""`) is read. Preemptions are SGLang's
retractions. Prefix-cache queries/hits come from `sglang:prefill_effective_tokens_total{mode}`
(hits = the `*_hit` modes), else from the cached/prompt token counters. Checked against SGLang 0.5.23's
code (issue 17 asked, after a render showed the hit modes at 0 beside non-zero cached tokens): the
scheduler increments that counter on every prefill batch, on the stats-logging rank only
(`SchedulerMetricsReporter.report_prefill_stats` -> `increment_effective_prefill_tokens`), `input` with
the batch's new tokens and `device_hit`/`host_hit`/`storage_hit` with the cached prefix that
`PrefillAdder._account_prefill_cache_admission` split by tier; a retracted request's second prefill
counts in neither. Every rank pre-seeds the four modes at 0, so the series of the other ranks stay 0 for
good, which is why only rank 0 is read. It is the counter SGLang's own doc string names for the hit
rate; `cached_tokens_total` (counted per finished request by the tokenizer process) differs from it by
the retracted requests and the requests still running. SGLang counts finished
requests without reasons (`num_requests_total`, aborted ones included): they appear as one `other`
series; its separate abort counter overlaps that total and is not published.

Names arrive as SGLang serves them (`sglang:num_running_reqs`) or with the colon turned into an
underscore (`sglang_num_running_reqs`): sgl-router's `/engine_metrics` rewrites them so (SGLang issue
12618), and so does a Prometheus that negotiates `escaping=underscores`; SGLang's own example dashboard
has flipped between the two (PRs 12970, 15076, 33796). Both spellings are read; where a payload has a
name in both, the served (colon) one wins.
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.engines.base import (
    Engine,
    Scraped,
    Table,
    add_counted,
    add_info,
    apply_table,
    group,
    label_values,
    models_seen,
)
from exporter.engines.parse import Exposition, Family, Sample
from exporter.engines.schema import Normalized

RANK_LABELS = ("tp_rank", "pp_rank", "moe_ep_rank", "attn_cp_rank", "cp_rank")

NAMES: dict[str, tuple[str, ...]] = {
    "llm_requests_running": ("sglang:num_running_reqs",),
    "llm_requests_waiting": ("sglang:num_queue_reqs",),
    "llm_kv_cache_usage_ratio": ("sglang:token_usage",),
    "llm_kv_cache_capacity_tokens": ("sglang:max_total_num_tokens",),
    "llm_prompt_tokens_total": ("sglang:prompt_tokens_total",),
    "llm_generation_tokens_total": ("sglang:generation_tokens_total",),
    "llm_time_to_first_token_seconds": ("sglang:time_to_first_token_seconds",),
    "llm_inter_token_latency_seconds": (
        "sglang:inter_token_latency_seconds",
        "sglang:time_per_output_token_seconds",
    ),
    "llm_time_per_output_token_seconds": ("sglang:request_time_per_output_token_seconds",),
    "llm_e2e_request_latency_seconds": ("sglang:e2e_request_latency_seconds",),
    "llm_request_queue_time_seconds": ("sglang:queue_time_seconds",),
    "llm_preemptions_total": ("sglang:num_retracted_requests_total",),
}


class Sglang(Engine):
    kind = "sglang"
    prefixes = ("sglang:", "sglang_")
    process_names = r"sglang(\..*)?"

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        assert scraped.exposition is not None
        exposition = colon_names(scraped.exposition)
        out = Normalized()

        def labels(engine_labels: Mapping[str, str]) -> dict[str, str] | None:
            if any(engine_labels.get(rank, "0") != "0" for rank in RANK_LABELS):
                return None
            if engine_labels.get("priority", "") != "":
                return None
            result = {"model": engine_labels.get("model_name") or model or ""}
            if "dp_rank" in engine_labels:
                result["engine_index"] = engine_labels["dp_rank"]
            return {k: v for k, v in result.items() if v}

        apply_table(exposition, Table(NAMES, labels), out)
        self._cached_tokens(exposition, labels, out)
        self._prefix_cache(exposition, labels, out)
        # SGLang counts finished requests (num_requests_total, aborted ones included) and, apart, abort
        # calls (num_aborted_requests_total: one per abort_request(), one for an abort_all). Both would
        # count aborts twice, and total minus aborts can go down between the two increments (Prometheus
        # would take that for a restart). So the total alone, as `other`.
        add_counted(exposition, "sglang:num_requests_total", "other", "num_requests", labels, out)
        add_info(
            out,
            models_seen(out) + label_values(exposition, "model_name", self.prefixes)
            or ([model] if model else []),
        )
        return out

    @staticmethod
    def _cached_tokens(exposition: Exposition, labels, out: Normalized) -> None:
        samples = exposition.samples("sglang:cached_tokens_total")
        if any(s.labels.get("cache_source") == "total" for s in samples):
            samples = [s for s in samples if s.labels.get("cache_source") == "total"]
        for key, values in group(samples, labels).items():
            out.add("llm_prompt_tokens_cached_total", sum(values), dict(key))

    @staticmethod
    def _prefix_cache(exposition: Exposition, labels, out: Normalized) -> None:
        effective = exposition.samples("sglang:prefill_effective_tokens_total")
        if effective:
            hits = [s for s in effective if s.labels.get("mode", "").endswith("_hit")]
            queries_source, hits_source = effective, hits
        else:
            queries_source = exposition.samples("sglang:prompt_tokens_total")
            hits_source = exposition.samples("sglang:cached_tokens_total")
            if not (queries_source and hits_source):
                return
            if any(s.labels.get("cache_source") == "total" for s in hits_source):
                hits_source = [s for s in hits_source if s.labels.get("cache_source") == "total"]
        hits_by_key = group(hits_source, labels)
        for key, values in group(queries_source, labels).items():
            # A query group without hit series yet has had zero hits: the engine has the concept.
            out.add("llm_prefix_cache_queries_total", sum(values), dict(key))
            out.add("llm_prefix_cache_hits_total", sum(hits_by_key.get(key, [])), dict(key))


def colon_names(exposition: Exposition) -> Exposition:
    """The payload with `sglang_*` names spelled `sglang:*` (what SGLang serves); itself when it has none."""
    if not any(name.startswith(UNDERSCORE) for name in exposition.families):
        return exposition
    families: dict[str, Family] = {}
    by_sample_name: dict[str, list[Sample]] = {}
    for name, family in exposition.families.items():
        renamed = _colon(name)
        if renamed != name and renamed in exposition.families:
            continue  # the same family under its served name: that one wins
        samples = [Sample(_colon(sample.name), sample.labels, sample.value) for sample in family.samples]
        families[renamed] = Family(renamed, family.type, family.help, samples)
        for sample in samples:
            by_sample_name.setdefault(sample.name, []).append(sample)
    return Exposition(families, by_sample_name)


UNDERSCORE = "sglang_"


def _colon(name: str) -> str:
    return "sglang:" + name[len(UNDERSCORE) :] if name.startswith(UNDERSCORE) else name
