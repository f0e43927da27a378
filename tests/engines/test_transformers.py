"""`transformers serve`: an engine without metrics, read for its health and joined to its processes.

Fixture origin: tests/fixtures/engines/README.md (`transformers/v5.19.0-health.json`, captured).
"""

from __future__ import annotations

import pytest

from exporter.collectors.host import HostCollector
from exporter.config import Config, TargetConfig
from exporter.engines.collector import EnginesCollector
from tests.engines.conftest import FIXTURES, scrape, value
from tests.exporter.metrics_util import samples_of

HEALTH = (FIXTURES / "transformers" / "v5.19.0-health.json").read_text()


def collector_for(url: str) -> EnginesCollector:
    target = TargetConfig("tf", url, kind="transformers", model="tiny-qwen3", timeout_seconds=8)
    return EnginesCollector(Config(targets=(target,)))


def test_health_is_up_and_info_names_the_configured_model(fake_engine) -> None:
    fake_engine.serve("/health", HEALTH, content_type="application/json")
    fake_engine.serve("/metrics", '{"detail":"Not Found"}', status=404, content_type="application/json")
    collector = collector_for(fake_engine.url)
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="tf") == 1
    assert value(exposition, "llm_target_info", target="tf", engine_kind="transformers") == 1
    assert value(exposition, "llm_engine_info", target="tf", model="tiny-qwen3") == 1
    engine_families = {name for name in exposition.families if name.startswith("llm_")}
    assert engine_families <= {"llm_engine_info", "llm_engine_gpu_join_ambiguous"} | {
        name for name in exposition.families if name.startswith("llm_target_")
    }  # nothing it does not have: absent, never zero


def test_a_dead_batching_worker_is_down(fake_engine) -> None:
    body = '{"status": "unhealthy", "reason": "cb_worker_dead"}'  # transformers/cli/serving/server.py
    fake_engine.serve("/health", body, status=503, content_type="application/json")
    collector = collector_for(fake_engine.url)
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="tf") == 0
    assert value(exposition, "llm_target_errors_total", target="tf", kind="http_status") == 1


@pytest.mark.real
@pytest.mark.slow
def test_a_real_transformers_serve_is_up_and_its_processes_carry_its_target(live_transformers) -> None:
    collector = collector_for(live_transformers.url)
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="tf") == 1
    host = HostCollector(start_threads=False, targets=[("tf", live_transformers.url)])
    host.scan_engines()
    m = samples_of(host.collect())
    [info] = [labels for labels, _ in m.all("host_engine_process_info") if labels["target"] == "tf"]
    assert info["engine_kind"] == "transformers" and info["pid"] == str(live_transformers.process.pid)
    assert m.value("host_engine_process_resident_memory_bytes", {"target": "tf"}) > 50e6
