"""The registry builds what the config asks for; with targets, the engines collector joins GPU processes."""

from __future__ import annotations

import subprocess
import sys
import time

from exporter.config import Config, TargetConfig
from exporter.registry import ExporterCollector, build_exporter
from tests.exporter.fake_nvml import FakeGpu, FakeNvml
from tests.exporter.metrics_util import samples_of
from tests.support.procs import free_port, wait_http

UUID = "GPU-00000000-1111-2222-3333-444444444444"


def test_collectors_follow_the_config() -> None:
    host_only = build_exporter(Config(collector_gpu=False), start_threads=False)
    assert list(host_only.collectors) == ["host", "http"]
    exporter = build_exporter(Config(collector_host=False), nvml=FakeNvml([]), start_threads=False)
    assert list(exporter.collectors) == ["gpu", "http"]
    m = samples_of(exporter.collect())
    assert not any(name.startswith("host_") for name in m.names())
    assert m.value("exporter_collector_success", {"collector": "gpu"}) == 1
    exporter.close()


def test_every_collector_implements_the_exporter_collector_interface() -> None:
    config = Config(targets=(TargetConfig("engine", "http://127.0.0.1:9"),))
    exporter = build_exporter(config, nvml=FakeNvml([]), start_threads=False)
    try:
        assert list(exporter.collectors) == ["gpu", "host", "http", "engines"]
        for collector in exporter.collectors.values():
            assert isinstance(collector, ExporterCollector), type(collector).__name__
    finally:
        exporter.close()


def test_targets_add_the_engines_collector_fed_by_the_gpu_collectors_processes() -> None:
    port = free_port()
    # A real process listening on the target's port stands in for an engine that holds GPU memory.
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/", process=server)
        nvml = FakeNvml([FakeGpu(uuid=UUID, processes=[(server.pid, 3 * 2**30)])])
        config = Config(targets=(TargetConfig("engine", f"http://127.0.0.1:{port}", kind="vllm"),))
        exporter = build_exporter(config, nvml=nvml, start_threads=False)
        try:
            assert list(exporter.collectors) == ["gpu", "host", "http", "engines"]
            exporter.collectors["gpu"].sampler.run_once()
            deadline = time.monotonic() + 20
            while True:
                m = samples_of(exporter.collect())
                if m.all("llm_engine_gpu_info") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            exporter.close()
    finally:
        server.kill()
        server.wait()
    assert m.value("llm_target_up", {"target": "engine"}) == 0  # http.server is no vLLM
    assert m.value("llm_engine_gpu_info", {"target": "engine", "gpu": "0", "uuid": UUID}) == 1
    assert m.value("llm_engine_gpu_memory_used_bytes", {"target": "engine", "gpu": "0"}) == 3 * 2**30
    assert m.value("exporter_collector_success", {"collector": "engines"}) == 1
    assert m.value("exporter_collector_duration_seconds", {"collector": "engines"}) >= 0
