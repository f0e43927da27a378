"""What one scrape of a target hands on to the next: its connection (while it idles less than
KEEPALIVE_SECONDS), its static pages (/version, /props, /info) and its series heads; and what a failed
scrape makes it forget. Real loopback HTTP against a fake engine that keeps connections open."""

from __future__ import annotations

import time

import pytest

from exporter.config import Config, TargetConfig
from exporter.engines import scraper
from exporter.engines.collector import EnginesCollector
from tests.engines.conftest import FakeEngine, scrape, value


def collector_for(*targets: TargetConfig) -> EnginesCollector:
    return EnginesCollector(Config(targets=targets))


def paths(engine: FakeEngine) -> list[str]:
    return [path for path, _ in engine.requests]


def test_one_connection_serves_scrapes_closer_than_the_keep_alive(keep_alive_engine: FakeEngine) -> None:
    keep_alive_engine.serve_fixture("/metrics", "vllm/v0.33.0-dp2-load.txt")
    keep_alive_engine.serve("/version", '{"version": "0.33.0"}', content_type="application/json")
    collector = collector_for(TargetConfig("v", keep_alive_engine.url, kind="vllm"))
    try:
        for _ in range(4):
            assert value(scrape(collector), "llm_target_up", target="v") == 1
    finally:
        collector.close()
    assert paths(keep_alive_engine).count("/metrics") == 4
    assert len(set(keep_alive_engine.client_ports)) == 1


def test_a_connection_idle_past_the_keep_alive_is_not_reused(
    keep_alive_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scraper, "KEEPALIVE_SECONDS", 0.2)
    keep_alive_engine.serve_fixture("/metrics", "vllm/v0.33.0-idle.txt")
    collector = collector_for(TargetConfig("v", keep_alive_engine.url, kind="vllm"))
    try:
        scrape(collector)
        time.sleep(0.5)
        scrape(collector)
    finally:
        collector.close()
    assert len(set(keep_alive_engine.client_ports)) == 2


def test_static_pages_are_read_once_and_again_after_a_failure(
    keep_alive_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = keep_alive_engine
    engine.serve_fixture("/metrics", "vllm/v0.33.0-idle.txt")
    engine.serve("/version", '{"version": "0.33.0"}', content_type="application/json")
    collector = collector_for(TargetConfig("v", engine.url, kind="vllm"))
    try:
        for _ in range(3):
            exposition = scrape(collector)
            assert value(exposition, "llm_engine_info", target="v", version="0.33.0") == 1
        assert paths(engine).count("/version") == 1
        engine.serve("/metrics", "<html>upgrading</html>\n")  # a failed scrape: the engine may come back
        assert value(scrape(collector), "llm_target_up", target="v") == 0
        engine.serve_fixture("/metrics", "vllm/v0.33.0-idle.txt")
        engine.serve("/version", '{"version": "0.34.0"}', content_type="application/json")
        exposition = scrape(collector)
        assert value(exposition, "llm_engine_info", target="v", version="0.34.0") == 1
        assert paths(engine).count("/version") == 2
        monkeypatch.setattr(scraper, "STATIC_PAGE_SECONDS", 0.0)  # and after STATIC_PAGE_SECONDS
        scrape(collector)
        assert paths(engine).count("/version") == 3
    finally:
        collector.close()
    ports = engine.client_ports
    assert ports[0] == ports[1] != ports[-1]  # the failed scrape closed the connection


def test_a_missing_static_page_is_not_asked_for_on_every_scrape(keep_alive_engine: FakeEngine) -> None:
    keep_alive_engine.serve_fixture("/metrics", "vllm/v0.33.0-idle.txt")  # no /version: 404
    collector = collector_for(TargetConfig("v", keep_alive_engine.url, kind="vllm"))
    try:
        for _ in range(3):
            assert value(scrape(collector), "llm_target_up", target="v") == 1
    finally:
        collector.close()
    assert paths(keep_alive_engine).count("/version") == 1


def test_series_heads_follow_a_changing_payload(keep_alive_engine: FakeEngine) -> None:
    """From the third scrape on, lines come from the heads: new values, a new series, a gone one."""
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{{engine="0",model_name="m"}} {running}\n'
        "# TYPE vllm:generation_tokens_total counter\n"
        'vllm:generation_tokens_total{{engine="0",model_name="m"}} {tokens}\n'
        "{extra}"
    )
    collector = collector_for(TargetConfig("v", keep_alive_engine.url, kind="vllm"))
    try:
        for step in range(3):
            keep_alive_engine.serve("/metrics", text.format(running=step, tokens=10 * step, extra=""))
            exposition = scrape(collector)
        extra = 'vllm:num_requests_running{engine="1",model_name="m"} 7.0\n'
        keep_alive_engine.serve("/metrics", text.format(running=5, tokens=99, extra=extra).replace(
            'vllm:generation_tokens_total{engine="0",model_name="m"} 99\n', ""))  # fmt: skip
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_requests_running", target="v", engine_index="0") == 5
    assert value(exposition, "llm_requests_running", target="v", engine_index="1") == 7
    assert value(exposition, "llm_generation_tokens_total", target="v") is None
