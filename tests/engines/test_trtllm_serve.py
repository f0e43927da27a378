"""trtllm-serve payloads normalized onto llm_*; fixture origins: tests/fixtures/engines/README.md."""

from __future__ import annotations

from exporter.engines.base import Scraped
from exporter.engines.parse import parse
from exporter.engines.registry import ENGINES
from tests.engines.normalizing import FIXTURES, histogram, normalize, one


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
