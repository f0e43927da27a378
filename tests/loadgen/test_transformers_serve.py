"""The load generator against a real `transformers serve --continuous-batching` (CPU, tiny random Qwen3).

That server answers /v1/models with 500 (no Hugging Face cache) and refuses `ignore_eos` with 422. The run
must still succeed: no model named (said in the report), the refused field dropped once at setup (said in
the report with the server's answer), every request counted with the server's own token counts.
"""

from __future__ import annotations

import pytest

from loadgen.report import render

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.mark.parametrize(("endpoint", "stream"), [("chat", True), ("completions", False)])
def test_runs_succeed_without_discovery_or_the_refused_field(
    live_transformers, run_loadgen, endpoint, stream
) -> None:
    result = run_loadgen(
        url=live_transformers.url,
        endpoint=endpoint,
        stream=stream,
        concurrency=4,
        requests=8,
        input_len="uniform:8:32",
        output_len=8,
        tokenizer=None,
        extra_body={"ignore_eos": True},
        request_timeout="120s",
    )
    report, phase = result.report, result.phase
    assert phase["requests"]["succeeded"] == 8, phase["errors"]
    assert report["model"] is None and "/v1/models: HTTP 500" in report["model_note"]
    assert list(report["dropped_body_fields"]) == ["ignore_eos"]
    assert "422" in report["dropped_body_fields"]["ignore_eos"]
    # one refused probe, then the two calibration probes without the field
    assert (report["setup_requests"]["sent"], report["setup_requests"]["succeeded"]) == (3, 2)
    text = render(report)
    assert "Dropped body field 'ignore_eos'" in text and "requests carry no model field" in text
    # tokens: the server's own usage for every request, each within max_tokens (no ignore_eos: EOS may
    # end one early), and the phase's total is the sum of what each request's usage said
    records = [r for r in result.records if r["phase"] != "setup"]
    assert phase["tokens"]["output_source"] == {"usage": 8}
    assert all(1 <= r["output_tokens"] <= 8 for r in records)
    assert phase["tokens"]["output"] == sum(r["output_tokens"] for r in records)
    assert phase["tokens"]["prompt"] == sum(r["prompt_tokens"] for r in records)
