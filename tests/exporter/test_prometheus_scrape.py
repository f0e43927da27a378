"""A real Prometheus scrapes the real exporter process (no GPU here: NVML unavailable, host served)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from exporter.config import Config
from exporter.registry import build_exporter
from exporter.server import ExporterServer, make_app
from exporter.web_config import WebConfig
from tests.exporter.fake_nvml import FakeGpu, FakeNvml
from tests.support.procs import free_port, running
from tests.support.prometheus import prometheus_server, scrape_config

pytestmark = pytest.mark.real


def test_prometheus_scrapes_host_and_exporter_series(tmp_path: Path) -> None:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "exporter",
        "--listen-address",
        f"127.0.0.1:{port}",
        "--nvml-retry-seconds",
        "1",
    ]
    log = tmp_path / "exporter.log"
    with running(argv, f"http://127.0.0.1:{port}/healthz", log):
        config = scrape_config({"exporter": [f"127.0.0.1:{port}"]})
        with prometheus_server(tmp_path, config) as prometheus:
            up = prometheus.wait_for('up{job="exporter"} == 1')
            assert up[0]["metric"]["instance"] == f"127.0.0.1:{port}"
            cores = prometheus.wait_for("host_cpu_cores")
            assert float(cores[0]["value"][1]) >= 1
            assert prometheus.wait_for("host_memory_total_bytes > 0")
            assert prometheus.wait_for('host_network_receive_bytes_total{interface="lo"}')
            ratio = prometheus.wait_for("host_cpu_utilization_ratio")
            assert 0 <= float(ratio[0]["value"][1]) <= 1
            assert prometheus.wait_for('exporter_collector_success{collector="host"} == 1')
            assert prometheus.wait_for('exporter_collector_duration_seconds{collector="gpu"} >= 0')
            assert prometheus.wait_for("exporter_build_info == 1")
            gpu = prometheus.wait_for("gpu_nvml_available")
            nvml_here = float(gpu[0]["value"][1])
            if nvml_here == 0:
                assert prometheus.query("gpu_up") == []
            # scrapes keep working: at least three distinct samples of the CPU ratio
            assert prometheus.wait_for("count_over_time(host_cpu_utilization_ratio[1m]) >= 3")
    text = log.read_text()
    if nvml_here == 0:
        assert text.count("NVML unavailable") == 1, text  # said once, though retried every second


def test_prometheus_sees_gpu_series_and_their_age_from_the_fake_nvml(tmp_path: Path) -> None:
    nvml = FakeNvml([FakeGpu(uuid="GPU-aaaa"), FakeGpu(uuid="GPU-bbbb", pci_bus_id="00000000:2A:00.0")])
    exporter = build_exporter(Config(collector_host=False, gpu_sampler_interval_seconds=0.5), nvml=nvml)
    server = ExporterServer(make_app(exporter, WebConfig()), "127.0.0.1", 0).start()
    try:
        config = scrape_config({"exporter": [f"127.0.0.1:{server.port}"]})
        with prometheus_server(tmp_path, config) as prometheus:
            power = prometheus.wait_for("gpu_power_usage_watts")
            assert sorted(r["metric"]["uuid"] for r in power) == ["GPU-aaaa", "GPU-bbbb"]
            assert {float(r["value"][1]) for r in power} == {690.0}
            joined = prometheus.wait_for("gpu_power_usage_watts * on (gpu, uuid) group_left (name) gpu_info")
            assert {r["metric"]["name"] for r in joined} == {"NVIDIA H100 80GB HBM3"}
            # the documented age expression: seconds since the sampler last read the energy counter
            age = prometheus.wait_for('time() - gpu_sample_timestamp_seconds{source="energy"}')
            assert all(-5 < float(r["value"][1]) < 30 for r in age)
            assert prometheus.wait_for("rate(gpu_energy_joules_total[5s]) >= 0")
            nvml.gpus[1].lost = True
            down = prometheus.wait_for('gpu_up{uuid="GPU-bbbb"} == 0')
            assert down and prometheus.query('gpu_up{uuid="GPU-aaaa"}')[0]["value"][1] == "1"
    finally:
        server.close()
        exporter.close()
