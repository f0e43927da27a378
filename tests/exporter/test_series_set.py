"""Every GPU series the exporter published before the CPU work (issue 16) is still published.

tests/fixtures/exporter/gpu_series.txt lists the `gpu_*` and `exporter_*` series (name and labels, no
values) that commit 44939ab served for a fake NVML with two H100s (NVLink, GPM, fans, processes, an Xid;
the second one in MIG mode with an instance). `pid`, `process`, `command` and `version` change from run to
run and read `<pid>`, `<process>`, `<command>`, `<version>`. Regenerate only on purpose, from the revision
whose output is the reference:
    python -m tests.exporter.test_series_set > tests/fixtures/exporter/gpu_series.txt
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pynvml

from exporter.config import Config
from exporter.registry import build_exporter
from tests.exporter.fake_nvml import FakeGpu, FakeMig, FakeNvml

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "exporter" / "gpu_series.txt"
VOLATILE = {"pid": "<pid>", "process": "<process>", "command": "<command>", "version": "<version>"}


def gpus() -> list[FakeGpu]:
    me = psutil.Process().pid
    rich = FakeGpu(
        uuid="GPU-0",
        fans=[30, 40],
        nvlinks={0: (1, 2), 1: (3, 4)},
        nvlink_errors={(0, pynvml.NVML_NVLINK_ERROR_DL_REPLAY): 2},
        gpm={pynvml.NVML_GPM_METRIC_SM_UTIL: 50.0, pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 20.0},
        processes=[(me, 2**30)],
        process_sm={me: 10},
        mig=[],
    )
    mig = FakeGpu(
        uuid="GPU-1",
        pci_bus_id="00000000:2A:00.0",
        mig=[FakeMig(1, "MIG-1", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", 40 * 2**30, 2**30, [(me, 2**29)])],
        gpm={pynvml.NVML_GPM_METRIC_SM_UTIL: 30.0},
    )
    return [rich, mig]


def series_set() -> list[str]:
    nvml = FakeNvml(gpus())
    exporter = build_exporter(Config(collector_host=False), nvml=nvml, start_threads=False)
    try:
        sampler = exporter.collectors["gpu"].sampler
        sampler.run_once()
        time.sleep(0.15)  # GPM needs two samples more than 100 ms apart
        sampler.run_once()
        nvml.events.put((0, 79))
        deadline = time.monotonic() + 10
        while not exporter.collectors["gpu"].xid.counts() and time.monotonic() < deadline:
            time.sleep(0.02)
        families = exporter.collect()
    finally:
        exporter.close()
    lines = set()
    for family in families:
        for sample in family.samples:
            if sample.name.startswith(("gpu_", "exporter_")):
                labels = {k: VOLATILE.get(k, v) for k, v in sorted(sample.labels.items())}
                lines.add(sample.name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}")
    return sorted(lines)


def test_every_reference_series_is_still_published() -> None:
    reference = [line for line in REFERENCE.read_text().splitlines() if line and not line.startswith("#")]
    current = set(series_set())
    missing = [line for line in reference if line not in current]
    assert len(reference) > 100
    assert missing == []


if __name__ == "__main__":
    print("# gpu_* and exporter_* series for tests/exporter/test_series_set.py (see its docstring)")
    print("\n".join(series_set()))
