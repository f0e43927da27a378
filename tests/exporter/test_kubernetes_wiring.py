"""Kubernetes discovery wired into the exporter: settings, the pod labels on GPU-process and engine-process
series, and end to end: a fake API server (no real one can run here) announces a pod whose engine is a real
simulator on loopback, and the exporter process scrapes it and labels its llm_* series with the pod."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.collectors.gpu import GpuCollector
from exporter.collectors.host import HostCollector
from exporter.config import ConfigError, load_config
from tests.exporter.fake_kube_api import FakeKubeApi
from tests.exporter.fake_nvml import FakeGpu, FakeNvml
from tests.exporter.metrics_util import samples_of
from tests.exporter.test_host_collector import engine  # noqa: F401 - a fixture
from tests.exporter.test_kubernetes_discovery import NODE, vllm_pod
from tests.support.procs import free_port, running

POD = {"namespace": "serving", "pod": "vllm-0", "container": "vllm"}


def test_discovery_needs_the_node_and_an_api() -> None:
    with pytest.raises(ConfigError, match="node-name"):
        load_config(["--kubernetes.discovery"], {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    with pytest.raises(ConfigError, match="not in a pod"):
        load_config(["--kubernetes.discovery", "--kubernetes.node-name", "n1"], {})
    with pytest.raises(ConfigError, match="not a Kubernetes node name"):
        load_config(["--kubernetes.node-name", "Node_1"], {})
    with pytest.raises(ConfigError, match="no credentials"):
        load_config(["--kubernetes.api-url", "https://user:pw@api:6443"], {})
    config = load_config(
        [], {"EXPORTER_KUBERNETES_DISCOVERY": "true", "EXPORTER_KUBERNETES_NODE_NAME": "gpu-node-1",
             "KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    )  # fmt: skip
    assert config.kubernetes_discovery and config.kubernetes_node_name == "gpu-node-1"


def test_gpu_processes_carry_their_pod() -> None:
    gpu = FakeGpu(uuid="GPU-0", processes=[(4242, 2**30), (4343, 2**20)])
    asked: list[tuple[int, str | None]] = []

    def labels(pid: int, uuid: str | None) -> dict[str, str]:
        asked.append((pid, uuid))
        return POD if pid == 4242 else {}

    collector = GpuCollector(nvml=FakeNvml([gpu]), start_threads=False, process_labels=labels)
    try:
        collector.sampler.run_once()
        m = samples_of(collector.collect())
    finally:
        collector.close()
    assert m.labels("gpu_process_memory_used_bytes", {"pid": "4242"}).items() >= POD.items()
    other = m.labels("gpu_process_memory_used_bytes", {"pid": "4343"})
    assert (other["namespace"], other["pod"], other["container"]) == ("", "", "")  # Prometheus drops ""
    assert (4242, "GPU-0") in asked
    plain = GpuCollector(
        nvml=FakeNvml([FakeGpu(uuid="GPU-0", processes=[(4242, 2**30)])]), start_threads=False
    )
    try:
        plain.sampler.run_once()
        assert "pod" not in samples_of(plain.collect()).labels(
            "gpu_process_memory_used_bytes", {"pid": "4242"}
        )
    finally:
        plain.close()


def test_engine_processes_carry_their_pod(engine: subprocess.Popen) -> None:  # noqa: F811
    collector = HostCollector(start_threads=False, process_labels=lambda pid, uuid: POD)
    collector.scan_engines()
    m = samples_of(collector.collect())
    for family in ("host_engine_process_info", "host_engine_process_resident_memory_bytes"):
        assert m.labels(family, {"pid": str(engine.pid)}).items() >= POD.items()
    cpu = m.labels("host_engine_process_cpu_seconds_total", {"pid": str(engine.pid), "mode": "user"})
    assert cpu["pod"] == "vllm-0"


def test_attribution_that_raises_costs_no_series() -> None:
    def broken(pid: int, uuid: str | None) -> dict[str, str]:
        raise RuntimeError("boom")

    collector = GpuCollector(
        nvml=FakeNvml([FakeGpu(uuid="GPU-0", processes=[(4242, 2**30)])]), start_threads=False,
        process_labels=broken,
    )  # fmt: skip
    try:
        collector.sampler.run_once()
        labels = samples_of(collector.collect()).labels("gpu_process_memory_used_bytes", {"pid": "4242"})
    finally:
        collector.close()
    assert labels["pod"] == ""


# -- end to end ----------------------------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeKubeApi, int]]:
    """A fake API server and a real simulator on loopback; the test announces the simulator as a pod."""
    api = FakeKubeApi().start()
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "simulator",
        "--profile",
        "tiny",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    try:
        with running(argv, f"http://127.0.0.1:{port}/v1/models", tmp_path / "simulator.log"):
            yield api, port
    finally:
        api.close()


def engine_pod(port: int, name: str, uid: str, node: str = NODE) -> dict:
    pod = vllm_pod()
    pod["metadata"].update(name=name, uid=uid, namespace="serving")
    pod["metadata"]["annotations"] = {"llmobs.io/port": str(port)}
    pod["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    pod["spec"]["nodeName"] = node
    pod["status"]["podIP"] = "127.0.0.1"
    return pod


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=15).text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def wait_for(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_exporter_scrapes_the_engine_pods_of_its_node(
    cluster: tuple[FakeKubeApi, int], tmp_path: Path
) -> None:
    api, engine_port = cluster
    api.put(engine_pod(engine_port, "vllm-0", "uid-0"))
    api.put(engine_pod(engine_port, "vllm-elsewhere", "uid-1", node="gpu-node-2"))  # another node's
    pending = engine_pod(engine_port, "vllm-pending", "uid-2")
    pending["status"]["phase"] = "Pending"
    api.put(pending)
    base = f"http://127.0.0.1:{engine_port}/v1"
    model = httpx.get(f"{base}/models", timeout=10).json()["data"][0]["id"]
    body = {"model": model, "prompt": "hi", "max_tokens": 4}
    answer = httpx.post(f"{base}/completions", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "--listen-address", f"127.0.0.1:{port}", "--no-collector.gpu",
            "--kubernetes.discovery", "--kubernetes.node-name", NODE,
            "--kubernetes.api-url", api.url]  # fmt: skip
    with running(argv, f"http://127.0.0.1:{port}/readyz", tmp_path / "exporter.log"):
        url = f"http://127.0.0.1:{port}/metrics"
        target = "serving/vllm-0"
        up = wait_for(lambda: [v for labels, v in scrape(url).get("llm_target_up", [])
                               if labels.get("target") == target])  # fmt: skip
        assert up == [1.0]
        metrics = scrape(url)
        engine_series = [
            (name, labels)
            for name, samples in metrics.items()
            if name.startswith("llm_") and not name.startswith("llm_target_")
            for labels, _ in samples
        ]
        assert engine_series, "no llm_* engine series"
        for name, labels in engine_series:
            assert labels["target"] == target, name
            assert (labels["namespace"], labels["pod"], labels["container"]) == ("serving", "vllm-0", "vllm")
            assert labels.get("engine_kind", "vllm") == "vllm"  # the join's health series: target only
        tokens = [v for labels, v in metrics["llm_generation_tokens_total"]]
        assert tokens and tokens[0] >= 1
        targets = {labels["target"] for labels, _ in metrics["llm_target_up"]}
        assert targets == {target}  # not the other node's pod, not the pending one
        assert metrics["exporter_kubernetes_watch_synced"][0][1] == 1
        assert metrics["exporter_kubernetes_engine_pods"][0][1] == 1
        assert set(documented_kubernetes_families()) <= set(metrics)

        # the pod goes: its target and series go with it
        api.delete("uid-0")
        gone = wait_for(lambda: "llm_target_up" not in scrape(url))
        assert gone
        # it comes back under a new name (a Deployment's next pod): a new target
        api.put(engine_pod(engine_port, "vllm-1", "uid-3"))
        back = wait_for(
            lambda: [labels["pod"] for labels, v in scrape(url).get("llm_target_up", []) if v == 1]
        )
        assert back == ["vllm-1"]


def documented_kubernetes_families() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    section = text.split("## Exporter: Kubernetes")[1].split("\n## ")[0]
    names = re.findall(r"^\| `(exporter_kubernetes_[a-z_]+)`", section, re.MULTILINE)
    assert len(names) == 4
    return names


def test_fixture_is_not_changed_by_the_tests() -> None:
    assert copy.deepcopy(vllm_pod()) == vllm_pod()
