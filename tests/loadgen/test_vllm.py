"""The load generator against a real vLLM: its token and request counts equal vLLM's counter deltas exactly.

The run's calibration probes (two non-streamed max_tokens=1 requests before the first phase) reach vLLM
too; the report counts them under `setup_requests`, so phases + setup = the engine's deltas, no slack.
"""

from __future__ import annotations

import httpx
import pytest

from exporter.engines.parse import parse

pytestmark = [pytest.mark.real, pytest.mark.slow]


def counters(url: str) -> dict[str, float]:
    raw = parse(httpx.get(f"{url}/metrics", timeout=30).text)
    values = {
        name: sum(s.value for s in raw.samples(f"vllm:{name}"))
        for name in ("prompt_tokens_total", "generation_tokens_total", "e2e_request_latency_seconds_count")
    }
    for sample in raw.samples("vllm:request_success_total"):
        values[f"finished:{sample.labels['finished_reason']}"] = sample.value
    return values


@pytest.mark.parametrize(("endpoint", "stream"), [("chat", True), ("completions", False)])
def test_tokens_and_requests_equal_vllm_counter_deltas(live_vllm, run_loadgen, endpoint, stream) -> None:
    before = counters(live_vllm.url)
    result = run_loadgen(
        url=live_vllm.url,
        endpoint=endpoint,
        stream=stream,
        concurrency=12,  # beyond max_num_seqs: vLLM queues and preempts; the counts must not care
        requests=36,
        input_len="uniform:8:96",
        output_len="uniform:4:96",
        tokenizer=None,
        extra_body={"ignore_eos": True},
        request_timeout="120s",
    )
    after = counters(live_vllm.url)
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    phase, setup = result.phase, result.report["setup_requests"]
    assert phase["requests"]["succeeded"] == 36, phase["errors"]
    assert result.report["model"] == live_vllm.model  # discovered from /v1/models
    assert (setup["sent"], setup["succeeded"], setup["output_tokens"]) == (2, 2, 2)
    assert phase["tokens"]["output_source"] == {"usage": 36}
    assert delta["generation_tokens_total"] == phase["tokens"]["output"] + setup["output_tokens"]
    assert delta["prompt_tokens_total"] == phase["tokens"]["prompt"] + setup["prompt_tokens"]
    assert delta["e2e_request_latency_seconds_count"] == 36 + 2
    assert delta["finished:length"] == 36 + 2  # ignore_eos: every request ran to max_tokens
    print(f"loadgen vs vllm ({endpoint}, stream={stream}): {delta} ; phase tokens {phase['tokens']}")
