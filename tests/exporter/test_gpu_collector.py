"""The GPU collector against a fake NVML that behaves like the real one (tests/exporter/fake_nvml.py)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections import Counter

import psutil
import pynvml
import pytest

from exporter.collectors.gpu import GpuCollector, GpuProcess
from exporter.collectors.nvml_sampler import SPACED_SOURCES
from tests.exporter.fake_nvml import FakeGpu, FakeMig, FakeNvml
from tests.exporter.metrics_util import samples_of

UUID0 = "GPU-00000000-1111-2222-3333-444444444444"
UUID1 = "GPU-11111111-1111-2222-3333-444444444444"
SLOW_CALLS = {
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetPcieThroughput",
    "nvmlDeviceGetProcessUtilization",
    "nvmlDeviceGetFieldValues",
    "nvmlGpmSampleGet",
    "nvmlGpmMetricsGet",
    "nvmlInit",
}


def two_gpus(**overrides: object) -> list[FakeGpu]:
    return [
        FakeGpu(uuid=UUID0, pci_bus_id="00000000:18:00.0", **overrides),
        FakeGpu(uuid=UUID1, pci_bus_id="00000000:2A:00.0", **overrides),
    ]


def collector_for(nvml: FakeNvml, **kwargs: object) -> GpuCollector:
    collector = GpuCollector(nvml=nvml, start_threads=False, retry_seconds=0.0, **kwargs)
    collector.sampler.run_once()
    return collector


def test_every_reading_in_base_units_for_two_gpus() -> None:
    gpm = {
        pynvml.NVML_GPM_METRIC_SM_UTIL: 94.9,
        pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: 14.0,
        pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 92.1,
        pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 24.6,
    }
    gpus = two_gpus(gpm=gpm, fans=[40], nvlinks={0: (10, 20), 2: (30, 40)}, mig=[])
    gpus[1].nvlink_errors = {(2, pynvml.NVML_NVLINK_ERROR_DL_REPLAY): 7}
    collector = collector_for(FakeNvml(gpus))
    time.sleep(0.15)  # GPM needs two samples more than 100 ms apart
    collector.sampler.run_once()
    m = samples_of(collector.collect())
    g0 = {"gpu": "0", "uuid": UUID0}
    g1 = {"gpu": "1", "uuid": UUID1}

    assert m.value("gpu_nvml_available") == 1
    assert m.labels("gpu_info", g0) == {
        "name": "NVIDIA H100 80GB HBM3",
        "pci_bus_id": "00000000:18:00.0",
        "driver_version": "580.159.04",
        "cuda_driver_version": "13.0",
        "mig_mode": "disabled",
    }
    for labels in (g0, g1):
        assert m.value("gpu_up", labels) == 1
        assert m.value("gpu_utilization_ratio", labels) == pytest.approx(0.99)
        assert m.value("gpu_memory_bandwidth_utilization_ratio", labels) == pytest.approx(0.32)
        total = m.value("gpu_memory_total_bytes", labels)
        parts = ["gpu_memory_used_bytes", "gpu_memory_free_bytes", "gpu_memory_reserved_bytes"]
        assert total == 85_520_809_984 == sum(m.value(name, labels) for name in parts)
        assert m.value("gpu_memory_reserved_bytes", labels) == 503_316_480
        assert m.value("gpu_power_usage_watts", labels) == 690
        assert m.value("gpu_power_limit_watts", labels) == 700
        assert m.value("gpu_energy_joules_total", labels) == pytest.approx(123_456.789)
        assert m.value("gpu_temperature_celsius", labels) == 61
        assert m.value("gpu_memory_temperature_celsius", labels) == 70
        assert m.value("gpu_clock_hertz", {**labels, "clock": "sm"}) == 1485e6
        assert m.value("gpu_clock_hertz", {**labels, "clock": "memory"}) == 2619e6
        assert m.value("gpu_clock_max_hertz", {**labels, "clock": "sm"}) == 1980e6
        assert m.value("gpu_performance_state", labels) == 0
        assert m.value("gpu_fan_speed_ratio", {**labels, "fan": "0"}) == pytest.approx(0.4)
        assert m.value("gpu_clock_event_reason_active", {**labels, "reason": "sw_power_cap"}) == 1
        assert m.value("gpu_clock_event_reason_active", {**labels, "reason": "gpu_idle"}) == 0
        assert len(m.all("gpu_clock_event_reason_active", labels)) == 9
        assert m.value("gpu_clock_event_duration_seconds_total", {**labels, "reason": "sw_power_cap"}) == 2.5
        assert (
            m.value("gpu_clock_event_duration_seconds_total", {**labels, "reason": "hw_thermal_slowdown"})
            == 1e-3
        )
        assert m.value("gpu_pcie_link_generation", labels) == 5
        assert m.value("gpu_pcie_link_width", labels) == 4
        assert m.value("gpu_pcie_replays_total", labels) == 3
        assert m.value("gpu_pcie_transmit_bytes_per_second", labels) == 1000 * 1024
        assert m.value("gpu_pcie_receive_bytes_per_second", labels) == 2000 * 1024
        assert m.value("gpu_ecc_errors_total", {**labels, "severity": "corrected", "scope": "aggregate"}) == 5
        assert m.value("gpu_remapped_rows_total", {**labels, "cause": "correctable"}) == 2
        assert m.value("gpu_remapped_rows_pending", labels) == 0
        assert m.value("gpu_recovery_action", labels) == 0
        assert m.value("gpu_sm_active_ratio", labels) == pytest.approx(0.949)
        assert m.value("gpu_sm_occupancy_ratio", labels) == pytest.approx(0.14)
        assert m.value("gpu_tensor_active_ratio", labels) == pytest.approx(0.921)
        assert m.value("gpu_dram_bandwidth_utilization_ratio", labels) == pytest.approx(0.246)
        assert m.value("gpu_nvlink_transmit_bytes_total", {**labels, "link": "2"}) == 30 * 1024
        assert m.value("gpu_nvlink_receive_bytes_total", {**labels, "link": "0"}) == 20 * 1024
        for source in ("energy", "fields", "pcie", "process_utilization", "gpm"):
            stamp = m.value("gpu_sample_timestamp_seconds", {**labels, "source": source})
            assert time.time() - 10 < stamp <= time.time()
    assert m.value("gpu_nvlink_errors_total", {**g1, "link": "2", "type": "replay"}) == 7
    assert m.value("gpu_nvlink_errors_total", {**g0, "link": "2", "type": "replay"}) == 0
    assert m.all("gpu_nvml_errors_total") == []


def test_not_supported_readings_are_absent_not_errors_and_not_asked_again() -> None:
    gpu = FakeGpu(
        uuid=UUID0, fans=None, ecc=None, remapped_rows=None, recovery_action=None, gpm=None, mig=None
    )
    gpu.unsupported = {"nvmlDeviceGetPcieReplayCounter", "nvmlDeviceGetPcieThroughput"}
    nvml = FakeNvml([gpu])
    collector = collector_for(nvml)
    collector.sampler.run_once()
    m = samples_of(collector.collect())
    for absent in (
        "gpu_fan_speed_ratio",
        "gpu_ecc_errors_total",
        "gpu_remapped_rows_total",
        "gpu_recovery_action",
        "gpu_sm_active_ratio",
        "gpu_pcie_replays_total",
        "gpu_pcie_transmit_bytes_per_second",
        "gpu_nvml_errors_total",
    ):
        assert m.all(absent) == [], absent
    assert m.value("gpu_info", {"gpu": "0"}) == 1
    assert m.labels("gpu_info", {"gpu": "0"})["mig_mode"] == "unsupported"
    assert m.value("gpu_memory_temperature_celsius", {"gpu": "0"}) == 70  # the other fields still arrive
    assert m.all("gpu_sample_timestamp_seconds", {"source": "pcie"}) == []
    before = nvml.calls_on("MainThread").count("nvmlDeviceGetTotalEccErrors")
    samples_of(collector.collect())
    collector.sampler.run_once()
    assert nvml.calls_on("MainThread").count("nvmlDeviceGetTotalEccErrors") == before
    assert nvml.calls_on("MainThread").count("nvmlDeviceGetPcieThroughput") == 1
    assert collector.error_counts() == {"nvml": 0}


def test_other_nvml_errors_are_counted_with_call_and_error_and_cost_only_that_reading() -> None:
    gpus = two_gpus()
    gpus[0].failing = {"nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_NO_PERMISSION}
    collector = collector_for(FakeNvml(gpus))
    samples_of(collector.collect())
    m = samples_of(collector.collect())
    assert m.all("gpu_power_usage_watts", {"gpu": "0"}) == []
    assert m.value("gpu_power_usage_watts", {"gpu": "1"}) == 690
    assert m.value("gpu_temperature_celsius", {"gpu": "0"}) == 61
    assert m.value("gpu_up", {"gpu": "0"}) == 1
    errors = {"gpu": "0", "uuid": UUID0, "call": "nvmlDeviceGetPowerUsage", "error": "no_permission"}
    assert m.value("gpu_nvml_errors_total", errors) == 2
    assert collector.error_counts()["nvml"] == 2


def test_a_lost_gpu_affects_only_its_own_series_and_comes_back() -> None:
    nvml = FakeNvml(two_gpus())
    collector = collector_for(nvml)
    assert samples_of(collector.collect()).value("gpu_up", {"gpu": "1"}) == 1

    nvml.gpus[1].lost = True  # fell off the bus between two scrapes
    m = samples_of(collector.collect())
    assert m.value("gpu_up", {"gpu": "1"}) == 0
    assert m.value("gpu_up", {"gpu": "0"}) == 1
    assert m.value("gpu_info", {"gpu": "1"}) == 1  # identity stays, so dashboards can name the lost GPU
    assert m.all("gpu_memory_used_bytes", {"gpu": "1"}) == []
    assert m.all("gpu_energy_joules_total", {"gpu": "1"}) == []  # sampler values are not served stale
    assert m.value("gpu_memory_used_bytes", {"gpu": "0"}) == 1_194_131_456
    assert m.value("gpu_energy_joules_total", {"gpu": "0"}) > 0
    lost = m.all("gpu_nvml_errors_total", {"gpu": "1", "error": "gpu_is_lost"})
    assert [value for _, value in lost] == [1]
    assert m.value("gpu_nvml_available") == 1

    collector.sampler.run_once()  # retries the lost GPU (retry_seconds=0), still lost
    assert samples_of(collector.collect()).value("gpu_up", {"gpu": "1"}) == 0
    nvml.gpus[1].lost = False
    collector.sampler.run_once()
    m = samples_of(collector.collect())
    assert m.value("gpu_up", {"gpu": "1"}) == 1
    assert m.value("gpu_memory_used_bytes", {"gpu": "1"}) == 1_194_131_456


def test_slow_calls_run_only_in_the_sampler_thread_and_say_how_old_they_are() -> None:
    slow = {name: 0.05 for name in SLOW_CALLS}
    nvml = FakeNvml(two_gpus(gpm={pynvml.NVML_GPM_METRIC_SM_UTIL: 50.0}), slow=slow)
    collector = GpuCollector(nvml=nvml, sampler_interval_seconds=0.2)
    try:
        deadline = time.monotonic() + 20
        while collector.sampler.passes < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert collector.ready()
        results = []
        scraper = threading.Thread(
            target=lambda: results.append(samples_of(collector.collect())), name="scrape"
        )
        scraper.start()
        scraper.join(timeout=10)
        m = results[0]
    finally:
        collector.close()
    on_scrape = set(nvml.calls_on("scrape"))
    assert on_scrape, "the scrape made no NVML call at all"
    assert on_scrape.isdisjoint(SLOW_CALLS)
    assert SLOW_CALLS - {"nvmlGpmMetricsGet"} <= set(nvml.calls_on("nvml-sampler"))
    assert m.value("gpu_energy_joules_total", {"gpu": "1"}) == pytest.approx(123_456.789)
    stamp = m.value("gpu_sample_timestamp_seconds", {"gpu": "1", "source": "energy"})
    assert 0 <= time.time() - stamp < 30


def test_no_driver_serves_unavailable_logs_once_and_retries(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml(two_gpus(), init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    caplog.set_level(logging.INFO, logger="exporter.gpu")
    collector = collector_for(nvml)
    for _ in range(3):
        collector.sampler.run_once()
    m = samples_of(collector.collect())
    assert m.value("gpu_nvml_available") == 0
    assert [name for name, _, _ in m.samples if name.startswith("gpu_")] == ["gpu_nvml_available"]
    assert nvml.init_calls == 4
    assert len([r for r in caplog.records if "NVML unavailable" in r.getMessage()]) == 1
    assert collector.error_counts() == {"nvml": 0}  # no driver is a state, not an error per retry
    assert collector.ready()

    nvml.init_error = None  # the driver got installed / loaded
    collector.sampler.run_once()
    m = samples_of(collector.collect())
    assert m.value("gpu_nvml_available") == 1
    assert m.value("gpu_up", {"gpu": "1"}) == 1


def test_nvml_wide_failure_is_reinitialised_by_the_sampler() -> None:
    nvml = FakeNvml(two_gpus())
    collector = collector_for(nvml)
    nvml.initialised = False  # e.g. the driver was reloaded under us
    m = samples_of(collector.collect())
    assert m.all("gpu_nvml_errors_total", {"error": "uninitialized"})
    assert m.value("gpu_nvml_available") == 0
    assert m.value("gpu_up", {"gpu": "0"}) == m.value("gpu_up", {"gpu": "1"}) == 0
    assert m.all("gpu_temperature_celsius") == [] and m.all("gpu_energy_joules_total") == []
    assert collector.session.reinit_pending
    errors = collector.error_counts()["nvml"]
    samples_of(collector.collect())  # no NVML calls until it is re-initialised: no more errors
    assert collector.error_counts()["nvml"] == errors
    collector.sampler.run_once()
    assert nvml.init_calls == 2
    m = samples_of(collector.collect())
    assert m.value("gpu_nvml_available") == 1
    assert m.value("gpu_up", {"gpu": "0"}) == 1
    assert m.value("gpu_temperature_celsius", {"gpu": "0"}) == 61


def test_mig_instances_appear_as_parent_slash_instance() -> None:
    gpu = FakeGpu(
        uuid=UUID0,
        mig=[
            FakeMig(
                1,
                "MIG-aaaa",
                "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
                40 * 2**30,
                2**30,
                processes=[(4242, 2**29)],
            ),
            FakeMig(2, "MIG-bbbb", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", 40 * 2**30, 0),
        ],
        gpm={pynvml.NVML_GPM_METRIC_SM_UTIL: 10.0},
    )
    collector = collector_for(FakeNvml([gpu]))
    time.sleep(0.15)
    collector.sampler.run_once()
    m = samples_of(collector.collect())
    assert m.labels("gpu_info", {"gpu": "0"})["mig_mode"] == "enabled"
    assert m.labels("gpu_info", {"gpu": "0/1"}) == {
        "uuid": "MIG-aaaa",
        "name": "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
        "pci_bus_id": "00000000:18:00.0",
        "driver_version": "580.159.04",
        "cuda_driver_version": "13.0",
        "mig_mode": "instance",
    }
    assert m.value("gpu_memory_used_bytes", {"gpu": "0/1", "uuid": "MIG-aaaa"}) == 2**30
    assert m.value("gpu_memory_free_bytes", {"gpu": "0/2"}) == 40 * 2**30
    assert m.all("gpu_memory_reserved_bytes", {"gpu": "0/1"}) == []  # v1 on MIG handles: no reserved
    assert m.all("gpu_utilization_ratio", {"gpu": "0"}) == []  # NotSupported on MIG-enabled GPUs
    assert m.value("gpu_power_usage_watts", {"gpu": "0"}) == 690  # the parent's board readings stay
    assert m.value("gpu_process_memory_used_bytes", {"gpu": "0/1", "pid": "4242"}) == 2**29
    assert m.value("gpu_sm_active_ratio", {"gpu": "0/1"}) == pytest.approx(0.1)
    assert GpuProcess("0/1", "MIG-aaaa", 4242, 2**29) in collector.running_processes()
    assert m.all("gpu_nvml_errors_total") == []


def wait_for_exec(pid: int, marker: str) -> None:
    """Until the child has exec'd: right after fork its command line is still this test's."""
    deadline = time.monotonic() + 10
    while marker not in " ".join(psutil.Process(pid).cmdline()):
        assert time.monotonic() < deadline, "the child never exec'd"
        time.sleep(0.01)


def test_processes_are_labelled_without_secrets_and_capped() -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)", "--api-key", "sk-SECRET", "--model", "m"]
    child = subprocess.Popen(argv)
    try:
        wait_for_exec(child.pid, "sk-SECRET")
        gpu = FakeGpu(uuid=UUID0, processes=[(child.pid, 3 * 2**30), (999_999_1, 2**30), (999_999_2, 2**20)])
        gpu.process_sm = {child.pid: 87}
        collector = collector_for(FakeNvml([gpu]), process_limit=2)
        m = samples_of(collector.collect())
    finally:
        child.kill()
        child.wait()
    memory = m.all("gpu_process_memory_used_bytes")
    assert sorted(labels["pid"] for labels, _ in memory) == sorted([str(child.pid), "9999991"])
    mine = m.labels("gpu_process_memory_used_bytes", {"pid": str(child.pid)})
    assert mine["process"].startswith("python")
    assert "sk-SECRET" not in mine["command"] and "<redacted>" in mine["command"]
    assert m.value("gpu_process_sm_utilization_ratio", {"pid": str(child.pid)}) == pytest.approx(0.87)
    assert m.value("gpu_process_sm_utilization_ratio", {"pid": "9999991"}) == 0
    assert m.labels("gpu_process_memory_used_bytes", {"pid": "9999991"})["process"] == ""
    assert collector.running_processes() == [
        GpuProcess("0", UUID0, child.pid, 3 * 2**30),
        GpuProcess("0", UUID0, 9999991, 2**30),
    ]
    assert m.value("gpu_sample_timestamp_seconds", {"source": "processes"}) > 0


def test_costly_readings_are_spaced_out_whatever_the_pass_rate() -> None:
    """Energy, PCIe throughput and process utilization (milliseconds of driver CPU a call on an H100) are
    read at most every SPACED_SOURCES seconds, the others on every pass; their timestamps say when."""
    nvml = FakeNvml([FakeGpu(uuid=UUID0, processes=[(4242, 2**20)])])
    collector = GpuCollector(nvml=nvml, start_threads=False, retry_seconds=0.0)
    now = [1000.0]
    collector.sampler.clock = lambda: now[0]

    def passes(count: int) -> Counter[str]:
        nvml.calls.clear()
        for _ in range(count):
            collector.sampler.run_once()
            now[0] += 1.0
        return Counter(name for _thread, name in nvml.calls)

    assert set(SPACED_SOURCES.values()) == {5.0}
    calls = passes(5)  # 1000 .. 1004
    assert calls["nvmlDeviceGetTotalEnergyConsumption"] == 1
    assert calls["nvmlDeviceGetPcieThroughput"] == 2  # one pass: TX and RX
    assert calls["nvmlDeviceGetProcessUtilization"] == 1
    assert calls["nvmlDeviceGetFieldValues"] == calls["nvmlDeviceGetComputeRunningProcesses"] == 5
    m = samples_of(collector.collect())
    assert m.value("gpu_sample_timestamp_seconds", {"source": "energy"}) == 1000.0
    assert m.value("gpu_sample_timestamp_seconds", {"source": "fields"}) == 1004.0
    assert m.value("gpu_energy_joules_total") == pytest.approx(123_456.789)  # served between reads
    assert passes(1)["nvmlDeviceGetTotalEnergyConsumption"] == 1  # 1005: due again
    now[0] = 900.0  # the clock set back: read at once, not after 100 s
    assert passes(1)["nvmlDeviceGetTotalEnergyConsumption"] == 1


def test_idle_gpu_process_utilization_not_found_means_zero_not_error() -> None:
    gpu = FakeGpu(uuid=UUID0, processes=[(4242, 2**20)])  # process_sm empty: NVML raises NotFound
    collector = collector_for(FakeNvml([gpu]))
    m = samples_of(collector.collect())
    assert m.value("gpu_process_sm_utilization_ratio", {"pid": "4242"}) == 0
    assert m.all("gpu_nvml_errors_total") == []


def test_xid_events_are_counted_by_code_in_their_own_thread() -> None:
    nvml = FakeNvml(two_gpus())
    collector = collector_for(nvml)  # run_once started the watcher
    try:
        nvml.events.put((1, 79))
        nvml.events.put((1, 79))
        nvml.events.put((0, 48))
        deadline = time.monotonic() + 10
        while sum(collector.xid.counts().values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        m = samples_of(collector.collect())
    finally:
        collector.close()
    assert m.value("gpu_xid_errors_total", {"gpu": "1", "uuid": UUID1, "xid": "79"}) == 2
    assert m.value("gpu_xid_errors_total", {"gpu": "0", "uuid": UUID0, "xid": "48"}) == 1
    assert "nvmlEventSetWait_v2" in nvml.calls_on("nvml-xid")
    assert "nvmlEventSetWait_v2" not in nvml.calls_on("MainThread")


def test_gpm_samples_closer_than_100ms_give_no_values() -> None:
    gpu = FakeGpu(
        uuid=UUID0, gpm={pynvml.NVML_GPM_METRIC_SM_UTIL: 50.0, pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 9.0}
    )
    collector = collector_for(FakeNvml([gpu]))
    collector.sampler.run_once()  # immediately: the window is far below 100 ms
    m = samples_of(collector.collect())
    assert m.all("gpu_sm_active_ratio") == []
    assert m.all("gpu_dram_bandwidth_utilization_ratio") == []


def test_a_gpu_lost_before_start_does_not_hide_the_others() -> None:
    gpus = two_gpus()
    gpus[1].lost = True
    nvml = FakeNvml(gpus)
    collector = collector_for(nvml)
    m = samples_of(collector.collect())
    assert m.value("gpu_nvml_available") == 1
    assert m.value("gpu_up", {"gpu": "0"}) == 1
    assert m.all("gpu_info", {"gpu": "1"}) == []  # not discovered: NVML gave no UUID for it
    assert collector.error_counts()["nvml_init_gpu_is_lost"] == 1

    gpus[1].lost = False
    collector.sampler.run_once()  # re-discovers (retry_seconds=0)
    m = samples_of(collector.collect())
    assert m.value("gpu_up", {"gpu": "1", "uuid": UUID1}) == 1
    assert m.value("gpu_up", {"gpu": "0"}) == 1
    collector.sampler.run_once()
    assert nvml.init_calls == 2  # complete now: no further re-initialisation


def test_gpus_without_xid_events_are_not_re_registered_every_pass() -> None:
    gpus = two_gpus(unsupported={"nvmlDeviceRegisterEvents"})
    nvml = FakeNvml(gpus)
    collector = collector_for(nvml)
    try:
        for _ in range(3):
            collector.sampler.run_once()
        time.sleep(0.2)
    finally:
        collector.close()
    assert [name for _, name in nvml.calls].count("nvmlEventSetCreate") == 1


def test_a_scrape_does_not_wait_while_nvml_is_being_reinitialised() -> None:
    collector = collector_for(FakeNvml(two_gpus()), lock_timeout_seconds=0.01)
    with collector.session.lock:  # as held by a re-initialisation in the sampler thread
        m = samples_of(collector.collect())
    assert m.names() == {"gpu_nvml_available"}
    assert m.value("gpu_nvml_available") == 1
    assert collector.error_counts()["nvml_busy"] == 1
    assert samples_of(collector.collect()).value("gpu_up", {"gpu": "0"}) == 1


def test_mig_instances_nvml_will_not_describe_are_counted_and_the_parent_stays() -> None:
    gpu = FakeGpu(
        uuid=UUID0,
        mig=[
            FakeMig(1, "MIG-aaaa", "3g.40gb", 40 * 2**30, 0),
            FakeMig(2, "MIG-bbbb", "3g.40gb", 40 * 2**30, 0),
        ],
        failing={"nvmlDeviceGetGpuInstanceId": pynvml.NVML_ERROR_NO_PERMISSION},
    )
    collector = collector_for(FakeNvml([gpu]))
    m = samples_of(collector.collect())
    assert [labels["gpu"] for labels, _ in m.all("gpu_info")] == ["0"]
    assert m.value("gpu_power_usage_watts", {"gpu": "0"}) == 690
    assert collector.error_counts()["nvml_init_no_permission"] == 2


def test_until_the_retry_period_ends_a_broken_nvml_is_left_alone() -> None:
    nvml = FakeNvml(two_gpus())
    collector = GpuCollector(nvml=nvml, start_threads=False, retry_seconds=3600)
    collector.sampler.run_once()
    nvml.initialised = False
    samples_of(collector.collect())
    errors, calls = collector.error_counts()["nvml"], len(nvml.calls_on("MainThread"))
    for _ in range(3):
        collector.sampler.run_once()
        m = samples_of(collector.collect())
    assert collector.error_counts()["nvml"] == errors
    collector.close()
    assert len(nvml.calls_on("MainThread")) == calls  # neither scrapes nor the sampler touch NVML
    assert nvml.init_calls == 1
    assert m.value("gpu_nvml_available") == 0


class OlderBinding:
    """An nvidia-ml-py that predates some functions: the same fake, minus those names."""

    def __init__(self, inner: FakeNvml, missing: set[str]) -> None:
        self._inner, self._missing = inner, missing

    def __getattr__(self, name: str) -> object:
        if name in self._missing:
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_an_older_binding_without_some_functions_loses_only_those_readings() -> None:
    missing = {"nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetTotalEnergyConsumption"}
    collector = collector_for(OlderBinding(FakeNvml(two_gpus()), missing))
    collector.sampler.run_once()
    m = samples_of(collector.collect())
    assert m.all("gpu_clock_event_reason_active") == []
    assert m.all("gpu_energy_joules_total") == []
    assert m.value("gpu_power_usage_watts", {"gpu": "1"}) == 690
    assert m.value("gpu_pcie_transmit_bytes_per_second", {"gpu": "1"}) == 1000 * 1024
    assert m.all("gpu_nvml_errors_total") == []


def test_unsupported_is_remembered_per_call_and_arguments() -> None:
    gpu = FakeGpu(uuid=UUID0, clocks_mhz={pynvml.NVML_CLOCK_SM: 1410, pynvml.NVML_CLOCK_MEM: 1593})
    nvml = FakeNvml([gpu])
    collector = collector_for(nvml)
    for _ in range(3):
        m = samples_of(collector.collect())
    assert m.value("gpu_clock_hertz", {"clock": "sm"}) == 1410e6
    assert m.value("gpu_clock_hertz", {"clock": "memory"}) == 1593e6
    assert m.all("gpu_clock_hertz", {"clock": "graphics"}) == []
    assert m.all("gpu_nvml_errors_total") == []
    # graphics asked once, then remembered; sm and memory asked on every scrape
    assert nvml.calls_on("MainThread").count("nvmlDeviceGetClockInfo") == 1 + 2 * 3
