"""Xinference payloads normalized onto llm_*; fixture origins: tests/fixtures/engines/README.md."""

from __future__ import annotations

from tests.engines.normalizing import histogram, normalize, one


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
