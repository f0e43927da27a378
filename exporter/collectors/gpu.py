"""GPU collector (NVML): fast readings taken on each scrape, slow ones served from the background sampler.

Fast calls (1-10 us each on an H100) run inside collect(); slow ones (energy, PCIe throughput, field
values, processes, process utilization, GPM) run in NvmlSampler's thread and carry
gpu_sample_timestamp_seconds{source}. A failing GPU affects only its own series; NVML missing altogether
leaves gpu_nvml_available 0 and every other collector untouched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import pynvml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.collectors.nvml_events import XidWatcher
from exporter.collectors.nvml_sampler import NvmlSampler
from exporter.collectors.nvml_session import CLOCKS, Device, GpuProcess, NvmlSession, Sample
from exporter.collectors.process_labels import POD_LABELS, ProcessLabels
from exporter.pacer import Pacer

GPU_LABELS = ("gpu", "uuid")

# name -> (type, help, label names beyond gpu and uuid); docs/metrics.md is the contract.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "gpu_info": (
        "gauge",
        "GPU identity (value 1).",
        ("name", "pci_bus_id", "driver_version", "cuda_driver_version", "mig_mode"),
    ),
    "gpu_up": ("gauge", "1 while the GPU answers NVML, 0 when it is lost or failing.", ()),
    "gpu_nvml_errors_total": ("counter", "NVML calls that failed, by call and error.", ("call", "error")),
    "gpu_utilization_ratio": (
        "gauge",
        "Fraction of the last sample period a kernel ran (NVML utilization.gpu).",
        (),
    ),
    "gpu_memory_bandwidth_utilization_ratio": (
        "gauge",
        "Fraction of the last sample period device memory was read or written.",
        (),
    ),
    "gpu_memory_total_bytes": ("gauge", "Device memory in total (NVML memory info v2).", ()),
    "gpu_memory_used_bytes": ("gauge", "Device memory allocated by processes (v2: excludes reserved).", ()),
    "gpu_memory_free_bytes": ("gauge", "Device memory free.", ()),
    "gpu_memory_reserved_bytes": ("gauge", "Device memory reserved by the driver and firmware (v2).", ()),
    "gpu_power_usage_watts": ("gauge", "Power draw (1 s average on Ampere and newer except GA100).", ()),
    "gpu_power_limit_watts": ("gauge", "Enforced power limit.", ()),
    "gpu_energy_joules_total": ("counter", "Energy consumed since the driver was loaded (sampler).", ()),
    "gpu_temperature_celsius": ("gauge", "GPU core temperature.", ()),
    "gpu_memory_temperature_celsius": ("gauge", "Memory temperature (sampler, field 82).", ()),
    "gpu_clock_hertz": ("gauge", "Current clock.", ("clock",)),
    "gpu_clock_max_hertz": ("gauge", "Maximum clock.", ("clock",)),
    "gpu_performance_state": ("gauge", "Performance state P0-P15 (0 is fastest).", ()),
    "gpu_fan_speed_ratio": ("gauge", "Fan speed as a fraction of its maximum (can exceed 1).", ("fan",)),
    "gpu_clock_event_reason_active": (
        "gauge",
        "1 while this reason holds clocks down (throttling).",
        ("reason",),
    ),
    "gpu_clock_event_duration_seconds_total": (
        "counter",
        "Time clocks were held down by this reason (sampler).",
        ("reason",),
    ),
    "gpu_pcie_link_generation": ("gauge", "Current PCIe link generation.", ()),
    "gpu_pcie_link_width": ("gauge", "Current PCIe link width (lanes).", ()),
    "gpu_pcie_replays_total": ("counter", "PCIe replays (sampler).", ()),
    "gpu_pcie_transmit_bytes_per_second": (
        "gauge",
        "PCIe transmit throughput over a 20 ms window (sampler).",
        (),
    ),
    "gpu_pcie_receive_bytes_per_second": (
        "gauge",
        "PCIe receive throughput over a 20 ms window (sampler).",
        (),
    ),
    "gpu_nvlink_transmit_bytes_total": ("counter", "NVLink data transmitted (sampler).", ("link",)),
    "gpu_nvlink_receive_bytes_total": ("counter", "NVLink data received (sampler).", ("link",)),
    "gpu_nvlink_errors_total": ("counter", "NVLink errors (sampler).", ("link", "type")),
    "gpu_ecc_errors_total": ("counter", "ECC errors.", ("severity", "scope")),
    "gpu_remapped_rows_total": ("counter", "Remapped memory rows.", ("cause",)),
    "gpu_remapped_rows_pending": ("gauge", "1 when a row remapping waits for a GPU reset.", ()),
    "gpu_remapped_rows_failed": ("gauge", "1 when a row remapping failed.", ()),
    "gpu_xid_errors_total": (
        "counter",
        "Xid errors reported by the driver since the exporter started.",
        ("xid",),
    ),
    "gpu_recovery_action": (
        "gauge",
        "Recovery the driver asks for: 0 none, 1 reset, 2 reboot, 3 drain P2P, 4 drain and reset (sampler).",
        (),
    ),
    "gpu_sm_active_ratio": ("gauge", "Fraction of SMs busy (GPM, sampler).", ()),
    "gpu_sm_occupancy_ratio": ("gauge", "Warps resident over the theoretical maximum (GPM, sampler).", ()),
    "gpu_tensor_active_ratio": ("gauge", "Fraction of time tensor cores were busy (GPM, sampler).", ()),
    "gpu_dram_bandwidth_utilization_ratio": (
        "gauge",
        "DRAM bandwidth used over its maximum (GPM, sampler).",
        (),
    ),
    "gpu_process_memory_used_bytes": (
        "gauge",
        "Device memory held by a compute process (sampler, capped).",
        ("pid", "process", "command"),
    ),
    "gpu_process_sm_utilization_ratio": (
        "gauge",
        "SM utilization of a compute process (sampler).",
        ("pid", "process", "command"),
    ),
    "gpu_sample_timestamp_seconds": (
        "gauge",
        "Unix time the sampler last read this source; age = time() - this.",
        ("source",),
    ),
}

PROCESS_FAMILIES = frozenset({"gpu_process_memory_used_bytes", "gpu_process_sm_utilization_ratio"})

CLOCK_EVENT_REASONS = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}
ECC = [
    ("corrected", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, "volatile", pynvml.NVML_VOLATILE_ECC),
    ("corrected", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, "aggregate", pynvml.NVML_AGGREGATE_ECC),
    ("uncorrected", pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, "volatile", pynvml.NVML_VOLATILE_ECC),
    ("uncorrected", pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, "aggregate", pynvml.NVML_AGGREGATE_ECC),
]

__all__ = ["FAMILIES", "GpuCollector", "GpuProcess", "Sample", "build_families"]


class GpuCollector(Collector):
    name = "gpu"

    def __init__(
        self,
        nvml: Any = pynvml,
        sampler_interval_seconds: float = 1.0,
        retry_seconds: float = 30.0,
        process_limit: int = 32,
        start_threads: bool = True,
        lock_timeout_seconds: float = 0.1,
        process_labels: ProcessLabels | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.session = NvmlSession(nvml, retry_seconds=retry_seconds)
        self._process_labels = process_labels
        self.xid = XidWatcher(self.session)
        self.sampler = NvmlSampler(
            self.session, self.xid, sampler_interval_seconds, process_limit, pacer=pacer
        )
        self._lock_timeout = lock_timeout_seconds
        self._busy_scrapes = 0
        if start_threads:
            self.sampler.start()

    # --- the interface other wings use ---------------------------------------------------------------

    def running_processes(self) -> list[GpuProcess]:
        return self.sampler.running_processes()

    def ready(self) -> bool:
        """True once the first NVML attempt (success or not) and the first sampler pass are done."""
        return self.sampler.passes > 0

    def error_counts(self) -> dict[str, int]:
        counts = {"nvml": sum(self.session.error_counts().values())}
        for error, n in self.session.init_error_counts().items():
            counts[f"nvml_init_{error}"] = n
        if self._busy_scrapes:
            counts["nvml_busy"] = self._busy_scrapes
        return counts

    def close(self) -> None:
        self.sampler.stop()
        self.xid.stop()
        self.sampler.release()
        self.session.shutdown()

    # --- collect ---------------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        session = self.session
        samples: list[Sample] = []
        if not session.lock.acquire(timeout=self._lock_timeout):
            # NVML is being (re-)initialised: never make the scrape wait for it; this scrape has no GPU series
            self._busy_scrapes += 1
            usable = float(session.usable)
            yield GaugeMetricFamily("gpu_nvml_available", "1 when NVML is initialised, else 0.", value=usable)
            return
        try:
            devices = session.devices
            for device in devices:
                if session.usable and not session.is_lost(device):
                    fast = self._fast_samples(device)
                    if not session.is_lost(device):  # it may have been lost during this very pass
                        samples += fast
        finally:
            session.lock.release()
        available = session.usable  # an NVML-wide error during the pass makes every GPU unusable
        for device in devices:
            up = 0.0 if session.is_lost(device) or not available else 1.0
            samples.append(("gpu_up", device.labels, up))
            samples.append(("gpu_info", (*device.labels, *self._identity(device)), 1.0))
        live = {d.uuid for d in devices if available and not session.is_lost(d)}
        samples += [s for s in self.sampler.samples() if s[1][1] in live]
        if self._process_labels is not None:
            samples = [self._with_pod(s) if s[0] in PROCESS_FAMILIES else s for s in samples]
        samples += [("gpu_xid_errors_total", key, float(n)) for key, n in self.xid.counts().items()]
        samples += [("gpu_nvml_errors_total", key, float(n)) for key, n in session.error_counts().items()]
        yield GaugeMetricFamily(
            "gpu_nvml_available", "1 when NVML is initialised, else 0.", value=float(available)
        )
        yield from build_families(samples, pod_labels=self._process_labels is not None)

    def _with_pod(self, sample: Sample) -> Sample:
        """A process sample with the namespace, pod and container its process runs in ("" where none)."""
        name, labels, value = sample
        pid, uuid = labels[2], labels[1]
        try:
            pod = self._process_labels(int(pid), uuid) if self._process_labels else {}
        except Exception:  # attribution never costs the GPU series
            pod = {}
        return name, (*labels, *(pod.get(label, "") for label in POD_LABELS)), value

    def _identity(self, device: Device) -> tuple[str, ...]:
        s = self.session
        return (device.name, device.pci_bus_id, s.driver_version, s.cuda_driver_version, device.mig_mode)

    def _fast_samples(self, device: Device) -> list[Sample]:
        samples = self._memory(device)
        if device.is_mig:
            return samples  # NVML offers no per-instance utilization, power, clocks or temperature
        call, labels = self.session.call, device.labels
        util = call(device, "nvmlDeviceGetUtilizationRates")
        if util is not None:
            samples.append(("gpu_utilization_ratio", labels, util.gpu / 100))
            samples.append(("gpu_memory_bandwidth_utilization_ratio", labels, util.memory / 100))
        scalars = [
            ("gpu_power_usage_watts", "nvmlDeviceGetPowerUsage", (), 1e-3),
            ("gpu_power_limit_watts", "nvmlDeviceGetEnforcedPowerLimit", (), 1e-3),
            ("gpu_temperature_celsius", "nvmlDeviceGetTemperature", (pynvml.NVML_TEMPERATURE_GPU,), 1),
            ("gpu_performance_state", "nvmlDeviceGetPerformanceState", (), 1),
            ("gpu_pcie_link_generation", "nvmlDeviceGetCurrPcieLinkGeneration", (), 1),
            ("gpu_pcie_link_width", "nvmlDeviceGetCurrPcieLinkWidth", (), 1),
        ]
        for family, fn, args, scale in scalars:
            value = call(device, fn, *args)
            if value is not None:
                samples.append((family, labels, float(value) * scale))
        for clock, kind in CLOCKS.items():
            mhz = call(device, "nvmlDeviceGetClockInfo", kind)
            if mhz is not None:
                samples.append(("gpu_clock_hertz", (*labels, clock), float(mhz) * 1e6))
        samples += [("gpu_clock_max_hertz", (*labels, c), hz) for c, hz in device.max_clocks_hz.items()]
        for fan in range(device.fan_count):
            percent = call(device, "nvmlDeviceGetFanSpeed_v2", fan)
            if percent is not None:
                samples.append(("gpu_fan_speed_ratio", (*labels, str(fan)), percent / 100))
        reasons = call(device, "nvmlDeviceGetCurrentClocksEventReasons")
        if reasons is not None:
            for reason, bit in CLOCK_EVENT_REASONS.items():
                samples.append(
                    ("gpu_clock_event_reason_active", (*labels, reason), float(bool(reasons & bit)))
                )
        return samples + self._ecc(device) + self._remapped_rows(device)

    def _memory(self, device: Device) -> list[Sample]:
        session, labels = self.session, device.labels
        memory = None
        if not session.is_unsupported(device, "nvmlDeviceGetMemoryInfo_v2"):
            try:
                memory = session.nvml.nvmlDeviceGetMemoryInfo(device.handle, pynvml.nvmlMemory_v2)
            except pynvml.NVMLError as exc:
                if exc.value == pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH:
                    session.mark_unsupported(device, "nvmlDeviceGetMemoryInfo_v2")
                else:
                    session.record_failure(device, "nvmlDeviceGetMemoryInfo_v2", exc)
                if session.is_lost(device):
                    return []
        if memory is None:
            memory = session.call(device, "nvmlDeviceGetMemoryInfo")  # v1: used includes reserved
        if memory is None:
            return []
        samples = [
            ("gpu_memory_total_bytes", labels, float(memory.total)),
            ("gpu_memory_used_bytes", labels, float(memory.used)),
            ("gpu_memory_free_bytes", labels, float(memory.free)),
        ]
        if hasattr(memory, "reserved"):
            samples.append(("gpu_memory_reserved_bytes", labels, float(memory.reserved)))
        return samples

    def _ecc(self, device: Device) -> list[Sample]:
        samples = []
        for severity, error_type, scope, counter in ECC:
            count = self.session.call(device, "nvmlDeviceGetTotalEccErrors", error_type, counter)
            if count is None:
                break  # ECC off or unsupported: all four fail alike
            samples.append(("gpu_ecc_errors_total", (*device.labels, severity, scope), float(count)))
        return samples

    def _remapped_rows(self, device: Device) -> list[Sample]:
        rows = self.session.call(device, "nvmlDeviceGetRemappedRows")
        if rows is None:
            return []
        correctable, uncorrectable, pending, failed = rows
        labels = device.labels
        return [
            ("gpu_remapped_rows_total", (*labels, "correctable"), float(correctable)),
            ("gpu_remapped_rows_total", (*labels, "uncorrectable"), float(uncorrectable)),
            ("gpu_remapped_rows_pending", labels, float(bool(pending))),
            ("gpu_remapped_rows_failed", labels, float(bool(failed))),
        ]


def build_families(samples: Iterable[Sample], pod_labels: bool = False) -> Iterator[Metric]:
    """Group samples into metric families, in FAMILIES order, skipping families without samples;
    `pod_labels`: the process families carry namespace, pod and container (Kubernetes attribution)."""
    grouped: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        grouped[sample[0]].append(sample)
    for name, (kind, help_text, extra) in FAMILIES.items():
        if name not in grouped:
            continue
        labels = [*GPU_LABELS, *extra, *(POD_LABELS if pod_labels and name in PROCESS_FAMILIES else ())]
        if kind == "counter":
            family: Metric = CounterMetricFamily(name, help_text, labels=labels)
        else:
            family = GaugeMetricFamily(name, help_text, labels=labels)
        seen: set[tuple[str, ...]] = set()
        for _, label_values, value in grouped[name]:
            if label_values not in seen:  # guard against duplicate series, which Prometheus rejects
                seen.add(label_values)
                family.add_metric(list(label_values), value)
        yield family
