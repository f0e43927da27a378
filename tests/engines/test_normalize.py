"""Engine payloads normalized onto the llm_* schema; fixture origins: tests/fixtures/engines/README.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from exporter.engines.base import Scraped
from exporter.engines.detect import ENGINES, engine_for_payload
from exporter.engines.parse import ParseError, parse
from exporter.engines.schema import FAMILIES, Normalized, finish_reason

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"
LLAMA_PROPS = {
    "model_alias": "qwen3-4b-shape",
    "build_info": "b1-0c1e570",
    "total_slots": 4,
    "default_generation_settings": {"n_ctx": 512},
}


def normalize(kind: str, name: str, documents: dict | None = None, model: str | None = None) -> Normalized:
    exposition = parse((FIXTURES / kind / name).read_text())
    assert engine_for_payload(exposition) is ENGINES[kind], "detection picks the engine that produced it"
    return ENGINES[kind].normalize(Scraped(exposition, documents or {}), model)


def matching(items, family: str, labels: dict[str, str]) -> list:
    return [i for i in items if i.family == family and all(i.labels.get(k) == v for k, v in labels.items())]


def one(out: Normalized, family: str, **labels: str) -> float:
    matches = matching(out.points, family, labels)
    assert len(matches) == 1, (family, labels, matches)
    return matches[0].value


def histogram(out: Normalized, family: str, **labels: str):
    matches = matching(out.histograms, family, labels)
    assert len(matches) == 1, (family, labels, matches)
    return matches[0]


def test_every_point_uses_a_documented_family_and_bounded_labels() -> None:
    allowed = {"model", "engine_index", "reason", "raw_reason", "version"}
    outs = [
        normalize("llamacpp", "h100-qwen3-4b-shape-c50.txt", {"/props": LLAMA_PROPS}),
        normalize("sglang", "constructed-0.5.23-dp2-tp2.txt"),
        normalize("tgi", "constructed-full.txt", {"/info": {"model_id": "m"}}),
        normalize("lmdeploy", "constructed-0.18.txt"),
        normalize("triton_trtllm", "constructed-newer-backend.txt"),
    ]
    for out in outs:
        for item in [*out.points, *out.histograms]:
            assert item.family in FAMILIES
            assert set(item.labels) <= allowed, item


# --- llama.cpp: real captures ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c1", "c50", "c500", "idle"])
def test_llamacpp_real_h100_captures(name: str) -> None:
    text = (FIXTURES / "llamacpp" / f"h100-qwen3-4b-shape-{name}.txt").read_text()
    raw = {s.name: s.value for samples in parse(text).by_sample_name.values() for s in samples}
    out = normalize("llamacpp", f"h100-qwen3-4b-shape-{name}.txt", {"/props": LLAMA_PROPS})
    labels = {"model": "qwen3-4b-shape"}
    uncached, cached = raw["llamacpp:prompt_tokens_total"], raw["llamacpp:prompt_tokens_cached_total"]
    assert one(out, "llm_prompt_tokens_total", **labels) == uncached + cached  # cached ones included
    assert one(out, "llm_prompt_tokens_cached_total", **labels) == cached
    assert one(out, "llm_generation_tokens_total", **labels) == raw["llamacpp:tokens_predicted_total"]
    assert one(out, "llm_requests_running", **labels) == raw["llamacpp:requests_processing"]
    assert one(out, "llm_requests_waiting", **labels) == raw["llamacpp:requests_deferred"]
    assert one(out, "llm_prefix_cache_hits_total", **labels) == cached
    assert one(out, "llm_prefix_cache_queries_total", **labels) == uncached + cached
    # Four slots of 512: a unified cache of 512 or four of 512? /props cannot tell, so no capacity.
    assert "llm_kv_cache_capacity_tokens" not in out.families()
    assert one(out, "llm_engine_info", model="qwen3-4b-shape", version="b1-0c1e570") == 1
    # Concepts llama.cpp lacks are absent, never zero.
    absent = {"llm_kv_cache_usage_ratio", "llm_time_to_first_token_seconds", "llm_preemptions_total",
              "llm_requests_finished_total", "llm_e2e_request_latency_seconds"}  # fmt: skip
    assert not absent & out.families()


def models_page(n_ctx_train: int) -> dict:
    """/v1/models as llama-server 0c1e5709 answers it (get_res_model_info), trimmed to what is read."""
    return {"object": "list", "data": [{"id": "m", "meta": {"n_ctx": 512, "n_ctx_train": n_ctx_train}}]}


@pytest.mark.parametrize(
    ("slots", "n_ctx", "models", "capacity"),
    [
        (1, 512, models_page(4096), 512.0),  # one slot: unified or not, the cache is that slot's context
        (1, 4096, models_page(4096), None),  # equal to the training context: maybe capped by it
        (1, 512, None, None),  # no /v1/models: the cap cannot be ruled out
        (2, 512, models_page(4096), None),  # -np 2 -kvu: 512 in all; -np 2: 1024 in all
        (1, 0, models_page(4096), None),  # router mode's stub
    ],
)
def test_llamacpp_kv_capacity_only_when_known_exactly(
    slots: int, n_ctx: int, models: dict | None, capacity: float | None
) -> None:
    props = {**LLAMA_PROPS, "total_slots": slots, "default_generation_settings": {"n_ctx": n_ctx}}
    documents = {"/props": props, **({"/v1/models": models} if models else {})}
    out = normalize("llamacpp", "cpu-tiny-0c1e5709.txt", documents)
    assert out.value("llm_kv_cache_capacity_tokens") == capacity


def test_llamacpp_c50_figures() -> None:
    out = normalize("llamacpp", "h100-qwen3-4b-shape-c50.txt", {"/props": LLAMA_PROPS})
    assert out.value("llm_prompt_tokens_total") == 37657 + 1151
    assert out.value("llm_requests_running") == 46


def test_llamacpp_configured_model_wins_over_the_alias() -> None:
    out = normalize("llamacpp", "cpu-tiny-0c1e5709.txt", {"/props": LLAMA_PROPS}, model="my-model")
    assert one(out, "llm_generation_tokens_total", model="my-model") == 96
    assert one(out, "llm_prompt_tokens_total", model="my-model") == 20 + 34


def test_llamacpp_build_without_cached_counter_gets_no_prompt_counter() -> None:
    out = normalize("llamacpp", "commit-a2df2787-gauges.txt", {"/props": {}})
    assert out.families() == {"llm_requests_running", "llm_requests_waiting", "llm_engine_info"}


# --- vLLM ------------------------------------------------------------------------------------------------

VLLM_DP2 = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-8B"} 3.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen3-8B"} 4.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.5
vllm:gpu_cache_usage_perc{engine="1",model_name="Qwen/Qwen3-8B"} 0.25
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{engine="0",le="0.01",model_name="Qwen/Qwen3-8B"} 3.0
vllm:time_per_output_token_seconds_bucket{engine="0",le="+Inf",model_name="Qwen/Qwen3-8B"} 4.0
vllm:time_per_output_token_seconds_count{engine="0",model_name="Qwen/Qwen3-8B"} 4.0
vllm:time_per_output_token_seconds_sum{engine="0",model_name="Qwen/Qwen3-8B"} 0.1
# TYPE vllm:gpu_prefix_cache_queries_total counter
vllm:gpu_prefix_cache_queries_total{engine="0",model_name="Qwen/Qwen3-8B"} 100.0
# TYPE vllm:gpu_prefix_cache_hits_total counter
vllm:gpu_prefix_cache_hits_total{engine="0",model_name="Qwen/Qwen3-8B"} 40.0
# TYPE vllm:request_num_preemptions histogram
vllm:request_num_preemptions_bucket{engine="0",le="1.0",model_name="Qwen/Qwen3-8B"} 8.0
vllm:request_num_preemptions_bucket{engine="0",le="+Inf",model_name="Qwen/Qwen3-8B"} 9.0
vllm:request_num_preemptions_count{engine="0",model_name="Qwen/Qwen3-8B"} 9.0
vllm:request_num_preemptions_sum{engine="0",model_name="Qwen/Qwen3-8B"} 3.0
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="Qwen/Qwen3-8B"} 7.0
vllm:request_success_total{engine="0",finished_reason="repetition",model_name="Qwen/Qwen3-8B"} 1.0
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="27000"} 1.0
vllm:cache_config_info{block_size="16",engine="1",kv_cache_size_tokens="400000",num_gpu_blocks="25000"} 1.0
"""


def test_vllm_renamed_metrics_fall_back_and_ranks_stay_separate() -> None:
    """Constructed from vLLM 0.10-era names (deprecated gpu_* and time_per_output_token) with DP=2."""
    out = ENGINES["vllm"].normalize(Scraped(parse(VLLM_DP2)), None)
    m = "Qwen/Qwen3-8B"
    assert one(out, "llm_requests_running", model=m, engine_index="0") == 3
    assert one(out, "llm_requests_running", model=m, engine_index="1") == 4
    assert one(out, "llm_kv_cache_usage_ratio", model=m, engine_index="1") == 0.25
    itl = histogram(out, "llm_inter_token_latency_seconds", model=m, engine_index="0")
    assert itl.buckets == ((0.01, 3.0), (math.inf, 4.0)) and itl.count == 4
    # The old name measured gaps, not requests: never the per-request TPOT.
    assert "llm_time_per_output_token_seconds" not in out.families()
    assert one(out, "llm_prefix_cache_hits_total", engine_index="0") == 40
    # vllm:request_num_preemptions is a per-request histogram, never the preemption counter.
    assert "llm_preemptions_total" not in out.families()
    assert one(out, "llm_requests_finished_total", reason="other", raw_reason="repetition") == 1
    assert one(out, "llm_requests_finished_total", reason="stop") == 7
    assert one(out, "llm_kv_cache_capacity_tokens", engine_index="0", model=m) == 27000 * 16
    assert one(out, "llm_kv_cache_capacity_tokens", engine_index="1", model=m) == 400000
    assert one(out, "llm_engine_info", model=m) == 1


def test_vllm_newer_names_win_over_older_ones() -> None:
    text = VLLM_DP2 + (
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.75\n'
    )
    out = ENGINES["vllm"].normalize(Scraped(parse(text)), None)
    assert one(out, "llm_kv_cache_usage_ratio", engine_index="0") == 0.75
    assert out.value("llm_kv_cache_usage_ratio", engine_index="1") is None  # only the new name is read


def test_vllm_unknown_future_names_leave_concepts_absent() -> None:
    text = '# TYPE vllm:brand_new_gauge gauge\nvllm:brand_new_gauge{model_name="m"} 1\n'
    out = ENGINES["vllm"].normalize(Scraped(parse(text)), None)
    assert out.families() == {"llm_engine_info"}


# --- SGLang ----------------------------------------------------------------------------------------------


def test_sglang_old_docs_sample_real() -> None:
    out = normalize("sglang", "docs-old-model-name-only.txt")
    m = "meta-llama/Llama-3.1-8B-Instruct"
    assert one(out, "llm_requests_running", model=m) == 162
    assert one(out, "llm_requests_waiting", model=m) == 2826
    assert one(out, "llm_kv_cache_usage_ratio", model=m) == 0.28
    assert one(out, "llm_prompt_tokens_total", model=m) == 8.128902e06
    ttft = histogram(out, "llm_time_to_first_token_seconds", model=m)
    assert ttft.count == 11008 and ttft.buckets[-1] == (math.inf, 11008.0)
    assert "llm_prefix_cache_hits_total" not in out.families()  # only the last-batch gauge: not a counter


def test_sglang_ranks_streaming_and_retractions() -> None:
    out = normalize("sglang", "constructed-0.5.23-dp2-tp2.txt")
    # tp_rank 1 duplicates tp_rank 0: de-duplicated, not summed; dp ranks stay separate.
    assert one(out, "llm_requests_running", model="M", engine_index="0") == 3
    assert one(out, "llm_requests_running", model="M", engine_index="1") == 5
    assert one(out, "llm_preemptions_total", engine_index="0") == 4
    assert one(out, "llm_kv_cache_capacity_tokens", engine_index="1") == 400000
    # Tokenizer-side counters are summed over is_streaming / cache_source.
    assert one(out, "llm_prompt_tokens_total", model="M") == 1050
    assert one(out, "llm_generation_tokens_total", model="M") == 2500
    assert one(out, "llm_prompt_tokens_cached_total", model="M") == 400
    ttft = histogram(out, "llm_time_to_first_token_seconds", model="M")
    assert ttft.buckets == ((0.1, 1.0), (0.4, 15.0), (math.inf, 20.0))
    assert ttft.count == 20 and ttft.sum == 6.5
    # Prefix cache from prefill_effective_tokens_total: hits are the *_hit modes; rank 1 has had none.
    assert one(out, "llm_prefix_cache_queries_total", engine_index="0") == 1000
    assert one(out, "llm_prefix_cache_hits_total", engine_index="0") == 400
    assert one(out, "llm_prefix_cache_hits_total", engine_index="1") == 0
    # Aborts alone (no num_requests_total in this file): they overlap the total, so nothing is published.
    assert "llm_requests_finished_total" not in out.families()
    queue = histogram(out, "llm_request_queue_time_seconds", engine_index="0")
    assert queue.buckets[0] == (0.0, 2.0)


# --- TGI, LMDeploy, Xinference, trtllm-serve, NIM, Triton ---------------------------------------------


def test_tgi_reference_sample_and_full_shape() -> None:
    out = normalize("tgi", "constructed-from-exporter.txt", {"/info": {"model_id": "bigscience/bloom"}})
    assert one(out, "llm_requests_waiting", model="bigscience/bloom") == 0
    queue = histogram(out, "llm_request_queue_time_seconds")
    assert queue.buckets[0] == (0.00015000000000000001, 3.0)
    out = normalize("tgi", "constructed-full.txt", {"/info": {"model_id": "m", "version": "3.3.6-dev0"}})
    assert one(out, "llm_requests_running", model="m") == 8
    assert one(out, "llm_prompt_tokens_total") == 9000
    assert one(out, "llm_generation_tokens_total") == 3100
    assert one(out, "llm_kv_cache_capacity_tokens") == 163840
    assert one(out, "llm_requests_finished_total", reason="completed", raw_reason="success") == 42
    assert one(out, "llm_requests_finished_total", reason="error", raw_reason="validation") == 1
    assert one(out, "llm_requests_finished_total", reason="abort", raw_reason="dropped") == 2
    assert one(out, "llm_engine_info", model="m", version="3.3.6-dev0") == 1
    assert "llm_time_to_first_token_seconds" not in out.families()


def test_lmdeploy_reasons_are_enum_reprs() -> None:
    out = normalize("lmdeploy", "constructed-0.18.txt")
    m = {"model": "internlm/internlm3-8b-instruct", "engine_index": "0"}
    assert one(out, "llm_kv_cache_usage_ratio", **m) == 0.125
    assert one(out, "llm_requests_finished_total", reason="abort", raw_reason="ResponseType.CANCEL") == 1
    input_too_long = {"raw_reason": "ResponseType.INPUT_LENGTH_ERROR"}
    assert one(out, "llm_requests_finished_total", reason="error", **input_too_long) == 1
    assert one(out, "llm_requests_finished_total", reason="completed", raw_reason="ResponseType.FINISH") == 18
    assert one(out, "llm_prefix_cache_hits_total", **m) == 1250
    assert histogram(out, "llm_inter_token_latency_seconds", **m).count == 7980
    assert "llm_preemptions_total" not in out.families()


LMDEPLOY_REASONS = """\
# TYPE lmdeploy:request_success_total counter
lmdeploy:request_success_total{engine="0",finished_reason="ResponseType.SUCCESS",model_name="m"} 4.0
lmdeploy:request_success_total{engine="0",finished_reason="ResponseType.FINISH",model_name="m"} 6.0
lmdeploy:request_success_total{engine="0",finished_reason="ResponseType.SESSION_REPEAT",model_name="m"} 1.0
lmdeploy:request_success_total{engine="0",finished_reason="ResponseType.NO_QUEUE",model_name="m"} 2.0
lmdeploy:request_success_total{engine="0",finished_reason="ResponseType.CANCEL",model_name="m"} 3.0
"""


def test_lmdeploy_success_types_are_completed_and_other_failures_errors() -> None:
    """Constructed from LMDeploy's ResponseType: only SUCCESS/FINISH are not errors to its API server."""
    out = ENGINES["lmdeploy"].normalize(Scraped(parse(LMDEPLOY_REASONS)), None)
    by_reason = {
        r: out.value("llm_requests_finished_total", reason=r) for r in ("completed", "abort", "error")
    }
    assert by_reason == {"completed": 10, "abort": 3, "error": 3}
    assert out.value("llm_requests_finished_total", reason="other") is None


def test_xinference_worker_metrics() -> None:
    out = normalize("xinference", "constructed-4.1-worker.txt")
    assert one(out, "llm_prompt_tokens_total", model="qwen-a", engine_index="1") == 200
    assert one(out, "llm_requests_running", model="qwen-a", engine_index="0") == 2
    # model_request_total counts every request, failed ones included: one `other` series (summed over
    # `stream`); the failure counter overlaps it and is not published.
    assert one(out, "llm_requests_finished_total", reason="other", raw_reason="model_request") == 25
    assert out.value("llm_requests_finished_total", reason="error") is None
    assert histogram(out, "llm_time_to_first_token_seconds", model="qwen-a").count == 4
    assert "llm_requests_waiting" not in out.families()


def test_trtllm_serve() -> None:
    out = normalize("trtllm_serve", "constructed-collector-2026.txt")
    m = {"model": "Qwen/Qwen3-8B"}
    assert one(out, "llm_kv_cache_capacity_tokens", **m) == 32000
    assert one(out, "llm_prefix_cache_hits_total", **m) == 1000
    assert one(out, "llm_prefix_cache_queries_total", **m) == 4000
    assert one(out, "llm_requests_finished_total", reason="length") == 5
    assert histogram(out, "llm_time_per_output_token_seconds", **m).count == 35
    assert ENGINES["trtllm_serve"].metrics_path == "/prometheus/metrics"


def test_trtllm_serve_errors_are_finished_requests_too() -> None:
    text = (FIXTURES / "trtllm_serve" / "constructed-collector-2026.txt").read_text() + (
        "# TYPE trtllm_request_error_total counter\n"
        'trtllm_request_error_total{engine_type="pytorch",model_name="Qwen/Qwen3-8B"} 4.0\n'
    )
    out = ENGINES["trtllm_serve"].normalize(Scraped(parse(text)), None)
    assert one(out, "llm_requests_finished_total", reason="error", raw_reason="request_error") == 4
    assert one(out, "llm_requests_finished_total", reason="stop") == 30


def test_nim_bare_names() -> None:
    out = normalize("nim", "constructed-bare-names.txt")
    m = {"model": "meta/llama-3.1-8b-instruct"}
    assert one(out, "llm_requests_running", **m) == 3
    assert one(out, "llm_kv_cache_usage_ratio", **m) == 0.05
    # NIM's bare time_per_output_token_seconds is the per-request TPOT row of the reference (section 10).
    assert histogram(out, "llm_time_per_output_token_seconds", **m).count == 3390
    assert "llm_inter_token_latency_seconds" not in out.families()
    assert ENGINES["nim"].metrics_path == "/v1/metrics"


NIM_BASE = (FIXTURES / "nim" / "constructed-bare-names.txt").read_text()
NIM_M = 'model_name="meta/llama-3.1-8b-instruct"'


def test_nim_request_finish_total_by_reason_wins() -> None:
    """Constructed from NIM's documented request_finish_total (finish reason as label)."""
    text = NIM_BASE + (
        "# TYPE request_finish_total counter\n"
        f'request_finish_total{{finished_reason="stop",{NIM_M}}} 10.0\n'
        f'request_finish_total{{finished_reason="length",{NIM_M}}} 2.0\n'
        f'request_finish_total{{finished_reason="abort",{NIM_M}}} 1.0\n'
        "# TYPE request_failure_total counter\n"
        f"request_failure_total{{{NIM_M}}} 1.0\n"
    )
    out = ENGINES["nim"].normalize(Scraped(parse(text)), None)
    finished = matching(out.points, "llm_requests_finished_total", {})
    assert sorted((p.labels["reason"], p.value) for p in finished) == [
        ("abort", 1),
        ("length", 2),
        ("stop", 10),
    ]


def test_nim_success_and_failure_counters_without_finish_total() -> None:
    """NIM's success counter counts stop/length, its failure counter every other reason: no overlap."""
    text = NIM_BASE + f"# TYPE request_failure_total counter\nrequest_failure_total{{{NIM_M}}} 3.0\n"
    out = ENGINES["nim"].normalize(Scraped(parse(text)), None)
    assert one(out, "llm_requests_finished_total", reason="stop") == 10
    assert one(out, "llm_requests_finished_total", reason="error", raw_reason="request_failure") == 3


def test_nim_passing_vllm_names_through_keeps_vllm_meaning() -> None:
    """A vLLM-backed NIM that serves `vllm:*` names: there the old name measured gaps between tokens."""
    itl = VLLM_DP2.split("# TYPE vllm:gpu_prefix_cache_queries_total")[0].split("# TYPE vllm:gpu_cache")[0]
    itl += (
        "# TYPE vllm:time_per_output_token_seconds"
        + VLLM_DP2.split("# TYPE vllm:time_per_output_token_seconds")[1].split("# TYPE")[0]
    )
    out = ENGINES["nim"].normalize(Scraped(parse(itl)), None)
    assert histogram(out, "llm_inter_token_latency_seconds", engine_index="0").count == 4
    assert "llm_time_per_output_token_seconds" not in out.families()


def test_triton_readme_sample() -> None:
    out = normalize("triton_trtllm", "readme-00b49475-inflight.txt")
    assert one(out, "llm_requests_running", model="tensorrt_llm") == 0
    assert one(out, "llm_kv_cache_capacity_tokens", model="tensorrt_llm") == 6239 * 64
    assert one(out, "llm_kv_cache_usage_ratio", model="tensorrt_llm") == pytest.approx(1 / 6239)
    assert "llm_requests_waiting" not in out.families()


def test_triton_newer_backend_units_and_models() -> None:
    out = normalize("triton_trtllm", "constructed-newer-backend.txt")
    m = {"model": "tensorrt_llm"}
    assert one(out, "llm_requests_running", **m) == 3
    assert one(out, "llm_requests_waiting", **m) == 1
    assert one(out, "llm_kv_cache_usage_ratio", **m) == 0.25
    assert one(out, "llm_prompt_tokens_total", **m) == 2400
    ttft = histogram(out, "llm_time_to_first_token_seconds", **m)
    assert ttft.buckets == ((0.1, 5.0), (0.5, 18.0), (2.0, 20.0), (math.inf, 20.0)) and ttft.sum == 4.5
    assert one(out, "llm_requests_finished_total", reason="abort", raw_reason="CANCELED") == 2
    assert one(out, "llm_requests_finished_total", reason="error", raw_reason="BACKEND") == 1
    assert one(out, "llm_requests_finished_total", reason="completed", raw_reason="success") == 20
    # Pre/post-processing and ensemble models are not engine models.
    assert {p.labels.get("model") for p in out.points} == {"tensorrt_llm"}


# --- Ollama ----------------------------------------------------------------------------------------------


def ollama(ps_name: str) -> Normalized:
    documents = {
        "/api/ps": json.loads((FIXTURES / "ollama" / ps_name).read_text()),
        "/api/version": json.loads((FIXTURES / "ollama" / "constructed-api-version.json").read_text()),
    }
    return ENGINES["ollama"].normalize(Scraped(documents=documents), None)


def test_ollama_docs_api_ps() -> None:
    out = ollama("docs-api-ps.json")
    m = {"model": "mistral:latest"}
    assert one(out, "llm_model_memory_bytes", **m) == 5137025024
    assert one(out, "llm_model_vram_bytes", **m) == 5137025024
    # 2024-06-04T14:38:31.83753-07:00
    assert one(out, "llm_model_expiry_timestamp_seconds", **m) == pytest.approx(1717537111.83753)
    assert one(out, "llm_engine_info", model="mistral:latest", version="0.33.0-rc2") == 1
    assert "llm_model_context_length_tokens" not in out.families()


def test_ollama_partial_offload_and_nanoseconds() -> None:
    out = ollama("constructed-api-ps-partial-offload.json")
    m = {"model": "qwen3:32b"}
    assert one(out, "llm_model_vram_bytes", **m) < one(out, "llm_model_memory_bytes", **m)
    assert one(out, "llm_model_context_length_tokens", model="llama3.2:1b") == 4096
    assert one(out, "llm_model_expiry_timestamp_seconds", **m) == pytest.approx(1795269900.123456)


@pytest.mark.parametrize(
    "ps",
    [
        {"models": [{"size": 1}]},
        {"models": [{"name": "m", "size": "big"}]},
        {"models": [{"name": "m", "expires_at": 5}]},
        {"models": [{"name": "m", "expires_at": "yesterday"}]},
    ],
)
def test_ollama_malformed_entries_are_parse_errors(ps: dict) -> None:
    with pytest.raises(ParseError):
        documents = {"/api/ps": ps, "/api/version": {"version": "1"}}
        ENGINES["ollama"].normalize(Scraped(documents=documents), None)


@pytest.mark.parametrize(
    ("raw", "common"),
    [("stop", "stop"), ("length", "length"), ("abort", "abort"), ("error", "error"), ("repetition", "other"),
     ("ResponseType.CANCEL", "abort"), ("ResponseType.OUT_OF_MEMORY", "error"), ("CANCELED", "abort"),
     ("ResponseType.FINISH", "completed"), ("ResponseType.SUCCESS", "completed"), ("success", "completed"),
     ("BACKEND", "other"), ("", "other")],
)  # fmt: skip
def test_finish_reason_mapping(raw: str, common: str) -> None:
    assert finish_reason(raw) == common


# --- vLLM 0.33 real renders (tools/fixtures/render_vllm.py; present once that helper has committed them) --

VLLM_RENDERS = sorted((FIXTURES / "vllm").glob("v0.33.0-*.txt"))


@pytest.mark.parametrize("path", VLLM_RENDERS, ids=lambda p: p.name)
def test_vllm_033_real_render_every_concept_equals_its_source(path: Path) -> None:
    exposition = parse(path.read_text())
    out = ENGINES["vllm"].normalize(Scraped(exposition), None)
    pairs = {
        "llm_requests_running": "vllm:num_requests_running",
        "llm_requests_waiting": "vllm:num_requests_waiting",
        "llm_kv_cache_usage_ratio": "vllm:kv_cache_usage_perc",
        "llm_prompt_tokens_total": "vllm:prompt_tokens_total",
        "llm_prompt_tokens_cached_total": "vllm:prompt_tokens_cached_total",
        "llm_generation_tokens_total": "vllm:generation_tokens_total",
        "llm_preemptions_total": "vllm:num_preemptions_total",
        "llm_prefix_cache_queries_total": "vllm:prefix_cache_queries_total",
        "llm_prefix_cache_hits_total": "vllm:prefix_cache_hits_total",
    }
    engines = sorted({s.labels["engine"] for s in exposition.samples("vllm:num_requests_running")})
    for engine in engines:
        for family, wire in pairs.items():
            [source] = [s for s in exposition.samples(wire) if s.labels["engine"] == engine]
            assert one(out, family, engine_index=engine, model=source.labels["model_name"]) == source.value
        for family, wire in [
            ("llm_time_to_first_token_seconds", "vllm:time_to_first_token_seconds"),
            ("llm_inter_token_latency_seconds", "vllm:inter_token_latency_seconds"),
            ("llm_time_per_output_token_seconds", "vllm:request_time_per_output_token_seconds"),
            ("llm_e2e_request_latency_seconds", "vllm:e2e_request_latency_seconds"),
            ("llm_request_queue_time_seconds", "vllm:request_queue_time_seconds"),
        ]:
            [source] = [h for h in exposition.histograms(wire) if h.labels["engine"] == engine]
            normalized = histogram(out, family, engine_index=engine)
            assert (normalized.buckets, normalized.sum, normalized.count) == (
                source.buckets,
                source.sum,
                source.count,
            )
        finished = matching(out.points, "llm_requests_finished_total", {"engine_index": engine})
        success = [
            s for s in exposition.samples("vllm:request_success_total") if s.labels["engine"] == engine
        ]
        assert sorted((p.labels["raw_reason"], p.value) for p in finished) == sorted(
            (s.labels["finished_reason"], s.value) for s in success
        )
        [config] = [s for s in exposition.samples("vllm:cache_config_info") if s.labels["engine"] == engine]
        capacity = one(out, "llm_kv_cache_capacity_tokens", engine_index=engine)
        assert capacity == float(config.labels["kv_cache_size_tokens"])
    # Histograms that are not schema concepts, and _created series, never leak into the schema.
    assert {p.family for p in out.points} | {h.family for h in out.histograms} <= set(FAMILIES)


# --- SGLang 0.5.23 real renders (tools/fixtures; present once that helper has committed them) -----------

SGLANG_RENDERS = sorted((FIXTURES / "sglang").glob("v0.5.23-*.txt"))


def rank0(samples, **labels: str) -> list:
    """The series of TP/PP/EP rank 0 (the others are copies, or zeros from non-logging ranks)."""
    return [
        s
        for s in samples
        if all(s.labels.get(rank, "0") == "0" for rank in ("tp_rank", "pp_rank", "moe_ep_rank"))
        and all(s.labels.get(k) == v for k, v in labels.items())
    ]


@pytest.mark.parametrize("path", SGLANG_RENDERS, ids=lambda p: p.name)
def test_sglang_0523_real_render_every_concept_equals_its_source(path: Path) -> None:
    exposition = parse(path.read_text())
    assert engine_for_payload(exposition) is ENGINES["sglang"]
    out = ENGINES["sglang"].normalize(Scraped(exposition), None)
    model = exposition.samples("sglang:num_running_reqs")[0].labels["model_name"]
    ranks = sorted({s.labels.get("dp_rank") for s in exposition.samples("sglang:num_running_reqs")}, key=str)
    for dp in ranks:
        where = {"dp_rank": dp} if dp is not None else {}
        index = {"engine_index": dp} if dp is not None else {}
        for family, wire in [
            ("llm_requests_running", "sglang:num_running_reqs"),
            ("llm_requests_waiting", "sglang:num_queue_reqs"),
            ("llm_kv_cache_usage_ratio", "sglang:token_usage"),
            ("llm_kv_cache_capacity_tokens", "sglang:max_total_num_tokens"),
            ("llm_preemptions_total", "sglang:num_retracted_requests_total"),
        ]:
            sources = rank0(exposition.samples(wire), **where)
            if not sources:
                assert out.value(family, **index) is None  # absent in the payload: absent here
                continue
            [source] = sources
            assert one(out, family, model=model, **index) == source.value, family
        effective = rank0(exposition.samples("sglang:prefill_effective_tokens_total"), **where)
        assert one(out, "llm_prefix_cache_queries_total", **index) == sum(s.value for s in effective)
        hits = sum(s.value for s in effective if s.labels["mode"].endswith("_hit"))
        assert one(out, "llm_prefix_cache_hits_total", **index) == hits
    for family, wire in [
        ("llm_prompt_tokens_total", "sglang:prompt_tokens_total"),
        ("llm_generation_tokens_total", "sglang:generation_tokens_total"),
        ("llm_prompt_tokens_cached_total", "sglang:cached_tokens_total"),
    ]:
        total = sum(s.value for s in exposition.samples(wire))
        assert out.value(family, model=model) == (total if exposition.samples(wire) else None), family
    for family, wire in [
        ("llm_time_to_first_token_seconds", "sglang:time_to_first_token_seconds"),
        ("llm_inter_token_latency_seconds", "sglang:inter_token_latency_seconds"),
        ("llm_time_per_output_token_seconds", "sglang:request_time_per_output_token_seconds"),
        ("llm_e2e_request_latency_seconds", "sglang:e2e_request_latency_seconds"),
    ]:
        sources = exposition.histograms(wire)
        merged = matching(out.histograms, family, {})
        assert sum(h.count for h in merged) == sum(h.count for h in sources)
        assert sum(h.sum for h in merged) == pytest.approx(sum(h.sum for h in sources))
    # Finished requests: SGLang's total (aborted ones included) as one `other` series; its abort counter
    # overlaps that total and is never published beside it.
    totals = exposition.samples("sglang:num_requests_total")
    finished = matching(out.points, "llm_requests_finished_total", {})
    if totals:
        assert [(p.labels["reason"], p.labels["raw_reason"], p.value) for p in finished] == [
            ("other", "num_requests", sum(s.value for s in totals))
        ]
    else:
        assert not finished
    # The `le`-labelled per-stage family and the pid-labelled gauges never leak into the schema.
    assert {p.family for p in out.points} | {h.family for h in out.histograms} <= set(FAMILIES)


TRITON_BLOCKS = """\
# TYPE nv_trt_llm_kv_cache_block_metrics gauge
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="tensorrt_llm",version="1"} 1000
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per",model="tensorrt_llm",version="1"} 32
"""


def test_triton_kv_usage_without_used_blocks_is_derived_from_free_or_absent() -> None:
    """Constructed: backends that report `free` but not `used`, and ones that report neither."""
    with_free = TRITON_BLOCKS + (
        'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="free",model="tensorrt_llm",version="1"} 600\n'
    )
    out = ENGINES["triton_trtllm"].normalize(Scraped(parse(with_free)), None)
    assert one(out, "llm_kv_cache_usage_ratio", model="tensorrt_llm") == pytest.approx(0.4)
    out = ENGINES["triton_trtllm"].normalize(Scraped(parse(TRITON_BLOCKS)), None)
    assert "llm_kv_cache_usage_ratio" not in out.families()  # never a made-up 0
    assert one(out, "llm_kv_cache_capacity_tokens", model="tensorrt_llm") == 32000
