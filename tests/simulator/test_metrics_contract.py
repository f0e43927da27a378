"""The simulator's /metrics carries vLLM 0.33's families: names, types, label names and buckets as listed
in reference/engines.md section 1 (from vllm/v1/metrics/loggers.py and buckets.py of the 0.33.0 wheel),
and none of llm-d-inference-sim's differing names."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

ML = {"model_name", "engine"}
# wire name -> (type, label names); counters by their wire name with _total
EXPECTED = {
    "vllm:estimated_flops_per_gpu_total": ("counter", ML),
    "vllm:estimated_read_bytes_per_gpu_total": ("counter", ML),
    "vllm:estimated_write_bytes_per_gpu_total": ("counter", ML),
    "vllm:num_requests_running": ("gauge", ML),
    "vllm:num_requests_waiting": ("gauge", ML),
    "vllm:num_requests_waiting_by_reason": ("gauge", ML | {"reason"}),
    "vllm:engine_sleep_state": ("gauge", ML | {"sleep_state"}),
    "vllm:kv_cache_usage_perc": ("gauge", ML),
    "vllm:prefix_cache_queries_total": ("counter", ML),
    "vllm:prefix_cache_hits_total": ("counter", ML),
    "vllm:external_prefix_cache_queries_total": ("counter", ML),
    "vllm:external_prefix_cache_hits_total": ("counter", ML),
    "vllm:mm_cache_queries_total": ("counter", ML),
    "vllm:mm_cache_hits_total": ("counter", ML),
    "vllm:num_preemptions_total": ("counter", ML),
    "vllm:prompt_tokens_total": ("counter", ML),
    "vllm:prompt_tokens_by_source_total": ("counter", ML | {"source"}),
    "vllm:prompt_tokens_cached_total": ("counter", ML),
    "vllm:prompt_tokens_cached_by_source_total": ("counter", ML | {"source"}),
    "vllm:generation_tokens_total": ("counter", ML),
    "vllm:request_success_total": ("counter", ML | {"finished_reason"}),
    "vllm:admission_rejections_total": ("counter", {"model_name", "reason"}),
    "vllm:request_prompt_tokens": ("histogram", ML),
    "vllm:request_generation_tokens": ("histogram", ML),
    "vllm:request_max_num_generation_tokens": ("histogram", ML),
    "vllm:request_params_n": ("histogram", ML),
    "vllm:request_params_max_tokens": ("histogram", ML),
    "vllm:request_prefill_kv_computed_tokens": ("histogram", ML),
    "vllm:iteration_tokens_total": ("histogram", ML),
    "vllm:time_to_first_token_seconds": ("histogram", ML),
    "vllm:inter_token_latency_seconds": ("histogram", ML),
    "vllm:request_time_per_output_token_seconds": ("histogram", ML),
    "vllm:e2e_request_latency_seconds": ("histogram", ML),
    "vllm:request_queue_time_seconds": ("histogram", ML),
    "vllm:request_inference_time_seconds": ("histogram", ML),
    "vllm:request_prefill_time_seconds": ("histogram", ML),
    "vllm:request_decode_time_seconds": ("histogram", ML),
    "vllm:request_num_preemptions": ("histogram", ML),
}
TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
        40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
ITL = [
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
]
LATENCY = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
           480.0, 960.0, 1920.0, 7680.0]  # fmt: skip
BUCKETS = {
    "vllm:time_to_first_token_seconds": TTFT,
    "vllm:inter_token_latency_seconds": ITL,
    "vllm:request_time_per_output_token_seconds": ITL,
    "vllm:e2e_request_latency_seconds": LATENCY,
    "vllm:request_queue_time_seconds": LATENCY,
    "vllm:request_inference_time_seconds": LATENCY,
    "vllm:request_prefill_time_seconds": LATENCY,
    "vllm:request_decode_time_seconds": LATENCY,
    "vllm:iteration_tokens_total": [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384],
    "vllm:request_params_n": [1, 2, 5, 10, 20],
    "vllm:request_num_preemptions": [1, 2, 3, 4, 5, 10, 20],
    # 1-2-5 up to max_model_len (1024 for the tiny profile)
    "vllm:request_prompt_tokens": [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
}
# Names llm-d-inference-sim uses that real vLLM 0.33 does not (reference/engines.md 9b).
NOT_VLLM_033 = {
    "vllm:time_per_output_token_seconds",
    "vllm:max_num_generation_tokens",
    "vllm:gpu_cache_usage_perc",
    "vllm:gpu_prefix_cache_queries_total",
}


def scrape(url: str) -> dict[str, dict]:
    """wire family name -> {type, label names, samples}"""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    families = {}
    for family in text_string_to_metric_families(text):
        wire = family.name + "_total" if family.type == "counter" else family.name
        labels = (
            set().union(*(sample.labels for sample in family.samples)) - {"le"} if family.samples else set()
        )
        families[wire] = {"type": family.type, "labels": labels, "samples": family.samples}
    return families


def drive(url: str, requests: int = 3) -> None:
    for _ in range(requests):
        body = {"messages": [{"role": "user", "content": "name three colours"}], "max_tokens": 5}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).status_code == 200


def test_families_types_and_labels_match_vllm_033(start_simulator) -> None:
    url = start_simulator("--profile", "tiny")
    drive(url)
    families = scrape(url)
    for name, (kind, labels) in EXPECTED.items():
        assert name in families, f"{name} missing"
        assert families[name]["type"] == kind, name
        assert families[name]["labels"] == labels, name
    assert not NOT_VLLM_033 & set(families)
    assert not any("finish_reason" in family["labels"] for family in families.values())
    vllm_names = {name for name in families if name.startswith("vllm:") and not name.endswith("_created")}
    assert vllm_names - set(EXPECTED) == {"vllm:cache_config_info"}


def test_histogram_buckets_are_vllms(start_simulator) -> None:
    url = start_simulator("--profile", "tiny")
    drive(url)
    families = scrape(url)
    for name, bounds in BUCKETS.items():
        les = [s.labels["le"] for s in families[name]["samples"] if s.name.endswith("_bucket")]
        assert les == [*(str(float(b)) for b in bounds), "+Inf"], name


def test_counters_and_histograms_have_created_series_and_label_values(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--model", "Qwen/Qwen3-4B")
    drive(url, requests=2)
    families = scrape(url)
    for name, (kind, _) in EXPECTED.items():
        if kind in ("counter", "histogram"):
            created = name.removesuffix("_total") + "_created" if kind == "counter" else name + "_created"
            assert any(s.name.endswith("_created") for s in families[name]["samples"]) or created in families
    success = {s.labels["finished_reason"]: s.value for s in families["vllm:request_success_total"]["samples"]
               if s.name == "vllm:request_success_total"}  # fmt: skip
    assert set(success) == {"stop", "length", "abort", "error", "repetition"}
    assert success["length"] == 2
    running = families["vllm:num_requests_running"]["samples"][0]
    assert running.labels == {"model_name": "Qwen/Qwen3-4B", "engine": "0"}
    by_source = {s.labels["source"] for s in families["vllm:prompt_tokens_by_source_total"]["samples"]}
    assert by_source >= {"local_compute", "local_cache_hit", "external_kv_transfer"}


def test_cache_config_info(start_simulator) -> None:
    url = start_simulator("--profile", "tiny")
    info = scrape(url)["vllm:cache_config_info"]
    assert info["type"] == "gauge"
    sample = info["samples"][0]
    assert sample.value == 1
    assert "model_name" not in sample.labels
    assert sample.labels["engine"] == "0"
    assert sample.labels["block_size"] == "16"
    assert sample.labels["num_gpu_blocks"] == "64"
    assert sample.labels["kv_cache_size_tokens"] == "1024"
    assert sample.labels["enable_prefix_caching"] == "True"
    assert sample.labels["num_cpu_blocks"] == "None"


def test_token_counters_agree_with_usage(start_simulator) -> None:
    url = start_simulator("--profile", "tiny")
    body = {"prompt": "one two three four five", "max_tokens": 7, "ignore_eos": True}
    usage = httpx.post(f"{url}/v1/completions", json=body, timeout=10).json()["usage"]
    families = scrape(url)

    def value(name: str) -> float:
        samples = (s for family in families.values() for s in family["samples"])
        return next(s.value for s in samples if s.name == name)

    assert value("vllm:prompt_tokens_total") == usage["prompt_tokens"] == 5
    assert value("vllm:generation_tokens_total") == usage["completion_tokens"] == 7
    assert value("vllm:request_generation_tokens_count") == 1
    assert value("vllm:time_to_first_token_seconds_count") == 1
    assert value("vllm:inter_token_latency_seconds_count") == 6  # one per gap
    # vLLM counts per step the prompt tokens of prefills that completed plus the tokens generated
    assert value("vllm:iteration_tokens_total_sum") == 5 + 7
    assert value("vllm:iteration_tokens_total_count") == 7
