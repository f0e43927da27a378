"""TGI payloads normalized onto llm_*; fixture origins: tests/fixtures/engines/README.md."""

from __future__ import annotations

from tests.engines.normalizing import histogram, normalize, one


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
