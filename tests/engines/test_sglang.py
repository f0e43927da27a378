"""SGLang payloads normalized onto llm_*; fixture origins: tests/fixtures/engines/README.md."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from exporter.engines.base import Scraped
from exporter.engines.detect import engine_for_payload
from exporter.engines.parse import parse
from exporter.engines.registry import ENGINES
from exporter.engines.schema import FAMILIES
from tests.engines.normalizing import FIXTURES, histogram, matching, normalize, one


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


def test_sglang_names_with_underscores_read_as_the_served_ones() -> None:
    """sgl-router's /engine_metrics (and Prometheus with escaping=underscores) turn `sglang:` into
    `sglang_` (SGLang issue 12618); the same payload must normalize to the same figures."""
    served = normalize("sglang", "v0.5.23-load.txt")
    rewritten = normalize("sglang", "router-underscores-v0.5.23-load.txt")
    assert sorted(map(repr, served.points)) == sorted(map(repr, rewritten.points))
    assert sorted(map(repr, served.histograms)) == sorted(map(repr, rewritten.histograms))
    assert len(served.points) >= 10
    assert served.families() >= {"llm_requests_running", "llm_kv_cache_usage_ratio"}


def test_sglang_a_payload_with_both_spellings_reads_the_served_one() -> None:
    text = (FIXTURES / "sglang" / "v0.5.23-load.txt").read_text()
    stale = (
        "# HELP sglang_num_running_reqs stale copy\n# TYPE sglang_num_running_reqs gauge\n"
        'sglang_num_running_reqs{model_name="x",tp_rank="0"} 999\n'
    )
    out = ENGINES["sglang"].normalize(Scraped(parse(text + stale), {}), None)
    assert 999 not in [p.value for p in matching(out.points, "llm_requests_running", {})]
