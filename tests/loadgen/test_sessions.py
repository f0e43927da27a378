"""Agentic sessions (multi-turn conversations with their whole history, think time between turns, a
shared system prompt sized for a target prefix-cache hit share) and warm-up requests left out of every
figure. The hit share is checked against the engine's own counters: the simulator models vLLM V1's
prefix cache, output blocks included (tests/simulator/test_tokens_per_event.py)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

import pytest

from loadgen.errors import ScenarioError, WorkloadError
from loadgen.report import render
from loadgen.scenario import Scenario
from loadgen.sessions import history_hit_rate, system_prompt_tokens
from tests.loadgen.test_metrics import families
from tests.simulator.conftest import simulator


def test_the_system_prompt_gives_the_hit_share_it_was_sized_for() -> None:
    for rate, user, answer, turns, block in [
        (0.8, 64, 32, 4, 16), (0.5, 300, 100, 1, 16), (0.9, 128, 256, 6, 16), (0.6, 24, 8, 1, 32)
    ]:  # fmt: skip
        system = system_prompt_tokens(rate, user, answer, turns, block)
        assert (system + 4) % block == block // 2  # the system prompt ends mid-block
        # quantized to whole blocks: within half a block's share of the target
        assert history_hit_rate(system, user, answer, turns, block) == pytest.approx(rate, abs=0.05)
    with pytest.raises(WorkloadError, match="below what the history alone gives"):
        system_prompt_tokens(0.3, 64, 64, 8)


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"think_time": "2s", "rate": 5}, "between the turns of a"),
        ({"prefix_hit_rate": 1.0}, "between 0 and 1"),
        ({"prefix_hit_rate": 0.8, "prefix_len": 100, "prefix_groups": 2}, "no --dataset, --prefix-groups"),
        ({"warmup": "0"}, "at least 1 request"),
        ({"warmup": "inf"}, "must end"),
    ],
)
def test_bad_session_settings_are_clear_errors(values: dict, fragment: str) -> None:
    with pytest.raises(ScenarioError, match=fragment):
        Scenario.build(None, {"url": "http://h:1", **values})


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with simulator(tmp_path_factory.mktemp("sim"), "--profile", "rtx4090d-qwen3-4b-fp8") as url:
        yield url


def test_agentic_sessions_hit_the_target_share_of_the_engines_prefix_cache(run_loadgen, sim) -> None:
    result = run_loadgen(
        url=sim, concurrency=4, requests=16, turns=4, think_time="20ms", prefix_hit_rate=0.8,
        input_len=64, output_len=32, extra_body={"ignore_eos": True}, request_timeout="60s",
    )  # fmt: skip
    phase = result.phase
    assert phase["requests"]["succeeded"] == 64  # 16 conversations of 4 turns
    cache = phase["prefix_cache"]
    assert cache["target_hit_rate"] == 0.8 and cache["source"] == "vllm:prefix_cache_queries_total"
    assert abs(cache["engine_hit_rate"] - 0.8) <= 0.05, cache  # the engine's own counters
    print(f"prefix-cache hit share: target 0.8, engine {cache['engine_hit_rate']:.3f}")
    assert result.report["workload"]["system_prompt_tokens"] > 0


def test_the_prefix_cache_counters_come_from_the_engine_metrics_page_named(
    run_loadgen, sim, tmp_path
) -> None:
    """--engine-metrics names the page the prefix-cache counters are read from, as for the engine's queue:
    `none` reads nothing, a URL reads that page (here an idle second simulator: its counters do not move
    while the load goes to the first). The counters were read from the API's own host whatever it said."""
    session = {"concurrency": 2, "requests": 2, "turns": 2, "prefix_hit_rate": 0.5, "input_len": 32,
               "output_len": 8, "extra_body": {"ignore_eos": True}, "request_timeout": "60s"}  # fmt: skip
    unread = run_loadgen(url=sim, engine_metrics="none", **session).phase["prefix_cache"]
    assert unread["engine_queries"] is None and "not read: --engine-metrics" in unread["source"], unread
    with simulator(tmp_path, "--profile", "tiny") as idle:
        elsewhere = run_loadgen(url=sim, engine_metrics=f"{idle}/metrics", **session).phase["prefix_cache"]
    assert elsewhere["source"] == "vllm:prefix_cache_queries_total" and elsewhere["engine_queries"] == 0
    here = run_loadgen(url=sim, **session).phase["prefix_cache"]  # auto: the simulator's own /metrics
    assert here["engine_queries"] > 0, here


def test_think_time_is_between_turns_and_in_no_latency(run_loadgen, sim) -> None:
    result = run_loadgen(
        url=sim, concurrency=1, requests=2, turns=3, think_time="300ms", input_len=16, output_len=4,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    records = sorted(result.records, key=lambda record: record["sent_ns"])
    assert len(records) == 6
    for earlier, later in pairwise(records):
        if later["request_id"] != records[3]["request_id"]:  # within a conversation
            assert (later["sent_ns"] - earlier["end_ns"]) / 1e9 >= 0.3
    assert result.phase["latency_s"]["dispatch"]["max"] < 0.1  # the pause is not dispatch delay


def test_warmup_requests_are_in_no_figure(scripted, run_loadgen) -> None:
    result = run_loadgen(
        url=scripted.url, model="scripted", concurrency=2, requests=10, warmup=5, output_len=3, input_len=8
    )
    assert [phase["phase"] for phase in result.report["phases"]] == ["concurrency=2"]
    assert result.phase["requests"]["sent"] == 10 and result.report["totals"]["sent"] == 10
    assert result.report["warmup"]["sent"] == 5 and result.report["warmup"]["succeeded"] == 5
    assert [r["phase"] for r in result.records].count("warmup") == 5  # the JSONL keeps them, marked
    exposed = families(result.collector)
    sent = {tuple(sorted(s.labels.items())): s.value for s in exposed["loadgen_requests_sent"].samples}
    run = result.run.run_id
    assert sent[(("run_id", run), ("scenario", "default"))] == 10
    assert sent[(("phase", "warmup"), ("run_id", run), ("scenario", "default"))] == 5
    ttft = [s for s in exposed["loadgen_time_to_first_token_seconds"].samples if s.name.endswith("_count")]
    assert sorted(s.value for s in ttft) == [5, 10]
    assert "Warm-up: 5 requests" in render(result.report)


def test_a_warmup_duration(scripted, run_loadgen) -> None:
    result = run_loadgen(
        url=scripted.url, model="scripted", rate=20, step_duration="1s", warmup="0.5s", output_len=2
    )
    assert 4 <= result.report["warmup"]["sent"] <= 16 and result.report["warmup"]["duration_s"] < 1.5
    assert result.phase["requests"]["sent"] >= 10


def test_think_time_leaves_the_seeds_requests_alone(scripted, run_loadgen) -> None:
    """One seed, the same requests with or without --think-time: pauses are drawn from a generator of their
    own (drawn from the workload's, they shifted every later prompt and length by when users paused)."""

    def lengths(**think) -> list[int]:
        result = run_loadgen(
            url=scripted.url, model="scripted", concurrency=3, requests=12, turns=2, seed=7,
            input_len="uniform:4:40", output_len="uniform:1:30", **think,
        )  # fmt: skip
        run = result.run.run_id
        return sorted(r["max_tokens"] for r in scripted.records(run).values())

    plain = lengths()
    assert len(plain) == 24 and len(set(plain)) > 5
    assert lengths(think_time="exponential:5ms") == plain
