"""llama.cpp payloads normalized onto llm_*; fixture origins: tests/fixtures/engines/README.md."""

from __future__ import annotations

import pytest

from exporter.engines.parse import parse
from tests.engines.normalizing import FIXTURES, LLAMA_PROPS, normalize, one


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
