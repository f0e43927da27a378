"""Load shapes end to end against the scripted server: sweep, open-loop rate, ramp, multi-turn."""

from __future__ import annotations

import itertools

import pytest

from loadgen.report import render


def test_sweep_finds_the_capacity_and_says_so(scripted, run_loadgen):
    # TTFT = 10 ms per request in flight: 1 -> 10 ms, 2 -> 20, 4 -> 40, 8 -> 80 (misses 65 ms)
    result = run_loadgen(
        url=scripted.url, model="scripted", sweep=True, concurrency="1,2,4,8,16", requests=24,
        output_len=4, slo=["ttft<=65ms", "error_ratio<=0.01"],
        extra_body={"mock": {"ttft_per_in_flight_ms": 10}},
    )  # fmt: skip
    sweep = result.report["sweep"]
    assert [p["phase"] for p in result.report["phases"]] == [
        "step-1 concurrency=1",
        "step-2 concurrency=2",
        "step-3 concurrency=4",
        "step-4 concurrency=8",
    ]  # fmt: skip  (16 is never run)
    assert sweep["capacity"] == 4 and sweep["first_failing"] == 8
    assert sweep["sentence"].startswith("Capacity: 4 concurrent users meets every SLO (p95 TTFT")
    assert "; 8 does not (p95 TTFT" in sweep["sentence"]


def test_open_loop_delivers_the_rate_on_schedule(scripted, run_loadgen):
    result = run_loadgen(
        url=scripted.url, model="scripted", rate=40, arrival="constant", step_duration="3s", output_len=2
    )
    records = result.records
    assert 115 <= len(records) <= 121  # 40/s for 3 s
    scheduled = sorted(r["scheduled_ns"] for r in records)
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(scheduled)]
    assert all(abs(gap - 0.025) < 1e-6 for gap in gaps)  # the plan is exact ...
    assert (
        result.phase["latency_s"]["dispatch"]["p99"] < 0.05
    )  # ... and the sends follow it (loaded CI: 50 ms)


def test_concurrency_cap_wait_counts_as_dispatch_delay(scripted, run_loadgen):
    # 20 req/s but at most 1 in flight and each takes ~200 ms: the queue grows and it shows
    result = run_loadgen(
        url=scripted.url, model="scripted", rate=20, arrival="constant", max_concurrency=1, requests=10,
        output_len=2, extra_body={"mock": {"ttft_ms": 200}},
    )  # fmt: skip
    latency = result.phase["latency_s"]
    assert latency["dispatch"]["max"] > 1.0
    assert latency["e2e_from_schedule"]["max"] > latency["e2e"]["max"] + 1.0


def test_closed_loop_ramp_adds_users_over_time(scripted, run_loadgen):
    result = run_loadgen(
        url=scripted.url, model="scripted", concurrency=1, ramp_to=6, step_duration="2s", output_len=4,
        extra_body={"mock": {"itl_ms": 25}},
    )  # fmt: skip
    sent = sorted(r["sent_ns"] for r in result.records)
    start = sent[0]
    early = sum(1 for t in sent if t - start < 0.5e9)
    late = sum(1 for t in sent if 1.5e9 <= t - start < 2.0e9)
    assert late > 2.5 * early


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_multi_turn_feeds_answers_back(scripted, run_loadgen, endpoint):
    result = run_loadgen(
        url=scripted.url,
        model="scripted",
        endpoint=endpoint,
        concurrency=2,
        requests=2,
        turns=3,
        output_len=3,
    )
    truth = scripted.records(result.run.run_id)
    assert result.phase["requests"]["succeeded"] == 6 == len(truth)  # completions: the transcript as prompt
    if endpoint == "chat":
        assert sorted(len(r["assistant"]) for r in truth.values()) == [0, 0, 1, 1, 2, 2]
        assert all(answer == "tok0 tok1 tok2 " for r in truth.values() for answer in r["assistant"])


def test_waiting_for_a_connection_is_dispatch_delay_not_latency(scripted, run_loadgen):
    # two arrivals 1 ms apart, one connection, 300 ms to the first token: the second request waits
    # ~300 ms for the connection, and that wait belongs to its dispatch delay, not to its TTFT
    result = run_loadgen(
        url=scripted.url, model="scripted", rate=1000, arrival="constant", requests=2, max_connections=1,
        output_len=2, extra_body={"mock": {"ttft_ms": 300}},
    )  # fmt: skip
    truth = scripted.records(result.run.run_id)
    first, second = sorted(result.records, key=lambda r: r["scheduled_ns"])
    assert first["dispatch_delay_s"] < 0.1 and second["dispatch_delay_s"] > 0.25
    for record in (first, second):
        assert 0.29 < record["ttft_s"] < 0.45, record
        # sent is when the request went out: the server read it right after
        assert (truth[record["request_id"]]["received_ns"] - record["sent_ns"]) / 1e9 < 0.05
    assert result.report["config"]["max_connections"] == 1


def test_without_streaming_a_ttft_slo_is_never_met_and_the_report_says_why(scripted, run_loadgen):
    result = run_loadgen(
        url=scripted.url, model="scripted", stream=False, sweep=True, concurrency="1,2", requests=3,
        output_len=2, slo=["ttft<=10s", "e2e<=10s"],
    )  # fmt: skip
    phase = result.phase
    assert phase["requests"]["succeeded"] == 3
    assert phase["slo"]["good_requests"] == 0 and phase["throughput"]["goodput_requests_per_s"] == 0
    assert phase["slo"]["met"] is False  # goodput and the sweep agree: nothing meets a TTFT SLO
    assert result.report["sweep"]["capacity"] is None
    assert "TTFT not measurable without streaming" in result.report["sweep"]["sentence"]
    assert any("not measurable without streaming" in note for note in result.report["notes"])
    assert "Note: TTFT, TTFO, TPOT, ITL" in render(result.report)


def test_a_streamed_one_token_answer_has_no_tpot_to_break(scripted, run_loadgen):
    result = run_loadgen(
        url=scripted.url, model="scripted", concurrency=1, requests=2, output_len=1,
        slo=["ttft<=10s", "tpot<=1s", "user_tps>=1", "itl<=1s"],
    )  # fmt: skip
    assert result.phase["slo"]["good_requests"] == 2
    assert "notes" not in result.report
