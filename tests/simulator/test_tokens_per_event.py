"""Several tokens per SSE event (speculative decoding, --stream-interval) and reasoning models, as vLLM
streams them, and the server-side figures vLLM records for them (one ITL gap per engine step)."""

from __future__ import annotations

import json

import httpx

from tests.simulator.conftest import sse_events
from tests.simulator.test_pressure import metric_values

CHAT = {"messages": [{"role": "user", "content": "hello there"}]}


def stream(url: str, max_tokens: int, continuous_usage: bool = True, **extra) -> list[dict]:
    body = {
        **CHAT,
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": continuous_usage},
        **extra,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=20) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def token_chunks(chunks: list[dict]) -> list[dict]:
    """Chunks that carry tokens: not the role chunk, not the usage chunk."""
    return [c for c in chunks[1:] if c["choices"] and set(c["choices"][0]["delta"]) - {"role"}]


def tokens_per_event(chunks: list[dict]) -> list[int]:
    """From the cumulative usage that continuous_usage_stats puts on every event."""
    counts, before = [], 0
    for chunk in token_chunks(chunks):
        counts.append(chunk["usage"]["completion_tokens"] - before)
        before = chunk["usage"]["completion_tokens"]
    return counts


def test_speculative_decoding_streams_one_event_per_step(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--speculative-tokens", "3", "--acceptance-rate", "1")
    chunks = stream(url, 20)
    # the first token comes from the prefill alone; each verify step then accepts all 3 drafts and adds
    # the bonus token (4 per event) until the last step, cut to max_tokens
    assert tokens_per_event(chunks) == [1, 4, 4, 4, 4, 3]
    words = [c["choices"][0]["delta"]["content"] for c in token_chunks(chunks)]
    assert [w.count(" ") for w in words] == [1, 4, 4, 4, 4, 3]  # the text of every token of the step
    assert chunks[-1]["usage"]["completion_tokens"] == 20
    assert token_chunks(chunks)[-1]["choices"][0]["finish_reason"] == "length"

    metrics = metric_values(url)
    assert metrics["vllm:generation_tokens_total"] == 20
    assert metrics["vllm:spec_decode_num_drafts_total"] == 5
    assert metrics["vllm:spec_decode_num_draft_tokens_total"] == 15
    assert metrics["vllm:spec_decode_num_accepted_tokens_total"] == 15
    # vLLM observes one inter-token latency per engine step, not per token
    assert metrics["vllm:inter_token_latency_seconds_count"] == 5
    # ... and a request's TPOT over its tokens: decode time / (tokens - 1)
    decode = metrics["vllm:request_decode_time_seconds_sum"]
    assert abs(metrics["vllm:request_time_per_output_token_seconds_sum"] - decode / 19) < 1e-9


def test_acceptance_rate_varies_tokens_per_event(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--speculative-tokens", "4", "--acceptance-rate", "0.6")
    counts = []
    for index in range(8):
        body_chunks = stream(url, 60, messages=[{"role": "user", "content": f"question {index}"}])
        counts += tokens_per_event(body_chunks)[1:-1]  # decode steps not cut by max_tokens
    assert set(counts) <= {1, 2, 3, 4, 5} and len(set(counts)) >= 3
    metrics = metric_values(url)
    accepted = metrics["vllm:spec_decode_num_accepted_tokens_total"]
    drafted = metrics["vllm:spec_decode_num_draft_tokens_total"]
    # expected accepted per step with per-position rate 0.6: 0.6 + 0.36 + 0.216 + 0.1296 = 1.31 of 4
    assert 0.2 < accepted / drafted < 0.45
    text = httpx.get(f"{url}/metrics", timeout=5).text
    positions = [
        line for line in text.splitlines() if line.startswith("vllm:spec_decode_num_accepted_tokens_per")
    ]
    assert [line.split('position="')[1][0] for line in positions if "_created" not in line] == list("0123")


def test_stream_interval_holds_tokens_back(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--stream-interval", "4")
    chunks = stream(url, 18)
    assert tokens_per_event(chunks) == [1, 4, 4, 4, 4, 1]  # first token at once, the last with the finish
    assert metric_values(url)["vllm:inter_token_latency_seconds_count"] == 17  # still one per step


def test_stream_interval_and_speculative_decoding_together(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--speculative-tokens", "2", "--stream-interval", "5")
    assert tokens_per_event(stream(url, 20)) == [1, 6, 6, 6, 1]  # steps of 3, sent once 5 are ready


def test_reasoning_profile_streams_reasoning_first(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--reasoning-tokens", "5:5")
    chunks = token_chunks(stream(url, 12, continuous_usage=False))
    fields = [next(iter(c["choices"][0]["delta"])) for c in chunks]
    assert fields == ["reasoning"] * 5 + ["content"] * 7
    # a whole answer splits the same way; usage counts reasoning and content tokens
    body = {**CHAT, "max_tokens": 12, "ignore_eos": True}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).json()
    message = answer["choices"][0]["message"]
    assert message["reasoning"].count(" ") == 5 and message["content"].count(" ") == 7
    assert answer["usage"]["completion_tokens"] == 12


def test_reasoning_content_field_and_an_event_that_crosses_it(start_simulator) -> None:
    url = start_simulator(
        "--profile", "tiny", "--reasoning-tokens", "3:3", "--reasoning-field", "reasoning_content",
        "--speculative-tokens", "3",
    )  # fmt: skip
    deltas = [c["choices"][0]["delta"] for c in token_chunks(stream(url, 9))]
    assert deltas[0].keys() == {"reasoning_content"}
    assert deltas[1].keys() == {"reasoning_content", "content"}  # 2 reasoning + 2 content tokens
    assert deltas[1]["reasoning_content"].count(" ") == 2 and deltas[1]["content"].count(" ") == 2
    assert all(delta.keys() == {"content"} for delta in deltas[2:])


def test_natural_answers_think_before_they_answer(start_simulator) -> None:
    """Without ignore_eos the answer stops after its reasoning plus a natural content length."""
    url = start_simulator("--profile", "tiny", "--reasoning-tokens", "20:20")
    body = {**CHAT, "max_tokens": 500}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).json()
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][0]["message"]["reasoning"].count(" ") == 20
    assert 8 <= answer["choices"][0]["message"]["content"].count(" ") <= 64  # the tiny profile's range


def test_sends_are_recorded_per_request_id(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--speculative-tokens", "1", "--record-sends", "10")
    body = {**CHAT, "max_tokens": 7, "stream": True, "ignore_eos": True}
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers={"x-request-id": "abc"}, timeout=10
    ) as response:
        for _ in response.iter_lines():
            pass
    record = httpx.get(f"{url}/_simulator/sends", timeout=5).json()["abc"]
    assert [tokens for _, tokens, _ in record["events"]] == [1, 2, 2, 2]
    times = [ns for ns, _, _ in record["events"]]
    assert times == sorted(times) and record["done_ns"] == times[-1]


def test_bad_flags_stop_at_start(tmp_path) -> None:
    import subprocess
    import sys

    for flags, fragment in [
        (["--acceptance-rate", "1.5"], "acceptance_rate"),
        (["--speculative-tokens", "-1"], "num_speculative_tokens"),
        (["--stream-interval", "0"], "stream_interval"),
        (["--reasoning-tokens", "9:3"], "min_tokens <= max_tokens"),
        (["--reasoning-tokens", "many"], "MIN:MAX"),
        (["--record-sends", "0"], "--record-sends"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "simulator", "--port", "1", *flags],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2 and fragment in result.stderr, (flags, result.stderr)


def test_a_conversation_hits_the_prefix_cache_through_the_previous_answer(start_simulator) -> None:
    """vLLM V1 hashes a request's blocks as they fill, output included, and the generation prompt is the
    assistant's message header: the next turn, which repeats prompt and answer, hits every full block of
    them that was computed (the last token's KV never is)."""
    url = start_simulator("--profile", "tiny")
    first = [{"role": "system", "content": "you help"}, {"role": "user", "content": "tell me a story"}]
    body = {"messages": first, "max_tokens": 40, "ignore_eos": True}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).json()
    before = metric_values(url)
    history = [*first, {"role": "assistant", "content": answer["choices"][0]["message"]["content"]}]
    second = {"messages": [*history, {"role": "user", "content": "and then?"}], "max_tokens": 5}
    usage = httpx.post(f"{url}/v1/chat/completions", json=second, timeout=10).json()["usage"]
    after = metric_values(url)
    computed = answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"] - 1
    assert (
        after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"] == computed // 16 * 16
    )
    assert (
        after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"]
        == usage["prompt_tokens"]
    )
