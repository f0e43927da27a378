"""Every fault setting produces the failure it claims, seen from a real client over loopback."""

from __future__ import annotations

import itertools
import json
import time

import httpx
import pytest

from tests.simulator.test_pressure import metric_values

CHAT = {"messages": [{"role": "user", "content": "tell me a story"}], "ignore_eos": True}


def stream_timeline(url: str, max_tokens: int) -> tuple[list[float], list[str]]:
    """Arrival time of every SSE event, and the payloads."""
    times, events = [], []
    body = {**CHAT, "max_tokens": max_tokens, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                times.append(time.monotonic())
                events.append(line[6:])
    return times, events


def test_error_rates_by_status(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--error-rate", "500=0.3", "--error-rate", "429=0.2")
    statuses = [
        httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}, timeout=10).status_code
        for _ in range(200)
    ]
    assert set(statuses) == {200, 429, 500}
    assert 35 <= statuses.count(500) <= 85  # expected 60
    assert 20 <= statuses.count(429) <= 60  # expected 40
    error = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}, timeout=10)
    while error.status_code == 200:
        error = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}, timeout=10)
    assert error.json()["error"]["code"] == error.status_code


def test_latency_spikes_lengthen_engine_steps(start_simulator) -> None:
    # 60000 per minute: practically every step (about 20 ms without spikes) takes 0.25 s longer.
    url = start_simulator("--profile", "tiny", "--latency-spike", "60000:0.25")
    times, _ = stream_timeline(url, 6)
    # events: role chunk + first token together, five more tokens, [DONE] with the last one.
    # Means, not single gaps: a late wake-up on a busy CPU shortens the next step by as much.
    gaps = [later - earlier for earlier, later in itertools.pairwise(times[1:-1])]
    assert len(gaps) == 5
    assert sum(gaps) / len(gaps) >= 0.24
    values = metric_values(url)
    assert values["vllm:inter_token_latency_seconds_count"] == 5
    assert values["vllm:inter_token_latency_seconds_sum"] / 5 >= 0.24
    # without the fault the same stream's gaps are short
    plain = start_simulator("--profile", "tiny")
    times, _ = stream_timeline(plain, 6)
    assert (times[-2] - times[1]) / 5 < 0.15


def test_stall_pauses_a_stream_midway_then_it_completes(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--stall", "1:1.5")
    times, events = stream_timeline(url, 20)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) >= 1.4
    assert events[-1] == "[DONE]"
    assert sum(1 for event in events[:-1] if json.loads(event)["choices"][0]["delta"].get("content")) == 20


def test_drop_closes_the_connection_midway(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--drop", "1")
    received = []
    body = {**CHAT, "max_tokens": 20, "stream": True}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(line)
    assert 0 < len(received) < 20
    assert "data: [DONE]" not in received
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 5}, timeout=30)
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # the server itself lives on


def test_restart_breaks_streams_resets_counters_and_reports_down(start_simulator) -> None:
    url = start_simulator("--profile", "tiny")
    for _ in range(3):
        httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 4}, timeout=10)
    before = metric_values(url)
    assert before["vllm:generation_tokens_total"] == 12
    body = {**CHAT, "max_tokens": 200, "stream": True}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response,
    ):
        for index, _ in enumerate(response.iter_lines()):
            if index == 5:
                httpx.post(f"{url}/_simulator/restart", params={"down_seconds": 1.5}, timeout=5)
    assert httpx.get(f"{url}/health", timeout=5).status_code == 503
    assert httpx.get(f"{url}/metrics", timeout=5).status_code == 503
    assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=5).status_code == 503
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    after = metric_values(url)
    assert after["vllm:generation_tokens_total"] == 0  # a counter reset, as after a real restart
    assert after["vllm:generation_tokens_created"] > before["vllm:generation_tokens_created"]


def test_periodic_restarts(start_simulator) -> None:
    url = start_simulator("--profile", "tiny", "--restart-every", "1", "--restart-down", "0.3")
    deadline = time.monotonic() + 15
    while httpx.get(f"{url}/_simulator/stats", timeout=5).json()["restarts"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_fault_file(start_simulator, tmp_path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text("errors: {503: 1.0}\n")
    url = start_simulator("--profile", "tiny", "--faults", str(faults))
    response = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 1}, timeout=10)
    assert response.status_code == 503
