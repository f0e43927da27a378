"""Triton Inference Server with the TensorRT-LLM backend (metrics port, default :8002/metrics).

The backend publishes label-discriminated gauges (`nv_trt_llm_request_metrics{request_type}`,
`nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type}`, ...) per Triton `model`. Only models that
carry `nv_trt_llm_*` series are engine models; Triton's pre/post-processing models are not. Running =
`active` requests, waiting = `waiting` (newer backends) else Triton's pending count. KV usage = the
`fraction` block metric, else `used` / `max`, else (`max` - `free`) / `max`; with none of them it is
absent. Token counters are
the `_sum` of the backend's token-length histograms. Triton's first-response histogram (opt-in,
milliseconds) becomes TTFT in seconds. Finished: Triton's success counter (`completed`) and its failure
counter (`CANCELED`: `abort`; every other failure reason: `error`).
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.engines.base import Engine, Scraped, add_info, in_seconds, merge_histograms
from exporter.engines.parse import Exposition
from exporter.engines.schema import Normalized, raw_reason_label


class TritonTrtllm(Engine):
    kind = "triton_trtllm"
    prefixes = ("nv_trt_llm_", "nv_llm_")
    process_names = r"tritonserver"
    passthrough_prefixes = ("nv_",)

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        exposition = scraped.exposition
        assert exposition is not None
        out = Normalized()
        models = {
            s.labels.get("model", "")
            for name, family in exposition.families.items()
            if name.startswith(self.prefixes)
            for s in family.samples
        }

        def labels(engine_labels: Mapping[str, str]) -> dict[str, str] | None:
            name = engine_labels.get("model", "")
            return ({"model": name} if name else {}) if name in models else None

        def discriminated(family: str, label: str) -> dict[tuple, dict[str, float]]:
            values: dict[tuple, dict[str, float]] = {}
            for sample in exposition.samples(family):
                mapped = labels(sample.labels)
                if mapped is not None and label in sample.labels:
                    values.setdefault(tuple(mapped.items()), {})[sample.labels[label]] = sample.value
            return values

        requests = discriminated("nv_trt_llm_request_metrics", "request_type")
        pending = discriminated("nv_inference_pending_request_count", "version")
        for key, by_type in requests.items():
            if "active" in by_type:
                out.add("llm_requests_running", by_type["active"], dict(key))
            if "waiting" in by_type:
                out.add("llm_requests_waiting", by_type["waiting"], dict(key))
            elif key in pending:
                out.add("llm_requests_waiting", sum(pending[key].values()), dict(key))
        for key, blocks in discriminated("nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type").items():
            if "fraction" in blocks:
                out.add("llm_kv_cache_usage_ratio", blocks["fraction"], dict(key))
            elif blocks.get("max"):
                used = blocks["used"] if "used" in blocks else _used_from_free(blocks)
                if used is not None:  # neither used nor free: absent, never a guessed 0
                    out.add("llm_kv_cache_usage_ratio", used / blocks["max"], dict(key))
            if "max" in blocks and "tokens_per" in blocks:
                out.add("llm_kv_cache_capacity_tokens", blocks["max"] * blocks["tokens_per"], dict(key))
        self._token_sums(exposition, labels, out)
        for key, value in merge_histograms(
            exposition.histograms("nv_inference_first_response_histogram_ms"), labels
        ):
            out.add_histogram(in_seconds("llm_time_to_first_token_seconds", key, value, 1000.0))
        self._finished(exposition, labels, out)
        add_info(out, sorted(models) or ([model] if model else []))
        return out

    @staticmethod
    def _token_sums(exposition: Exposition, labels, out: Normalized) -> None:
        for wire, family in (("nv_llm_input_token_len_sum", "llm_prompt_tokens_total"),
                             ("nv_llm_output_token_len_sum", "llm_generation_tokens_total")):  # fmt: skip
            totals: dict[tuple, float] = {}
            for sample in exposition.samples(wire):
                mapped = labels(sample.labels)
                if mapped is not None:
                    key = tuple(mapped.items())
                    totals[key] = totals.get(key, 0.0) + sample.value
            for key, total in totals.items():
                out.add(family, total, dict(key))

    @staticmethod
    def _finished(exposition: Exposition, labels, out: Normalized) -> None:
        for sample in exposition.samples("nv_inference_request_success"):
            mapped = labels(sample.labels)
            if mapped is not None:
                out.add("llm_requests_finished_total", sample.value,
                        {**mapped, "reason": "completed", "raw_reason": "success"})  # fmt: skip
        failures: dict[tuple, float] = {}
        for sample in exposition.samples("nv_inference_request_failure"):
            mapped = labels(sample.labels)
            if mapped is not None:
                raw = sample.labels.get("reason", "failure")  # older Triton: no reason label
                common = "abort" if raw == "CANCELED" else "error"  # REJECTED, BACKEND, OTHER, ...
                key = (*mapped.items(), ("reason", common), ("raw_reason", raw_reason_label(raw)))
                failures[key] = failures.get(key, 0.0) + sample.value
        for key, value in failures.items():
            out.add("llm_requests_finished_total", value, dict(key))


def _used_from_free(blocks: Mapping[str, float]) -> float | None:
    return blocks["max"] - blocks["free"] if "free" in blocks else None
