"""vLLM payloads normalized onto llm_*; fixture origins: tests/fixtures/engines/README.md."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from exporter.engines.base import Scraped
from exporter.engines.parse import parse
from exporter.engines.registry import ENGINES
from exporter.engines.schema import FAMILIES
from exporter.engines.vllm import NAMES
from tests.engines.normalizing import FIXTURES, histogram, matching, one

VLLM_DP2 = (FIXTURES / "vllm" / "constructed-0.10-dp2.txt").read_text()


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


VLLM_0102 = (FIXTURES / "vllm" / "v0.10.2-load.txt").read_text()
RENAMED = [(family, names) for family, names in NAMES.items() if len(names) > 1]


def without_family(text: str, name: str) -> str:
    """The exposition without the family `name` (its HELP/TYPE lines, samples and _created series)."""
    base = name.removesuffix("_total")
    drop = {name, f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{base}_created", f"{name}_created"}
    kept = []
    for line in text.splitlines(keepends=True):
        words = line.split()
        metric = words[2] if line.startswith("#") and len(words) > 2 else line.split("{")[0].split(" ")[0]
        if metric not in drop:
            kept.append(line)
    return "".join(kept)


def test_vllm_0102_real_render_reads_its_concepts() -> None:
    """vLLM 0.10.2 serves old and new names side by side (tools/fixtures/render_vllm_010.py)."""
    out = ENGINES["vllm"].normalize(Scraped(parse(VLLM_0102)), None)
    m = "Qwen/Qwen3-8B"
    exposition = parse(VLLM_0102)
    assert (
        one(out, "llm_kv_cache_usage_ratio", model=m)
        == exposition.samples("vllm:kv_cache_usage_perc")[0].value
    )
    assert one(out, "llm_prefix_cache_hits_total", model=m) == 98816  # one value per source name pair
    itl = histogram(out, "llm_inter_token_latency_seconds", model=m)
    assert itl.count == exposition.samples("vllm:inter_token_latency_seconds_count")[0].value > 0
    # 0.10.2 had no per-request TPOT (request_time_per_output_token_seconds came in 0.11): absent, and its
    # per-gap time_per_output_token_seconds is never taken for one
    assert "llm_time_per_output_token_seconds" not in out.families()


@pytest.mark.parametrize(("family", "names"), RENAMED, ids=[family for family, _ in RENAMED])
def test_vllm_each_older_name_stands_in_for_the_newer_one_on_a_real_payload(
    family: str, names: tuple
) -> None:
    """vLLM 0.10.2 fills each old name from the same statistic as its new name; with the new name gone
    (as in the releases before it), the old one gives the same figures."""
    full = ENGINES["vllm"].normalize(Scraped(parse(VLLM_0102)), None)
    text = without_family(VLLM_0102, f"vllm:{names[0]}")
    gone = parse(text)
    assert not gone.has(f"vllm:{names[0]}") and not gone.has(f"vllm:{names[0]}_count")
    older = ENGINES["vllm"].normalize(Scraped(parse(text)), None)
    assert matching(older.points, family, {}) == matching(full.points, family, {})
    assert matching(older.histograms, family, {}) == matching(full.histograms, family, {})
    assert matching(full.points, family, {}) or matching(full.histograms, family, {})


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
