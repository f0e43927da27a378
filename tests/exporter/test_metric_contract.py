"""Every gpu_*, host_* and exporter_* name in docs/metrics.md is emitted, with the documented labels."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import psutil
import pynvml

from exporter.config import Config
from exporter.registry import build_exporter
from tests.exporter.fake_nvml import FakeGpu, FakeNvml
from tests.exporter.metrics_util import samples_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def documented() -> dict[str, set[str]]:
    """name -> label names documented for it (the gpu section's gpu/uuid included)."""
    names: dict[str, set[str]] = {}
    section = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section = line
        if not line.startswith("| `") or not re.search(r"Exporter: (GPU|host|itself)", section):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        labels = set(re.findall(r"`([a-z_]+)`(?: =|,|$| \()", cells[2])) if len(cells) > 2 else set()
        labels = {label for label in re.findall(r"`([a-z_]+)`", cells[2])} if len(cells) > 2 else set()
        labels = {
            label for label in labels if not re.fullmatch(r"[a-z]+_[a-z_]+|[a-z]+", label) or label in LABELS
        }
        if "GPU" in section and "no gpu labels" not in cells[2]:
            labels |= {"gpu", "uuid"}
        for name in re.findall(r"`([a-z_]+)`", cells[0]):
            names[name] = labels
    return names


LABELS = {
    "name",
    "pci_bus_id",
    "driver_version",
    "cuda_driver_version",
    "mig_mode",
    "call",
    "error",
    "clock",
    "fan",
    "reason",
    "link",
    "type",
    "severity",
    "scope",
    "cause",
    "xid",
    "pid",
    "process",
    "command",
    "source",
    "cpu",
    "period",
    "device",
    "interface",
    "engine_kind",
    "mode",
    "version",
    "collector",
    "kind",
    "target",
    "trigger",
}


def test_every_documented_exporter_name_is_emitted_with_its_labels() -> None:
    gpu = FakeGpu(
        uuid="GPU-1",
        fans=[30],
        nvlinks={0: (1, 2)},
        gpm={pynvml.NVML_GPM_METRIC_SM_UTIL: 50.0},
        processes=[(psutil.Process().pid, 2**20)],
        process_sm={psutil.Process().pid: 10},
        failing={"nvmlDeviceGetCurrPcieLinkWidth": pynvml.NVML_ERROR_UNKNOWN},  # once, for the error counter
    )
    nvml = FakeNvml([gpu])
    exporter = build_exporter(Config(), nvml=nvml, start_threads=False)
    engine = subprocess.Popen(["bash", "-c", "exec -a llama-server sleep 60"])
    try:
        deadline = time.monotonic() + 20
        while psutil.Process(engine.pid).cmdline()[:1] != ["llama-server"] and time.monotonic() < deadline:
            time.sleep(0.05)
        exporter.collectors["gpu"].sampler.run_once()
        time.sleep(0.15)
        exporter.collectors["gpu"].sampler.run_once()
        nvml.events.put((0, 79))
        deadline = time.monotonic() + 10
        while not exporter.collectors["gpu"].xid.counts() and time.monotonic() < deadline:
            time.sleep(0.02)
        exporter.collectors["host"].scan_engines()
        list(exporter.collect())
        gpu.failing = {}
        m = samples_of(exporter.collect())
    finally:
        engine.kill()
        engine.wait()
        exporter.close()
    documented_names = documented()
    assert len(documented_names) > 60
    missing = []
    wrong_labels = []
    for name, labels in documented_names.items():
        found = m.all(name)
        if not found:
            missing.append(name)
        elif set(found[0][0]) != labels:
            wrong_labels.append((name, sorted(found[0][0]), sorted(labels)))
    assert missing == []
    assert wrong_labels == []
