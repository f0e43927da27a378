"""A true capacity answer (issue 18): the per-user rate a person receives, the slow tail (p5) of
tokens/s, steps judged only when they ran to the end, open-loop overload, one table across steps, think
time, wall-clock times, and a console table that holds any value."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from loadgen import eventloop, progress, steps, verdict
from loadgen.engine_watch import EngineView, read_values
from loadgen.errors import ScenarioError
from loadgen.metrics import LoadgenCollector
from loadgen.overload import OverloadDetector, Reading
from loadgen.report import render
from loadgen.runner import Run
from loadgen.scenario import Scenario
from loadgen.stats import Distribution, Slo
from loadgen.think import ThinkTime

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines" / "vllm"


# -- the overload detector ---------------------------------------------------------------------------


def feed(detector: OverloadDetector, seconds: int, finished, in_flight, rate: float, e2e: float | None):
    for t in range(seconds):
        done = finished(t)
        detector.add(Reading(t, done, in_flight(t), rate), e2e if done else None)
    return detector.overload


def test_a_healthy_open_loop_filling_up_is_not_overloaded() -> None:
    # 10 req/s, each 5 s: in flight rises to 50 in the first 5 s and stays; completions run at 10/s
    found = feed(OverloadDetector(), 60, lambda t: max(0, t - 5) * 10, lambda t: min(t, 5) * 10, 10.0, 5.0)
    assert found is None


def test_long_requests_that_have_not_finished_are_not_overloaded() -> None:
    assert feed(OverloadDetector(), 50, lambda t: 0, lambda t: t, 1.0, None) is None


def test_an_open_loop_past_capacity_is_overloaded_from_the_first_qualifying_window() -> None:
    # 10 req/s offered, 2 answered per second: the backlog grows by 8/s
    found = feed(
        OverloadDetector(), 60, lambda t: max(0, t - 5) * 2, lambda t: t * 10 - max(0, t - 5) * 2, 10.0, 5.0
    )
    assert found is not None
    assert found.since_s == 10 and found.detected_s == 20
    assert found.offered_rate == 10 and found.achieved_rate == pytest.approx(2.0)
    assert found.backlog_growth == pytest.approx(8.0)
    assert "latency after that point measures the queue" in found.sentence()


# -- rates, percentiles, verdicts --------------------------------------------------------------------


def test_summaries_carry_the_slow_tail() -> None:
    dist = Distribution()
    for value in range(1, 101):
        dist.add(float(value))
    summary = dist.summary()
    assert summary["p5"] == pytest.approx(5, rel=0.002) and summary["p95"] == pytest.approx(95, rel=0.002)


def phase(level: float, met: bool | None, **extra) -> dict:
    latency = {"ttft": {"p95": extra.pop("ttft", 0.2)}, "dispatch": {"p95": extra.pop("dispatch", 0.0001)}}
    return {
        "phase": f"c{level:g}", "level": level, "level_label": f"{level:g} users",
        "slo": {"met": met, "values": {"user_tps>=10": extra.pop("rate", 12.0)}},
        "latency_s": latency, "throughput": {"requests_per_s": 1.0, "output_tokens_per_s": 10.0},
        "requests": {"failed": 0}, **extra,
    }  # fmt: skip


def test_a_step_cut_short_is_never_judged() -> None:
    slos = (Slo("user_tps", ">=", 10),)
    phases = [phase(1, True), phase(2, None, interrupted=True)]
    result = verdict.sweep_result(phases, slos, 95, "concurrent users")
    assert result["capacity"] == 1 and result["first_failing"] is None and result["interrupted"] == 2
    assert "2 concurrent users was cut short by a stop and is not judged" in result["sentence"]
    assert steps.verdict(phases[1]) == "cut short"


def test_the_sweep_sentence_names_ttft_and_the_engines_queue_at_both_levels() -> None:
    engine = {
        "waiting": {"mean": 40.5, "max": 61},
        "running": {"mean": 64, "max": 64},
        "running_while_waiting": {"mean": 64, "max": 64},
        "kv_usage": {"mean": 0.5, "max": 0.62},
    }
    phases = [
        phase(64, True, engine={"waiting": {"mean": 0, "max": 0}, "running": {"mean": 60, "max": 64}}),
        phase(128, False, ttft=7.1, rate=5.5, engine=engine),
    ]
    sentence = verdict.sweep_result(phases, (Slo("user_tps", ">=", 10),), 95, "concurrent users")["sentence"]
    assert "Capacity: 64 concurrent users meets every SLO" in sentence
    assert "TTFT p95 200.0 ms, none waiting in the engine's queue" in sentence
    assert "128 does not (p5 per-user 5.5 tok/s from sending (>= 10); there TTFT p95 7.10 s" in sentence
    assert "up to 61 waiting in the engine's queue" in sentence
    why = verdict.diagnosis(phases[1], "concurrent users")
    assert why.startswith("Why it got slow at 128 concurrent users (TTFT p95 7.10 s)")
    assert "sent without delay" in why and "ran at most 64 at once" in why and "KV cache peaked at 62%" in why
    assert why.endswith("the wait is the engine's queue.")


def test_the_sweep_sentence_says_ttft_once_and_one_user_in_the_singular() -> None:
    slos = (Slo("user_tps", ">=", 10), Slo("ttft", "<=", 2.0))
    phases = [phase(1, True), phase(4, False, ttft=3.0)]
    for each in phases:
        each["slo"]["values"]["ttft<=2"] = each["latency_s"]["ttft"]["p95"]
    sentence = verdict.sweep_result(phases, slos, 95, "concurrent users")["sentence"]
    assert sentence.startswith("Capacity: 1 concurrent user meets every SLO")
    assert sentence.count("TTFT") == 2  # once per level, in the SLO figures (before: twice per level)
    assert "p95 TTFT 3.00 s (<= 2.00 s); there the engine's queue not read" in sentence
    why = verdict.diagnosis(phases[0], "concurrent users")
    assert why.startswith("Why it got slow at 1 concurrent user ")


def test_engine_figures_from_real_vllm_payloads() -> None:
    values = read_values((FIXTURES / "v0.33.0-dp2-load.txt").read_text())
    assert values["running"] == 64 + 61 and values["waiting"] == 0  # summed over the two engines
    assert values["kv_usage"] == pytest.approx(0.7892731710220846)  # the fuller engine's
    view = EngineView()
    view.add(values)
    view.add({**values, "waiting": 3.0, "running": 120.0})
    summary = view.summary()
    assert summary["waiting"]["max"] == 3 and summary["running_while_waiting"]["max"] == 120


# -- tables and lines --------------------------------------------------------------------------------


def test_the_steps_table_keeps_its_columns_at_any_value() -> None:
    rows = [
        {**phase(512, False, ttft=123.456), "latency_s": {"ttft": {"median": 98.7654, "p95": 123.456}}},
        phase(1, True),
    ]
    rows[0]["throughput"] = {"requests_per_s": 12345.6, "output_tokens_per_s": 9876543.2}
    text = steps.render(steps.rows(rows))
    header, first, second = text.splitlines()
    assert "123,456.0" in first and "98,765.4" in first
    # every cell is separated by at least two spaces: no value runs into its neighbour
    assert len(re.split(r"\s{2,}", first.strip())) == len(steps.COLUMNS)
    assert len(re.split(r"\s{2,}", header.strip())) == len(steps.COLUMNS)
    assert first.index("misses") + len("misses") == second.index("meets") + len("meets")  # right-aligned


def fake_run(**overrides) -> SimpleNamespace:
    stats = SimpleNamespace(
        name="step-2", start_ns=time.perf_counter_ns() - 12_000_000_000, sent=120, failed=0,
        output_tokens=4800, outcomes={"success": 118}, dist={"ttft": Distribution()}, duration_s=20.0,
    )  # fmt: skip
    phases = tuple(
        SimpleNamespace(level=level, closed=True, ramp_to=None, duration_s=20.0, max_requests=None)
        for level in (1, 16, 64, 256, 512)
    )
    run = SimpleNamespace(
        run_id="r", state="running", current=stats, phases=phases, phase_index=2, detector=None,
        stats=[SimpleNamespace(duration_s=21.0)], metrics=SimpleNamespace(in_flight=16),
        scenario=SimpleNamespace(sweep=False),
    )  # fmt: skip
    for key, value in overrides.items():
        setattr(run, key, value)
    return run


def test_progress_says_step_k_of_n_the_total_and_the_eta() -> None:
    line = progress.line(fake_run())
    assert line.startswith("step 2/5 16 users | 12.0 s of 20.0 s")
    assert "run 33.0 s of 1m41s, ETA 1m08s" in line  # 21 s done + 12 s, 8 s left in this step + 3 x 20 s
    assert "sent 120 ok 118 failed 0 | in flight 16" in line


def test_progress_says_overloaded() -> None:
    detector = OverloadDetector()
    for t in range(40):
        done = max(0, t - 5) * 2
        detector.add(Reading(t, done, t * 10 - done, 10.0), 5.0 if done else None)
    assert "OVERLOADED since 10 s: 2.0 of 10.0 req/s answered" in progress.line(fake_run(detector=detector))


# -- think time -------------------------------------------------------------------------------------


def test_think_time_forms() -> None:
    rng = random.Random(0)
    assert ThinkTime.parse("2s").draw(rng) == 2.0
    assert ThinkTime.parse("constant:500ms").draw(rng) == 0.5
    between = ThinkTime.parse("uniform:1s:5s")
    assert all(1.0 <= between.draw(rng) <= 5.0 for _ in range(100)) and between.mean_s == 3.0
    exponential = ThinkTime.parse("exponential:2s")
    assert sum(exponential.draw(rng) for _ in range(4000)) / 4000 == pytest.approx(2.0, rel=0.1)
    for bad in ("soon", "uniform:5s:1s", "exponential:0s", "gamma:1s"):
        with pytest.raises(ScenarioError, match="think time"):
            ThinkTime.parse(bad)
    with pytest.raises(ScenarioError, match="closed-loop"):
        Scenario.build(None, {"url": "http://127.0.0.1:1", "rate": "5", "think_time": "1s"})


# -- against the scripted server -------------------------------------------------------------------


def run_with_stop(values: dict, stop_after_s: float) -> tuple[Run, dict]:
    scenario = Scenario.build(None, {"metrics_address": "none", "progress": "none", **values})
    run = Run(scenario, LoadgenCollector())

    async def go() -> dict:
        asyncio.get_running_loop().call_later(stop_after_s, run.stop)
        return await run.execute()

    return run, eventloop.run(go(), "asyncio")


def test_a_sweep_stopped_mid_step_does_not_judge_that_step(scripted, caplog) -> None:
    caplog.set_level("INFO", logger="loadgen")
    _, report = run_with_stop(
        {"url": scripted.url, "model": "scripted", "sweep": True, "concurrency": "1,2,4",
         "step_duration": "3s", "output_len": 4, "slo": ["ttft<=10s"], "grace": "1s",
         "extra_body": {"mock": {"itl_ms": 20}}},
        stop_after_s=4.5,
    )  # fmt: skip
    first, second = report["phases"]
    assert first["slo"]["met"] is True and not first["interrupted"]
    assert second["interrupted"] and second["slo"]["met"] is None
    assert report["sweep"]["capacity"] == 1 and report["sweep"]["first_failing"] is None
    assert "was cut short by a stop and is not judged" in report["sweep"]["sentence"]
    assert [row["verdict"] for row in report["steps"]] == ["meets", "cut short"]
    assert "not judged (cut short)" in render(report)
    assert "misses the SLOs" not in caplog.text  # the log said so of the step cut short


def test_think_time_wall_clock_and_the_table_across_steps(scripted, run_loadgen, tmp_path) -> None:
    before = time.time()
    result = run_loadgen(
        url=scripted.url, model="scripted", concurrency="1,2", step_duration="2s", output_len=4,
        think_time="500ms", extra_body={"mock": {"itl_ms": 5}},
    )  # fmt: skip
    after = time.time()
    report = result.report
    for summary in report["phases"]:
        # each user sends, waits about 40 ms for its answer, thinks 500 ms: under 5 requests per user
        assert summary["requests"]["sent"] <= 5 * summary["level"]
        assert before <= summary["started_unix_s"] < summary["ended_unix_s"] <= after + 1
    assert before <= report["clock"]["unix_s"] <= after
    sent = [record["sent_unix_s"] for record in result.records]
    assert all(before <= t <= after for t in sent)
    assert [row["level"] for row in report["steps"]] == ["1 user", "2 users"]
    lines = render(report).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("step "))
    assert lines[header + 1].startswith("1 user ") and lines[header + 2].startswith("2 users")
    assert lines[header + 3].startswith("Why it got slow at 2 concurrent users")
    assert report["config"]["think_time"] == "500ms"
    assert json.dumps(report)  # every new figure is JSON


def test_engine_figures_from_sglang_under_either_spelling() -> None:
    """SGLang serves `sglang:` names; sgl-router's /engine_metrics and Prometheus's underscore escaping give
    `sglang_` (SGLang issue 12618): the same payload reads the same either way."""
    sglang = FIXTURES.parent / "sglang"
    served = read_values((sglang / "v0.5.23-load.txt").read_text())
    assert served == read_values((sglang / "router-underscores-v0.5.23-load.txt").read_text())
    assert served == {"running": 72.0, "waiting": 157.0, "kv_usage": 0.87}
