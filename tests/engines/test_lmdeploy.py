"""LMDeploy payloads normalized onto llm_*; fixture origins: tests/fixtures/engines/README.md."""

from __future__ import annotations

from exporter.engines.base import Scraped
from exporter.engines.parse import parse
from exporter.engines.registry import ENGINES
from tests.engines.normalizing import histogram, normalize, one


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
