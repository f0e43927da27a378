"""Failure behaviour over real loopback HTTP: every kind of bad target changes only its own series."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from exporter.config import Config, TargetConfig
from exporter.engines.collector import EnginesCollector
from tests.engines.conftest import FIXTURES, FakeEngine, scrape, value

LLAMA_C50 = "llamacpp/h100-qwen3-4b-shape-c50.txt"
PROPS = {
    "model_alias": "tiny",
    "build_info": "b1",
    "total_slots": 2,
    "default_generation_settings": {"n_ctx": 512},
}
VLLM = (
    "# TYPE vllm:num_requests_running gauge\n"
    'vllm:num_requests_running{engine="0",model_name="m"} 2.0\n'
    "# TYPE vllm:generation_tokens_total counter\n"
    'vllm:generation_tokens_total{engine="0",model_name="m"} 1000.0\n'
)


def serve_llama(engine: FakeEngine, metrics: str | bytes | None = None) -> None:
    engine.serve("/metrics", metrics if metrics is not None else (FIXTURES / LLAMA_C50).read_bytes())
    engine.serve("/props", json.dumps(PROPS), content_type="application/json")


def collector_for(*targets: TargetConfig, passthrough: bool = False) -> EnginesCollector:
    return EnginesCollector(Config(targets=targets, engine_passthrough=passthrough))


def test_each_bad_target_fails_alone_with_its_own_error_kind(fake_engines: list[FakeEngine]) -> None:
    good, html, garbage, truncated, chunked, unauthorized = fake_engines
    serve_llama(good)
    html.serve("/metrics", "<html><body>502 Bad Gateway</body></html>\n", content_type="text/html")
    garbage.serve("/metrics", b"\x89PNG\r\n\x1a\n not metrics at all\n")
    serve_llama(truncated)
    truncated.routes["/metrics"].truncate = True  # Content-Length announced, half of it sent
    serve_llama(chunked)
    chunked.routes["/metrics"].chunked_cut = True  # chunked body without its last chunk
    broken = good  # a 500 on another path of the same server
    broken.serve("/broken/metrics", "boom\n", status=500)
    unauthorized.serve("/metrics", "denied\n", status=401)
    targets = [
        TargetConfig("good", good.url),
        TargetConfig("html", html.url, kind="vllm"),
        TargetConfig("garbage", garbage.url, kind="llamacpp"),
        TargetConfig("truncated", truncated.url, kind="llamacpp"),
        TargetConfig("chunked", chunked.url, kind="llamacpp"),
        TargetConfig("unauthorized", unauthorized.url, kind="sglang"),
        TargetConfig("broken", f"{broken.url}/broken/metrics", kind="tgi"),
        TargetConfig("refused", "http://127.0.0.1:9", kind="vllm"),
    ]
    collector = collector_for(*targets)
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    expected = {
        "html": "parse",
        "garbage": "parse",
        "truncated": "truncated",
        "chunked": "truncated",
        "unauthorized": "auth",
        "broken": "http_status",
        "refused": "connect",
    }
    assert value(exposition, "llm_target_up", target="good") == 1
    assert value(exposition, "llm_target_info", target="good", engine_kind="llamacpp") == 1
    assert value(exposition, "llm_requests_running", target="good", model="tiny") == 46
    for name, kind in expected.items():
        assert value(exposition, "llm_target_up", target=name) == 0, name
        assert value(exposition, "llm_target_errors_total", target=name, kind=kind) == 1, name
        others = [s for s in exposition.samples("llm_target_errors_total") if s.labels["target"] == name]
        assert sum(s.value for s in others) == 1, name
        assert not [s for s in exposition.samples("llm_requests_running") if s.labels["target"] == name]
    assert value(exposition, "llm_target_last_success_timestamp_seconds", target="good") is not None
    assert value(exposition, "llm_target_last_success_timestamp_seconds", target="html") is None


def test_a_slow_target_costs_only_its_own_timeout(fake_engines: list[FakeEngine]) -> None:
    good, slow, *_ = fake_engines
    serve_llama(good)
    serve_llama(slow)
    slow.routes["/metrics"].delay = 60.0
    collector = collector_for(
        TargetConfig("good", good.url, timeout_seconds=5.0),
        TargetConfig("slow", slow.url, kind="llamacpp", timeout_seconds=0.5),
    )
    try:
        started = time.monotonic()
        exposition = scrape(collector)
        elapsed = time.monotonic() - started
    finally:
        collector.close()
    assert elapsed < 5.0, "the round waited for the slow target beyond its 0.5 s deadline"
    assert value(exposition, "llm_target_up", target="good") == 1
    assert value(exposition, "llm_target_up", target="slow") == 0
    assert value(exposition, "llm_target_errors_total", target="slow", kind="timeout") == 1
    duration = value(exposition, "llm_target_scrape_duration_seconds", target="slow")
    assert duration is not None and 0.5 <= duration < 5.0


def test_a_trickling_target_hits_the_whole_scrape_deadline(fake_engine: FakeEngine) -> None:
    """httpx's read timeout is per chunk; a body dripping a line every 0.3 s still ends at the deadline."""
    serve_llama(fake_engine)
    fake_engine.routes["/metrics"].trickle = 0.3
    collector = collector_for(TargetConfig("drip", fake_engine.url, kind="llamacpp", timeout_seconds=1.0))
    try:
        started = time.monotonic()
        exposition = scrape(collector)
        elapsed = time.monotonic() - started
    finally:
        collector.close()
    assert elapsed < 5.0  # the whole body would take 45 lines x 0.3 s
    assert value(exposition, "llm_target_errors_total", target="drip", kind="timeout") == 1


def test_counter_reset_after_restart_is_passed_through(fake_engine: FakeEngine) -> None:
    serve_llama(fake_engine)
    collector = collector_for(TargetConfig("llama", fake_engine.url))
    try:
        before = scrape(collector)
        restarted = (
            (FIXTURES / LLAMA_C50)
            .read_text()
            .replace("tokens_predicted_total 19750", "tokens_predicted_total 7")
        )
        serve_llama(fake_engine, restarted)
        after = scrape(collector)
    finally:
        collector.close()
    assert value(before, "llm_generation_tokens_total", target="llama") == 19750
    assert value(after, "llm_generation_tokens_total", target="llama") == 7
    assert value(after, "llm_target_up", target="llama") == 1


def test_kind_flip_after_restart_is_followed_when_kind_is_not_configured(fake_engine: FakeEngine) -> None:
    serve_llama(fake_engine)
    collector = collector_for(TargetConfig("t", fake_engine.url))
    try:
        first = scrape(collector)
        fake_engine.routes.pop("/props")
        fake_engine.serve("/metrics", VLLM)
        second = scrape(collector)
        serve_llama(fake_engine)
        third = scrape(collector)
    finally:
        collector.close()
    assert value(first, "llm_target_info", target="t", engine_kind="llamacpp") == 1
    assert value(second, "llm_target_info", target="t", engine_kind="vllm") == 1
    assert value(second, "llm_target_up", target="t") == 1
    assert value(second, "llm_generation_tokens_total", target="t", model="m", engine_index="0") == 1000
    assert value(third, "llm_target_info", target="t", engine_kind="llamacpp") == 1
    assert value(third, "llm_requests_running", target="t", engine_kind="llamacpp") == 46


def test_configured_kind_that_does_not_match_is_unknown_engine(fake_engine: FakeEngine) -> None:
    fake_engine.serve("/metrics", VLLM)
    collector = collector_for(TargetConfig("t", fake_engine.url, kind="sglang"))
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="t") == 0
    assert value(exposition, "llm_target_info", target="t", engine_kind="sglang") == 1
    assert value(exposition, "llm_target_errors_total", target="t", kind="unknown_engine") == 1


def test_unrecognised_payload_and_llamacpp_without_metrics_flag(fake_engine: FakeEngine) -> None:
    fake_engine.serve("/metrics", '{"error":{"code":501,"type":"not_supported_error"}}', status=501)
    collector = collector_for(TargetConfig("t", fake_engine.url))
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="t") == 0
    assert value(exposition, "llm_target_info", target="t", engine_kind="unknown") == 1
    assert value(exposition, "llm_target_errors_total", target="t", kind="unknown_engine") == 1
    probed = [path for path, _ in fake_engine.requests]
    assert probed == ["/metrics", "/v1/metrics", "/prometheus/metrics", "/api/version"]


@pytest.mark.parametrize(
    ("path", "relative", "kind"),
    [
        ("/v1/metrics", "nim/constructed-bare-names.txt", "nim"),
        ("/prometheus/metrics", "trtllm_serve/constructed-collector-2026.txt", "trtllm_serve"),
        ("/metrics", "sglang/constructed-0.5.23-dp2-tp2.txt", "sglang"),
        ("/metrics", "triton_trtllm/readme-00b49475-inflight.txt", "triton_trtllm"),
    ],
)
def test_discovery_on_well_known_paths(fake_engine: FakeEngine, path: str, relative: str, kind: str) -> None:
    fake_engine.serve_fixture(path, relative)
    collector = collector_for(TargetConfig("t", fake_engine.url))
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="t") == 1
    assert value(exposition, "llm_target_info", target="t", engine_kind=kind) == 1
    assert exposition.samples("llm_engine_info")


def test_discovers_ollama_from_its_json_api(fake_engine: FakeEngine) -> None:
    fake_engine.serve_fixture("/api/ps", "ollama/constructed-api-ps-partial-offload.json")
    fake_engine.serve_fixture("/api/version", "ollama/constructed-api-version.json")
    collector = collector_for(TargetConfig("o", fake_engine.url))
    try:
        exposition = scrape(collector)
        fake_engine.serve("/api/ps", '{"models": "not a list"}')
        broken = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_info", target="o", engine_kind="ollama") == 1
    assert value(exposition, "llm_model_vram_bytes", target="o", model="qwen3:32b") == 20e9
    assert value(broken, "llm_target_errors_total", target="o", kind="parse") == 1


def test_explicit_metrics_path_in_the_url(fake_engine: FakeEngine) -> None:
    fake_engine.serve_fixture("/custom/metrics", "triton_trtllm/readme-00b49475-inflight.txt")
    collector = collector_for(TargetConfig("t", f"{fake_engine.url}/custom/metrics"))
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="t") == 1
    assert value(exposition, "llm_target_info", target="t", engine_kind="triton_trtllm") == 1
    assert [path for path, _ in fake_engine.requests] == ["/custom/metrics"]


def test_auth_header_from_environment_never_logged(
    fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    serve_llama(fake_engine)
    secret = "Bearer sk-very-secret-0123"
    monkeypatch.setenv("ENGINE_AUTH", secret)
    collector = collector_for(
        TargetConfig("with", fake_engine.url, kind="llamacpp", auth_header_env="ENGINE_AUTH"),
        TargetConfig("unset", fake_engine.url, kind="llamacpp", auth_header_env="ENGINE_AUTH_MISSING"),
    )
    try:
        with caplog.at_level(logging.DEBUG):
            exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="with") == 1
    assert all(headers.get("Authorization") == secret for _, headers in fake_engine.requests)
    assert value(exposition, "llm_target_errors_total", target="unset", kind="auth") == 1
    assert secret not in caplog.text and "sk-very" not in caplog.text
    assert "ENGINE_AUTH_MISSING" in caplog.text


def test_errors_accumulate_and_recovery_sets_last_success(fake_engine: FakeEngine) -> None:
    fake_engine.serve("/metrics", "boom\n", status=503)
    collector = collector_for(TargetConfig("t", fake_engine.url, kind="llamacpp"))
    try:
        scrape(collector)
        down = scrape(collector)
        serve_llama(fake_engine)
        up = scrape(collector)
    finally:
        collector.close()
    assert value(down, "llm_target_errors_total", target="t", kind="http_status") == 2
    assert value(up, "llm_target_errors_total", target="t", kind="http_status") == 2
    assert value(up, "llm_target_up", target="t") == 1
    assert value(up, "llm_target_last_success_timestamp_seconds", target="t") == pytest.approx(
        time.time(), abs=30
    )


def test_passthrough_renames_labels_and_merges_targets(fake_engines: list[FakeEngine]) -> None:
    first, second, tgi, *_ = fake_engines
    serve_llama(first)
    serve_llama(second)
    tgi.serve_fixture("/metrics", "tgi/constructed-full.txt")
    tgi.serve("/info", '{"model_id": "m"}', content_type="application/json")
    collector = collector_for(
        TargetConfig("a", first.url),
        TargetConfig("b", second.url),
        TargetConfig("t", tgi.url),
        passthrough=True,
    )
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llamacpp_tokens_predicted_total", target="a") == 19750
    assert value(exposition, "llamacpp_tokens_predicted_total", target="b") == 19750
    assert exposition.families["llamacpp_tokens_predicted_total"].type == "counter"
    assert exposition.families["llamacpp_n_tokens_max"].type == "untyped"  # a counter without _total
    assert value(exposition, "tgi_request_success", target="t") == 42
    assert value(exposition, "tgi_request_duration_count", target="t") == 42
    assert exposition.families["tgi_request_duration"].type == "histogram"
    assert not [name for name in exposition.families if ":" in name]


def test_passthrough_publishes_nothing_prometheus_would_refuse_the_whole_scrape_for(
    fake_engine: FakeEngine,
) -> None:
    # A real Prometheus (2.42) marked the exporter down ("label name \"__name__\" is not unique") for one
    # engine series with a __name__ label, and counted duplicates for `vllm:x` beside `vllm_x`.
    hostile = (
        "# TYPE vllm:odd gauge\n"
        'vllm:odd{__name__="x",__meta_y="y",target="t",model_name="m"} 1\n'
        "# TYPE vllm:twice gauge\nvllm:twice 1\n"
        "# TYPE vllm_twice gauge\nvllm_twice 2\n"
    )
    source = (FIXTURES / "vllm/v0.33.0-load.txt").read_text() + hostile
    fake_engine.serve("/metrics", source)
    collector = collector_for(TargetConfig("a", fake_engine.url, kind="vllm"), passthrough=True)
    try:
        exposition = scrape(collector)  # parsed back strictly: a duplicate series would raise
    finally:
        collector.close()
    [odd] = exposition.samples("vllm_odd")
    assert odd.labels == {
        "exported___name__": "x",
        "exported___meta_y": "y",
        "exported_target": "t",
        "model_name": "m",
        "target": "a",
    }
    assert [s.value for s in exposition.samples("vllm_twice")] == [1]
    assert not [k for f in exposition.families.values() for s in f.samples for k in s.labels if k[:2] == "__"]


def test_passthrough_is_off_by_default(fake_engine: FakeEngine) -> None:
    serve_llama(fake_engine)
    collector = collector_for(TargetConfig("a", fake_engine.url))
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert not [name for name in exposition.families if name.startswith("llamacpp")]
    assert {name.split("_")[0] for name in exposition.families} == {"llm"}


def test_describe_lists_the_schema_without_scraping(fake_engine: FakeEngine) -> None:
    serve_llama(fake_engine)
    collector = collector_for(TargetConfig("a", fake_engine.url))
    try:
        names = {metric.name for metric in collector.describe()}
    finally:
        collector.close()
    assert {"llm_target_up", "llm_prompt_tokens", "llm_time_to_first_token_seconds"} <= names
    assert fake_engine.requests == []


def test_real_vllm_restart_resets_counters_through_the_exporter(fake_engine: FakeEngine) -> None:
    """vLLM 0.33 renders: the same server under load, then ~24 s after a restart (new process)."""
    fake_engine.serve_fixture("/metrics", "vllm/v0.33.0-load.txt")
    collector = collector_for(TargetConfig("vllm", fake_engine.url))
    try:
        before = scrape(collector)
        fake_engine.serve_fixture("/metrics", "vllm/v0.33.0-restart.txt")
        after = scrape(collector)
    finally:
        collector.close()
    labels = {"target": "vllm", "engine_kind": "vllm", "model": "Qwen/Qwen3-14B", "engine_index": "0"}
    for exposition in (before, after):
        assert value(exposition, "llm_target_up", target="vllm") == 1
    tokens_before = value(before, "llm_generation_tokens_total", **labels)
    tokens_after = value(after, "llm_generation_tokens_total", **labels)
    assert tokens_before is not None and tokens_after is not None and tokens_after < tokens_before
    assert value(after, "llm_time_to_first_token_seconds_count", **labels) < value(
        before, "llm_time_to_first_token_seconds_count", **labels
    )


def test_vllm_version_when_served_and_optional_otherwise(fake_engines: list[FakeEngine]) -> None:
    with_version, without, *_ = fake_engines
    for engine in (with_version, without):
        engine.serve_fixture("/metrics", "vllm/v0.33.0-idle.txt")
    with_version.serve("/version", '{"version": "0.33.0"}', content_type="application/json")
    collector = collector_for(TargetConfig("a", with_version.url), TargetConfig("b", without.url))
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_engine_info", target="a", model="Qwen/Qwen3-14B", version="0.33.0") == 1
    assert value(exposition, "llm_target_up", target="b") == 1
    [info] = [s for s in exposition.samples("llm_engine_info") if s.labels["target"] == "b"]
    assert "version" not in info.labels


PASSTHROUGH_SOURCES = [
    "vllm/v0.33.0-dp2-load.txt",
    "llamacpp/h100-qwen3-4b-shape-c500.txt",
    "tgi/constructed-full.txt",
    "triton_trtllm/constructed-newer-backend.txt",
    "nim/constructed-bare-names.txt",
    *sorted(str(p.relative_to(FIXTURES)) for p in (FIXTURES / "sglang").glob("v0.5.23-*.txt")),
]


@pytest.mark.parametrize("relative", PASSTHROUGH_SOURCES)
def test_passthrough_of_real_payloads_is_valid_exposition(fake_engine: FakeEngine, relative: str) -> None:
    source = (FIXTURES / relative).read_bytes()
    fake_engine.serve("/metrics", source)
    fake_engine.serve("/v1/metrics", source)
    fake_engine.serve("/props", json.dumps(PROPS), content_type="application/json")
    fake_engine.serve("/info", '{"model_id": "m"}', content_type="application/json")
    collector = collector_for(
        TargetConfig("a", fake_engine.url), TargetConfig("b", fake_engine.url), passthrough=True
    )
    try:
        exposition = scrape(collector)  # parsed back strictly: no duplicate series or TYPE lines
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="a") == 1
    passed = [n for n in exposition.families if not n.startswith("llm_")]
    assert passed and not [n for n in passed if n.startswith(("process_", "python_", "http_"))]
    assert not [n for n in exposition.families if n.endswith("_created")]


def test_credentials_in_the_url_are_never_sent_or_published(fake_engine: FakeEngine) -> None:
    serve_llama(fake_engine)
    url = fake_engine.url.replace("http://", "http://admin:hunter2@")
    collector = collector_for(TargetConfig("t", url, kind="llamacpp"))
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_up", target="t") == 1
    assert all("Authorization" not in headers for _, headers in fake_engine.requests)
    assert not [s for samples in exposition.by_sample_name.values() for s in samples if "hunter2" in str(s)]


def test_a_known_engine_with_none_of_the_known_names_is_counted(fake_engines: list[FakeEngine]) -> None:
    """An engine version that renamed everything: its own prefix, none of the names the adapter reads."""
    good, renamed, *_ = fake_engines
    serve_llama(good)
    renamed.serve("/metrics", '# TYPE vllm:brand_new_gauge gauge\nvllm:brand_new_gauge{model_name="m"} 1\n')
    collector = collector_for(TargetConfig("good", good.url), TargetConfig("renamed", renamed.url))
    try:
        first = scrape(collector)
        second = scrape(collector)
    finally:
        collector.close()
    assert value(second, "llm_target_up", target="good") == 1
    assert value(second, "llm_requests_running", target="good", model="tiny") == 46
    assert value(first, "llm_target_up", target="renamed") == 0
    assert value(first, "llm_target_info", target="renamed", engine_kind="vllm") == 1
    assert value(second, "llm_target_errors_total", target="renamed", kind="no_known_metrics") == 2
    assert not [s for s in second.samples("llm_engine_info") if s.labels["target"] == "renamed"]


def test_the_round_deadline_stays_under_prometheus_scrape_timeout() -> None:
    """Even a TargetConfig built in code with a long timeout is held to 8 s; the round adds 0.5 s."""
    collector = collector_for(TargetConfig("slow", "http://127.0.0.1:9", kind="vllm", timeout_seconds=60))
    try:
        assert collector.deadline_seconds == 8.5 < 10  # prometheus/prometheus.yml: scrape_timeout 10s
    finally:
        collector.close()


def test_concurrent_scrapes_share_one_round(fake_engine: FakeEngine) -> None:
    serve_llama(fake_engine)
    fake_engine.routes["/metrics"].delay = 0.5
    collector = collector_for(TargetConfig("t", fake_engine.url, kind="llamacpp"))
    try:
        with ThreadPoolExecutor(3) as pool:
            expositions = list(pool.map(lambda _: scrape(collector), range(3)))
    finally:
        collector.close()
    assert [path for path, _ in fake_engine.requests].count("/metrics") == 1
    assert all(value(e, "llm_requests_running", target="t") == 46 for e in expositions)


def test_a_held_up_loop_ends_the_round_at_its_deadline_with_one_timeout(fake_engine: FakeEngine) -> None:
    serve_llama(fake_engine)
    collector = collector_for(TargetConfig("t", fake_engine.url, kind="llamacpp", timeout_seconds=0.3))
    try:
        collector._loop._loop.call_soon_threadsafe(time.sleep, 2)  # something blocks the event loop
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            expositions = list(pool.map(lambda _: scrape(collector), range(2)))
        elapsed = time.monotonic() - started
    finally:
        collector.close()
    assert elapsed < 1.6, "the scrape waited for the blocked loop instead of its deadline"
    for exposition in expositions:
        assert value(exposition, "llm_target_up", target="t") == 0
        assert value(exposition, "llm_target_errors_total", target="t", kind="timeout") == 1


def test_error_counts_keep_their_series_through_discovery_and_a_kind_flip(fake_engine: FakeEngine) -> None:
    """The health series carry `target` only: increase() over them survives unknown -> llamacpp -> vllm."""
    fake_engine.serve("/metrics", "boom\n", status=503)
    collector = collector_for(TargetConfig("t", fake_engine.url))
    try:
        expositions = [scrape(collector)]  # unknown kind: /metrics answers 503
        serve_llama(fake_engine)
        expositions.append(scrape(collector))  # discovered: llamacpp
        fake_engine.serve("/metrics", "boom\n", status=503)
        expositions.append(scrape(collector))  # llamacpp, down
        fake_engine.routes.pop("/props")
        fake_engine.serve("/metrics", VLLM)
        expositions.append(scrape(collector))  # the engine restarted as vLLM
        fake_engine.serve("/metrics", "boom\n", status=503)
        expositions.append(scrape(collector))  # vllm, down
    finally:
        collector.close()
    kinds = [
        [s.labels["engine_kind"] for s in e.samples("llm_target_info") if s.labels["target"] == "t"]
        for e in expositions
    ]
    assert kinds == [["unknown"], ["llamacpp"], ["llamacpp"], ["vllm"], ["vllm"]]
    for exposition in expositions:
        for name in ("llm_target_up", "llm_target_errors_total", "llm_target_scrape_duration_seconds"):
            assert all(set(s.labels) <= {"target", "kind"} for s in exposition.samples(name)), name
    counts = [value(e, "llm_target_errors_total", target="t", kind="unknown_engine") for e in expositions]
    assert counts == [1, 1, 1, 1, 1]  # the 503 before discovery: nothing to discover
    http = [value(e, "llm_target_errors_total", target="t", kind="http_status") for e in expositions]
    assert http == [0, 0, 1, 1, 2]  # one series, counting on across the flip


def test_status_pages_are_optional(fake_engines: list[FakeEngine]) -> None:
    """TGI's separate --prometheus-port (no /info); llama.cpp behind a proxy that passes /metrics only."""
    tgi_port, llama_metrics_only, *_ = fake_engines
    tgi_port.serve_fixture("/metrics", "tgi/constructed-full.txt")
    llama_metrics_only.serve_fixture("/metrics", LLAMA_C50)
    collector = collector_for(
        TargetConfig("tgi", tgi_port.url, kind="tgi", model="bigscience/bloom"),
        TargetConfig("tgi-no-model", tgi_port.url, kind="tgi"),
        TargetConfig("llama", llama_metrics_only.url),
    )
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    for target in ("tgi", "tgi-no-model", "llama"):
        assert value(exposition, "llm_target_up", target=target) == 1, target
    assert value(exposition, "llm_requests_running", target="tgi", model="bigscience/bloom") == 8
    running = exposition.samples("llm_requests_running")
    [no_model] = [s for s in running if s.labels["target"] == "tgi-no-model"]
    assert "model" not in no_model.labels and no_model.value == 8
    assert value(exposition, "llm_generation_tokens_total", target="llama") == 19750
    assert value(exposition, "llm_kv_cache_capacity_tokens", target="llama") is None  # needs /props


def test_llamacpp_router_mode_query_goes_with_every_request(fake_engine: FakeEngine) -> None:
    """Router mode: /metrics and /props need ?model=; the router's own /props stub never names the model."""
    serve_llama(fake_engine)
    router_stub = {"role": "router", "model_alias": "llama-server", "total_slots": 1}
    fake_engine.serve("/props", json.dumps(router_stub), content_type="application/json")
    collector = collector_for(TargetConfig("r", f"{fake_engine.url}/metrics?model=qwen3"))
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_target_info", target="r", engine_kind="llamacpp") == 1
    assert {path for path, _ in fake_engine.requests} == {"/metrics?model=qwen3", "/props?model=qwen3"}
    models = {s.labels.get("model") for s in exposition.samples("llm_requests_running")}
    assert models == {None}  # not the stub's "llama-server"


@pytest.mark.parametrize("suffix", ["/llama", "/llama/", "/llama/metrics"])
def test_a_proxy_prefix_is_kept_for_status_pages(fake_engine: FakeEngine, suffix: str) -> None:
    fake_engine.serve_fixture("/llama/metrics", LLAMA_C50)
    one_slot = {**PROPS, "total_slots": 1}
    fake_engine.serve("/llama/props", json.dumps(one_slot), content_type="application/json")
    models = {"data": [{"id": "tiny", "meta": {"n_ctx_train": 4096}}]}
    fake_engine.serve("/llama/v1/models", json.dumps(models), content_type="application/json")
    fake_engine.serve("/props", '{"model_alias": "someone-else"}', content_type="application/json")
    collector = collector_for(TargetConfig("p", fake_engine.url + suffix))
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    assert value(exposition, "llm_requests_running", target="p", model="tiny") == 46
    assert value(exposition, "llm_kv_cache_capacity_tokens", target="p", model="tiny") == 512
    assert all(path.startswith("/llama/") for path, _ in fake_engine.requests)


def test_the_address_each_answer_came_from_is_kept_for_the_gpu_join(fake_engine: FakeEngine) -> None:
    """A target named by DNS (`http://engine:8000`) is found in /proc by the address it resolved to."""
    serve_llama(fake_engine)
    collector = collector_for(TargetConfig("t", fake_engine.url.replace("127.0.0.1", "localhost")))
    try:
        scrape(collector)
        fake_engine.serve("/metrics", "boom\n", status=503)
        scrape(collector)  # a failed scrape that still reached the server keeps the address
    finally:
        collector.close()
    [scraper] = collector._scrapers
    port = int(fake_engine.url.rsplit(":", 1)[1])
    assert scraper.peer in (("127.0.0.1", port), ("::1", port))


def test_with_discovery_every_series_says_whose_pod_it_is(fake_engines: list[FakeEngine]) -> None:
    """Scraped with honor_labels (the chart's ServiceMonitor), a series without namespace/pod/container
    gets the exporter pod's: a configured target's llm_* read as if the engine ran in the exporter's pod,
    and a discovered pod's passed-through families lost their pod to it. Empty labels stay absent in
    Prometheus but keep the target's (tests/stack: honor_labels with empty labels)."""
    static, pod = fake_engines[:2]
    for engine in (static, pod):
        engine.serve("/metrics", VLLM)
    labels = {"namespace": "serving", "pod": "vllm-0"}
    found = [(TargetConfig("serving/vllm-0", pod.url, kind="vllm"), labels)]
    config = Config(targets=(TargetConfig("external", static.url, kind="vllm"),), engine_passthrough=True)
    collector = EnginesCollector(config, discovered=lambda: found)
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    samples = exposition.samples("llm_requests_running") + exposition.samples("llm_target_up")
    assert len(samples) == 4
    for sample in samples:
        expected = ("", "") if sample.labels["target"] == "external" else ("serving", "vllm-0")
        assert (sample.labels["namespace"], sample.labels["pod"]) == expected, sample
    passed = exposition.samples("vllm_num_requests_running")
    assert {(s.labels["target"], s.labels["namespace"], s.labels["pod"]) for s in passed} == {
        ("external", "", ""),
        ("serving/vllm-0", "serving", "vllm-0"),
    }
    without = EnginesCollector(Config(targets=(TargetConfig("external", static.url, kind="vllm"),)))
    try:
        plain = scrape(without)
    finally:
        without.close()
    assert "namespace" not in plain.samples("llm_requests_running")[0].labels  # no discovery: as before
