"""Our renderer writes exactly what prometheus_client writes, in both formats, for every kind of family."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.openmetrics import exposition as om

from exporter import exposition
from exporter.config import Config
from exporter.exposition import _fast_family, fast_encoder, render_openmetrics, render_text
from exporter.registry import build_exporter
from tests.exporter.fake_nvml import FakeGpu, FakeNvml


class Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def awkward_families() -> list[Metric]:
    gauge = GaugeMetricFamily(
        "odd_gauge", 'help with \\ backslash, "quotes"\nand a newline', labels=["a", "b"]
    )
    gauge.add_metric(['quote " here', "back\\slash"], 1.5)
    gauge.add_metric(["new\nline", "ünïcødé ✓"], float("nan"))
    gauge.add_metric(["inf", ""], float("inf"))
    gauge.add_metric(["-inf", "x"], float("-inf"))
    gauge.add_metric(["big", "x"], 123456789012.0)
    gauge.add_metric(["small", "x"], 1e-9)
    counter = CounterMetricFamily("odd_requests", "a counter", labels=["z", "a"])
    counter.add_metric(["last", "first"], 7)
    created = CounterMetricFamily("with_created", "created sample", labels=["k"], created=1700000000.5)
    created.add_metric(["v"], 2, created=1700000000.5)
    stamped = GaugeMetricFamily("stamped", "with a timestamp")
    stamped.add_metric([], 3, timestamp=1700000000.25)
    histogram = HistogramMetricFamily("latency_seconds", "a histogram", labels=["target"])
    histogram.add_metric(["t"], [("0.1", 1), ("1.0", 3), ("+Inf", 4)], sum_value=2.5)
    histogram.add_metric(['q"uote'], [("+Inf", 0)], sum_value=0)
    born = HistogramMetricFamily("born_seconds", "histogram with _created", labels=["k"])
    born.add_metric(["v"], [("+Inf", 1)], sum_value=1, timestamp=None)
    born.add_sample("born_seconds_created", {"k": "v"}, 1700000000.0)
    summary = SummaryMetricFamily("rpc_seconds", "a summary", labels=["m"])
    summary.add_metric(["a"], count_value=3, sum_value=1.5)
    summary.add_sample("rpc_seconds", {"m": "a", "quantile": "0.5"}, 0.4)
    info = InfoMetricFamily("thing", "an info", value={"version": "1"})
    colon = GaugeMetricFamily("vllm:num_requests_running", "pass-through style name", value=2)
    unit = GaugeMetricFamily("temp_celsius", "with a unit", value=40, unit="celsius")
    empty = GaugeMetricFamily("nothing", "no samples", labels=["x"])
    no_labels = GaugeMetricFamily("plain", "plain", value=0)
    return [gauge, counter, created, stamped, histogram, born, summary, info, colon, unit, empty, no_labels]


def test_awkward_families_render_byte_for_byte() -> None:
    families = Families(awkward_families())
    assert render_text(families) == generate_latest(families)
    assert render_openmetrics(families) == om.generate_latest(families)


def test_remembered_series_prefixes_render_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each series' line up to its value is remembered (exposition._prefixes): a second rendering, and
    renderings with the memory full and started anew, are still the library's, byte for byte."""
    families = Families(awkward_families())
    for limit in (100_000, 3):
        monkeypatch.setattr(exposition, "MAX_PREFIXES", limit)
        exposition._prefixes.clear()
        for _ in range(2):
            assert render_text(families) == generate_latest(families)
            assert render_openmetrics(families) == om.generate_latest(families)
        assert len(exposition._prefixes) <= limit


def test_which_families_take_the_fast_path() -> None:
    fast = {f.name for f in awkward_families() if _fast_family(f)}
    assert fast == {"odd_gauge", "odd_requests", "latency_seconds", "rpc_seconds", "nothing", "plain"}


def test_the_whole_exporter_renders_byte_for_byte() -> None:
    command = [sys.executable, "-c", "import time; time.sleep(60)", "--label", 'with "quotes" \\ and more']
    process = subprocess.Popen(command)
    try:
        gpus = [
            FakeGpu(uuid=f"GPU-{i}", processes=[(process.pid, 2**30)], process_sm={process.pid: 5})
            for i in range(3)
        ]
        exporter = build_exporter(Config(), nvml=FakeNvml(gpus), start_threads=False)
        exporter.collectors["gpu"].sampler.run_once()
        exporter.collectors["host"].scan_engines()
        # a fixed snapshot: the collectors' output changes from one collect() to the next
        snapshot = Families(list(exporter.collect()))
        exporter.close()
    finally:
        process.kill()
        process.wait()
    text = render_text(snapshot)
    assert text == generate_latest(snapshot)
    assert render_openmetrics(snapshot) == om.generate_latest(snapshot)
    assert b"gpu_process_memory_used_bytes{" in text


@pytest.mark.parametrize(
    ("accept", "ours"),
    [
        (None, render_text),
        ("text/plain; version=0.0.4", render_text),
        (
            "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
            "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",  # what Prometheus 2.42 sends
            render_openmetrics,
        ),
        ("application/openmetrics-text", render_openmetrics),
    ],
)
def test_negotiation_picks_our_renderer_for_the_usual_answers(accept: str | None, ours: object) -> None:
    encoder, _ = fast_encoder(accept)
    assert encoder is ours


def test_unusual_negotiations_fall_back_to_the_library() -> None:
    encoder, content_type = fast_encoder("application/openmetrics-text; version=1.0.0; escaping=allow-utf-8")
    assert encoder not in (render_text, render_openmetrics)
    assert "escaping=allow-utf-8" in content_type


def test_the_exporters_own_families_take_the_fast_path() -> None:
    exporter = build_exporter(Config(), nvml=FakeNvml([FakeGpu(uuid="GPU-0")]), start_threads=False)
    exporter.collectors["gpu"].sampler.run_once()
    families = list(exporter.collect())
    exporter.close()
    assert len(families) > 40
    assert [f.name for f in families if not _fast_family(f)] == []


def test_engine_families_take_the_fast_path_byte_for_byte() -> None:
    """The normalized llm_* families of a real vLLM dp-2 payload, histograms included."""
    from pathlib import Path

    from exporter.engines.base import Scraped
    from exporter.engines.collector import build_families
    from exporter.engines.parse import parse
    from exporter.engines.registry import ENGINES
    from exporter.engines.scraper import TargetResult

    fixture = Path(__file__).parents[1] / "fixtures" / "engines" / "vllm" / "v0.33.0-dp2-load.txt"
    vllm = ENGINES["vllm"]
    normalized = vllm.normalize(Scraped(parse(fixture.read_text())), None)
    result = TargetResult("e", "http://e", "vllm", True, 0.01, 1.0, {}, normalized=normalized, engine=vllm)
    families = build_families([result], [], passthrough=False)
    assert any(f.type == "histogram" and f.samples for f in families)
    assert [f.name for f in families if not _fast_family(f)] == []
    assert render_text(Families(families)) == generate_latest(Families(families))
    assert render_openmetrics(Families(families)) == om.generate_latest(Families(families))
