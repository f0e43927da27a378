"""NIM payloads normalized onto llm_*; fixture origins: tests/fixtures/engines/README.md."""

from __future__ import annotations

from exporter.engines.base import Scraped
from exporter.engines.parse import parse
from exporter.engines.registry import ENGINES
from tests.engines.normalizing import FIXTURES, histogram, matching, normalize, one

VLLM_DP2 = (FIXTURES / "vllm" / "constructed-0.10-dp2.txt").read_text()


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
