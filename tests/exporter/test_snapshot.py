"""The scrape path serves a snapshot: renewed every collect interval, kept when a pass fails, joined with
the engines collected on the scrape into one valid exposition."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from exporter.config import Config, TargetConfig
from exporter.registry import Exporter, build_exporter
from exporter.server import ExporterServer, make_app
from exporter.web_config import WebConfig
from tests.engines import conftest as engines
from tests.engines.conftest import FakeEngine
from tests.exporter.fake_nvml import FakeGpu, FakeNvml
from tests.exporter.metrics_util import parse_text
from tests.support.real import require_binary

UUID = "GPU-00000000-1111-2222-3333-444444444444"
fake_engine = engines.fake_engine  # the engines tests' fixture: a fake engine on a loopback port
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"}


@contextlib.contextmanager
def serving(exporter: Exporter) -> Iterator[str]:
    server = ExporterServer(make_app(exporter, WebConfig()), "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.close()
        exporter.close()


def snapshot_time(text: str) -> float:
    return parse_text(text).value("exporter_snapshot_timestamp_seconds")


def test_fast_readings_are_never_older_than_the_interval_plus_a_pass() -> None:
    gpu = FakeGpu(uuid=UUID)
    interval = 0.3
    config = Config(collector_host=False, collect_interval_seconds=interval, gpu_sampler_interval_seconds=0.5)
    with serving(build_exporter(config, nvml=FakeNvml([gpu]))) as url:
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        ages, stamps = [], set()
        for _ in range(12):
            text = httpx.get(f"{url}/metrics", timeout=10).text
            stamp = snapshot_time(text)
            ages.append(time.time() - stamp)
            stamps.add(stamp)
            time.sleep(0.1)
        # A reading changed now is served once a snapshot taken after the change is.
        changed_at = time.time()
        gpu.power_mw = 123_000
        while (m := parse_text(httpx.get(f"{url}/metrics", timeout=10).text)).value(
            "exporter_snapshot_timestamp_seconds"
        ) <= changed_at:
            assert time.monotonic() < deadline, "the snapshot stopped being renewed"
            time.sleep(0.05)
    assert max(ages) <= interval + 1.0, f"snapshot ages {ages}"  # 1 s slack: a pass on a busy 2-core CI
    assert len(stamps) >= 3, "the refresher renews the snapshot every interval"
    assert m.value("gpu_power_usage_watts", {"gpu": "0", "uuid": UUID}) == 123


class Unrenderable:
    """A collector whose family cannot be rendered (a value that is no number): the whole pass fails."""

    broken = False

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("probe_value", "A value.", labels=["n"])
        family.add_metric(["1"], "not a number" if self.broken else 1.0)  # type: ignore[arg-type]
        yield family

    def ready(self) -> bool:
        return True

    def error_counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def test_a_failing_pass_keeps_the_last_snapshot_with_its_true_age_and_counts_an_error() -> None:
    probe = Unrenderable()
    exporter = Exporter({"probe": probe}, collect_interval_seconds=0.1)
    with serving(exporter.start()) as url:
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        good = snapshot_time(httpx.get(f"{url}/metrics", timeout=10).text)
        probe.broken = True
        while True:  # the refresher thread keeps running through failing passes
            m = parse_text(httpx.get(f"{url}/metrics", timeout=10).text)
            failures = m.all(
                "exporter_collector_errors_total", {"collector": "snapshot", "kind": "exception"}
            )
            if failures and failures[0][1] >= 3:
                break
            assert time.monotonic() < deadline, "failed passes are not counted"
            time.sleep(0.05)
        stale = m.value("exporter_snapshot_timestamp_seconds")
        assert stale >= good and time.time() - stale > 0.2  # the last good data, with its real age
        assert m.value("probe_value", {"n": "1"}) == 1
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        probe.broken = False
        while snapshot_time(httpx.get(f"{url}/metrics", timeout=10).text) <= stale:
            assert time.monotonic() < deadline, "no fresh snapshot after the failure ended"
            time.sleep(0.05)


def test_cached_bodies_are_rendered_once_per_pass_and_format() -> None:
    exporter = build_exporter(Config(), nvml=FakeNvml([FakeGpu(uuid=UUID)]), start_threads=False)
    try:
        exporter.refresh()
        first = exporter.scrape(openmetrics=True, gzipped=True)
        assert exporter.scrape(openmetrics=True, gzipped=True) is first  # the same bytes, not re-rendered
        exporter.refresh()
        again = exporter.scrape(openmetrics=True, gzipped=True)
        assert again is not first
    finally:
        exporter.close()


@pytest.mark.real
@pytest.mark.parametrize("passthrough", [False, True])
def test_openmetrics_with_engines_is_one_valid_exposition(fake_engine: FakeEngine, passthrough: bool) -> None:
    fake_engine.serve_fixture("/metrics", "sglang/v0.5.23-load.txt")
    promtool = require_binary("promtool", "apt-get install prometheus; `make test` does it as root")
    config = Config(
        targets=(
            TargetConfig("sglang", fake_engine.url),
            TargetConfig("dead", "http://127.0.0.1:9", kind="vllm"),
        ),
        engine_passthrough=passthrough,
    )
    exporter = build_exporter(config, nvml=FakeNvml([FakeGpu(uuid=UUID)]), start_threads=False)
    exporter.collectors["gpu"].sampler.run_once()
    exporter.refresh()
    with serving(exporter) as url:
        for _ in range(2):  # the second from the cached part
            response = httpx.get(f"{url}/metrics", headers=OPENMETRICS, timeout=20)
            text = response.text
        plain = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=20).text
    assert response.headers["content-encoding"] == "gzip"
    assert text.count("# EOF") == 1 and text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}  # raises on duplicates or a misplaced EOF
    assert "gpu_power_usage_watts" in families and "llm_target_up" in families
    assert {s.labels["collector"] for s in families["exporter_collector_duration_seconds"].samples} == {
        "gpu",
        "host",
        "http",
        "engines",
    }
    up = {s.labels["target"]: s.value for s in families["llm_target_up"].samples}
    assert up == {"sglang": 1.0, "dead": 0.0}
    assert passthrough == any(name.startswith("sglang") for name in families)
    # promtool reads the text format (its lints misread OpenMetrics counters), so it checks that rendering
    result = subprocess.run(
        [promtool, "check", "metrics"], input=plain, capture_output=True, text=True, timeout=60
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    # Passed-through families keep the engine's own names, and promtool's lints on those are SGLang's.
    ours = [line for line in problems if not (passthrough and line.startswith("sglang_"))]
    assert ours == [], "syntax, duplicate families and lints on our own names"
