"""Live /metrics against the report: vLLM's bucket boundaries, histogram counts and sums equal to the
report's figures (in seconds), token counters equal to the report's, and the bounded run-label set."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loadgen import metrics
from loadgen.metrics import LoadgenCollector, RunMetrics
from loadgen.runner import Run
from loadgen.scenario import Scenario
from tests.loadgen.test_faults import scraped

# vLLM 0.33, vllm/v1/metrics/buckets.py (reference/engines.md, "Histogram buckets")
VLLM_TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
             20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
VLLM_ITL = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
            40.0, 80.0]  # fmt: skip
VLLM_REQUEST_LATENCY = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                        120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]  # fmt: skip

FAMILIES = {  # our histogram -> (report figure, vLLM bucket family)
    "loadgen_time_to_first_token_seconds": ("ttft", VLLM_TTFT),
    "loadgen_time_to_first_output_token_seconds": ("ttfo", VLLM_TTFT),
    "loadgen_dispatch_delay_seconds": ("dispatch", VLLM_TTFT),
    "loadgen_time_per_output_token_seconds": ("tpot", VLLM_ITL),
    "loadgen_inter_token_latency_seconds": ("itl", VLLM_ITL),
    "loadgen_e2e_request_latency_seconds": ("e2e", VLLM_REQUEST_LATENCY),
}


def families(collector: LoadgenCollector) -> dict:
    registry = CollectorRegistry()
    registry.register(collector)
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def test_bucket_boundaries_equal_vllm_0_33():
    assert list(metrics.TTFT_BUCKETS) == VLLM_TTFT
    assert list(metrics.ITL_BUCKETS) == VLLM_ITL
    assert list(metrics.E2E_BUCKETS) == VLLM_REQUEST_LATENCY
    collector = LoadgenCollector()
    collector.add(RunMetrics("s", "r", "m", "chat", "closed"))
    exposed = families(collector)
    for name, (_, bounds) in FAMILIES.items():
        les = [s.labels["le"] for s in exposed[name].samples if s.name == f"{name}_bucket"]
        assert [float(le) for le in les] == [*bounds, float("inf")], name


def test_histograms_and_token_counters_equal_the_report_after_a_run_with_faults(scripted, run_loadgen):
    # every third request dies after two token events; the others succeed with usage; two steps
    result = run_loadgen(
        url=scripted.url, model="scripted", concurrency="1,3", requests=12, output_len=6,
        extra_body={"mock": {"ttft_ms": 30, "itl_ms": 5, "reasoning": 2, "die_after": 2, "fault_every": 3}},
    )  # fmt: skip
    phases = result.report["phases"]
    outcomes = result.report["totals"]["by_outcome"]
    assert outcomes["success"] > 0 and outcomes["stream_broken"] > 0, outcomes
    samples = scraped(result.collector)
    labels = (("run_id", result.run.run_id), ("scenario", "default"))
    for kind in ("prompt", "output", "reasoning"):
        counter = samples[(f"loadgen_{kind}_tokens_total", labels)]
        assert counter == sum(p["tokens"][kind] for p in phases) > 0, kind
    for name, (figure, _) in FAMILIES.items():
        count = sum(p["latency_s"][figure]["count"] for p in phases)
        total = sum(p["latency_s"][figure]["count"] * (p["latency_s"][figure]["mean"] or 0) for p in phases)
        assert samples[(f"{name}_count", labels)] == count > 0, name
        assert samples[(f"{name}_sum", labels)] == pytest.approx(total, rel=1e-9, abs=1e-12), name
        inf = tuple(sorted((*labels, ("le", "+Inf"))))
        assert samples[(f"{name}_bucket", inf)] == count, name
    # units are seconds: a scripted 30 ms to the first token is 0.03 on /metrics, not 30
    ttft = samples[("loadgen_time_to_first_token_seconds_sum", labels)] / outcomes["success"]
    assert 0.025 < ttft < 0.3


def test_the_collector_keeps_only_the_last_runs(scripted):
    collector = LoadgenCollector(keep=2)
    run_ids = []
    for index in range(3):
        scenario = Scenario.build(None, {
            "url": scripted.url, "model": "scripted", "concurrency": 1, "requests": 1, "output_len": 2,
            "run_id": f"keep-{index}", "metrics_address": "none", "progress": "none",
        })  # fmt: skip
        asyncio.run(Run(scenario, collector).execute())
        run_ids.append(scenario.run_id)
    seen = {s.labels.get("run_id") for f in families(collector).values() for s in f.samples}
    assert seen == {"keep-1", "keep-2"}


def test_goodput_grid_counts_every_pair_as_a_direct_count_would():
    import random

    rng = random.Random(7)
    grid = metrics.GoodputGrid()
    requests = []
    for _ in range(500):
        ttft = rng.choice([rng.uniform(0, 12), 0.1, 1.0, 10.0])  # bounds themselves included
        tpot = rng.choice([None, rng.uniform(0, 0.4), 0.025, 0.3])
        grid.observe(ttft, tpot)
        requests.append((ttft, tpot))
    met = {(ttft_le, tpot_le): count for ttft_le, tpot_le, count in grid.met()}
    assert len(met) == len(metrics.GOODPUT_TTFT) * len(metrics.GOODPUT_TPOT)
    for (ttft_le, tpot_le), count in met.items():
        direct = sum(1 for ttft, tpot in requests if ttft <= ttft_le and (tpot is None or tpot <= tpot_le))
        assert count == direct, (ttft_le, tpot_le)


@pytest.mark.parametrize(("ttft_slo", "tpot_slo"), [("0.1", "0.025"), ("0.1", "0.05"), ("1.0", "0.3")])
def test_joint_goodput_on_metrics_equals_the_reports(scripted, run_loadgen, ttft_slo, tpot_slo):
    # TTFT about 30 ms and tokens 5 ms apart, with some requests slowed past 0.1 s to the first token
    result = run_loadgen(
        url=scripted.url, model="scripted", concurrency=2, requests=16, output_len=5,
        slo=[f"ttft<={ttft_slo}s", f"tpot<={tpot_slo}s"],
        extra_body={"mock": {"ttft_ms": 30, "itl_ms": 5, "slow_headers_ms": 150, "fault_every": 4}},
    )  # fmt: skip
    good = sum(p["slo"]["good_requests"] for p in result.report["phases"])
    # every fourth request starts 150 ms late: it misses a 0.1 s TTFT objective, and meets 1 s
    assert (0 < good < 16) if ttft_slo == "0.1" else good == 16
    samples = scraped(result.collector)
    labels = tuple(
        sorted((("run_id", result.run.run_id), ("scenario", "default"), ("ttft_le", ttft_slo),
                ("tpot_le", tpot_slo)))
    )  # fmt: skip
    assert samples[("loadgen_requests_slo_met_total", labels)] == good
