"""Triton + TensorRT-LLM payloads normalized onto llm_*; fixture origins: tests/fixtures/engines/README.md."""

from __future__ import annotations

import math

import pytest

from exporter.engines.base import Scraped
from exporter.engines.parse import parse
from exporter.engines.registry import ENGINES
from tests.engines.normalizing import histogram, normalize, one


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
