"""Against a real llama.cpp llama-server: every request succeeds (its odd bytes and connection
handling included) and the output tokens we count are the tokens it says it predicted."""

from __future__ import annotations

import httpx
import pytest

from tests.support.llama import llama_server

pytestmark = [pytest.mark.real, pytest.mark.slow]


def tokens_predicted(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total"):
            return float(line.split()[-1])
    raise AssertionError("llamacpp:tokens_predicted_total not on /metrics")


@pytest.mark.parametrize(
    ("endpoint", "stream"), [("chat", True), ("completions", True), ("completions", False)]
)
def test_output_tokens_match_llamacpp_counter(tmp_path, run_loadgen, endpoint, stream):
    with llama_server(tmp_path, parallel=4, ctx_size=2048) as server:
        before = tokens_predicted(server.url)
        result = run_loadgen(
            url=server.url,
            endpoint=endpoint,
            stream=stream,
            concurrency=4,
            requests=16,
            input_len="uniform:8:64",
            output_len="uniform:4:24",
            tokenizer=None,
            extra_body={"ignore_eos": True},
            request_timeout="60s",
        )
        delta = tokens_predicted(server.url) - before
    phase = result.phase
    assert phase["requests"]["succeeded"] == 16, phase["errors"]
    assert result.report["model"] == server.model  # discovered from /v1/models
    # the calibration probes predict one token each (max_tokens=1): counted apart from the phase
    setup = result.report["setup_requests"]
    assert (setup["sent"], setup["succeeded"], setup["output_tokens"]) == (2, 2, 2)
    assert phase["tokens"]["output"] + setup["output_tokens"] == delta
    assert phase["tokens"]["output_source"] == {"usage": 16}
    if endpoint == "completions":
        # without a tokenizer, prompt lengths are calibrated from the server's usage: input_len
        # uniform 8..64 (mean 36) should come out near 36 real tokens per prompt (plus BOS)
        assert 30 <= phase["tokens"]["prompt"] / 16 <= 44, result.report["workload"]
    if stream:
        assert phase["latency_s"]["ttft"]["count"] == 16
        assert phase["latency_s"]["tpot"]["count"] > 0
