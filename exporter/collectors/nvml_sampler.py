"""Slow NVML readings in a background thread, so that no scrape ever waits on them.

Each pass (with a Pacer: before each scrape it foresees, at most every `interval` seconds, none while nobody
scrapes; without one: every `interval` seconds) it (re)initialises NVML when needed, keeps the Xid watcher
running, and reads per device: energy, field values (memory temperature, clock-event durations, recovery
action, NVLink), PCIe replays and throughput (20 ms per direction), compute processes, process utilization
and GPM.
Every source keeps the Unix time of its last successful read (gpu_sample_timestamp_seconds{source});
a failed read drops that source's values until it succeeds again, so nothing stale is served as fresh.
The sources in SPACED_SOURCES are read at most that often, whatever the pass rate.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import pynvml

from exporter.collectors.nvml_events import XidWatcher
from exporter.collectors.nvml_session import (
    UNSUPPORTED,
    Device,
    GpuProcess,
    NvmlSession,
    Sample,
    nvml_constant,
)
from exporter.collectors.process_labels import command_label
from exporter.pacer import Pacer

log = logging.getLogger("exporter.gpu")

DURATION_FIELDS = {  # NVML field ids; numbers for nvidia-ml-py versions that predate the names
    "sw_power_cap": nvml_constant("NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP", 74),
    "sync_boost": nvml_constant("NVML_FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST", 76),
    "sw_thermal_slowdown": nvml_constant("NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN", 269),
    "hw_thermal_slowdown": nvml_constant("NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN", 270),
    "hw_power_brake_slowdown": nvml_constant("NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN", 271),
}
RECOVERY_ACTION_FIELD = nvml_constant("NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", 230)
# Readings that cost the driver milliseconds of CPU per call and lose nothing when read less often than
# every pass (bench/nvml_costs.py on an H100, driver 580: energy 3.2 ms, process utilization 2.5 ms, PCIe
# throughput 0.6 ms a direction, against 0.7 ms for all seven field values): a counter, a window NVML keeps
# for us (utilization samples since the last read), and a 20 ms sample of a gauge. At a pass a second they
# were half of the exporter's CPU (bench/RESULTS.md, issue 16's GPU run).
SPACED_SOURCES = {"energy": 5.0, "pcie": 5.0, "process_utilization": 5.0}  # source -> seconds between reads
NVLINK_ERRORS = {
    "crc_flit": pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT,
    "crc_data": pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA,
    "replay": pynvml.NVML_NVLINK_ERROR_DL_REPLAY,
    "recovery": pynvml.NVML_NVLINK_ERROR_DL_RECOVERY,
}
GPM_METRICS = {
    "gpu_sm_active_ratio": pynvml.NVML_GPM_METRIC_SM_UTIL,
    "gpu_sm_occupancy_ratio": pynvml.NVML_GPM_METRIC_SM_OCCUPANCY,
    "gpu_tensor_active_ratio": pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL,
    "gpu_dram_bandwidth_utilization_ratio": pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL,
}
GPM_MIN_WINDOW_SECONDS = 0.1  # NVML's internal sample refresh; closer samples read 0 or NaN
NOT_FOUND = frozenset({pynvml.NVML_ERROR_NOT_FOUND})
SOURCES = ("energy", "fields", "pcie", "processes", "process_utilization", "gpm")


@dataclass(frozen=True)
class Reading:
    """One source's latest result for one device; replaced whole, so a scrape never sees half of one."""

    labels: tuple[str, str]  # the device's gpu and uuid
    timestamp: float | None = None  # Unix time of the last success
    samples: tuple[Sample, ...] = ()


@dataclass
class GpmState:
    previous: Any = None
    current: Any = None
    previous_at: float | None = None


class NvmlSampler:
    def __init__(
        self,
        session: NvmlSession,
        xid: XidWatcher,
        interval_seconds: float = 1.0,
        process_limit: int = 32,
        clock: Callable[[], float] = time.time,
        pacer: Pacer | None = None,
    ) -> None:
        self.session = session
        self.xid = xid
        self.interval = interval_seconds
        self.pacer = pacer  # None: a pass every interval; else before foreseen scrapes, at most that often
        self.process_limit = process_limit
        self.clock = clock
        self.passes = 0
        self._readings: dict[tuple[str, str], Reading] = {}  # (uuid, source) -> latest
        self._read_at: dict[tuple[str, str], float] = {}  # (uuid, source) -> when last tried (SPACED_SOURCES)
        self._processes: list[GpuProcess] = []
        self._last_utilization_us: dict[str, int] = {}
        self._gpm: dict[str, GpmState] = {}
        self._names: dict[int, tuple[float, str, str]] = {}  # pid -> (create_time, name, command)
        self._pid_table: dict[str, list[tuple[int, int | None]]] = {}  # uuid -> [(pid, used bytes)]
        self._generation = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- thread ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.pacer is not None:
            self.pacer.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Exception:  # a bug here must not end sampling for good
                log.exception("NVML sampler pass failed")
            took = time.monotonic() - started
            if self.pacer is None:
                self._stop.wait(max(0.0, self.interval - took))
                continue
            # done before the refresher's pass for the same scrape starts (its lead is at most 0.5 s)
            lead = 0.5 + 1.5 * took
            self.pacer.wait(self.pacer.due(lead, started, min_spacing=self.interval), self._stop)

    # --- one pass --------------------------------------------------------------------------------------

    def run_once(self) -> None:
        session = self.session
        session.ensure_initialised(before_reinit=self.xid.stop)  # its event set belongs to the old session
        if session.generation != self._generation:
            self._forget_session()
        if session.usable:
            self.xid.ensure_running()
        devices = [d for d in session.devices if session.usable and not session.is_lost(d)]
        readings = dict(self._readings)
        processes: list[GpuProcess] = []
        for device in devices:
            for source, read in self._sources(device):
                if not self._due(device, source):
                    continue
                samples = read(device)
                previous = readings.get((device.uuid, source))
                if samples is not None:
                    readings[(device.uuid, source)] = Reading(device.labels, self.clock(), tuple(samples))
                elif previous is not None:  # failed: drop the values, keep when it last succeeded
                    readings[(device.uuid, source)] = Reading(device.labels, previous.timestamp)
            processes += self._device_processes(device)
        live = {d.uuid for d in session.devices}
        self._readings = {key: r for key, r in readings.items() if key[0] in live}
        self._read_at = {key: at for key, at in self._read_at.items() if key[0] in live}
        self._pid_table = {uuid: t for uuid, t in self._pid_table.items() if uuid in live}
        self._processes = processes
        self.passes += 1

    def _due(self, device: Device, source: str) -> bool:
        spacing = SPACED_SOURCES.get(source)
        if spacing is None:
            return True
        now, key = self.clock(), (device.uuid, source)
        if 0 <= now - self._read_at.get(key, float("-inf")) < spacing:  # a clock set back reads at once
            return False
        self._read_at[key] = now
        return True

    def _forget_session(self) -> None:
        self.release()
        self._generation = self.session.generation
        self._readings = {}
        self._read_at = {}
        self._pid_table = {}
        self._last_utilization_us = {}

    def release(self) -> None:
        """Free GPM samples (they belong to the NVML session)."""
        for state in self._gpm.values():
            for sample in (state.previous, state.current):
                if sample is not None:
                    with contextlib.suppress(pynvml.NVMLError):
                        self.session.nvml.nvmlGpmSampleFree(sample)
        self._gpm = {}

    def _sources(self, device: Device) -> list[tuple[str, Callable[[Device], list[Sample] | None]]]:
        if device.is_mig:
            sources = [("processes", self._read_processes)]
        else:
            sources = [
                ("energy", self._read_energy),
                ("fields", self._read_fields),
                ("pcie", self._read_pcie),
                ("processes", self._read_processes),
                ("process_utilization", self._read_process_utilization),
            ]
        if device.gpm_supported:
            sources.append(("gpm", self._read_gpm))
        return [(s, r) for s, r in sources if not self.session.is_unsupported(device, f"source:{s}")]

    # --- what the collector reads (cheap, no NVML) --------------------------------------------------

    def samples(self) -> list[Sample]:
        result: list[Sample] = []
        for (_uuid, source), reading in list(self._readings.items()):
            result += reading.samples
            if reading.timestamp is not None:  # kept after a failure, so the age shows
                result.append(("gpu_sample_timestamp_seconds", (*reading.labels, source), reading.timestamp))
        return result

    def running_processes(self) -> list[GpuProcess]:
        return list(self._processes)

    # --- sources ---------------------------------------------------------------------------------------

    def _call(
        self, device: Device, source: str, fn: str, *args: Any, expected: frozenset[int] = frozenset()
    ) -> Any:
        """Like session.call, but raises; unsupported marks the whole source unsupported for this GPU.

        Codes in `expected` are answers rather than failures (NOT_FOUND from process utilization).
        """
        function = getattr(self.session.nvml, fn, None)
        if function is None:  # an nvidia-ml-py older than the call
            self.session.mark_unsupported(device, f"source:{source}")
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        try:
            return function(device.handle, *args)
        except pynvml.NVMLError as exc:
            if exc.value in UNSUPPORTED:
                self.session.mark_unsupported(device, f"source:{source}")
            elif exc.value not in expected:
                self.session.record_failure(device, fn, exc)
            raise

    def _read_energy(self, device: Device) -> list[Sample] | None:
        try:
            millijoules = self._call(device, "energy", "nvmlDeviceGetTotalEnergyConsumption")
        except pynvml.NVMLError:
            return None
        return [("gpu_energy_joules_total", device.labels, millijoules / 1000)]

    def _read_pcie(self, device: Device) -> list[Sample] | None:
        try:
            tx = self._call(device, "pcie", "nvmlDeviceGetPcieThroughput", pynvml.NVML_PCIE_UTIL_TX_BYTES)
            rx = self._call(device, "pcie", "nvmlDeviceGetPcieThroughput", pynvml.NVML_PCIE_UTIL_RX_BYTES)
        except pynvml.NVMLError:
            return None
        return [
            ("gpu_pcie_transmit_bytes_per_second", device.labels, tx * 1024.0),
            ("gpu_pcie_receive_bytes_per_second", device.labels, rx * 1024.0),
        ]

    def _read_fields(self, device: Device) -> list[Sample] | None:
        labels, session = device.labels, self.session
        wanted: list[tuple[str, tuple[str, ...], int, int, float]] = [
            ("gpu_memory_temperature_celsius", labels, pynvml.NVML_FI_DEV_MEMORY_TEMP, 0, 1.0),
            ("gpu_recovery_action", labels, RECOVERY_ACTION_FIELD, 0, 1.0),
        ]
        wanted += [
            ("gpu_clock_event_duration_seconds_total", (*labels, reason), fid, 0, 1e-9)
            for reason, fid in DURATION_FIELDS.items()
        ]
        for link in device.nvlinks:
            wanted.append(
                (
                    "gpu_nvlink_transmit_bytes_total",
                    (*labels, str(link)),
                    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
                    link,
                    1024.0,
                )
            )
            wanted.append(
                (
                    "gpu_nvlink_receive_bytes_total",
                    (*labels, str(link)),
                    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX,
                    link,
                    1024.0,
                )
            )
        wanted = [w for w in wanted if not session.is_unsupported(device, f"field:{w[2]}:{w[3]}")]
        samples: list[Sample] = []
        ok = True
        if wanted:
            try:
                values = self._call(
                    device, "fields", "nvmlDeviceGetFieldValues", [(w[2], w[3]) for w in wanted]
                )
            except pynvml.NVMLError:
                return None
            for (family, sample_labels, fid, scope, scale), value in zip(wanted, values, strict=False):
                if value.nvmlReturn == pynvml.NVML_SUCCESS:
                    samples.append((family, sample_labels, field_number(value) * scale))
                elif value.nvmlReturn in UNSUPPORTED:
                    session.mark_unsupported(device, f"field:{fid}:{scope}")
                else:
                    session.record_failure(
                        device, f"nvmlDeviceGetFieldValues:{fid}", pynvml.NVMLError(value.nvmlReturn)
                    )
        replays = session.call(device, "nvmlDeviceGetPcieReplayCounter")
        if replays is not None:
            samples.append(("gpu_pcie_replays_total", labels, float(replays)))
        elif session.is_lost(device):
            ok = False
        for link in device.nvlinks:
            for kind, counter in NVLINK_ERRORS.items():
                count = session.call(device, "nvmlDeviceGetNvLinkErrorCounter", link, counter)
                if count is not None:
                    samples.append(("gpu_nvlink_errors_total", (*labels, str(link), kind), float(count)))
        return samples if ok else None

    def _read_processes(self, device: Device) -> list[Sample] | None:
        try:
            found = self._call(device, "processes", "nvmlDeviceGetComputeRunningProcesses")
        except pynvml.NVMLError:
            self._pid_table.pop(device.uuid, None)
            return None
        found = sorted(found, key=lambda p: p.usedGpuMemory or 0, reverse=True)[: self.process_limit]
        samples = []
        for process in found:
            name, command = self._process_names(int(process.pid))
            if process.usedGpuMemory is not None:
                labels = (*device.labels, str(process.pid), name, command)
                samples.append(("gpu_process_memory_used_bytes", labels, float(process.usedGpuMemory)))
        self._pid_table[device.uuid] = [(int(p.pid), p.usedGpuMemory) for p in found]
        return samples

    def _device_processes(self, device: Device) -> list[GpuProcess]:
        table = self._pid_table.get(device.uuid, [])
        return [GpuProcess(device.index, device.uuid, pid, memory) for pid, memory in table]

    def _read_process_utilization(self, device: Device) -> list[Sample] | None:
        since = self._last_utilization_us.get(device.uuid, int((self.clock() - 1.0) * 1e6))
        try:
            found = self._call(
                device, "process_utilization", "nvmlDeviceGetProcessUtilization", since, expected=NOT_FOUND
            )
        except pynvml.NVMLError as exc:
            if exc.value != pynvml.NVML_ERROR_NOT_FOUND:
                return None
            found = []  # NOT_FOUND: no process ran a kernel since `since`
        latest: dict[int, Any] = {}
        for sample in found:
            if sample.pid not in latest or sample.timeStamp > latest[sample.pid].timeStamp:
                latest[sample.pid] = sample
        if latest:
            self._last_utilization_us[device.uuid] = max(s.timeStamp for s in latest.values())
        samples = []
        for pid, _memory in self._pid_table.get(device.uuid, []):
            name, command = self._process_names(pid)
            sm = latest[pid].smUtil / 100 if pid in latest else 0.0
            samples.append(
                ("gpu_process_sm_utilization_ratio", (*device.labels, str(pid), name, command), sm)
            )
        return samples

    def _read_gpm(self, device: Device) -> list[Sample] | None:
        nvml = self.session.nvml
        state = self._gpm.setdefault(device.uuid, GpmState())
        try:
            if state.current is None:
                state.previous, state.current = nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()
            if device.is_mig:
                nvml.nvmlGpmMigSampleGet(device.parent_handle, device.gpu_instance_id, state.current)
            else:
                nvml.nvmlGpmSampleGet(device.handle, state.current)
        except pynvml.NVMLError as exc:
            self._gpm_failed(device, "nvmlGpmSampleGet", exc)
            return None
        now = time.monotonic()
        previous_at, state.previous_at = state.previous_at, now
        window_ok = previous_at is not None and now - previous_at >= GPM_MIN_WINDOW_SECONDS
        metrics = None
        if window_ok:
            request = pynvml.c_nvmlGpmMetricsGet_t()
            request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = len(GPM_METRICS)
            request.sample1, request.sample2 = state.previous, state.current
            for i, metric_id in enumerate(GPM_METRICS.values()):
                request.metrics[i].metricId = metric_id
            try:
                metrics = nvml.nvmlGpmMetricsGet(request)
            except pynvml.NVMLError as exc:
                self._gpm_failed(device, "nvmlGpmMetricsGet", exc)
        state.previous, state.current = state.current, state.previous
        if metrics is None:
            return None
        samples = []
        for i, family in enumerate(GPM_METRICS):
            metric = metrics.metrics[i]
            if metric.nvmlReturn == pynvml.NVML_SUCCESS and metric.value == metric.value:  # NaN check
                samples.append((family, device.labels, metric.value / 100))
        return samples

    def _gpm_failed(self, device: Device, call: str, exc: pynvml.NVMLError) -> None:
        if exc.value in UNSUPPORTED:
            self.session.mark_unsupported(device, "source:gpm")
        else:
            self.session.record_failure(device, call, exc)

    # --- process names ---------------------------------------------------------------------------------

    def _process_names(self, pid: int) -> tuple[str, str]:
        """(process name, shortened command line) from psutil, cached per process; empty when not visible."""
        cached = self._names.get(pid)
        try:
            process = psutil.Process(pid)
            created = process.create_time()
            if cached is not None and cached[0] == created:
                return cached[1], cached[2]
            name, command = process.name(), command_label(process.cmdline())
        except (psutil.Error, OSError):
            return "", ""  # another PID namespace (container without host PID), or gone
        if len(self._names) > 4 * max(self.process_limit, 16):
            self._names.clear()
        self._names[pid] = (created, name, command)
        return name, command


def field_number(value: Any) -> float:
    """The number in an nvmlFieldValue_t, read by its valueType."""
    kind, union = value.valueType, value.value
    if kind == pynvml.NVML_VALUE_TYPE_DOUBLE:
        return float(union.dVal)
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT:
        return float(union.uiVal)
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG:
        return float(union.ulVal)
    if kind == pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG:
        return float(union.sllVal)
    if kind == pynvml.NVML_VALUE_TYPE_SIGNED_INT:
        return float(union.siVal)
    if kind == nvml_constant("NVML_VALUE_TYPE_UNSIGNED_SHORT", 6):
        return float(union.usVal)
    return float(union.ullVal)


__all__ = ["SOURCES", "NvmlSampler"]
